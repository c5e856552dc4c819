"""The vendor HTTP session is sized from the config and widened by a reload (SPEC 11)."""

from __future__ import annotations

from daemon.speech.vendor import (
    open_vendor_session,
    vendor_connection_limit,
    widen_vendor_session,
)


def test_the_cap_is_never_below_twice_the_calls_or_streams() -> None:
    for calls, streams in [(1, 1), (8, 128), (500, 128), (120, 600), (2000, 2000)]:
        limit = vendor_connection_limit(calls, streams)
        assert limit >= 2 * max(calls, streams), (calls, streams, limit)
    assert vendor_connection_limit(8, 128) == 3 * 128 + 16  # the defaults: above aiohttp's 100


async def test_session_is_sized_and_a_reload_widens_it_but_never_narrows() -> None:
    session = open_vendor_session(8, 128)
    try:
        assert session.connector is not None
        assert session.connector.limit == 400
        assert session.connector.limit_per_host == 0  # TTS, STT and chat share a host
        assert widen_vendor_session(session, 300, 128) == 916
        assert session.connector.limit == 916
        assert widen_vendor_session(session, 8, 128) == 916  # lowering keeps the wider cap
        assert session.connector.limit == 916
    finally:
        await session.close()

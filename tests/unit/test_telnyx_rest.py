"""Telnyx REST over plain aiohttp, against the Telnyx simulator: the documented Call Control
endpoints under `telnyx.api_base_url`, Bearer auth, error codes, one retry, and no SDK import."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from daemon.config.model import Config, TelnyxConfig
from daemon.errors import ProviderAuthError, ProviderRequestError
from daemon.model.events import CallMode, Direction, ProviderEvent
from daemon.model.record import CallRecord
from daemon.providers.base import DialRequest, ProviderContext, RemoteState, ReplyDraft
from daemon.providers.telnyx import TelnyxProvider
from tests.simulators.telnyx import API_KEY, CONNECTION_ID, TelnyxSimulator

REPO = Path(__file__).resolve().parents[2]


async def sink(events: Sequence[ProviderEvent], reply: ReplyDraft | None = None) -> None:
    return None


@pytest.fixture
async def sim() -> AsyncIterator[TelnyxSimulator]:
    async with TelnyxSimulator() as simulator:
        simulator.answer_delay = 60.0  # the calls stay ringing: only REST matters here
        yield simulator


async def provider_for(sim: TelnyxSimulator, key: str = API_KEY) -> TelnyxProvider:
    provider = TelnyxProvider()
    config = Config(
        provider="telnyx",
        telnyx=TelnyxConfig(
            api_key=key, connection_id=CONNECTION_ID, api_base_url=sim.api_base_url + "/"
        ),
    )
    provider.bind(sink, ProviderContext(config, "https://vc.example.com/voice/webhook"))
    await provider.start()
    return provider


def dial(call_id: str = "c-1") -> DialRequest:
    return DialRequest(call_id, "+15550001234", "+15550100000", CallMode.NOTIFY, "Hi", 30, 0)


async def test_dial_goes_to_post_calls_under_api_base_url_with_bearer_auth(
    sim: TelnyxSimulator,
) -> None:
    """`POST {api_base_url}/calls` (a trailing slash in the setting is fine), JSON body,
    `Authorization: Bearer <key>`; the call_control_id comes back."""
    provider = await provider_for(sim)
    try:
        pid = await provider.place_call(dial())
    finally:
        await provider.close()
    (request,) = sim.commands("dial")
    assert request.path == "/v2/calls"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"].startswith("application/json")
    assert pid in sim.calls


async def test_a_5xx_is_retried_once_and_a_second_failure_names_status_and_code(
    sim: TelnyxSimulator,
) -> None:
    """503 then success: one retry, one call (command_id makes the retry safe). Two 500s: a
    ProviderRequestError naming the status and Telnyx's error code."""
    provider = await provider_for(sim)
    try:
        sim.fail_next = [503]
        await provider.place_call(dial("c-1"))
        assert len(sim.commands("dial")) == 2 and len(sim.calls) == 1
        sim.fail_next = [500, 500]
        with pytest.raises(ProviderRequestError, match=r"HTTP 500 \(10007\)"):
            await provider.place_call(dial("c-2"))
        assert len(sim.commands("dial")) == 4 and len(sim.calls) == 1
    finally:
        await provider.close()


async def test_a_refused_key_is_an_auth_error_and_a_gone_call_is_not_an_error(
    sim: TelnyxSimulator,
) -> None:
    """401 -> ProviderAuthError (not retried); hang-up of a call Telnyx no longer knows (404)
    succeeds; the status of such a call is ended; an unreachable API names api_base_url."""
    bad = await provider_for(sim, key="wrong")
    try:
        with pytest.raises(ProviderAuthError, match=r"telnyx\.api_key"):
            await bad.place_call(dial())
        assert len(sim.commands("dial")) == 1
    finally:
        await bad.close()
    provider = await provider_for(sim)
    gone = CallRecord(
        "c-9",
        "telnyx",
        Direction.OUTBOUND,
        CallMode.NOTIFY,
        "+1",
        "+2",
        provider_call_id="v3:unknown",
    )
    try:
        await provider.hangup(gone)
        status = await provider.fetch_status(gone)
        assert status.state is RemoteState.ENDED
    finally:
        await provider.close()
    unreachable = TelnyxProvider()
    config = Config(
        provider="telnyx",
        telnyx=TelnyxConfig(
            api_key=API_KEY, connection_id=CONNECTION_ID, api_base_url="http://127.0.0.1:9/v2"
        ),
    )
    unreachable.bind(sink, ProviderContext(config, "https://vc.example.com/voice/webhook"))
    await unreachable.start()
    try:
        with pytest.raises(ProviderRequestError, match=r"telnyx\.api_base_url"):
            await unreachable.place_call(dial())
    finally:
        await unreachable.close()


def test_the_daemon_never_imports_the_telnyx_sdk() -> None:
    """The daemon with the Telnyx provider loaded leaves `telnyx` out of sys.modules."""
    code = (
        "import sys, daemon.app, daemon.providers.telnyx, daemon.providers.registry; "
        "print('telnyx' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "False"

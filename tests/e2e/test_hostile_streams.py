"""A flood of media-stream websockets that never authenticate, against the real daemon."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from tests.harness import DaemonHarness, short_home

pytestmark = pytest.mark.e2e

CONFIG = """
[serve]
port = 0

[streaming]
enabled = true
api_key = "sk-test"
stt_url = "ws://127.0.0.1:9/v1/realtime"
pre_start_timeout_ms = 1500
max_pending_connections = 8
max_pending_connections_per_ip = 4
max_connections = 16

[tts]
provider = "openai"

[tts.openai]
api_key = "sk-test"
base_url = "http://127.0.0.1:9/v1"
"""


async def _attempt(session: aiohttp.ClientSession, url: str) -> str:
    """Open one socket and never send `start`; report how it ended."""
    try:
        async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            message = await ws.receive(timeout=10)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return f"close-{ws.close_code}"
            return f"message-{message.type}"
    except aiohttp.WSServerHandshakeError as exc:
        return f"http-{exc.status}"


async def test_pending_flood_is_held_at_the_limits() -> None:
    """60 unauthenticated sockets: 503 past max_connections, 1013 past the pending limits,
    1008 for the ones that time out; afterwards the daemon serves as before."""
    d = DaemonHarness(short_home(), CONFIG)
    try:
        await asyncio.to_thread(d.start)
        status = await asyncio.to_thread(d.rpc, "daemon.status")
        url = status["streamUrl"]
        assert url.startswith("ws://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            outcomes = await asyncio.gather(*(_attempt(session, url) for _ in range(60)))
        counts = {k: outcomes.count(k) for k in set(outcomes)}
        assert set(counts) <= {"close-1008", "close-1013", "http-503"}, counts
        assert counts.get("close-1008", 0) <= 4  # only the per-IP pending allowance waits
        assert counts.get("close-1013", 0) >= 1 and counts.get("http-503", 0) >= 1, counts
        after = await asyncio.to_thread(d.rpc, "daemon.status")
        assert after["running"] is True and after["activeCalls"] == 0
        # The limits are not leaked: a second wave gets the same treatment, not all 503s.
        async with aiohttp.ClientSession() as session:
            again = await asyncio.gather(*(_attempt(session, url) for _ in range(4)))
        assert again.count("close-1008") == 4, again
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(d.cleanup)

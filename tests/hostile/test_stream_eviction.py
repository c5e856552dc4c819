"""Pending media-stream sockets evict the oldest, so a replayed upgrade signature cannot starve
genuine streams (SPEC 9). Real daemon, Twilio simulator opening the stream as Twilio does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from tests.configs import twilio_config
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.simulators.twilio import TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"
ATTACKERS = ["127.0.0.2", "127.0.0.3"]


def config(sim: TwilioSimulator, openai: FakeOpenAI) -> str:
    return twilio_config(
        sim,
        openai,
        streaming=True,
        stream=(
            "pre_start_timeout_ms = 30000\nmax_pending_connections = 8\n"
            "max_pending_connections_per_ip = 4\n"
        ),
    )


async def test_replayed_upgrade_signature_cannot_starve_genuine_streams(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """8 sockets with a replayed (valid) upgrade signature fill every pending slot and never
    send `start`; genuine calls' streams still bind, the oldest attacker socket of the full
    scope being closed with 1013 instead of the newcomer."""
    d = await start(make_daemon, config(sim, openai))
    stream_url = (await rpc(d, "daemon.status"))["streamUrl"]
    replayed = {"X-Twilio-Signature": sim.validator.compute_signature(stream_url, {})}
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))
        for ip in ATTACKERS
    ]
    attackers: list[aiohttp.ClientWebSocketResponse] = []
    call_ids: list[str] = []
    try:
        for n in range(8):
            attackers.append(await sessions[n % 2].ws_connect(stream_url, headers=replayed))
        for n in range(3):
            result = await rpc(
                d, "voicecall.initiate", {"message": f"Call {n}", "to": TO, "mode": "conversation"}
            )

            def streaming(want: int = n + 1) -> bool:
                return len(sim.calls) == want and all(c.media for c in sim.calls.values())

            await sim.wait_for(streaming)
            call_ids.append(result["callId"])
            record = await asyncio.to_thread(d.call_record, result["callId"])
            assert record["state"] not in ("failed", "error"), record
        streams = [c.media[0] for c in sim.calls.values()]
        await asyncio.to_thread(d.wait_streams_bound, call_ids)
        assert all(s.is_open and s.close_code is None for s in streams), [
            (s.is_open, s.close_code, s.handshake_status) for s in streams
        ]
        # the first genuine stream found every pending slot taken: the oldest attacker
        # socket made room, with 1013; the others bound and left the pending set at once
        message = await attackers[0].receive(timeout=10)
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1013)
        assert not any(ws.closed for ws in attackers[1:])
    finally:
        for ws in attackers:
            await ws.close()
        for session in sessions:
            await session.close()


async def test_a_trusted_proxy_is_not_capped_per_address_while_pending(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A trusted proxy's address (a sibling worker passing streams on, a balancer) stands for
    many callers: 4 pending sockets from it under a per-address cap of 2 all stay open, while
    the 3rd from an untrusted address evicts that address's oldest with 1013."""
    text = twilio_config(
        sim,
        openai,
        streaming=True,
        stream=(
            "pre_start_timeout_ms = 30000\nmax_pending_connections = 16\n"
            "max_pending_connections_per_ip = 2\n"
        ),
    )
    d = await start(
        make_daemon, text + f'\n[webhook_security]\ntrusted_proxy_ips = ["{ATTACKERS[0]}"]\n'
    )
    stream_url = (await rpc(d, "daemon.status"))["streamUrl"]
    signed = {"X-Twilio-Signature": sim.validator.compute_signature(stream_url, {})}
    proxy, stranger = (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))
        for ip in ATTACKERS
    )
    opened: list[aiohttp.ClientWebSocketResponse] = []
    try:
        relayed = [await proxy.ws_connect(stream_url, headers=signed) for _ in range(4)]
        direct = [await stranger.ws_connect(stream_url, headers=signed) for _ in range(3)]
        opened = relayed + direct
        message = await direct[0].receive(timeout=10)
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1013)
        for ws in relayed + direct[1:]:  # nothing (no 1013 close) arrives on the others
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.5)
    finally:
        for ws in opened:
            await ws.close()
        await proxy.close()
        await stranger.close()

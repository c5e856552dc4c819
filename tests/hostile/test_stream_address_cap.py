"""An admitted media stream gives back its per-address connection slot (SPEC 8, 9).

A provider opens every call's media stream from a handful of media-server addresses, so counting
live streams against `serve.max_connections_per_ip` would cap a deployment at that many calls per
provider address (64 by default) and then starve the provider's own webhooks from that address.
Unauthenticated sockets still count until their `start` is accepted. Real daemon, Twilio
simulator opening each stream (and sending each webhook) from 127.0.0.1 as Twilio does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tests.fakes.openai import API_KEY, FakeOpenAI
from tests.harness import DaemonHarness, wait_for
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.simulators.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioSimulator

pytestmark = pytest.mark.e2e

TO = "+15550001234"
PER_IP = 3
CALLS = 6


def config(sim: TwilioSimulator, openai: FakeOpenAI) -> str:
    return f"""
provider = "twilio"
from_number = "+15550100000"
max_concurrent_calls = 10
[serve]
port = 0
max_connections_per_ip = {PER_IP}
[twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
api_base_url = "{sim.api_base_url}"
[streaming]
enabled = true
stt_url = "{openai.realtime_url}"
api_key = "{API_KEY}"
[messages.tts]
provider = "openai"
[messages.tts.openai]
base_url = "{openai.base_url}"
api_key = "{API_KEY}"
"""


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


async def test_streams_past_the_per_address_cap_all_bind_and_webhooks_still_pass(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Twice `max_connections_per_ip` streams from one address all bind and stay open, and the
    provider's status callbacks from that address still get through (the calls end cleanly)."""
    d = await start(make_daemon, config(sim, openai))
    call_ids = []
    for n in range(CALLS):
        result = await rpc(d, "voicecall.initiate",
                           {"message": f"Call {n}", "to": TO, "mode": "conversation"})
        call_ids.append(result["callId"])
        def streaming(want: int = n + 1) -> bool:
            return len(sim.calls) == want and all(c.media for c in sim.calls.values())

        await sim.wait_for(streaming, timeout=30)
    await asyncio.to_thread(
        wait_for, lambda: all(f"bound to call {i}" in d.log_text() for i in call_ids), 30.0,
        message="every stream to bind")
    streams = [c.media[0] for c in sim.calls.values()]
    assert all(s.is_open and s.close_code is None for s in streams), [
        (s.is_open, s.close_code) for s in streams]
    for call_id in call_ids:
        await rpc(d, "voicecall.end", {"callId": call_id})
    for call_id in call_ids:
        record = await asyncio.to_thread(d.wait_state, call_id, "hangup-bot", "completed",
                                         timeout=30)
        assert record["endedAt"], record

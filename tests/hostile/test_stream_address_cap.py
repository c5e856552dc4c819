"""An admitted media stream gives back its per-address connection slot (SPEC 8, 9).

A provider opens every call's media stream from a handful of media-server addresses, so counting
live streams against `serve.max_connections_per_ip` would cap a deployment at that many calls per
provider address (64 by default) and then starve the provider's own webhooks from that address.
Unauthenticated sockets still count until their `start` is accepted. Real daemon, Twilio
simulator opening each stream (and sending each webhook) from 127.0.0.1 as Twilio does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
PER_IP = 3
CALLS = 6


def config(sim: TwilioSimulator, openai: FakeOpenAI) -> str:
    return twilio_config(
        sim,
        openai,
        streaming=True,
        top="max_concurrent_calls = 10\n",
        serve=f"max_connections_per_ip = {PER_IP}\n",
    )


async def test_streams_past_the_per_address_cap_all_bind_and_webhooks_still_pass(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Twice `max_connections_per_ip` streams from one address all bind and stay open, and the
    provider's status callbacks from that address still get through (the calls end cleanly)."""
    d = await start(make_daemon, config(sim, openai))
    call_ids = []
    for n in range(CALLS):
        result = await rpc(
            d, "voicecall.initiate", {"message": f"Call {n}", "to": TO, "mode": "conversation"}
        )
        call_ids.append(result["callId"])

        def streaming(want: int = n + 1) -> bool:
            return len(sim.calls) == want and all(c.media for c in sim.calls.values())

        await sim.wait_for(streaming, timeout=30)
    await asyncio.to_thread(d.wait_streams_bound, call_ids)
    streams = [c.media[0] for c in sim.calls.values()]
    assert all(s.is_open and s.close_code is None for s in streams), [
        (s.is_open, s.close_code) for s in streams
    ]
    for call_id in call_ids:
        await rpc(d, "voicecall.end", {"callId": call_id})
    for call_id in call_ids:
        record = await asyncio.to_thread(
            d.wait_state, call_id, "hangup-bot", "completed", timeout=30
        )
        assert record["endedAt"], record

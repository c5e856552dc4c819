"""`kill -9` in the middle of a burst of signed Twilio webhooks, then restart and re-deliver.

SPEC 6 (durability) and 8.6 (replay): every webhook the daemon answered 200 before it died has
its effect in the store after the restart; re-delivering every webhook again (the acknowledged
ones byte for byte) applies nothing twice, because processed webhook ids and the replay cache
survive the restart; and no call is re-dialled.

The Twilio simulator only serves REST (Calls create/fetch); the test plays the carrier itself:
it answers each call with a signed voice request and sends the burst (Gather speech results,
one per line, and a final `completed` status callback for one call) from one concurrent sender
per call, each signed with the SDK's `RequestValidator` over the daemon's `webhookUrl`.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.configs import twilio_config
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.simulators.twilio import ACCOUNT_SID, TwilioSimulator

pytestmark = pytest.mark.e2e

TO = "+15550001234"
FROM = "+15550100000"
CALLS = 5
LINES = 30
KILL_AFTER = 50
"""Acknowledged burst deliveries to wait for before the SIGKILL (of CALLS * LINES + 1)."""


def free_port() -> int:
    """A port to pin `serve.port` to: Twilio signs the URL, port included."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sim: TwilioSimulator, port: int) -> str:
    """Twilio at the simulator, on a fixed webhook port."""
    return twilio_config(sim, port=port, top="max_concurrent_calls = 20\n")


@dataclass
class Delivery:
    """One signed webhook, as sent (and re-sent) byte for byte."""

    call_id: str
    url: str
    body: str
    headers: dict[str, str]
    line: str | None
    """The SpeechResult it carries (None for the status callback)."""
    status: int = 0
    reply: str = ""


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    """A running Twilio simulator whose calls ring until the test answers them."""
    async with TwilioSimulator() as simulator:
        simulator.auto_answer = False
        yield simulator


def signed(sim: TwilioSimulator, call_id: str, url: str, params: dict[str, str]) -> Delivery:
    """A delivery signed like Twilio (`X-Twilio-Signature` over the URL + sorted params)."""
    headers = {
        "X-Twilio-Signature": sim.validator.compute_signature(url, params),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return Delivery(call_id, url, urlencode(params), headers, params.get("SpeechResult"))


async def send(http: aiohttp.ClientSession, delivery: Delivery) -> int:
    """POST one delivery; 0 when nobody answered (the daemon is dead)."""
    try:
        async with http.post(delivery.url, data=delivery.body, headers=delivery.headers) as r:
            delivery.reply = await r.text()
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


def user_lines(record: dict[str, Any]) -> list[str]:
    """The caller's transcript lines of a call record."""
    return [t["text"] for t in record["transcript"] if t["speaker"] == "user"]


async def answered_calls(sim: TwilioSimulator, d: DaemonHarness) -> dict[str, str]:
    """Several live calls, answered by a signed voice request on each call's Url: call id to
    CallSid."""
    sids: dict[str, str] = {}
    for i in range(CALLS):
        call_id = (
            await rpc(
                d,
                "voicecall.initiate",
                {"message": f"Hello {i}.", "to": TO, "mode": "conversation"},
            )
        )["callId"]

        def created(n: int = i) -> bool:
            return len(sim.creates) == n + 1

        await sim.wait_for(created)
        create = sim.creates[-1]
        sid = next(s for s, c in sim.calls.items() if c.url == create.get("Url"))
        sids[call_id] = sid
        params = {
            "AccountSid": ACCOUNT_SID,
            "CallSid": sid,
            "CallStatus": "in-progress",
            "Direction": "outbound-api",
            "From": FROM,
            "To": TO,
        }
        answer = signed(sim, call_id, create.get("Url") or "", params)
        async with aiohttp.ClientSession() as http:
            assert await send(http, answer) == 200
        await asyncio.to_thread(d.wait_state, call_id, "speaking", "active", "listening")
    return sids


def burst_plan(
    sim: TwilioSimulator, webhook: str, sids: dict[str, str]
) -> dict[str, list[Delivery]]:
    """Per call, LINES Gather results (each on its own action URL, as Twilio posts them), and
    for the first call a `completed` status callback last."""
    plan: dict[str, list[Delivery]] = {}
    for index, (call_id, sid) in enumerate(sids.items()):
        base = {
            "AccountSid": ACCOUNT_SID,
            "CallSid": sid,
            "Direction": "outbound-api",
            "From": FROM,
            "To": TO,
        }
        deliveries = []
        for line in range(LINES):
            url = f"{webhook}?callId={call_id}&n={secrets.token_hex(4)}"
            params = {
                **base,
                "CallStatus": "in-progress",
                "SpeechResult": f"call {index} line {line}",
                "Confidence": "0.9",
            }
            deliveries.append(signed(sim, call_id, url, params))
        if index == 0:
            url = f"{webhook}?callId={call_id}&type=status&mode=conversation"
            params = {
                **base,
                "CallStatus": "completed",
                "CallbackSource": "call-progress-events",
                "SequenceNumber": "3",
                "CallDuration": "4",
            }
            deliveries.append(signed(sim, call_id, url, params))
        plan[call_id] = deliveries
    return plan


async def burst_until_killed(d: DaemonHarness, plan: dict[str, list[Delivery]]) -> list[Delivery]:
    """Send every call's deliveries concurrently; kill -9 the daemon once KILL_AFTER were
    acknowledged. Returns the acknowledged ones."""
    acked: list[Delivery] = []

    async def sender(http: aiohttp.ClientSession, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            delivery.status = await send(http, delivery)
            if delivery.status == 200:
                acked.append(delivery)
            elif delivery.status == 0:
                return  # the daemon is gone: the carrier gives up on this sender
            else:
                raise AssertionError(f"{delivery.status} {delivery.reply}")

    async def killer() -> None:
        while len(acked) < KILL_AFTER:
            await asyncio.sleep(0.002)
        await asyncio.to_thread(d.kill9)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        kill = asyncio.create_task(killer())
        await asyncio.gather(*(sender(http, deliveries) for deliveries in plan.values()))
        await asyncio.wait_for(kill, 20)
    return list(acked)


async def redeliver(plan: dict[str, list[Delivery]]) -> None:
    """Re-deliver every webhook, in each call's order, from concurrent senders."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def resend(deliveries: list[Delivery]) -> None:
            for delivery in deliveries:
                delivery.status = await send(http, delivery)

        await asyncio.gather(*(resend(deliveries) for deliveries in plan.values()))


async def test_kill_9_during_a_signed_webhook_burst(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Acknowledged webhooks survive kill -9; every re-delivery is answered 200 and applies
    nothing twice; no call is dialled again."""
    d = make_daemon(config(sim, free_port()), start=False)
    await asyncio.to_thread(d.start)
    webhook = (await rpc(d, "daemon.status"))["webhookUrl"]

    sids = await answered_calls(sim, d)
    plan = burst_plan(sim, webhook, sids)
    every = [dl for deliveries in plan.values() for dl in deliveries]
    before_kill = await burst_until_killed(d, plan)
    assert KILL_AFTER <= len(before_kill) < len(every), "the kill did not land mid-burst"

    # Restart: every acknowledged delivery has its effect, once.
    await asyncio.to_thread(d.start)
    records = {cid: (await rpc(d, "voicecall.status", {"callId": cid}))["call"] for cid in plan}
    for delivery in before_kill:
        lines = user_lines(records[delivery.call_id])
        if delivery.line is None:
            assert records[delivery.call_id]["state"] == "completed"
        else:
            assert lines.count(delivery.line) == 1, (delivery.line, lines)

    # Re-deliver every webhook, in each call's order, from concurrent senders.
    first_status = {id(dl): dl.status for dl in every}
    await redeliver(plan)
    assert all(dl.status == 200 for dl in every), [dl.status for dl in every]
    for delivery in every:
        if first_status[id(delivery)] == 200:
            # A replay: Twilio's empty `<Response/>`, never the TwiML of a fresh request.
            assert "<Response" in delivery.reply and "<Say" not in delivery.reply
            assert "<Pause" not in delivery.reply and "<Gather" not in delivery.reply

    # Every line is in the store exactly once now; the first call ended once; nothing re-dialled.
    for index, (call_id, deliveries) in enumerate(plan.items()):
        record = (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]
        expected = [dl.line for dl in deliveries if dl.line is not None]
        assert sorted(user_lines(record)) == sorted(expected), call_id
        assert record["state"] == ("completed" if index == 0 else record["state"])
        if index:
            assert record["state"] in ("speaking", "active", "listening")
    assert len(sim.creates) == CALLS
    assert sorted(sids.values()) == sorted(sim.calls)

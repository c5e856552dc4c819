"""Several real daemons on one real PostgreSQL database (SPEC section 16), the Twilio simulator as
the carrier: each daemon its own VOICECALL_HOME, socket and webhook port.

The heartbeat is shortened with VOICECALL_CLUSTER_HEARTBEAT_SECONDS (0.5 s: dead after 2 s of
silence) so a take-over is seen in seconds; the rules are the same as with the default 5 s/20 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import until_state_async as until_state
from tests.simulators.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioSimulator

pytestmark = pytest.mark.e2e

TO = "+15550001234"
FROM = "+15550100000"
BEAT = "0.5"


def config(sim: TwilioSimulator, pg_url: str) -> str:
    return f"""
store = "{pg_url}"
provider = "twilio"
from_number = "{FROM}"

[serve]
port = 0

[twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
api_base_url = "{sim.api_base_url}"
"""


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


async def daemon(make_daemon: Callable[..., DaemonHarness], text: str) -> DaemonHarness:
    """A daemon with the short test heartbeat."""
    d: DaemonHarness = make_daemon(text, start=False)
    d.env["VOICECALL_CLUSTER_HEARTBEAT_SECONDS"] = BEAT
    d.env.pop("OPENAI_API_KEY", None)  # vendor keys come from the test's config only
    await asyncio.to_thread(d.start, timeout=60)
    return d


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def record(d: DaemonHarness, call_id: str) -> dict[str, Any]:
    result = await rpc(d, "voicecall.status", {"callId": call_id})
    assert result["found"], result
    call: dict[str, Any] = result["call"]
    return call


async def active_calls(d: DaemonHarness) -> int:
    return int((await rpc(d, "daemon.status"))["activeCalls"])


async def test_kill_9_one_daemon_mid_call_and_another_takes_its_calls_over(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """A runs two answered calls, B runs none; `kill -9` A. Within the take-over bound B runs
    both, reconciled with Twilio's status API: the one that ended at Twilio while A was dead is
    closed `completed`, the other stays up and B can hang it up. Nothing is dialled again."""
    a = await daemon(make_daemon, config(sim, pg_url))
    b = await daemon(make_daemon, config(sim, pg_url))
    ids = []
    for message in ("First call", "Second call"):
        result = await rpc(a, "voicecall.initiate", {"to": TO, "message": message,
                                                     "mode": "conversation"})
        ids.append(result["callId"])
    for call_id in ids:
        await until_state(a, call_id, "listening", "active", "speaking")
    keep, gone = ids
    assert await active_calls(a) == 2 and await active_calls(b) == 0
    sid_gone = (await record(a, gone))["providerCallId"]

    a.kill9()
    killed = time.monotonic()
    await sim.callee_hangup(sid_gone)  # Twilio's callback finds A gone: only its API knows

    deadline = killed + 30
    while await active_calls(b) != 1 or (await record(b, gone))["state"] != "completed":
        states = [(await record(b, c))["state"] for c in ids]
        assert time.monotonic() < deadline, f"B did not take A's calls over in 30 s: {states}"
        await asyncio.sleep(0.1)
    took = time.monotonic() - killed
    assert took < 20, f"with a {BEAT} s heartbeat the take-over took {took:.1f} s"
    kept = await record(b, keep)
    assert kept["state"] in ("listening", "active", "speaking"), (kept, sim.calls)
    fetched = [r for r in sim.requests if r.method == "GET" and "/Calls/" in r.path]
    assert fetched, "B asked Twilio's status API about the calls it took"

    assert await rpc(b, "voicecall.end", {"callId": keep}) == {"success": True}
    await until_state(b, keep, "hangup-bot")
    sid_keep = (await record(b, keep))["providerCallId"]
    await until(lambda: sim.calls[sid_keep].ended, 10, "Twilio to end the call")
    assert sim.calls[sid_keep].ended_by == "api"
    assert len(sim.creates) == 2, "nothing was dialled again"
    log = b.log_text()
    assert f"taking over call {keep}" in log and f"taking over call {gone}" in log

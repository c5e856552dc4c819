"""Plivo end to end: the real daemon and CLI against the local Plivo simulator."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import pytest

from tests.configs import plivo_config
from tests.harness import DaemonHarness, query, wait_for
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.plivo import AUTH_ID, Delivery, PlivoSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = PlivoSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"


def free_port() -> int:
    """A port to pin `serve.port` to: Plivo signs the full URL, host and port included."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sim: PlivoSimulator, extra: str = "", port: int = 0) -> str:
    """A daemon config pointing at the simulator; `extra`: top-level keys."""
    return plivo_config(sim, top=extra, port=port, hangup_delay=0)


def getinputs(sim: PlivoSimulator) -> list[Delivery]:
    """The GetInput action callbacks delivered so far."""
    return [dl for dl in sim.deliveries if query(dl.url).get("flow") == "getinput"]


async def test_plivo_notify_call_rekeys_speaks_and_hangs_up(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """request_uuid becomes CallUUID; the answer XML speaks and hangs up (hangup-bot)."""
    d = await start(make_daemon, config(sim))
    done = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Your table is ready", "--json")
    assert done.returncode == 0, done.stderr
    call_id = json.loads(done.stdout)["callId"]
    record = await until_state(d, call_id, "hangup-bot")
    create = sim.recorded("POST", "/Call/")[0].body
    assert create["from"] == FROM and create["to"] == TO and create["ring_timeout"] == 30
    assert query(create["answer_url"]) == {"flow": "answer", "callId": call_id}
    assert query(create["hangup_url"]) == {"flow": "hangup", "callId": call_id}
    call = sim.only_call()
    assert record["providerCallId"] == call.call_uuid != call.request_uuid
    assert call.spoken == ["Your table is ready"]
    assert call.end_source == "Answer XML"
    assert "<Hangup/>" in call.documents[0]


async def test_plivo_conversation_turns_via_transfer_ignore_a_stale_turn_token(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`continue` transfers the A-leg to GetInput; an action with an old turnToken is ignored."""
    d = await start(make_daemon, config(sim))
    sim.replies = ["Yes, Tuesday works."]
    call_id = (
        await rpc(
            d,
            "voicecall.initiate",
            {"message": "Hi, it's the clinic.", "to": TO, "mode": "conversation"},
        )
    )["callId"]
    await until_state(d, call_id, "speaking", "active", "answered")
    first = await rpc(d, "voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"})
    assert first == {"success": True, "transcript": "Yes, Tuesday works."}
    call = sim.only_call()
    transfer = sim.recorded("POST", f"/Call/{call.call_uuid}/")[0].body
    assert transfer["legs"] == "aleg" and query(transfer["aleg_url"])["flow"] == "xml"
    await sim.wait_for(lambda: bool(getinputs(sim)))
    action = getinputs(sim)[0].url
    stale_token = query(action)["turnToken"]

    second = asyncio.create_task(
        rpc(d, "voicecall.continue", {"callId": call_id, "message": "Anything else?"})
    )
    await sim.wait_for(lambda: call.listening and call.spoken[-1:] == ["Anything else?"])
    stale = await sim.callback(call, action, {"CallStatus": "in-progress", "Speech": "Stale"})
    assert stale.status == 200
    await sim.caller_says(call, "No, that is all.")
    assert await second == {"success": True, "transcript": "No, that is all."}
    record = (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]
    users = [t["text"] for t in record["transcript"] if t["speaker"] == "user"]
    assert users == ["Yes, Tuesday works.", "No, that is all."]
    # The second turn listened with a fresh token (the replayed stale action is also recorded).
    # (the simulator records a delivery once the daemon has answered it, which may be after
    # the daemon resolved the `continue`: poll)
    await sim.wait_for(
        lambda: bool({query(g.url)["turnToken"] for g in getinputs(sim)} - {stale_token})
    )
    assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}
    await sim.wait_for(lambda: call.ended)
    assert call.end_source == "API Request"


async def test_plivo_dtmf_and_busy_outcome(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """DTMF goes to `/Call/{uuid}/DTMF/` on the A-leg; a busy callee ends the call busy."""
    d = await start(make_daemon, config(sim))
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO, "mode": "conversation"})
    )["callId"]
    await until_state(d, call_id, "speaking", "active", "answered")
    assert await rpc(d, "voicecall.dtmf", {"callId": call_id, "digits": "12#"}) == {"success": True}
    assert sim.only_call().dtmf == ["12#"]
    assert sim.recorded("POST", "/DTMF/")[0].body == {"digits": "12#", "leg": "aleg"}
    sim.outcome = "busy"
    busy = await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO})
    assert (await until_state(d, busy["callId"], "busy"))["endReason"] == "busy"


async def test_plivo_inbound_allowlist_greets_one_caller_and_hangs_up_on_another(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """An allowlisted caller hears the greeting inside GetInput; others get `<Hangup/>`."""
    extra = 'inbound_policy = "allowlist"\nallow_from = ["+14155550123"]\n'
    d = await start(make_daemon, config(sim, extra))
    url = (await rpc(d, "daemon.status"))["webhookUrl"]
    allowed = await sim.inbound("+14155550123", FROM, url)
    await sim.wait_for(lambda: allowed.listening)
    assert allowed.spoken == ["Hello! How can I help you today?"]
    assert 'inputType="dtmf speech"' in allowed.documents[0]
    calls = (await rpc(d, "voicecall.status"))["calls"]
    assert [c["providerCallId"] for c in calls] == [allowed.call_uuid]
    await sim.caller_says(allowed, "I need a table")
    call_id = calls[0]["callId"]
    await asyncio.to_thread(
        wait_for,
        lambda: any(t["text"] == "I need a table" for t in d.call_record(call_id)["transcript"]),
    )

    refused = await sim.inbound("+15550009999", FROM, url)
    await sim.wait_for(lambda: refused.ended)
    assert '<Hangup reason="rejected"/>' in refused.documents[0]
    assert refused.spoken == []


async def test_plivo_inbound_past_max_concurrent_calls_hears_busy(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A caller refused for want of room (not by the policy) hears a busy signal:
    `<Hangup reason="busy"/>`, and may call again."""
    d = await start(make_daemon, config(sim, 'inbound_policy = "open"\nmax_concurrent_calls = 1\n'))
    url = (await rpc(d, "daemon.status"))["webhookUrl"]
    first = await sim.inbound("+14155550123", FROM, url)
    await sim.wait_for(lambda: first.listening)
    second = await sim.inbound("+15550009999", FROM, url)
    await sim.wait_for(lambda: second.ended)
    assert '<Hangup reason="busy"/>' in second.documents[0]
    assert second.spoken == []


async def test_plivo_replay_before_and_after_restart_repeats_the_first_reply(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A replayed callback (same nonce) gets the first XML back and applies nothing."""
    port = free_port()
    d = await start(make_daemon, config(sim, port=port))
    sim.replies = ["Yes."]
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO, "mode": "conversation"})
    )["callId"]
    await until_state(d, call_id, "speaking", "active", "answered")
    await rpc(d, "voicecall.continue", {"callId": call_id, "message": "Ready?"})
    await sim.wait_for(lambda: bool(getinputs(sim)))
    answer = getinputs(sim)[0]
    again = await sim.replay(answer)
    assert (again.status, again.reply) == (200, answer.reply)
    await asyncio.to_thread(d.stop)
    await asyncio.to_thread(d.start)
    after = await sim.replay(answer)
    assert (after.status, after.reply) == (200, answer.reply)
    record = (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]
    assert [t["text"] for t in record["transcript"] if t["speaker"] == "user"] == ["Yes."]
    assert (
        len(sim.recorded("POST", "/Call/"))
        - len([r for r in sim.recorded("POST", "/Call/") if r.body.get("legs")])
        == 1
    )


async def test_plivo_kill9_restart_reconciles_without_redialling(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """After kill -9: a call with a CDR is closed; a status error keeps the call (unknown)."""
    port = free_port()
    d = await start(make_daemon, config(sim, port=port))
    ids = []
    for _ in range(2):
        result = await rpc(
            d, "voicecall.initiate", {"message": "Hi", "to": TO, "mode": "conversation"}
        )
        ids.append(result["callId"])
        await until_state(d, result["callId"], "speaking", "active", "answered")
    await asyncio.to_thread(d.kill9)
    gone = next(c for c in sim.calls.values() if ids[0] in c.answer_url)
    gone.hangup_url = None  # the hang-up callback is lost while we are down
    await sim.caller_hangup(gone)
    await asyncio.to_thread(d.start)
    ended = await until_state(d, ids[0], "hangup-user")
    assert ended["endReason"] == "hangup-user"
    alive = (await rpc(d, "voicecall.status", {"callId": ids[1]}))["call"]
    assert alive["state"] in ("speaking", "active", "answered")
    creates = [
        r for r in sim.recorded("POST", "/Call/") if r.path.endswith(f"/Account/{AUTH_ID}/Call/")
    ]
    assert len(creates) == 2

    await asyncio.to_thread(d.kill9)
    sim.status_error = 500
    await asyncio.to_thread(d.start)
    still = (await rpc(d, "voicecall.status", {"callId": ids[1]}))["call"]
    assert still["state"] in ("speaking", "active", "answered")


async def test_plivo_end_while_ringing_cancels_the_request(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Ending a call that rings (already re-keyed to its CallUUID) cancels its request_uuid."""
    sim.answer_delay = 60.0
    d = await start(make_daemon, config(sim))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO}))["callId"]
    record = await until_state(d, call_id, "ringing")
    await sim.wait_for(lambda: bool(sim.calls))
    (call,) = sim.calls.values()
    await asyncio.to_thread(
        wait_for, lambda: d.call_record(call_id)["providerCallId"] == call.call_uuid, 10
    )
    assert record["state"] == "ringing"
    assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}
    await sim.wait_for(lambda: call.ended)
    deletes = [r for r in sim.requests if r.method == "DELETE"]
    assert any("/Request/" in r.path for r in deletes), [r.path for r in deletes]


async def test_plivo_carrier_timeout_is_failed(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """CallStatus=timeout (HangupCause RECOVERY_ON_TIMER_EXPIRE, 3000: the carrier gave up
    connecting) ends `failed`, not `no-answer` (SPEC 10)."""
    d = await start(make_daemon, config(sim))
    sim.outcome = "timeout"
    placed = await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO})
    assert (await until_state(d, placed["callId"], "failed"))["endReason"] == "failed"
    hangup = [dl for dl in sim.deliveries if dl.params.get("Event") == "Hangup"][-1]
    assert (hangup.params["HangupCause"], hangup.params["HangupCauseCode"]) == (
        "RECOVERY_ON_TIMER_EXPIRE",
        "3000",
    )

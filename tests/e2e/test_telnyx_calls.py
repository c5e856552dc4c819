"""Telnyx end to end: the real daemon and CLI against the local Telnyx simulator."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable

import pytest

from tests.configs import telnyx_config
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.telnyx import CONNECTION_ID, TelnyxSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TelnyxSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"


def free_port() -> int:
    """A port to pin `serve.port` to, so a restarted daemon keeps its webhook URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sim: TelnyxSimulator, extra: str = "", port: int = 0) -> str:
    """A daemon config pointing at the simulator; `extra`: top-level keys."""
    return telnyx_config(sim, top=extra, port=port, hangup_delay=0)


def b64(text: str) -> str:
    """base64 of a string, as client_state carries it."""
    return base64.b64encode(text.encode()).decode()


async def test_telnyx_notify_call_speaks_then_hangs_up_after_playback(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`voicecall call` dials with client_state, speaks, hangs up after call.speak.ended."""
    d = await start(make_daemon, config(sim))
    done = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Your table is ready", "--json")
    assert done.returncode == 0, done.stderr
    call_id = json.loads(done.stdout)["callId"]
    record = await until_state(d, call_id, "hangup-bot")
    status = await rpc(d, "daemon.status")
    dial = sim.commands("dial")[0].body
    assert dial["connection_id"] == CONNECTION_ID and dial["to"] == TO and dial["from"] == FROM
    assert dial["client_state"] == b64(call_id)
    assert dial["timeout_secs"] == 30
    assert dial["webhook_url"] == status["webhookUrl"]
    assert dial["command_id"] == f"voicecall-dial-{call_id}"
    call = sim.only_call()
    assert call.spoken == ["Your table is ready"]
    assert record["providerCallId"] == call.call_control_id
    speak_ended = sim.delivered("call.speak.ended")[0]
    hangups = sim.commands("hangup")
    assert len(hangups) == 1
    assert sim.requests.index(hangups[0]) > 0 and speak_ended.status == 200
    assert [t["text"] for t in record["transcript"]] == ["Your table is ready"]


async def test_telnyx_conversation_turns_ignore_a_stale_turn_token(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Two `continue` turns via transcription_start; a transcript from the old turn is ignored."""
    d = await start(make_daemon, config(sim))
    sim.replies = ["Yes, Tuesday works."]
    result = await rpc(
        d,
        "voicecall.initiate",
        {"message": "Hi, it's the clinic.", "to": TO, "mode": "conversation"},
    )
    call_id = result["callId"]
    await until_state(d, call_id, "speaking", "active", "answered")
    first = await rpc(d, "voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"})
    assert first == {"success": True, "transcript": "Yes, Tuesday works."}
    call = sim.only_call()
    stale_state = call.client_state
    assert stale_state is not None and ":turn:" in base64.b64decode(stale_state).decode()
    assert len(sim.commands("transcription_start")) == 1

    second = asyncio.create_task(
        rpc(d, "voicecall.continue", {"callId": call_id, "message": "Anything else?"})
    )
    await sim.wait_for(
        lambda: call.spoken[-1:] == ["Anything else?"] and call.client_state != stale_state
    )
    current = call.client_state
    call.client_state = stale_state
    late = await sim.caller_says(call, "Yes, Tuesday works, I said.")
    assert late is not None and late.status == 200
    call.client_state = current
    await sim.caller_says(call, "No, that is all.")
    assert await second == {"success": True, "transcript": "No, that is all."}
    record = await rpc(d, "voicecall.status", {"callId": call_id})
    users = [t["text"] for t in record["call"]["transcript"] if t["speaker"] == "user"]
    assert users == ["Yes, Tuesday works.", "No, that is all."]
    assert record["call"]["metadata"]["turnCount"] == 2
    assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}
    assert (await until_state(d, call_id, "hangup-bot"))["state"] == "hangup-bot"
    await sim.wait_for(lambda: bool(sim.delivered("call.hangup")))
    # Hanging up an already-ended call (Telnyx 422/90018) is still a success.
    assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}


async def test_telnyx_inbound_allowlist_answers_one_caller_and_rejects_another(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """An allowlisted caller is answered (idempotent command_id) and greeted; others rejected."""
    extra = 'inbound_policy = "allowlist"\nallow_from = ["+14155550123"]\n'
    d = await start(make_daemon, config(sim, extra))
    url = (await rpc(d, "daemon.status"))["webhookUrl"]
    allowed = await sim.inbound("+14155550123", FROM, url)
    await sim.wait_for(lambda: allowed.answered and bool(allowed.spoken))
    answer = sim.commands("answer")[0]
    calls = (await rpc(d, "voicecall.status"))["calls"]
    assert len(calls) == 1 and calls[0]["direction"] == "inbound"
    assert answer.body["command_id"] == f"voicecall-answer-{calls[0]['callId']}"
    assert allowed.spoken == ["Hello! How can I help you today?"]
    await sim.wait_for(lambda: allowed.transcribing)

    refused = await sim.inbound("+15550009999", FROM, url)
    await sim.wait_for(lambda: refused.ended)
    assert [r.path for r in sim.commands("reject")] == [
        f"/v2/calls/{refused.call_control_id}/actions/reject"
    ]
    assert not refused.answered
    listed = (await rpc(d, "voicecall.list", {}))["calls"]
    rejected = [c for c in listed if c["from"] == "+15550009999"]
    assert rejected[0]["state"] == "hangup-bot"


async def test_telnyx_inbound_past_max_concurrent_calls_is_rejected_busy(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A caller refused for want of room (not by the policy) is rejected with `USER_BUSY`
    (a busy signal, and Telnyx reports `user_busy`), where the policy's refusal says
    `CALL_REJECTED`."""
    d = await start(make_daemon, config(sim, 'inbound_policy = "open"\nmax_concurrent_calls = 1\n'))
    url = (await rpc(d, "daemon.status"))["webhookUrl"]
    first = await sim.inbound("+14155550123", FROM, url)
    await sim.wait_for(lambda: first.answered)
    second = await sim.inbound("+15550009999", FROM, url)
    await sim.wait_for(lambda: second.ended)
    (reject,) = sim.commands("reject")
    assert reject.path == f"/v2/calls/{second.call_control_id}/actions/reject"
    assert reject.body["cause"] == "USER_BUSY"
    assert not second.answered


async def test_telnyx_replayed_webhook_changes_nothing(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A byte-identical second delivery is answered 200 and not applied."""
    d = await start(make_daemon, config(sim))
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": "Hello", "to": TO, "mode": "conversation"})
    )["callId"]
    await until_state(d, call_id, "speaking", "active", "answered")
    said = await sim.caller_says(sim.only_call(), "Hello there")
    assert said is not None
    replay = await sim.replay(said)
    assert (said.status, replay.status, replay.reply) == (200, 200, said.reply)
    record = (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]
    assert [t["text"] for t in record["transcript"] if t["speaker"] == "user"] == ["Hello there"]


async def test_telnyx_retried_webhook_with_same_event_id_applies_once(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A Telnyx retry (same data.id, new signature) is dropped by the dedupe key."""
    d = await start(make_daemon, config(sim))
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": "Hello", "to": TO, "mode": "conversation"})
    )["callId"]
    await until_state(d, call_id, "speaking", "active", "answered")
    said = await sim.caller_says(sim.only_call(), "Hello there")
    assert said is not None
    retry = await sim.resend(said)
    assert retry.status == 200
    record = (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]
    assert [t["text"] for t in record["transcript"] if t["speaker"] == "user"] == ["Hello there"]


async def test_telnyx_hangup_before_initiated_never_creates_a_call(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Out of order: call.hangup delivered before call.initiated leaves no call, no answer."""
    d = await start(make_daemon, config(sim, 'inbound_policy = "open"\n'))
    url = (await rpc(d, "daemon.status"))["webhookUrl"]
    sim.hold = True
    ghost = await sim.inbound("+14155550000", FROM, url)
    await sim.caller_hangup(ghost, "originator_cancel", "caller")
    sent = await sim.release(reverse=True)
    assert [s.event_type for s in sent] == ["call.hangup", "call.initiated"]
    assert all(s.status == 200 for s in sent)
    assert not sim.commands("answer")
    assert (await rpc(d, "voicecall.list", {}))["calls"] == []


async def test_telnyx_hangup_causes_map_to_end_states(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """user_busy ends busy; the callee hanging up an answered call is hangup-user."""
    d = await start(make_daemon, config(sim))
    sim.outcome = "user_busy"
    busy = await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO})
    assert (await until_state(d, busy["callId"], "busy"))["endReason"] == "busy"
    sim.outcome = None
    live = await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO, "mode": "conversation"})
    await until_state(d, live["callId"], "speaking", "active", "answered")
    call = next(c for c in sim.calls.values() if not c.ended)
    await sim.caller_hangup(call, "normal_clearing", "callee")
    assert (await until_state(d, live["callId"], "hangup-user"))["state"] == "hangup-user"


async def test_telnyx_replay_after_restart_is_ignored(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A delivery replayed after a daemon restart has no side effects (store-backed cache)."""
    port = free_port()
    d = await start(make_daemon, config(sim, port=port))
    result = await rpc(
        d, "voicecall.initiate", {"message": "Hello", "to": TO, "mode": "conversation"}
    )
    call_id = result["callId"]
    await until_state(d, call_id, "speaking", "active", "answered")
    call = sim.only_call()
    said = await sim.caller_says(call, "Before the restart")
    assert said is not None and said.status == 200
    await asyncio.to_thread(d.stop)
    await asyncio.to_thread(d.start)
    replay = await sim.replay(said)
    assert replay.status == 200
    record = (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]
    assert [t["text"] for t in record["transcript"] if t["speaker"] == "user"] == [
        "Before the restart"
    ]
    assert record["state"] not in ("completed", "hangup-bot")
    assert len(sim.commands("dial")) == 1


async def test_telnyx_kill9_restart_reconciles_without_redialling(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """After kill -9: a call Telnyx ended is closed, a live one stays, nothing re-dials."""
    port = free_port()
    d = await start(make_daemon, config(sim, port=port))
    ids = []
    for _ in range(2):
        result = await rpc(
            d, "voicecall.initiate", {"message": "Hello", "to": TO, "mode": "conversation"}
        )
        ids.append(result["callId"])
        await until_state(d, result["callId"], "speaking", "active", "answered")
    await asyncio.to_thread(d.kill9)
    gone = next(
        c
        for c in sim.calls.values()
        if c.client_state and ids[0] in base64.b64decode(c.client_state).decode()
    )
    gone.ended = True  # Telnyx ended it while we were down; its webhook never arrived
    await asyncio.to_thread(d.start)
    ended = await until_state(d, ids[0], "completed")
    assert ended["endReason"] == "completed"
    alive = (await rpc(d, "voicecall.status", {"callId": ids[1]}))["call"]
    assert alive["state"] in ("speaking", "active", "answered")
    assert len(sim.commands("dial")) == 2
    status_gets = [r for r in sim.requests if r.method == "GET"]
    assert {r.path for r in status_gets} == {f"/v2/calls/{c}" for c in sim.calls}


async def test_telnyx_who_hung_up_follows_source_and_the_calls_direction(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`call.hangup` carries no direction (the real captures): an inbound caller's
    normal_clearing is hangup-user (was completed); an outbound call the carrier timed out is
    no-answer; a `not_found` number is failed (was completed/unknown)."""
    d = await start(make_daemon, config(sim, 'inbound_policy = "open"\n'))
    url = (await rpc(d, "daemon.status"))["webhookUrl"]
    call = await sim.inbound("+14155550123", FROM, url)
    await sim.wait_for(lambda: call.answered and bool(call.spoken), timeout=10)
    assert all(
        "direction" not in json.loads(dl.body)["data"]["payload"]
        for dl in sim.deliveries
        if dl.event_type != "call.initiated"
    )
    inbound_id = (await rpc(d, "voicecall.list", {}))["calls"][0]["callId"]
    await sim.caller_hangup(call)  # normal_clearing from the caller
    assert (await until_state(d, inbound_id, "hangup-user"))["endReason"] == "hangup-user"
    for outcome, state in (("timeout", "no-answer"), ("not_found", "failed")):
        sim.outcome = outcome
        placed = await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO})
        assert (await until_state(d, placed["callId"], state))["state"] == state
    assert sim.schema_errors == []

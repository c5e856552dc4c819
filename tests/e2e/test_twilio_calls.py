"""Twilio end to end: the real daemon and CLI against the local Twilio simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import pytest

from tests.configs import twilio_config
from tests.harness import DaemonHarness, query
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.twilio import AUTH_TOKEN, Delivery, SimCall, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"


def config(sim: TwilioSimulator, extra: str = "", delay: int = 0) -> str:
    """A daemon config pointing at the simulator; `extra`: top-level keys."""
    return twilio_config(sim, top=extra, hangup_delay=delay)


def kinds(sim: TwilioSimulator, kind: str) -> list[Delivery]:
    """The webhooks of one kind (status, voice, redirect, gather) delivered so far."""
    return [dl for dl in sim.deliveries if dl.kind == kind]


async def webhook_url(d: DaemonHarness) -> str:
    """The daemon's webhook URL, from `daemon.status`."""
    return str((await rpc(d, "daemon.status"))["webhookUrl"])


async def test_twilio_notify_call_inline_twiml_ends_hangup_bot(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Calls create carries To/From/Timeout/Twiml and four StatusCallbackEvent values; the
    message is said, the call hangs itself up and ends `hangup-bot`."""
    d = await start(make_daemon, config(sim, delay=1))
    done = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Your table is ready", "--json")
    assert done.returncode == 0, done.stderr
    call_id = json.loads(done.stdout)["callId"]
    record = await until_state(d, call_id, "hangup-bot", "completed")
    assert record["state"] == "hangup-bot"
    create = sim.creates[0]
    assert create.get("To") == TO and create.get("From") == FROM
    assert create.get("Timeout") == "30"
    assert create.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert query(create.get("StatusCallback") or "") == {
        "callId": call_id,
        "type": "status",
        "mode": "notify",
    }
    assert create.get("Url") is None
    twiml = create.get("Twiml") or ""
    assert '<Say voice="Polly.Joanna">Your table is ready</Say>' in twiml
    assert '<Pause length="1" />' in twiml and twiml.endswith("<Hangup /></Response>")
    call = sim.only_call()
    assert record["providerCallId"] == call.sid
    assert call.spoken == ["Your table is ready"] and call.ended_by == "twiml"
    assert [dl.params["CallStatus"] for dl in kinds(sim, "status")] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    await sim.wait_for(lambda: all(dl.status for dl in sim.deliveries))
    assert all(dl.status == 200 for dl in sim.deliveries)


async def test_twilio_conversation_two_turns_and_a_stale_turn_token(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The opening line rides on the Url fetch; each `continue` live-updates the call with
    Say + Gather(turnToken); the caller's SpeechResult comes back; an old token is ignored."""
    d = await start(make_daemon, config(sim))
    call_id = (
        await rpc(
            d,
            "voicecall.initiate",
            {"message": "Hi, it's the clinic.", "to": TO, "mode": "conversation"},
        )
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and sim.only_call().spoken != [])
    call = sim.only_call()
    assert call.spoken == ["Hi, it's the clinic."]
    create = sim.creates[0]
    assert query(create.get("Url") or "") == {"callId": call_id}
    assert create.get("Twiml") is None
    # The keep-alive holds the line after the opening line.
    assert "<Redirect" in call.documents[0] and "flow=hold" in call.documents[0]

    sim.say_next("Yes, Tuesday works.")
    first = await rpc(d, "voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"})
    assert first == {"success": True, "transcript": "Yes, Tuesday works."}
    gathers = kinds(sim, "gather")
    assert len(gathers) == 1, [(dl.kind, dl.url) for dl in sim.deliveries]
    token1 = query(gathers[0].url)["turnToken"]

    sim.say_next("Ten is fine.")
    second = await rpc(d, "voicecall.continue", {"callId": call_id, "message": "At ten?"})
    assert second == {"success": True, "transcript": "Ten is fine."}
    token2 = query(kinds(sim, "gather")[1].url)["turnToken"]
    assert token1 != token2
    assert call.spoken == ["Hi, it's the clinic.", "Does Tuesday work?", "At ten?"]
    updates = sim.recorded("POST", f"/Calls/{call.sid}.json")
    assert len(updates) == 2 and all("<Gather" in (u.get("Twiml") or "") for u in updates)

    # A Gather result carrying the first (stale) token: accepted by HTTP, ignored by the engine.
    stale = await sim.replay(gathers[0])
    assert stale.status == 200
    forged = Delivery(gathers[0].url.replace("n=", "n=x"), dict(gathers[0].params), {}, "gather")
    forged.params["SpeechResult"] = "Actually, Monday."
    forged.headers = sim.sign(forged.url, forged.params)
    await sim.post(forged)
    record = await rpc(d, "voicecall.status", {"callId": call_id})
    texts = [t["text"] for t in record["call"]["transcript"] if t["speaker"] == "user"]
    assert "Actually, Monday." not in texts

    end = await asyncio.to_thread(d.cli, "end", "--call-id", call_id)
    assert end.returncode == 0, end.stderr
    await until_state(d, call_id, "hangup-bot")
    await sim.wait_for(lambda: call.ended)
    assert call.ended_by == "api"


async def test_twilio_callee_hangs_up_a_conversation(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The callee hanging up ends the call `completed` (Twilio's status callback)."""
    d = await start(make_daemon, config(sim))
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": "Hello", "to": TO, "mode": "conversation"})
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and sim.only_call().spoken == ["Hello"])
    await sim.callee_hangup(sim.only_call().sid)
    record = await until_state(d, call_id, "completed", "hangup-user")
    assert record["endReason"] in ("completed", "hangup-user")


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
async def test_twilio_unanswered_outcomes(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness], outcome: str
) -> None:
    """busy / no-answer / failed status callbacks end the call in that state."""
    d = await start(make_daemon, config(sim))
    sim.outcome = outcome
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO}))["callId"]
    record = await until_state(d, call_id, outcome)
    assert record["answeredAt"] is None


async def test_twilio_inbound_allowed_gets_greeting_and_gather(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """An allow-listed caller is answered with the greeting and a Gather; speech is recorded."""
    extra = (
        'inbound_policy = "allowlist"\nallow_from = ["+15550109999"]\n'
        'inbound_greeting = "Hi, you reached the bot."'
    )
    d = await start(make_daemon, config(sim, extra))
    url = await webhook_url(d)
    call = await sim.inbound("+15550109999", FROM, url)
    await sim.wait_for(lambda: call.gathering)
    assert call.spoken == ["Hi, you reached the bot."]
    assert "<Gather" in call.documents[0] and "turnToken=" in call.documents[0]
    await sim.caller_says(call, "What are your hours?")
    await sim.wait_for(lambda: any(dl.status for dl in kinds(sim, "gather")))
    gather = kinds(sim, "gather")[0]
    assert gather.status == 200 and gather.params["SpeechResult"] == "What are your hours?"
    listed = (await rpc(d, "voicecall.list", {}))["calls"]
    (record,) = [c for c in listed if c["providerCallId"] == call.sid]
    assert record["direction"] == "inbound" and record["from"] == "+15550109999"
    assert [t["text"] for t in record["transcript"]] == [
        "Hi, you reached the bot.",
        "What are your hours?",
    ]
    assert record["state"] not in ("hangup-bot", "completed")


async def test_twilio_inbound_rejected_once(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A caller the policy refuses gets `<Reject/>`, once; a replay gets an empty Response and
    no REST hang-up is ever sent."""
    d = await start(make_daemon, config(sim, 'inbound_policy = "disabled"'))
    url = await webhook_url(d)
    call = await sim.inbound("+15550109999", FROM, url)
    await sim.wait_for(lambda: call.ended)
    assert call.ended_by == "reject"
    voice = kinds(sim, "voice")
    assert len(voice) == 1 and "<Reject />" in voice[0].reply
    again = await sim.replay(voice[0])
    assert again.status == 200 and "<Reject" not in again.reply and "<Response />" in again.reply
    assert sim.recorded("POST", f"/Calls/{call.sid}.json") == []
    listed = await rpc(d, "voicecall.list", {})
    inbound = [c for c in listed["calls"] if c.get("providerCallId") == call.sid]
    assert len(inbound) == 1 and inbound[0]["state"] == "hangup-bot"


async def test_twilio_provider_error_is_rpc_32003_and_cli_exit_1(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Twilio refusing the create is RPC error -32003 naming status and code, CLI exit 1,
    and the auth token appears nowhere."""
    d = await start(make_daemon, config(sim))
    sim.fail_create = (400, 21215, "Account not authorized to call +15550001234.")
    done = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Hi")
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "HTTP 400" in done.stderr and "21215" in done.stderr
    assert AUTH_TOKEN not in done.stderr + done.stdout
    from daemon.rpc.protocol import RpcRemoteError

    with pytest.raises(RpcRemoteError) as info:
        await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO})
    assert info.value.code == -32003
    assert AUTH_TOKEN not in d.log_text()


async def _live_conversation(sim: TwilioSimulator, d: DaemonHarness) -> tuple[str, SimCall]:
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": "Hello", "to": TO, "mode": "conversation"})
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and sim.only_call().spoken == ["Hello"])
    await until_state(d, call_id, "speaking", "answered", "active")
    return call_id, sim.only_call()


async def test_twilio_restart_reconciles_ended_call_without_redialling(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """kill -9 mid-call; the callee hangs up meanwhile; on restart Calls fetch says completed:
    the call is closed here, and Twilio saw exactly one create."""
    text = config(sim)
    d = await start(make_daemon, text)
    call_id, call = await _live_conversation(sim, d)
    await asyncio.to_thread(d.kill9)
    await sim.callee_hangup(call.sid)  # its status callback finds nobody listening
    await asyncio.to_thread(d.start)
    record = await until_state(d, call_id, "completed", "hangup-user")
    assert record["endedAt"] is not None
    assert len(sim.creates) == 1
    assert sim.recorded("GET", f"/Calls/{call.sid}.json")


async def test_twilio_restart_keeps_call_when_status_unknown(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """kill -9 mid-call; Calls fetch fails with 500 on restart: the call is kept (timers)."""
    d = await start(make_daemon, config(sim))
    call_id, call = await _live_conversation(sim, d)
    await asyncio.to_thread(d.kill9)
    sim.fetch_error = 500
    await asyncio.to_thread(d.start)
    await sim.wait_for(lambda: bool(sim.recorded("GET", f"/Calls/{call.sid}.json")))
    status = await rpc(d, "voicecall.status", {"callId": call_id})
    assert status["call"]["state"] not in ("completed", "hangup-user", "hangup-bot", "failed")
    assert len(sim.creates) == 1


async def test_twilio_speak_and_dtmf_through_the_cli_with_21220_retried(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`voicecall speak` and `voicecall dtmf` live-update the call (Say / Play digits, each with
    the keep-alive); two 21220 refusals in a row are retried transparently."""
    d = await start(make_daemon, config(sim))
    call_id, call = await _live_conversation(sim, d)
    sim.fail_updates_21220 = 2
    done = await asyncio.to_thread(d.cli, "speak", "--call-id", call_id, "-m", "One moment.")
    assert done.returncode == 0, done.stderr
    await sim.wait_for(lambda: "One moment." in call.spoken)
    done = await asyncio.to_thread(d.cli, "dtmf", "--call-id", call_id, "--digits", "12w#")
    assert done.returncode == 0, done.stderr
    await sim.wait_for(lambda: call.digits == ["12w#"])
    updates = sim.recorded("POST", f"/Calls/{call.sid}.json")
    assert len(updates) == 4  # 2 refused + speak + dtmf
    assert all("flow=hold" in (u.get("Twiml") or "") for u in updates)
    assert not call.ended


async def test_twilio_speak_during_a_pending_continue_keeps_listening(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`speak` while a `continue` waits re-issues the same turn's Gather, so the caller's
    answer still reaches the waiting `continue` (it used to replace the Gather with a Say)."""
    d = await start(make_daemon, config(sim))
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": "Hello.", "to": TO, "mode": "conversation"})
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and sim.only_call().spoken != [])
    call = sim.only_call()
    waiting = asyncio.create_task(
        rpc(d, "voicecall.continue", {"callId": call_id, "message": "Which day suits you?"})
    )
    updates_path = f"/Calls/{call.sid}.json"
    await sim.wait_for(lambda: len(sim.recorded("POST", updates_path)) == 1)
    first = sim.recorded("POST", updates_path)[0].get("Twiml") or ""
    token = first.split("turnToken=")[1].split("&")[0].split('"')[0]
    await rpc(d, "voicecall.speak", {"callId": call_id, "message": "Take your time."})
    second = sim.recorded("POST", updates_path)[1].get("Twiml") or ""
    assert "Take your time." in second and "<Gather" in second
    assert f"turnToken={token}" in second
    assert not waiting.done()
    await rpc(d, "voicecall.end", {"callId": call_id})
    with contextlib.suppress(Exception):
        await waiting

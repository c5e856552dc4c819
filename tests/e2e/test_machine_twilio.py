"""Twilio machine detection (SPEC 13) and per-number voices (SPEC 14), end to end: the real
daemon and CLI against the Twilio simulator, which posts signed `AsyncAmdStatusCallback`s."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import pytest

from daemon.rpc.protocol import RpcRemoteError
from tests.configs import twilio_config
from tests.harness import DaemonHarness, query
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.twilio import ACCOUNT_SID, Delivery, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"


def free_port() -> int:
    """A TCP port nobody listens on right now (a restarted daemon must keep its webhook URL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config(sim: TwilioSimulator, machine: str = "", top: str = "", port: int = 0) -> str:
    """A daemon config pointing at the simulator, machine detection on."""
    return twilio_config(
        sim,
        top=top,
        port=port,
        hangup_delay=0,
        extra=(f"[machine_detection]\nenabled = true\ngreeting_timeout_seconds = 2\n{machine}"),
    )


def amd_deliveries(sim: TwilioSimulator) -> list[Delivery]:
    """The AsyncAmdStatusCallback requests posted so far."""
    return [dl for dl in sim.deliveries if dl.kind == "amd"]


async def test_notify_on_a_machine_leaves_the_message_after_the_beep(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`DetectMessageEnd` + `AsyncAmd`: the call is placed with our webhook (not inline TwiML),
    holds silently, and once `AnsweredBy=machine_end_beep` arrives the message is said whole
    after the greeting; the call ends `voicemail` with the verdict in its metadata."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim))
    done = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Your table is ready", "--json")
    assert done.returncode == 0, done.stderr
    call_id = json.loads(done.stdout)["callId"]
    record = await until_state(d, call_id, "voicemail")
    create = sim.creates[0]
    assert create.get("MachineDetection") == "DetectMessageEnd"
    assert create.get("AsyncAmd") == "true"
    assert create.get("MachineDetectionTimeout") == "30"
    assert create.get("AsyncAmdStatusCallbackMethod") == "POST"
    assert query(create.get("AsyncAmdStatusCallback") or "") == {"callId": call_id, "type": "amd"}
    assert create.get("Twiml") is None and query(create.get("Url") or "") == {"callId": call_id}
    call = sim.only_call()
    assert call.heard.said_into_greeting() == []
    assert call.heard.said_after_greeting() == ["Your table is ready"]
    (amd,) = amd_deliveries(sim)
    assert amd.status == 200 and amd.params["AnsweredBy"] == "machine_end_beep"
    assert set(amd.params) == {"AccountSid", "CallSid", "AnsweredBy", "MachineDetectionDuration"}
    meta = record["metadata"]
    assert (meta["answeredBy"], meta["answeredByRaw"], meta["beepDetected"]) == (
        "machine",
        "machine_end_beep",
        True,
    )


async def test_enable_mode_waits_the_greeting_timeout_then_speaks(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`mode = "detect"` asks `MachineDetection=Enable`: `machine_start` says nothing about
    the greeting, so the message waits `greeting_timeout_seconds` (it still lands after it)."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim, 'mode = "detect"'))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Call us back", "to": TO}))["callId"]
    record = await until_state(d, call_id, "voicemail")
    assert sim.creates[0].get("MachineDetection") == "Enable"
    assert record["metadata"]["answeredByRaw"] == "machine_start"
    assert "beepDetected" not in record["metadata"]
    assert sim.only_call().heard.said_after_greeting() == ["Call us back"]


async def test_hangup_policy_and_a_fax(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`on_machine_notify = "hangup"` hangs up through the REST API at once; a fax is hung up
    whatever the policy; both end `voicemail` with nothing said."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim, 'on_machine_notify = "hangup"'))
    first = (await rpc(d, "voicecall.initiate", {"message": "Never said", "to": TO}))["callId"]
    await until_state(d, first, "voicemail")
    sim.callee.kind = "fax"
    second = (await rpc(d, "voicecall.initiate", {"message": "Nor this", "to": TO}))["callId"]
    record = await until_state(d, second, "voicemail")
    assert record["metadata"]["answeredBy"] == "fax"
    for call in sim.calls.values():
        await sim.wait_for(lambda c=call: c.ended)  # type: ignore[misc]
        assert call.spoken == [] and call.ended_by == "api"


async def test_conversation_on_a_machine_fails_a_pending_continue(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The default `on_machine_conversation = "hangup"`: a `continue` sent while detection
    runs exits 1 naming voicemail, and the opening line is never said."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim))
    call_id = (
        await rpc(
            d, "voicecall.initiate", {"message": "Hi there", "to": TO, "mode": "conversation"}
        )
    )["callId"]
    done = await asyncio.to_thread(d.cli, "continue", "--call-id", call_id, "-m", "Hello?")
    assert done.returncode == 1 and "voicemail" in done.stderr
    await until_state(d, call_id, "voicemail")
    assert sim.only_call().spoken == []


async def test_a_person_gets_the_message_without_waiting_for_a_greeting(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`AnsweredBy=human`: the held call is updated with the message and ends `hangup-bot`."""
    d = await start(make_daemon, config(sim))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hello person", "to": TO}))["callId"]
    record = await until_state(d, call_id, "hangup-bot")
    assert record["metadata"]["answeredBy"] == "human"
    call = sim.only_call()
    assert call.spoken == ["Hello person"] and call.ended_by == "twiml"


async def test_a_forged_amd_callback_is_refused(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """AMD callbacks go through the same signature check: a forged verdict gets 401 and
    changes nothing (the person still hears the message)."""
    sim.callee.decide_seconds = 0.8
    d = await start(make_daemon, config(sim))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO}))["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and sim.only_call().answered)
    call = sim.only_call()
    url = sim.creates[0].get("AsyncAmdStatusCallback") or ""
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": call.sid,
        "AnsweredBy": "machine_start",
        "MachineDetectionDuration": "100",
    }
    forged = await sim.post(Delivery(url, params, {"X-Twilio-Signature": "bm9wZQ=="}, "forged"))
    assert forged.status == 401
    record = await until_state(d, call_id, "hangup-bot")
    assert record["metadata"]["answeredBy"] == "human"


async def test_inbound_call_to_a_number_table_uses_its_greeting_and_voice(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The `To` of Twilio's voice request picks `[numbers."+E164"]`: its greeting, its
    `<Say>` voice (nova -> Polly.Salli); `metadata.number` names the table."""
    top = (
        'inbound_policy = "open"\n'
        '[numbers."+15550102222"]\ninbound_greeting = "Bakery, hello."\n'
        '[numbers."+15550102222".tts.openai]\nvoice = "nova"\n'
    )
    d = await start(make_daemon, config(sim, top=top))
    url = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound("+15550109999", "+15550102222", url)
    await sim.wait_for(lambda: call.gathering)
    assert call.spoken == ["Bakery, hello."]
    assert '<Say voice="Polly.Salli">Bakery, hello.</Say>' in call.documents[0]
    listed = (await rpc(d, "voicecall.list", {}))["calls"]
    (record,) = [c for c in listed if c["providerCallId"] == call.sid]
    assert record["metadata"]["number"] == "+15550102222"


async def test_a_late_machine_verdict_fails_the_pending_continue(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """No verdict within `timeout_seconds` (+ grace): the conversation goes on as for a person;
    a `continue` is listening when `machine_start` finally arrives, and with the default
    `on_machine_conversation = "hangup"` the call is hung up and that `continue` fails with
    -32002 naming voicemail."""
    sim.callee.kind = "machine"
    sim.callee.decide_seconds = 8.0  # well after the 3 s hold, with room for a busy machine
    sim.listen_seconds = 30.0
    d = await start(make_daemon, config(sim, 'mode = "detect"\ntimeout_seconds = 1'))
    call_id = (
        await rpc(
            d, "voicecall.initiate", {"message": "Hi there", "to": TO, "mode": "conversation"}
        )
    )["callId"]
    await sim.wait_for(
        lambda: bool(sim.calls) and sim.only_call().spoken == ["Hi there"], timeout=15
    )
    with pytest.raises(RpcRemoteError) as failure:
        await rpc(d, "voicecall.continue", {"callId": call_id, "message": "Hello?"})
    assert failure.value.code == -32002 and "voicemail" in failure.value.message
    assert sim.only_call().spoken == ["Hi there", "Hello?"]  # it was listening
    record = await until_state(d, call_id, "voicemail")
    assert record["metadata"]["answeredBy"] == "machine"
    assert sim.only_call().ended_by == "api"


async def test_a_call_held_for_its_verdict_is_held_again_after_kill9(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """kill -9 while detection is still deciding: the restored call waits for the verdict
    again (not hung up as a notify call whose message was played) and leaves the message after
    the beep; nothing is re-dialled."""
    sim.callee.kind = "machine"
    sim.callee.greeting_seconds = 6.0
    d = await start(make_daemon, config(sim, port=free_port()))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "After the restart", "to": TO}))[
        "callId"
    ]
    await until_state(d, call_id, "answered")  # held: answered, nothing said yet
    await sim.wait_for(
        lambda: any(dl.kind == "voice" and dl.status == 200 for dl in sim.deliveries), timeout=10
    )
    await asyncio.to_thread(d.kill9)
    await asyncio.to_thread(d.start)
    record = await until_state(d, call_id, "voicemail")
    assert record["metadata"]["answeredBy"] == "machine"
    call = sim.only_call()
    assert call.heard.said_after_greeting() == ["After the restart"]
    assert call.heard.said_into_greeting() == []
    assert len(sim.creates) == 1

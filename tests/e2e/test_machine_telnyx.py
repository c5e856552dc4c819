"""Telnyx machine detection (SPEC 13), end to end: the real daemon and CLI against the Telnyx
simulator, which sends signed `call.machine.*` webhooks in Telnyx's shapes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
import pytest

from tests.configs import telnyx_config
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.telnyx import TelnyxSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TelnyxSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"


def config(sim: TelnyxSimulator, machine: str = "") -> str:
    """A daemon config pointing at the simulator, machine detection on."""
    return telnyx_config(
        sim,
        hangup_delay=0,
        extra=(f"[machine_detection]\nenabled = true\ngreeting_timeout_seconds = 2\n{machine}"),
    )


async def events_of(d: DaemonHarness, call_id: str, kind: str) -> list[dict[str, object]]:
    """The stored events of one type, oldest first."""
    done = await asyncio.to_thread(
        d.cli, "tail", "--call-id", call_id, "--since", "100", "--no-follow", "--json"
    )
    assert done.returncode == 0, done.stderr
    return [e for line in done.stdout.splitlines() if (e := json.loads(line))["type"] == kind]


async def test_notify_on_a_machine_speaks_after_greeting_ended(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The dial asks `answering_machine_detection = greeting_end`; after
    `call.machine.detection.ended` (machine) the message waits for
    `call.machine.greeting.ended` (beep_detected), is spoken whole, and the call ends
    `voicemail`."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim))
    done = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Your order shipped", "--json")
    assert done.returncode == 0, done.stderr
    call_id = json.loads(done.stdout)["callId"]
    record = await until_state(d, call_id, "voicemail")
    (dial,) = sim.commands("dial")
    assert dial.body["answering_machine_detection"] == "greeting_end"
    assert dial.body["answering_machine_detection_config"] == {"total_analysis_time_millis": 30000}
    assert sim.schema_errors == []
    (call,) = sim.calls.values()
    assert call.heard.said_into_greeting() == []
    assert call.heard.said_after_greeting() == ["Your order shipped"]
    meta = record["metadata"]
    assert (meta["answeredBy"], meta["answeredByRaw"], meta["beepDetected"]) == (
        "machine",
        "machine",
        True,
    )
    machine = await events_of(d, call_id, "call.machine")
    assert [(m["result"], m.get("beepDetected"), m.get("greetingEnded")) for m in machine] == [
        ("machine", None, None),
        ("machine", True, True),
    ]


async def test_detect_mode_has_no_greeting_signal(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`mode = "detect"` dials with `detect`: no greeting webhook comes, so the message waits
    `greeting_timeout_seconds` and still lands after the greeting."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim, 'mode = "detect"'))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Later", "to": TO}))["callId"]
    await until_state(d, call_id, "voicemail")
    assert sim.commands("dial")[0].body["answering_machine_detection"] == "detect"
    (call,) = sim.calls.values()
    assert call.heard.said_after_greeting() == ["Later"]
    assert [d.event_type for d in sim.deliveries if "greeting" in d.event_type] == []


async def test_conversation_hangup_policy_and_a_pending_continue(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A conversation call on a machine hangs up (actions/hangup): the `continue` waiting for
    it fails naming voicemail; nothing was said."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim))
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO, "mode": "conversation"})
    )["callId"]
    done = await asyncio.to_thread(d.cli, "continue", "--call-id", call_id, "-m", "Hello?")
    assert done.returncode == 1 and "voicemail" in done.stderr
    await until_state(d, call_id, "voicemail")
    assert len(sim.commands("hangup")) == 1 and sim.commands("speak") == []


async def test_a_person_hears_the_message(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`result = human`: the message is spoken at once and the call ends `hangup-bot`."""
    d = await start(make_daemon, config(sim))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hello", "to": TO}))["callId"]
    record = await until_state(d, call_id, "hangup-bot")
    assert record["metadata"]["answeredBy"] == "human"
    assert [s.body["payload"] for s in sim.commands("speak")] == ["Hello"]


async def test_premium_webhooks_are_understood(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`call.machine.premium.detection.ended` (machine) and `...premium.greeting.ended`
    (no_beep_detected), as Telnyx sends them for premium AMD, drive the same policy; a
    retried delivery (same event id) is applied once."""
    sim.callee.decide_seconds = 30.0  # the simulator's own verdict never comes in time
    d = await start(make_daemon, config(sim))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Premium", "to": TO}))["callId"]
    await sim.wait_for(lambda: any(c.answered for c in sim.calls.values()))
    (call,) = sim.calls.values()
    verdict = await sim.send(
        call,
        "call.machine.premium.detection.ended",
        {"result": "machine", "from": call.from_, "to": call.to},
    )
    assert verdict is not None and verdict.status == 200
    assert (await sim.resend(verdict)).status == 200
    await sim.send(
        call,
        "call.machine.premium.greeting.ended",
        {"result": "no_beep_detected", "from": call.from_, "to": call.to},
    )
    record = await until_state(d, call_id, "voicemail")
    assert record["metadata"]["answeredByRaw"] == "machine"
    assert record["metadata"]["beepDetected"] is False
    machine = await events_of(d, call_id, "call.machine")
    assert [(m["result"], m.get("beepDetected")) for m in machine] == [
        ("machine", None),
        ("machine", False),
    ]
    assert [s.body["payload"] for s in sim.commands("speak")] == ["Premium"]


async def test_a_forged_machine_webhook_is_refused(
    sim: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """AMD webhooks are verified like any other: a bad Ed25519 signature gets 401."""
    sim.callee.decide_seconds = 1.0
    d = await start(make_daemon, config(sim))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO}))["callId"]
    await sim.wait_for(lambda: any(c.answered for c in sim.calls.values()))
    (call,) = sim.calls.values()
    _, body = sim.event_body(call, "call.machine.detection.ended", {"result": "machine"})
    headers = sim.sign(body)
    headers["telnyx-signature-ed25519"] = headers["telnyx-signature-ed25519"][::-1]
    async with (
        aiohttp.ClientSession() as http,
        http.post(call.webhook_url, data=body, headers=headers) as response,
    ):
        assert response.status == 401
    record = await until_state(d, call_id, "hangup-bot")
    assert record["metadata"]["answeredBy"] == "human"

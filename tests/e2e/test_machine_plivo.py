"""Plivo machine detection (SPEC 13), end to end: the real daemon and CLI against the Plivo
simulator, which calls `machine_detection_url` with Plivo's signed form (`Machine=true`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from tests.configs import plivo_config
from tests.harness import DaemonHarness, query
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.plivo import Delivery, PlivoSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = PlivoSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"


def config(sim: PlivoSimulator, machine: str = "") -> str:
    """A daemon config pointing at the simulator, machine detection on (2 s to decide)."""
    return plivo_config(
        sim,
        hangup_delay=0,
        extra=(
            "[machine_detection]\nenabled = true\ntimeout_seconds = 2\n"
            f"greeting_timeout_seconds = 1\n{machine}"
        ),
    )


def machine_deliveries(sim: PlivoSimulator) -> list[Delivery]:
    """The machine_detection_url requests sent so far."""
    return [dl for dl in sim.deliveries if query(dl.url).get("flow") == "machine"]


async def test_notify_on_a_machine_waits_the_greeting_then_leaves_the_message(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`machine_detection=true` with `machine_detection_time` and our URL; `Machine=true`
    arrives; Plivo never signals the greeting's end, so the message waits
    `greeting_timeout_seconds`, lands after the greeting, and the call ends `voicemail`."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim))
    done = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Your car is ready", "--json")
    assert done.returncode == 0, done.stderr
    call_id = json.loads(done.stdout)["callId"]
    record = await until_state(d, call_id, "voicemail")
    (create,) = [r for r in sim.requests if r.method == "POST" and r.path.endswith("/Call/")]
    assert create.body["machine_detection"] == "true"
    assert create.body["machine_detection_time"] == 2000
    assert create.body["machine_detection_method"] == "POST"
    assert query(create.body["machine_detection_url"]) == {"flow": "machine", "callId": call_id}
    (amd,) = machine_deliveries(sim)
    assert amd.status == 200 and amd.params["Machine"] == "true"
    assert amd.params["Event"] == "MachineDetection"
    call = next(iter(sim.calls.values()))
    assert call.heard.said_into_greeting() == []
    assert call.heard.said_after_greeting() == ["Your car is ready"]
    assert (record["metadata"]["answeredBy"], record["metadata"]["answeredByRaw"]) == (
        "machine",
        "Machine=true",
    )


async def test_a_person_without_a_callback_hears_the_message_after_the_decision_time(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Plivo calls the URL only for a machine: with no verdict by `machine_detection_time`
    (plus a grace) the call goes on as for a person, and no `call.machine` is published."""
    d = await start(make_daemon, config(sim))
    started = time.monotonic()
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hello", "to": TO}))["callId"]
    record = await until_state(d, call_id, "hangup-bot")
    assert time.monotonic() - started >= 2.0
    assert "answeredBy" not in record["metadata"]
    assert machine_deliveries(sim) == []
    assert next(iter(sim.calls.values())).spoken == ["Hello"]


async def test_machine_false_is_a_person(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`Machine=false` is a human verdict: the message goes out at once."""
    sim.report_humans = True
    d = await start(make_daemon, config(sim))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO}))["callId"]
    record = await until_state(d, call_id, "hangup-bot")
    assert record["metadata"]["answeredBy"] == "human"
    assert record["metadata"]["answeredByRaw"] == "Machine=false"


async def test_conversation_leave_message(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`on_machine_conversation = "leave-message"`: the opening line after the greeting, then
    the call hangs up, `voicemail`."""
    sim.callee.kind = "machine"
    d = await start(make_daemon, config(sim, 'on_machine_conversation = "leave-message"'))
    call_id = (
        await rpc(
            d,
            "voicecall.initiate",
            {"message": "Call the clinic", "to": TO, "mode": "conversation"},
        )
    )["callId"]
    await until_state(d, call_id, "voicemail")
    call = next(iter(sim.calls.values()))
    assert call.heard.said_after_greeting() == ["Call the clinic"]


async def test_a_forged_machine_callback_is_refused(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The machine_detection_url request is verified like any Plivo callback (V3)."""
    sim.report_humans = True
    sim.callee.decide_seconds = 1.0
    d = await start(make_daemon, config(sim))
    call_id = (await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO}))["callId"]
    await sim.wait_for(lambda: any(c.answered for c in sim.calls.values()))
    call = next(iter(sim.calls.values()))
    (create,) = [r for r in sim.requests if r.method == "POST" and r.path.endswith("/Call/")]
    url = create.body["machine_detection_url"]
    params = {"CallUUID": call.call_uuid, "Machine": "true", "Event": "MachineDetection"}
    headers = sim.sign(url, params)
    headers["X-Plivo-Signature-V3"] = "AAAA" + headers["X-Plivo-Signature-V3"][4:]
    forged = await sim.post(Delivery(url, params, headers))
    assert forged.status == 401
    record = await until_state(d, call_id, "hangup-bot")
    assert record["metadata"]["answeredBy"] == "human"

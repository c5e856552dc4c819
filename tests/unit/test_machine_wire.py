"""Machine detection on the wire (SPEC 13): each vendor's fixture shapes map to the normalised
result, and the engine policy picks the right action."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.config.model import MachineDetectionConfig
from daemon.engine.machine import MachineAction, decide, late_action
from daemon.model.events import CallMode, MachineResult
from daemon.model.state import CallState
from daemon.providers import machine
from daemon.providers.telnyx_wire import parse_webhook

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAMPLES = Path("/work/shared/vendor_samples")


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    ("answered_by", "result", "beep", "ended"),
    [
        ("human", MachineResult.HUMAN, None, False),
        ("machine_start", MachineResult.MACHINE, None, False),
        ("machine_end_beep", MachineResult.MACHINE, True, True),
        ("machine_end_silence", MachineResult.MACHINE, False, True),
        ("machine_end_other", MachineResult.MACHINE, False, True),
        ("fax", MachineResult.FAX, None, False),
        ("unknown", MachineResult.UNKNOWN, None, False),
    ],
)
def test_twilio_answered_by(
    answered_by: str, result: MachineResult, beep: bool | None, ended: bool
) -> None:
    report = machine.twilio_report(answered_by)
    assert report is not None
    assert (report.result, report.beep_detected, report.greeting_ended, report.raw) == (
        result,
        beep,
        ended,
        answered_by,
    )


def test_twilio_fixture_values_are_all_known() -> None:
    """Every AnsweredBy value Twilio documents maps to a result of its own."""
    values = load("twilio_amd_callbacks.json")["answered_by_values"]
    assert set(values) == set(machine.TWILIO_RESULTS)
    assert machine.twilio_report("") is None


def test_twilio_dial_params_use_the_sdk_names() -> None:
    beep = machine.twilio_dial_params(MachineDetectionConfig(), "https://x/cb?type=amd")
    assert beep == {
        "machine_detection": "DetectMessageEnd",
        "machine_detection_timeout": 30,
        "async_amd": "true",
        "async_amd_status_callback": "https://x/cb?type=amd",
        "async_amd_status_callback_method": "POST",
    }
    assert (
        machine.twilio_dial_params(MachineDetectionConfig(mode="detect"), "u")["machine_detection"]
        == "Enable"
    )


def test_telnyx_fixture_webhooks() -> None:
    """The four call.machine webhooks of the fixture, parsed as the daemon parses any Telnyx
    body, give the SPEC results (premium human_business -> human, no_beep -> no beep)."""
    reports = []
    for event in load("telnyx_amd_webhooks.json")["events"]:
        hook = parse_webhook(json.dumps(event).encode())
        assert hook is not None and hook.client_state is not None
        assert hook.client_state.call_id == "call-1"
        report = machine.telnyx_report(hook.event_type, hook.payload)
        assert report is not None
        reports.append(report)
    assert [(r.result, r.beep_detected, r.greeting_ended, r.verdict) for r in reports] == [
        (MachineResult.MACHINE, None, False, True),
        (MachineResult.MACHINE, True, True, False),
        (MachineResult.HUMAN, None, False, True),
        (MachineResult.MACHINE, False, True, False),
    ]


@pytest.mark.parametrize(
    ("raw", "result"),
    [
        ("human", MachineResult.HUMAN),
        ("human_residence", MachineResult.HUMAN),
        ("human_business", MachineResult.HUMAN),
        ("machine", MachineResult.MACHINE),
        ("fax_detected", MachineResult.FAX),
        ("not_sure", MachineResult.UNKNOWN),
        ("silence", MachineResult.UNKNOWN),
    ],
)
def test_telnyx_results(raw: str, result: MachineResult) -> None:
    report = machine.telnyx_report("call.machine.premium.detection.ended", {"result": raw})
    assert report is not None and report.result is result


def test_telnyx_shared_sample_parses() -> None:
    """The shared vendor sample of call.machine.detection.ended gives a machine verdict."""
    path = SAMPLES / "telnyx_webhooks_schema_derived.json"
    if not path.exists():
        pytest.skip("shared vendor samples not present")
    events = json.loads(path.read_text())["events"]
    (sample,) = [e for e in events if e["data"]["event_type"] == "call.machine.detection.ended"]
    report = machine.telnyx_report(sample["data"]["event_type"], sample["data"]["payload"])
    assert report is not None and report.result is MachineResult.MACHINE
    assert machine.telnyx_report("call.speak.ended", {"result": "x"}) is None


def test_telnyx_dial_fields() -> None:
    fields = machine.telnyx_dial_fields(MachineDetectionConfig(timeout_seconds=12))
    assert fields == {
        "answering_machine_detection": "greeting_end",
        "answering_machine_detection_config": {"total_analysis_time_millis": 12000},
    }
    assert load("telnyx_amd_webhooks.json")["dial_fields"] == machine.telnyx_dial_fields(
        MachineDetectionConfig()
    )


def test_plivo_callback_and_dial_params() -> None:
    callback = load("plivo_amd_callbacks.json")["callback"]
    report = machine.plivo_report(callback["Machine"])
    assert report is not None and report.result is MachineResult.MACHINE
    human = machine.plivo_report("false")
    assert human is not None and human.result is MachineResult.HUMAN
    assert machine.plivo_report(None) is None
    params = machine.plivo_dial_params(MachineDetectionConfig(), "https://x/cb?flow=machine")
    assert params["machine_detection_time"] == 10000  # 30 s clamped to Plivo's 10 s
    assert (
        machine.plivo_dial_params(MachineDetectionConfig(timeout_seconds=1), "u")[
            "machine_detection_time"
        ]
        == 2000
    )
    assert machine.decision_seconds("plivo", MachineDetectionConfig()) == 10.0
    assert machine.decision_seconds("twilio", MachineDetectionConfig()) == 30.0


def test_policy_table() -> None:
    """SPEC 13's policies; fax always hangs up; unknown goes on; a late verdict only hangs up."""
    settings = MachineDetectionConfig()
    notify, conv = CallMode.NOTIFY, CallMode.CONVERSATION
    assert decide(MachineResult.MACHINE, notify, settings) is MachineAction.LEAVE_MESSAGE
    assert decide(MachineResult.MACHINE, conv, settings) is MachineAction.HANGUP
    assert decide(MachineResult.UNKNOWN, conv, settings) is MachineAction.PROCEED
    assert decide(MachineResult.FAX, notify, settings) is MachineAction.HANGUP
    cont = MachineDetectionConfig(on_machine_conversation="continue", on_machine_notify="hangup")
    assert decide(MachineResult.MACHINE, conv, cont) is MachineAction.PROCEED
    assert decide(MachineResult.MACHINE, notify, cont) is MachineAction.HANGUP
    assert late_action(MachineResult.MACHINE, notify, settings) is MachineAction.PROCEED
    assert late_action(MachineResult.MACHINE, conv, settings) is MachineAction.HANGUP


def test_machine_calls_end_voicemail() -> None:
    from daemon.engine.machine import MachineWatch

    async def run() -> None:
        watch = MachineWatch()
        assert watch.end_state(CallState.HANGUP_BOT) is CallState.HANGUP_BOT
        watch.voicemail = True
        assert watch.end_state(CallState.HANGUP_USER) is CallState.VOICEMAIL
        assert watch.end_state(CallState.TIMEOUT) is CallState.TIMEOUT

    import asyncio

    asyncio.run(run())

"""Machine detection (SPEC 13) and per-number routing (SPEC 14) through the real CLI and daemon
with the mock provider: `outcome = "machine"` is a voicemail box that beeps 500 ms after its
verdict."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from daemon.model.record import parse_time
from daemon.rpc.protocol import RpcRemoteError
from tests.harness import FAST_MOCK, DaemonHarness

pytestmark = pytest.mark.e2e

TO = "+15550001234"


def machine_config(
    extra: str = "", *, outcome: str = "machine", mode: str = "detect-beep", replies: str = ""
) -> str:
    """A mock daemon whose callee is a machine (or a person), detection on."""
    return (
        FAST_MOCK
        + f'outcome = "{outcome}"\n{replies}'
        + "[outbound]\nnotify_hangup_delay_seconds = 0\n"
        + f'[machine_detection]\nenabled = true\nmode = "{mode}"\n'
        + "greeting_timeout_seconds = 2\n"
        + extra
    )


def events(d: DaemonHarness, call_id: str) -> list[dict[str, Any]]:
    """Every stored event of the call, oldest first (`tail --no-follow`)."""
    done = d.cli("tail", "--call-id", call_id, "--since", "100", "--no-follow", "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def parse_time_ms(stamp: str) -> float:
    """An event timestamp in milliseconds."""
    return parse_time(stamp).timestamp() * 1000


def of_type(evts: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The events of one type."""
    return [e for e in evts if e["type"] == kind]


def test_notify_on_a_machine_speaks_after_the_beep_and_ends_voicemail(make_daemon) -> None:
    """The verdict is published, the message is said only after the beep, state `voicemail`."""
    d = make_daemon(machine_config())
    call_id = d.cli_json("call", "--to", TO, "-m", "Your parcel arrives tomorrow.")["callId"]
    call = d.wait_state(call_id, "voicemail", timeout=15)
    assert call["endReason"] == "voicemail"
    assert call["metadata"]["answeredBy"] == "machine"
    assert call["metadata"]["answeredByRaw"] == "machine"
    assert call["metadata"]["beepDetected"] is True
    evts = events(d, call_id)
    machine = of_type(evts, "call.machine")
    assert [m["result"] for m in machine] == ["machine", "machine"]
    assert "beepDetected" not in machine[0] and machine[1]["beepDetected"] is True
    speaking = of_type(evts, "call.speaking")
    assert [s["text"] for s in speaking] == ["Your parcel arrives tomorrow."]
    assert speaking[0]["seq"] > machine[1]["seq"]  # said after the beep, not into the greeting
    assert of_type(evts, "call.ended")[-1]["reason"] == "voicemail"


def test_notify_hangup_policy_hangs_up_at_once(make_daemon) -> None:
    """`on_machine_notify = "hangup"`: nothing is said, state `voicemail`."""
    d = make_daemon(machine_config('on_machine_notify = "hangup"\n'))
    call_id = d.cli_json("call", "--to", TO, "-m", "Never said")["callId"]
    call = d.wait_state(call_id, "voicemail", timeout=15)
    assert call["transcript"] == []
    assert of_type(events(d, call_id), "call.speaking") == []


def test_detect_mode_waits_the_greeting_timeout(make_daemon) -> None:
    """`mode = "detect"` learns no beep: the message waits `greeting_timeout_seconds`."""
    d = make_daemon(machine_config(mode="detect"))
    call_id = d.cli_json("call", "--to", TO, "-m", "After the greeting")["callId"]
    d.wait_state(call_id, "voicemail", timeout=15)
    evts = events(d, call_id)
    machine = of_type(evts, "call.machine")
    assert [m.get("beepDetected") for m in machine] == [None]
    spoken_after = parse_time_ms(of_type(evts, "call.speaking")[0]["timestamp"]) - parse_time_ms(
        machine[0]["timestamp"]
    )
    assert spoken_after >= 1900  # greeting_timeout_seconds = 2


def test_a_person_hears_the_message_as_usual(make_daemon) -> None:
    """A human verdict: the notify call goes on as without detection (`hangup-bot`)."""
    d = make_daemon(machine_config(outcome="answer"))
    call_id = d.cli_json("call", "--to", TO, "-m", "Hello person")["callId"]
    call = d.wait_state(call_id, "hangup-bot", timeout=15)
    assert call["metadata"]["answeredBy"] == "human"
    assert [m["result"] for m in of_type(events(d, call_id), "call.machine")] == ["human"]
    assert [t["text"] for t in call["transcript"]] == ["Hello person"]


def test_conversation_hangup_policy_fails_a_pending_continue_naming_voicemail(make_daemon) -> None:
    """`on_machine_conversation = "hangup"` (default): `continue` fails (exit 1) naming
    voicemail, and the call ends `voicemail` without a word."""
    d = make_daemon(machine_config(replies='replies = ["hello?"]\n'))
    call_id = d.cli_json("call", "--to", TO, "-m", "Hi", "--mode", "conversation")["callId"]
    done = d.cli("continue", "--call-id", call_id, "-m", "Are you there?")
    assert done.returncode == 1
    assert "voicemail" in done.stderr
    call = d.wait_state(call_id, "voicemail", timeout=15)
    assert call["transcript"] == []
    with pytest.raises(RpcRemoteError) as failure:
        d.rpc("voicecall.continue", {"callId": call_id, "message": "x"})
    assert failure.value.code == -32002 and "voicemail" in str(failure.value)


def test_conversation_leave_message_speaks_after_the_beep(make_daemon) -> None:
    """`on_machine_conversation = "leave-message"`: the opening line after the beep, then
    the call hangs up, state `voicemail`."""
    d = make_daemon(machine_config('on_machine_conversation = "leave-message"\n'))
    call_id = d.cli_json(
        "call", "--to", TO, "-m", "Please call us back.", "--mode", "conversation"
    )["callId"]
    call = d.wait_state(call_id, "voicemail", timeout=15)
    assert [t["text"] for t in call["transcript"]] == ["Please call us back."]
    evts = events(d, call_id)
    beep = [m for m in of_type(evts, "call.machine") if m.get("beepDetected")]
    assert beep and of_type(evts, "call.speaking")[0]["seq"] > beep[0]["seq"]


def test_conversation_continue_policy_changes_nothing(make_daemon) -> None:
    """`on_machine_conversation = "continue"`: the event is published, the call goes on."""
    d = make_daemon(
        machine_config(
            'on_machine_conversation = "continue"\n',
            replies='replies = ["Leave a message after the tone."]\n',
        )
    )
    call_id = d.cli_json("call", "--to", TO, "-m", "Hi", "--mode", "conversation")["callId"]
    reply = d.cli_json("continue", "--call-id", call_id, "-m", "Hello?")
    assert reply == {"success": True, "transcript": "Leave a message after the tone."}
    assert d.call_record(call_id)["metadata"]["answeredBy"] == "machine"
    d.cli("end", "--call-id", call_id)
    assert d.wait_state(call_id, "hangup-bot")["state"] == "hangup-bot"


def test_without_detection_the_machine_outcome_is_just_answered(make_daemon) -> None:
    """Detection off: no verdict, no event, the call behaves as before (`hangup-bot`)."""
    d = make_daemon(
        FAST_MOCK + 'outcome = "machine"\n' + "[outbound]\nnotify_hangup_delay_seconds = 0\n"
    )
    call_id = d.cli_json("call", "--to", TO, "-m", "Hi")["callId"]
    call = d.wait_state(call_id, "hangup-bot", timeout=15)
    assert "answeredBy" not in call["metadata"]
    assert of_type(events(d, call_id), "call.machine") == []


NUMBERS = """
inbound_policy = "open"
inbound_greeting = "Main line, hello."
[numbers."+15550002222"]
inbound_greeting = "Bakery, good morning."
[numbers."+15550002222".tts.openai]
voice = "nova"
"""


def test_inbound_call_to_a_number_with_a_table_gets_its_greeting(make_daemon) -> None:
    """Matched on digits like the allowlist; `metadata.number` is the table key and
    `status --call-id` shows it; another number uses the top-level greeting."""
    d = make_daemon(NUMBERS + FAST_MOCK)
    routed = d.rpc("mock.inbound", {"from": "+15550001111", "to": "1 (555) 000-2222"})
    plain = d.rpc("mock.inbound", {"from": "+15550001111", "to": "+15550003333"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        first, second = d.call_record(routed["callId"]), d.call_record(plain["callId"])
        if first["transcript"] and second["transcript"]:
            break
        time.sleep(0.05)
    assert first["transcript"][0]["text"] == "Bakery, good morning."
    assert first["metadata"]["number"] == "+15550002222"
    assert second["transcript"][0]["text"] == "Main line, hello."
    assert "number" not in second["metadata"]
    shown = d.cli("status", "--call-id", routed["callId"])
    assert shown.returncode == 0 and "+15550002222" in shown.stdout


def test_config_validate_names_a_number_key_that_is_not_e164(make_daemon) -> None:
    """`config validate` reports the bad key and exits non-zero."""
    d = make_daemon('[numbers."555-0001"]\ninbound_greeting = "x"\n', start=False)
    done = d.cli("config", "validate")
    assert done.returncode != 0
    assert 'numbers."555-0001"' in done.stdout + done.stderr
    assert "E.164" in done.stdout + done.stderr

"""Twilio webhook parsing: exact event lists for each kind of request."""

from __future__ import annotations

import pytest

from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.state import CallState
from daemon.providers.twilio_parse import end_state, parse_callback, to_events

SID = "CA0123456789abcdef0123456789abcdef"


def form(**extra: str) -> list[tuple[str, str]]:
    """A Twilio voice request body for an outbound call."""
    base = {
        "AccountSid": "AC1",
        "CallSid": SID,
        "CallStatus": "in-progress",
        "Direction": "outbound-api",
        "From": "+15550100000",
        "To": "+15550001234",
    }
    base.update(extra)
    return list(base.items())


def events(query: dict[str, str], **body: str) -> list[ProviderEvent]:
    return to_events(parse_callback(list(query.items()), form(**body)))


def test_speech_result_is_a_final_speech_event_with_token_and_confidence() -> None:
    """A Gather result: one final SPEECH with Confidence and the query's turnToken."""
    assert events(
        {"callId": "c1", "turnToken": "T1", "n": "ab12"},
        SpeechResult=" Yes, Tuesday works. ",
        Confidence="0.91",
    ) == [
        ProviderEvent(
            EventType.SPEECH,
            SID,
            call_id="c1",
            direction=Direction.OUTBOUND,
            transcript="Yes, Tuesday works.",
            is_final=True,
            confidence=0.91,
            turn_token="T1",
            dedupe_key=f"twilio:{SID}:speech:T1:ab12",
        )
    ]


def test_blank_speech_result_falls_through_to_the_status() -> None:
    """A blank SpeechResult is not speech."""
    (event,) = events({"callId": "c1", "flow": "listen"}, SpeechResult="  ")
    assert event.type is EventType.ANSWERED


def test_digits_are_a_dtmf_event() -> None:
    """Digits: one DTMF event."""
    (event,) = events({"callId": "c1", "n": "x"}, Digits="42#")
    assert (event.type, event.digits, event.dedupe_key) == (
        EventType.DTMF,
        "42#",
        f"twilio:{SID}:dtmf:x:42#",
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", []),
        ("initiated", []),
        ("ringing", [EventType.RINGING]),
        ("in-progress", [EventType.ANSWERED]),
        ("answered", [EventType.ANSWERED]),
        ("completed", [EventType.ENDED]),
        ("busy", [EventType.ENDED]),
    ],
)
def test_status_callbacks_of_a_notify_call(status: str, expected: list[EventType]) -> None:
    """queued/initiated are ignored; ringing, answered and the final statuses map one to one."""
    got = events(
        {"callId": "c1", "type": "status", "mode": "notify"},
        CallStatus=status,
        SequenceNumber="2",
        CallbackSource="call-progress-events",
    )
    assert [e.type for e in got] == expected
    assert all(e.dedupe_key == f"twilio:{SID}:{status}:2" for e in got)


@pytest.mark.parametrize(
    ("status", "notify", "state"),
    [
        ("completed", True, CallState.HANGUP_BOT),
        ("completed", False, CallState.COMPLETED),
        ("busy", False, CallState.BUSY),
        ("no-answer", False, CallState.NO_ANSWER),
        ("failed", False, CallState.FAILED),
        ("canceled", False, CallState.HANGUP_BOT),
        ("in-progress", False, None),
        ("ringing", True, None),
    ],
)
def test_end_states(status: str, notify: bool, state: CallState | None) -> None:
    """Final statuses map to end states; a notify call's `completed` is our own Hangup."""
    assert end_state(status, notify=notify) is state


def test_notify_completed_status_callback_is_hangup_bot() -> None:
    """`mode=notify` on the status callback makes `completed` hangup-bot."""
    (event,) = events(
        {"callId": "c1", "type": "status", "mode": "notify"},
        CallStatus="completed",
        SequenceNumber="3",
    )
    assert event.end_state is CallState.HANGUP_BOT


def test_conversation_completed_is_completed_unless_we_hung_up() -> None:
    """A conversation call ended by the callee is `completed`; by us, `hangup-bot`."""
    cb = parse_callback(
        [("callId", "c1"), ("type", "status"), ("mode", "conversation")],
        form(CallStatus="completed", SequenceNumber="3"),
    )
    assert to_events(cb)[0].end_state is CallState.COMPLETED
    assert to_events(cb, bot_hangup=True)[0].end_state is CallState.HANGUP_BOT


def test_conversation_answered_status_callback_is_left_to_the_url_fetch() -> None:
    """The Url fetch reports a conversation call's answer: only its reply can carry TwiML."""
    assert (
        events(
            {"callId": "c1", "type": "status", "mode": "conversation"},
            CallStatus="in-progress",
            SequenceNumber="2",
        )
        == []
    )
    (event,) = events({"callId": "c1"}, CallStatus="in-progress")
    assert event.type is EventType.ANSWERED and event.call_id == "c1"


def test_inbound_voice_request_offers_the_call_answered() -> None:
    """Direction=inbound, ringing, no callId: INITIATED + ANSWERED with direction and numbers."""
    body = form(CallStatus="ringing", Direction="inbound", From="+15550109999", To="+15550100000")
    got = to_events(parse_callback([], body))
    common = {
        "call_id": None,
        "direction": Direction.INBOUND,
        "from_number": "+15550109999",
        "to_number": "+15550100000",
    }
    assert got == [
        ProviderEvent(EventType.INITIATED, SID, dedupe_key=f"twilio:{SID}:offered", **common),  # type: ignore[arg-type]
        ProviderEvent(EventType.ANSWERED, SID, dedupe_key=f"twilio:{SID}:answered", **common),  # type: ignore[arg-type]
    ]


def test_outbound_dial_direction_is_outbound() -> None:
    """outbound-dial (a <Dial> leg) counts as outbound."""
    (event,) = events({"callId": "c1"}, Direction="outbound-dial")
    assert event.direction is Direction.OUTBOUND


def test_twilio_callback_source_marks_a_status_callback_without_our_query() -> None:
    """A status callback configured on the number (no `type=status`) is still recognised."""
    cb = parse_callback([], form(CallbackSource="call-progress-events"))
    assert cb.is_status


def test_no_call_sid_no_events() -> None:
    """A body without CallSid yields nothing."""
    assert to_events(parse_callback([], [("CallStatus", "ringing")])) == []


def test_confidence_out_of_range_is_dropped() -> None:
    """Confidence must be a number in 0..1."""
    (event,) = events({"callId": "c1"}, SpeechResult="hi", Confidence="abc")
    assert event.confidence is None

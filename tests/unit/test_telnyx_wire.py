"""Telnyx wire format: payloads, client_state, webhook parsing, hang-up causes, signatures."""

from __future__ import annotations

import base64
import json

import pytest

from daemon.engine.state import CallState
from daemon.events import Direction, EventType, ProviderEvent
from daemon.providers.base import WebhookRequest
from daemon.providers.telnyx_wire import (
    TelnyxPayloadError,
    answer_payload,
    decode_client_state,
    dial_payload,
    encode_client_state,
    map_hangup_cause,
    map_voice,
    parse_webhook,
    stream_fields,
    to_events,
)
from daemon.webhooks.security import TelnyxVerifier
from tests.simulators.telnyx import SimCall, TelnyxSimulator


def hook(event_type: str, **payload: object) -> bytes:
    """A webhook body as Telnyx sends it."""
    base = {"call_control_id": "v3:abc", "client_state": encode_client_state("call-1")}
    return json.dumps(
        {"data": {"id": "evt-1", "event_type": event_type, "payload": {**base, **payload}}}
    ).encode()


def events(body: bytes, **kwargs: bool) -> list[ProviderEvent]:
    """Parse and normalise one body."""
    parsed = parse_webhook(body)
    assert parsed is not None
    return to_events(parsed, **kwargs)


def test_dial_payload_carries_call_id_ring_timeout_and_idempotent_command_id() -> None:
    """POST /calls has client_state=base64(callId), timeout_secs and a deterministic command_id."""
    payload = dial_payload(
        call_id="c1",
        connection_id="conn",
        to="+15550001234",
        from_="+15550100000",
        webhook_url="https://x/voice/webhook",
        ring_timeout_seconds=25,
    )
    assert payload == {
        "connection_id": "conn",
        "to": "+15550001234",
        "from": "+15550100000",
        "webhook_url": "https://x/voice/webhook",
        "webhook_url_method": "POST",
        "client_state": base64.b64encode(b"c1").decode(),
        "timeout_secs": 25,
        "command_id": "voicecall-dial-c1",
    }


def test_answer_payload_is_deterministic_and_adds_streaming_fields() -> None:
    """The answer command_id depends only on the call id; streaming asks for RTP PCMU."""
    fields = stream_fields("wss://h/voice/stream", "tok")
    payload = answer_payload("c1", fields)
    assert payload["command_id"] == "voicecall-answer-c1" == answer_payload("c1")["command_id"]
    assert payload["stream_bidirectional_mode"] == "rtp"
    assert payload["stream_bidirectional_codec"] == payload["stream_codec"] == "PCMU"
    assert payload["stream_url"] == "wss://h/voice/stream?token=tok"
    assert payload["stream_auth_token"] == "tok"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (encode_client_state("c1"), ("c1", "", "")),
        (encode_client_state("c1", "turn", "T9"), ("c1", "turn", "T9")),
        (encode_client_state("c1", "notify", "3"), ("c1", "notify", "3")),
    ],
)
def test_client_state_round_trips(text: str, expected: tuple[str, str, str]) -> None:
    """What we encode decodes to the same call id, kind and value."""
    state = decode_client_state(text)
    assert state is not None and (state.call_id, state.kind, state.value) == expected


@pytest.mark.parametrize("foreign", [None, "", "not base64!", "aGk", 42])
def test_foreign_client_state_is_not_ours(foreign: object) -> None:
    """Non-canonical or non-base64 client_state is ignored rather than misread."""
    assert decode_client_state(foreign) is None


@pytest.mark.parametrize(
    ("cause", "state"),
    [
        ("normal_clearing", CallState.COMPLETED),
        ("originator_cancel", CallState.HANGUP_BOT),
        ("user_busy", CallState.BUSY),
        ("call_rejected", CallState.BUSY),
        ("no_answer", CallState.NO_ANSWER),
        ("no_user_response", CallState.NO_ANSWER),
        ("user_hangup", CallState.HANGUP_USER),
        ("machine_detected", CallState.VOICEMAIL),
        ("fax_detected", CallState.VOICEMAIL),
        ("network_out_of_order", CallState.FAILED),
        ("destination_out_of_order", CallState.FAILED),
        ("time_limit", CallState.TIMEOUT),
        ("something_new", CallState.COMPLETED),
        (None, CallState.COMPLETED),
    ],
)
def test_hangup_causes_map_to_end_states(cause: str | None, state: CallState) -> None:
    """Each documented cause has its end state; unknown is completed."""
    assert map_hangup_cause(cause) is state


@pytest.mark.parametrize(
    ("voice", "expected"),
    [
        ("alloy", "female"),
        ("onyx", "male"),
        ("AWS.Polly.Joanna-Neural", "AWS.Polly.Joanna-Neural"),
        ("male", "male"),
        (None, "female"),
    ],
)
def test_voice_mapping(voice: str | None, expected: str) -> None:
    """OpenAI voices map to Telnyx basic voices; Telnyx voice ids pass through."""
    assert map_voice(voice) == expected


def test_inbound_call_initiated_becomes_initiated_with_numbers() -> None:
    """An incoming call.initiated without client_state is a new inbound call."""
    body = hook(
        "call.initiated",
        direction="incoming",
        client_state=None,
        **{"from": "+14155550123", "to": "+15550100000"},
    )
    assert events(body) == [
        ProviderEvent(
            EventType.INITIATED,
            "v3:abc",
            call_id=None,
            direction=Direction.INBOUND,
            from_number="+14155550123",
            to_number="+15550100000",
            dedupe_key="telnyx:evt-1",
        )
    ]


def test_transcription_carries_the_turn_token_from_client_state() -> None:
    """call.transcription -> call.speech with transcript, finality, confidence and turn token."""
    body = hook(
        "call.transcription",
        client_state=encode_client_state("call-1", "turn", "T1"),
        transcription_data={"transcript": "yes", "is_final": False, "confidence": 0.8},
    )
    assert events(body) == [
        ProviderEvent(
            EventType.SPEECH,
            "v3:abc",
            call_id="call-1",
            transcript="yes",
            is_final=False,
            confidence=0.8,
            turn_token="T1",
            dedupe_key="telnyx:evt-1",
        )
    ]


def test_hangup_we_asked_for_is_the_bots() -> None:
    """normal_clearing after our own hangup command ends hangup-bot."""
    assert (
        events(hook("call.hangup", hangup_cause="normal_clearing"), bot_hangup=True)[0].end_state
        is CallState.HANGUP_BOT
    )
    assert (
        events(hook("call.hangup", hangup_cause="user_busy"), bot_hangup=True)[0].end_state
        is CallState.BUSY
    )


def test_other_events() -> None:
    """bridged -> active, dtmf -> digits; speak and streaming events produce nothing."""
    assert events(hook("call.bridged"))[0].type is EventType.ACTIVE
    assert events(hook("call.dtmf.received", digit="5"))[0].digits == "5"
    assert events(hook("call.speak.ended")) == []
    assert events(hook("streaming.started")) == []


def test_bodies_without_a_call_event_are_ignored_and_bad_json_raises() -> None:
    """No data.event_type -> None; a non-JSON body is a payload error (answered 400)."""
    assert parse_webhook(b'{"meta": {}}') is None
    with pytest.raises(TelnyxPayloadError):
        parse_webhook(b"not json")


async def test_simulator_signatures_verify_with_the_sdk_and_our_verifier() -> None:
    """The simulator's Ed25519 signing is accepted by telnyx's own verifier and by ours."""
    from telnyx.lib.webhook_verification import verify_webhook_signature

    sim = TelnyxSimulator()
    call = SimCall("v3:x", "outgoing", "+1", "+2", "http://h/voice/webhook")
    _, body = sim.event_body(call, "call.answered", {})
    headers = sim.sign(body)
    verify_webhook_signature(body, headers, sim.public_key)
    request = WebhookRequest(
        "POST", "/voice/webhook", (), headers, body, "127.0.0.1", "http://h/voice/webhook"
    )
    assert TelnyxVerifier(sim.public_key).verify_request(request).startswith("telnyx:")


def test_an_inbound_caller_who_gives_up_is_hangup_user() -> None:
    """originator_cancel is our hang-up, except when the caller of an inbound call cancels."""
    def ended(direction: str, source: str) -> object:
        body = json.dumps({"data": {"id": "e1", "event_type": "call.hangup", "payload": {
            "call_control_id": "v3:abc", "hangup_cause": "originator_cancel",
            "hangup_source": source, "direction": direction}}}).encode()
        hook = parse_webhook(body)
        assert hook is not None
        (event,) = to_events(hook)
        return event.end_state

    assert ended("incoming", "caller") is CallState.HANGUP_USER
    assert ended("outgoing", "caller") is CallState.HANGUP_BOT
    assert ended("incoming", "callee") is CallState.HANGUP_BOT

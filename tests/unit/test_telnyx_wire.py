"""Telnyx wire format: payloads, client_state, webhook parsing, hang-up causes, signatures."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.state import CallState
from daemon.providers.base import WebhookRequest
from daemon.providers.telnyx_wire import (
    HANGUP_CAUSES,
    LegFacts,
    TelnyxPayloadError,
    answer_payload,
    decode_client_state,
    dial_payload,
    encode_client_state,
    hangup_end_state,
    map_voice,
    parse_webhook,
    speak_payload,
    stream_fields,
    to_events,
    transcription_payload,
)
from daemon.webhooks.security import TelnyxVerifier
from tests.simulators.telnyx import SimCall, TelnyxSimulator


def hook(event_type: str, **payload: object) -> bytes:
    """A webhook body as Telnyx sends it."""
    base = {"call_control_id": "v3:abc", "client_state": encode_client_state("call-1")}
    return json.dumps(
        {"data": {"id": "evt-1", "event_type": event_type, "payload": {**base, **payload}}}
    ).encode()


def events(body: bytes, **kwargs: Any) -> list[ProviderEvent]:
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
    """The answer command_id depends only on the call id; streaming asks for RTP PCMU, with
    the token in the URL only (answer defines no `stream_auth_token`)."""
    fields = stream_fields("wss://h/voice/stream", "tok", dial=False)
    payload = answer_payload("c1", fields)
    assert payload["command_id"] == "voicecall-answer-c1" == answer_payload("c1")["command_id"]
    assert payload["stream_bidirectional_mode"] == "rtp"
    assert payload["stream_bidirectional_codec"] == payload["stream_codec"] == "PCMU"
    assert payload["stream_url"] == "wss://h/voice/stream?token=tok"
    assert "stream_auth_token" not in payload
    assert "stream_bidirectional_sampling_rate" not in payload


def test_every_command_sends_only_fields_the_call_control_schema_defines() -> None:
    """The telnyx SDK's parameter types (generated from Telnyx's OpenAPI spec) are the oracle:
    dial, answer (with and without a stream), speak, transcription_start (language inside
    transcription_engine_config), send_dtmf, reject, hangup."""
    from tests.simulators.telnyx_schema import check_command

    stream_dial = stream_fields("wss://h/voice/stream", "tok")
    stream_answer = stream_fields("wss://h/voice/stream", "tok", dial=False)
    bodies = {
        "dial": [
            dial_payload(
                call_id="c1",
                connection_id="conn",
                to="+15550001234",
                from_="+15550100000",
                webhook_url="https://x/voice/webhook",
                ring_timeout_seconds=25,
            ),
            dial_payload(
                call_id="c1",
                connection_id="conn",
                to="+15550001234",
                from_="+15550100000",
                webhook_url="https://x/voice/webhook",
                ring_timeout_seconds=25,
                stream=stream_dial,
            ),
        ],
        "answer": [answer_payload("c1"), answer_payload("c1", stream_answer)],
        "speak": [
            speak_payload("Hi", voice=map_voice("alloy"), client_state="eA==", command_id="x")
        ],
        "transcription_start": [transcription_payload("eA==", "voicecall-transcribe-c1")],
        "send_dtmf": [{"digits": "12#", "command_id": "x"}],
        "reject": [
            {"cause": "CALL_REJECTED", "command_id": "x"},
            {"cause": "USER_BUSY", "command_id": "x"},
        ],
        "hangup": [{"command_id": "x"}],
    }
    for command, payloads in bodies.items():
        for body in payloads:
            assert check_command(command, body) == [], (command, body)
    # The oracle does refuse what the old payloads sent.
    assert check_command("answer", {**answer_payload("c1"), **stream_dial}) == [
        "stream_bidirectional_sampling_rate: not a field of ActionAnswerParams",
        "stream_auth_token: not a field of ActionAnswerParams",
    ]
    assert check_command("transcription_start", {"language": "en"}) == [
        "language: not a field of ActionStartTranscriptionParams"
    ]
    assert transcription_payload("eA==", "x")["transcription_engine_config"]["language"] == "en"


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


IN, OUT = Direction.INBOUND, Direction.OUTBOUND


@pytest.mark.parametrize(
    ("cause", "source", "leg", "state"),
    [
        # the person on the phone hung up
        ("normal_clearing", "callee", LegFacts(OUT, answered=True), CallState.HANGUP_USER),
        ("normal_clearing", "caller", LegFacts(IN, answered=True), CallState.HANGUP_USER),
        ("originator_cancel", "caller", LegFacts(IN), CallState.HANGUP_USER),
        # we hung up
        ("normal_clearing", "caller", LegFacts(OUT, True, bot_hangup=True), CallState.HANGUP_BOT),
        ("normal_clearing", "callee", LegFacts(IN, True, bot_hangup=True), CallState.HANGUP_BOT),
        ("originator_cancel", "caller", LegFacts(OUT, bot_hangup=True), CallState.HANGUP_BOT),
        ("originator_cancel", "caller", LegFacts(OUT), CallState.HANGUP_BOT),
        ("unspecified", "unknown", LegFacts(OUT, True, bot_hangup=True), CallState.HANGUP_BOT),
        # neither side of the person: a neutral end
        ("normal_clearing", "caller", LegFacts(OUT, answered=True), CallState.COMPLETED),
        ("normal_clearing", "unknown", LegFacts(IN, answered=True), CallState.COMPLETED),
        ("normal_clearing", "callee", LegFacts(None, answered=True), CallState.COMPLETED),
        # causes whose end does not depend on the side (even after our own hang-up command)
        ("timeout", "unknown", LegFacts(OUT), CallState.NO_ANSWER),
        ("time_limit", "unknown", LegFacts(OUT, True), CallState.TIMEOUT),
        ("user_busy", "callee", LegFacts(OUT, bot_hangup=True), CallState.BUSY),
        ("call_rejected", "callee", LegFacts(OUT), CallState.FAILED),
        ("not_found", "unknown", LegFacts(OUT), CallState.FAILED),
        ("unspecified", "unknown", LegFacts(OUT, answered=True), CallState.COMPLETED),
        ("unspecified", "unknown", LegFacts(OUT), CallState.FAILED),
        ("something_new", "unknown", LegFacts(IN, answered=True), CallState.COMPLETED),
        (None, None, LegFacts(IN), CallState.FAILED),
    ],
)
def test_hangup_end_state_follows_cause_source_and_stored_direction(
    cause: str | None, source: str | None, leg: LegFacts, state: CallState
) -> None:
    """SPEC 10: cause + hangup_source + the leg's direction (never on call.hangup) decide."""
    assert hangup_end_state(cause, source, leg) is state


def test_only_the_causes_telnyx_sends_are_known() -> None:
    """The cause list is the SDK's `call.hangup` enum: nothing Telnyx never sends."""
    from typing import get_args

    from telnyx.types.call_hangup import Payload

    cause_type = Payload.model_fields["hangup_cause"].annotation
    literal = next(t for t in get_args(cause_type) if t is not type(None))
    assert set(get_args(literal)) == HANGUP_CAUSES


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

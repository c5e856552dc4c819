"""Plivo wire format: callback parsing, end states, XML rendering, signatures."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from plivo.utils.signature_v3 import validate_v3_signature

from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.state import CallState
from daemon.providers.base import WebhookRequest
from daemon.providers.plivo_wire import (
    HangUp,
    Listen,
    Pause,
    Say,
    XmlContext,
    callback_url,
    map_cdr_state,
    map_end_state,
    map_voice,
    parse_callback,
    render,
    to_events,
)
from daemon.webhooks.security import PlivoVerifier
from tests.simulators.plivo import AUTH_TOKEN, PlivoSimulator

HOOK = "https://vc.example/voice/webhook"
CTX = XmlContext(HOOK, "c1", "Polly.Joanna")
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<Response>'


def test_answer_callback_rekeys_request_uuid_to_call_uuid() -> None:
    """The answer URL fetch is call.answered under CallUUID, naming the RequestUUID before it."""
    cb = parse_callback(
        {"flow": "answer", "callId": "c1"},
        {
            "CallUUID": "CU",
            "RequestUUID": "RU",
            "CallStatus": "in-progress",
            "Direction": "outbound",
            "From": "+1",
            "To": "+2",
        },
    )
    assert to_events(cb) == [
        ProviderEvent(
            EventType.ANSWERED,
            "CU",
            call_id="c1",
            direction=Direction.OUTBOUND,
            from_number="+1",
            to_number="+2",
            previous_provider_call_id="RU",
        )
    ]


def test_getinput_speech_carries_turn_token_and_dedupe_key() -> None:
    """Speech on the GetInput action is a final call.speech tagged with the query's turnToken."""
    cb = parse_callback(
        {"flow": "getinput", "callId": "c1", "turnToken": "T1"},
        {
            "CallUUID": "CU",
            "CallStatus": "in-progress",
            "Speech": "yes please",
            "SpeechConfidenceScore": "0.87",
        },
    )
    (event,) = to_events(cb)
    assert (event.type, event.transcript, event.turn_token, event.confidence, event.is_final) == (
        EventType.SPEECH,
        "yes please",
        "T1",
        0.87,
        True,
    )
    assert event.dedupe_key is not None and event.dedupe_key.startswith("plivo:speech:CU:T1:")


@pytest.mark.parametrize(
    ("status", "source", "state"),
    [
        ("completed", "Call recipient", CallState.HANGUP_USER),
        ("completed", "Caller", CallState.HANGUP_USER),
        ("completed", "API Request", CallState.HANGUP_BOT),
        ("completed", "Answer XML", CallState.HANGUP_BOT),
        ("completed", "Plivo", CallState.COMPLETED),
        ("busy", "Call recipient", CallState.BUSY),
        ("no-answer", None, CallState.NO_ANSWER),
        ("timeout", None, CallState.FAILED),
        ("failed", "Carrier", CallState.FAILED),
        ("cancel", "API Request", CallState.HANGUP_BOT),
    ],
)
def test_hangup_callbacks_map_to_end_states(
    status: str, source: str | None, state: CallState
) -> None:
    """CallStatus, refined by HangupSource for completed calls."""
    assert map_end_state(status, source) is state
    cb = parse_callback(
        {"flow": "hangup"}, {"CallUUID": "CU", "CallStatus": status, "HangupSource": source or ""}
    )
    assert to_events(cb)[0].end_state is state


def test_cdr_states() -> None:
    """Call detail records map like callbacks; without a decisive call_state the answer time
    decides between completed (refined by the source) and no-answer."""
    assert map_cdr_state("BUSY", None, answered=False) is CallState.BUSY
    assert map_cdr_state("ANSWER", "Callee", answered=True) is CallState.HANGUP_USER
    assert map_cdr_state("NO_ANSWER", None, answered=False) is CallState.NO_ANSWER
    assert map_cdr_state("TIMEOUT", None, answered=False) is CallState.FAILED
    assert map_cdr_state(None, None, answered=False) is CallState.NO_ANSWER
    assert map_cdr_state(None, None, answered=True) is CallState.COMPLETED


def test_ringing_inbound_answer_url_is_an_inbound_answer() -> None:
    """Plivo fetches the app's answer URL for an inbound call: one inbound call.answered."""
    cb = parse_callback(
        {},
        {
            "CallUUID": "CU",
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": "+14155550123",
            "To": "+15550100000",
        },
    )
    assert to_events(cb) == [
        ProviderEvent(
            EventType.ANSWERED,
            "CU",
            direction=Direction.INBOUND,
            from_number="+14155550123",
            to_number="+15550100000",
        )
    ]


def test_render_speech_ends_in_a_keepalive() -> None:
    """Plain speech, then a long Wait and a Redirect so the call never runs out of XML."""
    assert render([Say("Hi & bye")], CTX) == HEAD + (
        '<Speak voice="Polly.Joanna" language="en-US">Hi &amp; bye</Speak>'
        '<Wait length="300"/>'
        f'<Redirect method="POST">{HOOK}?flow=keepalive&amp;callId=c1</Redirect></Response>'
    )


def test_render_listen_puts_the_prompt_in_getinput_and_loops() -> None:
    """GetInput inputType="dtmf speech" with the turn token in its action, then a re-listen
    redirect."""
    assert render([Listen("Ready?", "T1")], CTX) == HEAD + (
        f'<GetInput action="{HOOK}?flow=getinput&amp;callId=c1&amp;turnToken=T1" method="POST" '
        'inputType="dtmf speech" executionTimeout="60" speechEndTimeout="2" language="en-US" '
        'redirect="true"><Speak voice="Polly.Joanna" language="en-US">Ready?</Speak></GetInput>'
        f'<Redirect method="POST">{HOOK}?flow=listen&amp;callId=c1&amp;turnToken=T1</Redirect>'
        "</Response>"
    )


def test_render_notify_waits_after_playback_then_hangs_up() -> None:
    """Notify: Speak, Wait(delay), Hangup; nothing after the hang-up."""
    assert render([Say("Done"), Pause(3), HangUp()], CTX) == HEAD + (
        '<Speak voice="Polly.Joanna" language="en-US">Done</Speak><Wait length="3"/>'
        "<Hangup/></Response>"
    )


def test_callback_url_keeps_existing_query() -> None:
    """Our parameters are appended; None values are left out."""
    assert callback_url(HOOK + "?a=1", flow="xml", key=None) == HOOK + "?a=1&flow=xml"


@pytest.mark.parametrize(
    ("voice", "expected"),
    [
        ("nova", "Polly.Salli"),
        ("Polly.Brian", "Polly.Brian"),
        ("woman", "WOMAN"),
        (None, "Polly.Joanna"),
    ],
)
def test_voice_mapping(voice: str | None, expected: str) -> None:
    """OpenAI voices map to Polly voices Plivo speaks."""
    assert map_voice(voice) == expected


def test_simulator_signatures_pass_the_sdk_validator_and_ours() -> None:
    """The simulator's V3 signature is accepted by plivo's validate_v3_signature and by us."""
    sim = PlivoSimulator()
    url = HOOK + "?flow=getinput&callId=c1&turnToken=T1"
    params = {"CallUUID": "CU", "Speech": "yes", "CallStatus": "in-progress"}
    headers = sim.sign(url, params, nonce="12345")
    assert validate_v3_signature(
        "POST", url, "12345", AUTH_TOKEN, headers["X-Plivo-Signature-V3"], dict(params)
    )
    request = WebhookRequest(
        "POST", "/voice/webhook", (), headers, urlencode(params).encode(), "127.0.0.1", url
    )
    assert PlivoVerifier(AUTH_TOKEN).verify_request(request).startswith("plivo:v3:")

"""Property-based fuzzing of every provider's webhook parser and media framing.

Whatever a verified-but-hostile (or buggy) provider sends, parsing either produces events or
fails with our own clean error: never a stray exception that would become a 500.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.media.protocols import PlivoFraming, TelnyxFraming, TwilioFraming
from daemon.model.events import ProviderEvent
from daemon.providers import plivo_wire, telnyx_wire, twilio_parse

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TWILIO_KEYS = [
    "CallSid",
    "CallStatus",
    "Direction",
    "From",
    "To",
    "SpeechResult",
    "Confidence",
    "Digits",
    "SequenceNumber",
    "AnsweredBy",
    "callId",
    "turnToken",
    "flow",
    "mode",
    "type",
    "n",
]
PLIVO_KEYS = [
    "CallUUID",
    "RequestUUID",
    "CallStatus",
    "Direction",
    "From",
    "To",
    "Speech",
    "Transcription",
    "SpeechResult",
    "Digits",
    "Event",
    "HangupCause",
    "HangupSource",
    "callId",
    "turnToken",
    "flow",
]

text = st.text(max_size=40)
pairs = st.lists(st.tuples(st.sampled_from(TWILIO_KEYS) | text, text), max_size=12)
plivo_pairs = st.lists(st.tuples(st.sampled_from(PLIVO_KEYS) | text, text), max_size=12)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


def _events_ok(events: list[ProviderEvent]) -> None:
    assert isinstance(events, list)
    assert all(isinstance(e, ProviderEvent) for e in events)


@SETTINGS
@given(query=pairs, form=pairs, bot_hangup=st.booleans())
def test_twilio_callbacks(
    query: list[tuple[str, str]], form: list[tuple[str, str]], bot_hangup: bool
) -> None:
    """Any form/query mix parses into a callback and a list of events."""
    cb = twilio_parse.parse_callback(tuple(query), form)
    _events_ok(twilio_parse.to_events(cb, bot_hangup=bot_hangup))


def _telnyx_body(event_type: str, payload: Any) -> bytes:
    return json.dumps({"data": {"id": "ev", "event_type": event_type, "payload": payload}}).encode()


@SETTINGS
@given(
    event_type=st.sampled_from(
        [
            "call.initiated",
            "call.answered",
            "call.hangup",
            "call.transcription",
            "call.dtmf.received",
            "call.speak.ended",
            "call.bridged",
            "x",
        ]
    )
    | text,
    payload=json_values,
    raw=st.binary(max_size=200),
)
def test_telnyx_webhooks(event_type: str, payload: Any, raw: bytes) -> None:
    """JSON of any shape, and raw bytes, give events, None, or TelnyxPayloadError."""
    for body in (_telnyx_body(event_type, payload), raw):
        try:
            hook = telnyx_wire.parse_webhook(body)
        except telnyx_wire.TelnyxPayloadError:
            continue
        if hook is not None:
            _events_ok(telnyx_wire.to_events(hook))


@SETTINGS
@given(query=plivo_pairs, form=plivo_pairs)
def test_plivo_callbacks(query: list[tuple[str, str]], form: list[tuple[str, str]]) -> None:
    """Any form/query mix parses into a callback and a list of events."""
    cb = plivo_wire.parse_callback(dict(query), dict(form))
    _events_ok(plivo_wire.to_events(cb))


@SETTINGS
@given(message=json_values, raw=st.text(max_size=300))
def test_media_framings_never_raise(message: Any, raw: str) -> None:
    """Every provider's stream framing decodes anything to a message or None."""
    for framing in (TwilioFraming(), TelnyxFraming(), PlivoFraming()):
        for text_frame in (
            json.dumps(message),
            raw,
            json.dumps({"event": "media", "media": message}),
            json.dumps({"event": "start", "start": message}),
        ):
            framing.decode(text_frame)

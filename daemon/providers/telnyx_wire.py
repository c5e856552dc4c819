"""Telnyx Call Control v2 wire format: command payloads, client_state, webhook parsing. Pure.

Everything here is synchronous and free of I/O so that unit tests can assert exact payloads and
exact events; `daemon.providers.telnyx` adds the REST client and the timers around it. Telnyx's
snake_case keys appear only in this module and in `telnyx.py` (style guide 2.2).

client_state: Telnyx echoes the `client_state` of the last command on every later webhook of the
call, base64-encoded. We put `callId` in it at dial (the issue's contract), and
`callId:kind:value` on later commands: `turn:<token>` while listening (so a `call.transcription`
webhook carries the turn it belongs to) and `notify:<seconds>` on a notify message (so the
`call.speak.ended` webhook knows to hang up, even after a daemon restart).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.state import CallState

logger = logging.getLogger(__name__)

DEFAULT_VOICE = "female"
DEFAULT_LANGUAGE = "en-US"
TRANSCRIPTION_LANGUAGE = "en"

ALREADY_ENDED_CODES = frozenset({"90018", "90055"})
"""Telnyx error codes meaning the call leg is gone: 90018 "Call has already ended", 90055
"Call is not active" (both with HTTP 422)."""

_FEMALE = frozenset({"alloy", "nova", "shimmer", "coral", "sage", "ballad"})
_MALE = frozenset({"echo", "onyx", "fable", "ash", "verse"})

HANGUP_CAUSES = frozenset(
    {
        "call_rejected",
        "normal_clearing",
        "originator_cancel",
        "timeout",
        "time_limit",
        "user_busy",
        "not_found",
        "no_answer",
        "unspecified",
    }
)
"""Every `hangup_cause` Telnyx sends: the `call.hangup` schema's enum (telnyx SDK 4.189
`types/call_hangup.py`). SPEC 10 lists all but `no_answer`, which the schema adds for a dial
with `retry_on_timeout: false` ("instead of `timeout`"): it maps like `timeout`."""

_FIXED_CAUSES: Mapping[str, CallState] = {
    "timeout": CallState.NO_ANSWER,
    "no_answer": CallState.NO_ANSWER,
    "time_limit": CallState.TIMEOUT,
    "user_busy": CallState.BUSY,
    "call_rejected": CallState.FAILED,
    "not_found": CallState.FAILED,
}
"""Causes whose end state does not depend on who hung up."""
_COMMANDED = frozenset({"normal_clearing", "originator_cancel", "unspecified"})
"""Causes a hang-up we commanded produces (answered call, ringing call, either)."""


@dataclass(frozen=True, slots=True)
class LegFacts:
    """What the provider knows about a call leg that `call.hangup` does not say.

    Telnyx puts `direction` only on `call.initiated`, so the direction comes from that webhook,
    from our own dial or from the stored call record.
    """

    direction: Direction | None = None
    answered: bool = False
    bot_hangup: bool = False
    """We sent `actions/hangup` (or the notify hang-up) for this leg."""


def hangup_end_state(cause: str | None, source: str | None, leg: LegFacts) -> CallState:
    """Our end state of a `call.hangup` (SPEC 10).

    The person on the phone hung up (`hangup-user`) when the callee of an outbound call, or the
    caller of an inbound call, cleared it (`normal_clearing`), or when an inbound caller gave up
    before the answer (`originator_cancel`). A hang-up we commanded is `hangup-bot`. `timeout`
    is `no-answer`, `time_limit` is `timeout`, `user_busy` is `busy`, `call_rejected` and
    `not_found` are `failed`; `unspecified` (and any cause Telnyx adds later) is `completed`
    for an answered call, else `failed`. Outbound, the caller is us: our own `originator_cancel`
    of a ringing call is `hangup-bot` even when Telnyx, not our command, cancelled it.
    """
    key = (cause or "").strip().lower()
    side = (source or "").strip().lower()
    if key and key not in HANGUP_CAUSES:
        logger.warning("unknown telnyx hangup_cause %r; treating it as unspecified", key)
        key = "unspecified"
    fixed = _FIXED_CAUSES.get(key)
    if fixed is not None:
        return fixed
    if leg.bot_hangup and key in _COMMANDED:
        return CallState.HANGUP_BOT
    person = "callee" if leg.direction is Direction.OUTBOUND else "caller"
    if key == "normal_clearing":
        if leg.direction is not None and side == person:
            return CallState.HANGUP_USER
        return CallState.COMPLETED
    if key == "originator_cancel":
        if leg.direction is Direction.INBOUND or (leg.direction is None and side == "caller"):
            return CallState.HANGUP_USER
        return CallState.HANGUP_BOT
    return CallState.COMPLETED if leg.answered else CallState.FAILED


def map_voice(voice: str | None) -> str:
    """The Telnyx `speak` voice for our TTS voice setting.

    OpenAI voice names map to Telnyx's basic `female`/`male`; anything else that looks like a
    Telnyx voice id (`AWS.Polly.Joanna-Neural`, `Azure....`, `female`, `male`) passes through.
    """
    name = (voice or "").strip()
    lowered = name.lower()
    if lowered in ("female", "male"):
        return lowered
    if lowered in _FEMALE:
        return "female"
    if lowered in _MALE:
        return "male"
    if "." in name:
        return name
    return DEFAULT_VOICE


# ---------------------------------------------------------------------------------- client_state


@dataclass(frozen=True, slots=True)
class ClientState:
    """What we carried in a command's `client_state`."""

    call_id: str
    kind: str = ""
    """"" (dial/answer), "turn", "notify" or "speak"."""
    value: str = ""


def encode_client_state(call_id: str, kind: str = "", value: str = "") -> str:
    """base64 of `callId` or `callId:kind:value` (Telnyx requires base64 client_state)."""
    text = call_id if not kind else f"{call_id}:{kind}:{value}"
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_client_state(value: object) -> ClientState | None:
    """Parse a webhook's `client_state`; None when absent or not ours.

    Strict: the text must be canonical base64 of UTF-8 (re-encoding gives it back), so a
    foreign client_state set by another application is not mistaken for a call id.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if base64.b64encode(raw).decode("ascii") != value or not text:
        return None
    call_id, _, rest = text.partition(":")
    kind, _, extra = rest.partition(":")
    return ClientState(call_id, kind, extra)


# ---------------------------------------------------------------------------------- payloads


def dial_payload(
    *,
    call_id: str,
    connection_id: str,
    to: str,
    from_: str,
    webhook_url: str,
    ring_timeout_seconds: int,
    stream: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`POST /calls`: `command_id` makes an SDK retry after a timeout not dial twice."""
    payload: dict[str, Any] = {
        "connection_id": connection_id,
        "to": to,
        "from": from_,
        "webhook_url": webhook_url,
        "webhook_url_method": "POST",
        "client_state": encode_client_state(call_id),
        "timeout_secs": ring_timeout_seconds,
        "command_id": f"voicecall-dial-{call_id}",
    }
    payload.update(stream or {})
    return payload


def answer_payload(call_id: str, stream: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`actions/answer` with a deterministic `command_id`: Telnyx ignores a repeated command
    with the same id on the same call for 60 s, so a retried answer is harmless."""
    payload: dict[str, Any] = {
        "command_id": f"voicecall-answer-{call_id}",
        "client_state": encode_client_state(call_id),
    }
    payload.update(stream or {})
    return payload


def speak_payload(
    text: str, *, voice: str, client_state: str, command_id: str, language: str = DEFAULT_LANGUAGE
) -> dict[str, Any]:
    """`actions/speak` (Telnyx's own TTS; used when no media stream carries our audio)."""
    return {
        "payload": text,
        "payload_type": "text",
        "voice": voice,
        "language": language,
        "client_state": client_state,
        "command_id": command_id,
    }


def transcription_payload(client_state: str, command_id: str) -> dict[str, Any]:
    """`actions/transcription_start` on the caller's audio only (not our own speech).

    The language goes inside `transcription_engine_config` (the command has no top-level
    `language`; Telnyx's schema, SPEC 10).
    """
    return {
        "transcription_engine": "Telnyx",
        "transcription_engine_config": {
            "transcription_engine": "Telnyx",
            "language": TRANSCRIPTION_LANGUAGE,
        },
        "transcription_tracks": "inbound",
        "client_state": client_state,
        "command_id": command_id,
    }


def stream_fields(stream_url: str, token: str | None, *, dial: bool = True) -> dict[str, Any]:
    """Media streaming on dial/answer: bidirectional RTP in PCMU at 8 kHz.

    Without `stream_bidirectional_mode: rtp` Telnyx defaults to MP3 frames and the caller hears
    nothing we stream (deepgram/deepclaw PR #8). The token always rides in the URL's query (the
    media server reads it there); `stream_auth_token` and `stream_bidirectional_sampling_rate`
    are fields of dial only (`actions/answer` does not define them, and PCMU is 8 kHz anyway).
    """
    url = stream_url
    fields: dict[str, Any] = {
        "stream_track": "inbound_track",
        "stream_codec": "PCMU",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
        "stream_bidirectional_target_legs": "self",
    }
    if dial:
        fields["stream_bidirectional_sampling_rate"] = 8000
    if token:
        separator = "&" if "?" in url else "?"
        url = f"{url}{separator}token={token}"
        if dial:
            fields["stream_auth_token"] = token
    fields["stream_url"] = url
    return fields


# ---------------------------------------------------------------------------------- webhooks


class TelnyxPayloadError(ValueError):
    """The webhook body is not JSON (answered 400)."""


@dataclass(frozen=True, slots=True)
class TelnyxWebhook:
    """One parsed Call Control webhook."""

    event_id: str
    event_type: str
    call_control_id: str
    client_state: ClientState | None
    payload: Mapping[str, Any]
    """The raw `data.payload` (kept for the few fields the provider needs)."""


def parse_webhook(body: bytes) -> TelnyxWebhook | None:
    """Parse a webhook body; None when it carries no call event (acknowledged, ignored).

    Raises:
        TelnyxPayloadError: the body is not a JSON object.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TelnyxPayloadError("telnyx webhook body is not JSON") from exc
    if not isinstance(document, dict):
        raise TelnyxPayloadError("telnyx webhook body is not a JSON object")
    data = document.get("data")
    if not isinstance(data, dict):
        return None
    event_type = data.get("event_type")
    payload = data.get("payload")
    if not isinstance(event_type, str) or not isinstance(payload, dict):
        return None
    call_control_id = payload.get("call_control_id")
    if not isinstance(call_control_id, str) or not call_control_id:
        return None
    event_id = data.get("id")
    return TelnyxWebhook(
        event_id=event_id if isinstance(event_id, str) else "",
        event_type=event_type,
        call_control_id=call_control_id,
        client_state=decode_client_state(payload.get("client_state")),
        payload=payload,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _confidence(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0.0, min(1.0, float(value)))


def to_events(hook: TelnyxWebhook, *, leg: LegFacts | None = None) -> list[ProviderEvent]:
    """The normalised events of one webhook (SPEC 5 event types).

    `leg` is what the provider knows of the call beyond this webhook (direction, answered, our
    own hang-up): `call.hangup` needs it to say who ended the call.
    """
    payload = hook.payload
    state = hook.client_state
    turn = state.value if state and state.kind == "turn" and state.value else None
    common: dict[str, Any] = {
        "provider_call_id": hook.call_control_id,
        "call_id": state.call_id if state else None,
        "dedupe_key": f"telnyx:{hook.event_id}" if hook.event_id else None,
    }
    kind = hook.event_type
    if kind in ("call.initiated", "call.ringing", "call.answered"):
        event_type = {
            "call.initiated": EventType.INITIATED,
            "call.ringing": EventType.RINGING,
            "call.answered": EventType.ANSWERED,
        }[kind]
        return [
            ProviderEvent(
                event_type,
                direction=direction_of(payload),
                from_number=_text(payload.get("from")),
                to_number=_text(payload.get("to")),
                **common,
            )
        ]
    if kind == "call.bridged":
        return [ProviderEvent(EventType.ACTIVE, **common)]
    if kind == "call.transcription":
        data = payload.get("transcription_data")
        data = data if isinstance(data, dict) else {}
        transcript = _text(data.get("transcript")) or _text(payload.get("transcription"))
        if transcript is None:
            return []
        is_final = data.get("is_final")
        return [
            ProviderEvent(
                EventType.SPEECH,
                transcript=transcript,
                is_final=is_final if isinstance(is_final, bool) else True,
                confidence=_confidence(data.get("confidence")),
                turn_token=turn,
                **common,
            )
        ]
    if kind == "call.dtmf.received":
        digit = _text(payload.get("digit"))
        if digit is None:
            return []
        return [
            ProviderEvent(EventType.DTMF, digits=digit, is_final=False, turn_token=turn, **common)
        ]
    if kind == "call.hangup":
        end_state = hangup_end_state(
            _text(payload.get("hangup_cause")),
            _text(payload.get("hangup_source")),
            leg or LegFacts(),
        )
        return [ProviderEvent(EventType.ENDED, end_state=end_state, **common)]
    return []


def direction_of(payload: Mapping[str, Any]) -> Direction | None:
    """The `direction` of a `call.initiated` payload (absent on every other webhook)."""
    value = payload.get("direction")
    if value in ("incoming", "inbound"):
        return Direction.INBOUND
    if value in ("outgoing", "outbound"):
        return Direction.OUTBOUND
    return None


def stream_failure(hook: TelnyxWebhook) -> str | None:
    """Why the media stream of the call failed (`streaming.failed`), else None."""
    if hook.event_type != "streaming.failed":
        return None
    return _text(hook.payload.get("failure_reason")) or "unknown reason"

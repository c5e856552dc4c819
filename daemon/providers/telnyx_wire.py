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

from daemon.engine.state import CallState
from daemon.events import Direction, EventType, ProviderEvent

logger = logging.getLogger(__name__)

DEFAULT_VOICE = "female"
DEFAULT_LANGUAGE = "en-US"
TRANSCRIPTION_LANGUAGE = "en"

ALREADY_ENDED_CODES = frozenset({"90018", "90055"})
"""Telnyx error codes meaning the call leg is gone: 90018 "Call has already ended", 90055
"Call is not active" (both with HTTP 422)."""

_FEMALE = frozenset({"alloy", "nova", "shimmer", "coral", "sage", "ballad"})
_MALE = frozenset({"echo", "onyx", "fable", "ash", "verse"})

HANGUP_CAUSES: Mapping[str, CallState] = {
    "normal_clearing": CallState.COMPLETED,
    "normal_unspecified": CallState.COMPLETED,
    "unspecified": CallState.COMPLETED,
    "originator_cancel": CallState.HANGUP_BOT,
    "user_busy": CallState.BUSY,
    "call_rejected": CallState.BUSY,
    "no_answer": CallState.NO_ANSWER,
    "no_user_response": CallState.NO_ANSWER,
    "timeout": CallState.NO_ANSWER,
    "time_limit": CallState.TIMEOUT,
    "user_hangup": CallState.HANGUP_USER,
    "subscriber_absent": CallState.HANGUP_USER,
    "machine_detected": CallState.VOICEMAIL,
    "fax_detected": CallState.VOICEMAIL,
    "destination_out_of_order": CallState.FAILED,
    "network_out_of_order": CallState.FAILED,
    "service_unavailable": CallState.FAILED,
    "recovery_on_timer_expire": CallState.FAILED,
    "not_found": CallState.FAILED,
    "unallocated_number": CallState.FAILED,
}
"""Telnyx `call.hangup` `hangup_cause` values -> our end states (SPEC 5)."""


def map_hangup_cause(cause: str | None) -> CallState:
    """Our end state for a Telnyx hang-up cause; an unknown cause is `completed` (logged)."""
    key = (cause or "").strip().lower()
    state = HANGUP_CAUSES.get(key)
    if state is None:
        if key:
            logger.warning("unknown telnyx hangup_cause %r; treating the call as completed", key)
        return CallState.COMPLETED
    return state


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
    """`actions/transcription_start` on the caller's audio only (not our own speech)."""
    return {
        "language": TRANSCRIPTION_LANGUAGE,
        "transcription_engine": "Telnyx",
        "transcription_tracks": "inbound",
        "client_state": client_state,
        "command_id": command_id,
    }


def stream_fields(stream_url: str, token: str | None) -> dict[str, Any]:
    """Media streaming on dial/answer: bidirectional RTP in PCMU at 8 kHz.

    Without `stream_bidirectional_mode: rtp` Telnyx defaults to MP3 frames and the caller hears
    nothing we stream (deepgram/deepclaw PR #8).
    """
    url = stream_url
    fields: dict[str, Any] = {
        "stream_track": "inbound_track",
        "stream_codec": "PCMU",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
        "stream_bidirectional_sampling_rate": 8000,
        "stream_bidirectional_target_legs": "self",
    }
    if token:
        separator = "&" if "?" in url else "?"
        url = f"{url}{separator}token={token}"
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


def _direction(value: object) -> Direction | None:
    if value in ("incoming", "inbound"):
        return Direction.INBOUND
    if value in ("outgoing", "outbound"):
        return Direction.OUTBOUND
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _confidence(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0.0, min(1.0, float(value)))


def to_events(hook: TelnyxWebhook, *, bot_hangup: bool = False) -> list[ProviderEvent]:
    """The normalised events of one webhook (SPEC 5 event types).

    `bot_hangup` says we asked for this hang-up ourselves, so a `normal_clearing` hang-up is
    the bot's, not a neutral completion.
    """
    payload = hook.payload
    state = hook.client_state
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
                direction=_direction(payload.get("direction")),
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
                turn_token=state.value if state and state.kind == "turn" and state.value else None,
                **common,
            )
        ]
    if kind == "call.dtmf.received":
        digit = _text(payload.get("digit"))
        return [ProviderEvent(EventType.DTMF, digits=digit, **common)] if digit else []
    if kind == "call.hangup":
        end_state = map_hangup_cause(_text(payload.get("hangup_cause")))
        if bot_hangup and end_state is CallState.COMPLETED:
            end_state = CallState.HANGUP_BOT
        elif end_state is CallState.HANGUP_BOT and not bot_hangup and (
                _text(payload.get("hangup_source")) == "caller"
                and _direction(payload.get("direction")) is Direction.INBOUND):
            # originator_cancel from the caller of an inbound call: they gave up, not us.
            end_state = CallState.HANGUP_USER
        return [ProviderEvent(EventType.ENDED, end_state=end_state, **common)]
    return []

"""The OpenAI Realtime API's event protocol, as far as the bridge speaks it.

GA event names are the contract (SPEC 15); the beta names of the same server events
(``response.audio.delta`` for ``response.output_audio.delta`` ...) are mapped onto them here,
once, so the bridge only ever sees GA names. Client events are built by small functions so
their shapes live in one place.
"""

from __future__ import annotations

import json
from typing import Any

# Server events the bridge acts on (GA names).
SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
SPEECH_STARTED = "input_audio_buffer.speech_started"
INPUT_TRANSCRIPT_DONE = "conversation.item.input_audio_transcription.completed"
RESPONSE_CREATED = "response.created"
RESPONSE_DONE = "response.done"
AUDIO_DELTA = "response.output_audio.delta"
AUDIO_DONE = "response.output_audio.done"
TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
TRANSCRIPT_DONE = "response.output_audio_transcript.done"
FUNCTION_CALL_DONE = "response.function_call_arguments.done"
ERROR = "error"

BETA_NAMES = {
    "response.audio.delta": AUDIO_DELTA,
    "response.audio.done": AUDIO_DONE,
    "response.audio_transcript.delta": TRANSCRIPT_DELTA,
    "response.audio_transcript.done": TRANSCRIPT_DONE,
}
"""Beta server event names and the GA names they stand for."""

AUDIO_FORMAT = {"type": "audio/pcmu"}
"""G.711 mu-law at 8 kHz both ways: what every telephony stream carries, so nothing is
resampled or transcoded."""


def event_type(event: dict[str, Any]) -> str:
    """The event's GA type name (beta names mapped)."""
    kind = str(event.get("type", ""))
    return BETA_NAMES.get(kind, kind)


def session_update(
    *,
    model: str,
    voice: str,
    instructions: str,
    vad_threshold: float,
    silence_duration_ms: int,
    tools: list[dict[str, Any]],
    interrupt: bool,
    transcription_model: str,
) -> dict[str, Any]:
    """``session.update`` for a phone call: audio only, PCMU both ways, server VAD, tools.

    ``interrupt`` False (a one-way notify call, or an outbound call's opening line) keeps the
    model talking over the callee and answering nobody.
    """
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": model,
            "instructions": instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": AUDIO_FORMAT,
                    "transcription": {"model": transcription_model},
                    "turn_detection": turn_detection(
                        vad_threshold, silence_duration_ms, interrupt=interrupt
                    ),
                },
                "output": {"format": AUDIO_FORMAT, "voice": voice},
            },
            "tools": tools,
            "tool_choice": "auto",
        },
    }


def turn_detection(
    vad_threshold: float, silence_duration_ms: int, *, interrupt: bool
) -> dict[str, Any]:
    """Server VAD; ``interrupt`` lets caller speech cut the model and start its answer."""
    return {
        "type": "server_vad",
        "threshold": vad_threshold,
        "silence_duration_ms": silence_duration_ms,
        "create_response": interrupt,
        "interrupt_response": interrupt,
    }


def vad_update(
    vad_threshold: float, silence_duration_ms: int, *, interrupt: bool
) -> dict[str, Any]:
    """``session.update`` changing only the turn detection."""
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "audio": {
                "input": {
                    "turn_detection": turn_detection(
                        vad_threshold, silence_duration_ms, interrupt=interrupt
                    )
                }
            },
        },
    }


def say_instructions(text: str) -> str:
    """The per-response instructions that make the model say ``text`` as it is."""
    return f'Say exactly the following to the caller, word for word, and nothing else:\n"{text}"'


def response_create(
    *, instructions: str | None = None, metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    """``response.create`` (optionally with this response's own instructions)."""
    response: dict[str, Any] = {}
    if instructions is not None:
        response["instructions"] = instructions
    if metadata:
        response["metadata"] = metadata
    return {"type": "response.create", "response": response}


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    """``conversation.item.truncate``: the model's item was heard up to ``audio_end_ms``."""
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }


def function_output(call_id: str, output: Any) -> dict[str, Any]:
    """``conversation.item.create`` with a ``function_call_output`` (``output`` as JSON text)."""
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "function_call_output",
            "call_id": call_id,
            "output": json.dumps(output, ensure_ascii=False),
        },
    }


AUDIO_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
"""``input_audio_buffer.append`` is built by concatenation: base64 needs no JSON escaping."""


def parse_arguments(raw: Any) -> dict[str, Any]:
    """A function call's ``arguments`` (JSON text) as an object.

    Raises:
        ValueError: not JSON, or not a JSON object; the message is meant for the model.
    """
    if raw in (None, ""):
        return {}
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise ValueError("the arguments were not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("the arguments must be a JSON object")
    return parsed


_DELTA_HEADS = ('{"type":"response.output_audio.delta"', '{"type":"response.audio.delta"')


def _field(text: str, key: str) -> str | None:
    start = text.find(key)
    if start < 0:
        return None
    start += len(key)
    end = text.find('"', start)
    return text[start:end] if end >= 0 else None


def audio_delta_fields(text: str) -> tuple[str, str, str] | None:
    """Fast path for the one hot server event: ``(item_id, response_id, delta)`` of an audio
    delta whose ``type`` comes first, found by substring search (no ``json.loads`` of the
    audio); None for anything else, which is then parsed as JSON.

    The values are plain ids and base64, which need no JSON escaping; any backslash sends the
    message to the JSON parser.
    """
    if not text.startswith(_DELTA_HEADS):
        return None
    item_id = _field(text, '"item_id":"')
    response_id = _field(text, '"response_id":"') or ""
    delta = _field(text, '"delta":"')
    if item_id is None or delta is None or "\\" in item_id or "\\" in delta:
        return None
    return item_id, response_id, delta

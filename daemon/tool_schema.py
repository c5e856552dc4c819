"""The JSON Schema of the `voice_call` agent tool (SPEC section 7). Stdlib-only data."""

from __future__ import annotations

from typing import Any

TOOL_NAME = "voice_call"
TOOL_DESCRIPTION = (
    "Place and manage real phone calls. initiate_call dials a number and speaks a message "
    "(mode notify hangs up after speaking; conversation keeps the line open). continue_call "
    "speaks and waits for the caller's reply, returning its transcript. speak_to_user speaks "
    "without waiting. end_call hangs up. get_status returns the call record."
)

ACTIONS = ("initiate_call", "continue_call", "speak_to_user", "end_call", "get_status")

TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": list(ACTIONS), "description": "What to do."},
        "message": {
            "type": "string",
            "description": "What to say (initiate_call, continue_call, speak_to_user).",
        },
        "to": {
            "type": "string",
            "pattern": r"^\+[1-9]\d{1,14}$",
            "description": "E.164 number to call (initiate_call; defaults to to_number).",
        },
        "mode": {
            "type": "string",
            "enum": ["notify", "conversation"],
            "description": "initiate_call: notify (speak, hang up) or conversation.",
        },
        "callId": {
            "type": "string",
            "description": "The call to act on (every action but initiate_call).",
        },
    },
    "required": ["action"],
    "additionalProperties": False,
}

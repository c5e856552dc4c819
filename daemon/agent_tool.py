"""The `voice_call` agent tool (SPEC section 7): five actions, results that never raise."""

from __future__ import annotations

import logging
from typing import Any

from daemon.engine.calls import CallEngine
from daemon.errors import VoicecallError
from daemon.tool_schema import ACTIONS

logger = logging.getLogger(__name__)


def _text(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    return value if isinstance(value, str) and value.strip() else None


async def run_tool(engine: CallEngine, args: dict[str, Any]) -> dict[str, Any]:
    """Run one tool action; a bad call returns `{"error": sentence}`, never raises."""
    action = args.get("action")
    if action not in ACTIONS:
        return {"error": f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"}
    message = _text(args, "message")
    call_id = _text(args, "callId")
    try:
        if action == "initiate_call":
            if message is None:
                return {"error": "message required"}
            mode = args.get("mode")
            record = await engine.initiate(
                message, _text(args, "to"), mode if isinstance(mode, str) else None
            )
            return {"callId": record.call_id, "initiated": True}
        if call_id is None:
            return {"error": "callId required"}
        if action == "get_status":
            found = await engine.get(call_id)
            return {"found": True, "call": found.to_wire()} if found else {"found": False}
        if action == "end_call":
            await engine.end(call_id)
            return {"success": True}
        if message is None:
            return {"error": "callId and message required"}
        if action == "continue_call":
            transcript = await engine.continue_call(call_id, message, None)
            return {"success": True, "transcript": transcript}
        await engine.speak(call_id, message)
        return {"success": True}
    except VoicecallError as exc:
        return {"error": exc.message}
    except Exception:  # SPEC 7: a bad call is an {error}, never a crash
        logger.exception("voice_call %s failed", action)
        return {"error": f"{action} failed unexpectedly; see the daemon log"}

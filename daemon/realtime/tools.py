"""The tools the model is offered: ``end_call`` (ours) and the configured ``realtime.tools``
(relayed to the agent), plus the deadline of each relayed call.

A relayed call waits for ``voicecall.tool_result``; after ``realtime.tool_timeout_ms`` without
one, the model is answered with an error so it can tell the caller instead of waiting forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

END_CALL = "end_call"
END_CALL_TOOL: dict[str, Any] = {
    "type": "function",
    "name": END_CALL,
    "description": (
        "Hang up the phone call. Use it after saying goodbye; the call ends once "
        "your last words have been heard."
    ),
    "parameters": {"type": "object", "properties": {}},
}


def tool_definitions(configured: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``end_call`` and every configured tool, in the Realtime API's function-tool shape."""
    tools = [END_CALL_TOOL]
    for tool in configured:
        tools.append(
            {
                "type": "function",
                "name": str(tool["name"]),
                "description": str(tool.get("description", "")),
                "parameters": dict(tool.get("parameters") or {"type": "object", "properties": {}}),
            }
        )
    return tools


class PendingTools:
    """Relayed tool calls waiting for the agent, each with a timer."""

    def __init__(self, timeout_seconds: float, on_expired: Callable[[str, str], None]) -> None:
        """``on_expired(tool_call_id, name)`` runs when a call was not answered in time."""
        self.timeout_seconds = timeout_seconds
        self._on_expired = on_expired
        self._pending: dict[str, tuple[str, asyncio.TimerHandle]] = {}

    def add(self, tool_call_id: str, name: str) -> None:
        """Start waiting for the answer to ``tool_call_id``."""
        timer = asyncio.get_running_loop().call_later(
            self.timeout_seconds, self._expire, tool_call_id
        )
        self._pending[tool_call_id] = (name, timer)

    def take(self, tool_call_id: str) -> str | None:
        """Stop waiting: the name of the pending call, or None when none is pending."""
        entry = self._pending.pop(tool_call_id, None)
        if entry is None:
            return None
        entry[1].cancel()
        return entry[0]

    def clear(self) -> None:
        """Forget every pending call (the session ended)."""
        for _name, timer in self._pending.values():
            timer.cancel()
        self._pending.clear()

    def forget_listener(self) -> None:
        """Drop ``on_expired`` (the session ended and nothing is pending): it is the owner's
        bound method, and would keep the owner in a reference cycle with this."""
        self._on_expired = _ignore

    def _expire(self, tool_call_id: str) -> None:
        entry = self._pending.pop(tool_call_id, None)
        if entry is not None:
            self._on_expired(tool_call_id, entry[0])


def _ignore(tool_call_id: str, name: str) -> None:
    """A forgotten listener: no call is waiting any more."""
    del tool_call_id, name

"""The call state machine: a pure transition table (SPEC section 5).

Live states move forward in order (`initiated < ringing < answered < active < speaking <
listening`), `speaking` and `listening` may alternate, any live state may end in any ended state,
and an ended call never changes again.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from daemon.errors import InvalidTransitionError


class CallState(StrEnum):
    """Where a call is in its life."""

    INITIATED = "initiated"
    RINGING = "ringing"
    ANSWERED = "answered"
    ACTIVE = "active"
    SPEAKING = "speaking"
    LISTENING = "listening"
    COMPLETED = "completed"
    HANGUP_USER = "hangup-user"
    HANGUP_BOT = "hangup-bot"
    TIMEOUT = "timeout"
    ERROR = "error"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"

    @property
    def is_ended(self) -> bool:
        """True for the states a call never leaves."""
        return self in ENDED_STATES


LIVE_ORDER: tuple[CallState, ...] = (
    CallState.INITIATED,
    CallState.RINGING,
    CallState.ANSWERED,
    CallState.ACTIVE,
    CallState.SPEAKING,
    CallState.LISTENING,
)
ENDED_STATES: frozenset[CallState] = frozenset(set(CallState) - set(LIVE_ORDER))
CONNECTED_STATES: frozenset[CallState] = frozenset(
    {CallState.ANSWERED, CallState.ACTIVE, CallState.SPEAKING, CallState.LISTENING}
)


def _build_table() -> Mapping[CallState, frozenset[CallState]]:
    table: dict[CallState, frozenset[CallState]] = {}
    for i, state in enumerate(LIVE_ORDER):
        forward = set(LIVE_ORDER[i + 1 :])
        if state is CallState.LISTENING:
            forward.add(CallState.SPEAKING)
        table[state] = frozenset(forward | ENDED_STATES)
    for state in ENDED_STATES:
        table[state] = frozenset()
    return table


TRANSITIONS: Mapping[CallState, frozenset[CallState]] = _build_table()
"""For each state, the states it may move to (staying put is always allowed)."""


def can_transition(current: CallState, target: CallState) -> bool:
    """Tell whether `current -> target` is allowed (a no-op move counts as allowed)."""
    return current is target or target in TRANSITIONS[current]


def transition(call_id: str, current: CallState, target: CallState) -> CallState:
    """Return the new state, or raise InvalidTransitionError.

    Moving to the current state is a no-op, so duplicate provider events are harmless.
    """
    if not can_transition(current, target):
        raise InvalidTransitionError(call_id, current.value, target.value)
    return target

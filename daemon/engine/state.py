"""Moved to :mod:`daemon.model.state` (issue 14).

This re-export lasts only while parallel branches land; import the new path.
"""

from daemon.model.state import (
    CONNECTED_STATES,
    ENDED_STATES,
    LIVE_ORDER,
    TRANSITIONS,
    CallState,
    can_transition,
    transition,
)

__all__ = [
    "CONNECTED_STATES",
    "ENDED_STATES",
    "LIVE_ORDER",
    "TRANSITIONS",
    "CallState",
    "can_transition",
    "transition",
]

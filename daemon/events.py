"""Moved to :mod:`daemon.model.events` (issue 14).

This re-export lasts only while parallel branches land; import the new path.
"""

from daemon.model.events import (
    CallEvent,
    CallMode,
    Direction,
    EventType,
    MachineReport,
    MachineResult,
    ProviderEvent,
)

__all__ = [
    "CallEvent",
    "CallMode",
    "Direction",
    "EventType",
    "MachineReport",
    "MachineResult",
    "ProviderEvent",
]

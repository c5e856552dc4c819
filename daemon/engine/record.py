"""Moved to :mod:`daemon.model.record` (issue 14).

This re-export lasts only while parallel branches land; import the new path.
"""

from daemon.model.record import (
    CallRecord,
    TranscriptEntry,
    parse_time,
    utc_now,
)

__all__ = [
    "CallRecord",
    "TranscriptEntry",
    "parse_time",
    "utc_now",
]

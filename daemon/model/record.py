"""The call record: everything the daemon knows about one call (SPEC section 5)."""

from __future__ import annotations

import json
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from daemon.model.events import CallMode, Direction
from daemon.model.state import CONNECTED_STATES, CallState, can_transition, transition


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    """Parse a timestamp written by :func:`utc_now`."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One line of what was said (never changed in place: a changed line is a new entry)."""

    timestamp: str
    speaker: str  # "bot" | "user"
    text: str
    wire_json: str = field(init=False, repr=False, compare=False)
    """:meth:`to_wire` as compact JSON, made once: the form the store keeps the line in (see
    :meth:`CallRecord.snapshot_json`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire_json", _compact(self.to_wire()))

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape."""
        return {"timestamp": self.timestamp, "speaker": self.speaker, "text": self.text}


@dataclass(slots=True)
class CallRecord:
    """A call, live or ended. Mutated only by the engine, under the call's lock."""

    call_id: str
    provider: str
    direction: Direction
    mode: CallMode
    from_number: str
    to_number: str
    state: CallState = CallState.INITIATED
    provider_call_id: str | None = None
    started_at: str = field(default_factory=utc_now)
    answered_at: str | None = None
    ended_at: str | None = None
    end_reason: str | None = None
    transcript: list[TranscriptEntry] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ended(self) -> bool:
        """True once the call is over."""
        return self.state.is_ended

    @property
    def is_connected(self) -> bool:
        """True while the call is answered and not over."""
        return self.state in CONNECTED_STATES

    def move_to(self, target: CallState, *, unless_behind: bool = False) -> None:
        """Change state through the transition table: the one place a record's state is
        written after it is created (`tests/unit/test_architecture.py` checks that).

        Raises InvalidTransitionError for a move the table forbids; with `unless_behind` such
        a move (a late or reordered provider event) leaves the state as it is instead.
        Called on a :meth:`draft`, never on the live record.
        """
        if unless_behind and not can_transition(self.state, target):
            return
        self.state = transition(self.call_id, self.state, target)

    def draft(self) -> CallRecord:
        """A copy to change, store, and only then :meth:`adopt` (SPEC section 6: what could not
        be stored leaves no trace in memory).

        The transcript list is copied but its entries are shared: an entry is never changed in
        place, only replaced.
        """
        copy = replace(self, transcript=list(self.transcript), metadata=deepcopy(self.metadata))
        return copy

    def adopt(self, stored: CallRecord) -> None:
        """Take every field of `stored` (a draft that is now durable), keeping this object's
        identity so every holder of the live record sees the change."""
        for name in self.__slots__:
            setattr(self, name, getattr(stored, name))

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON shape of SPEC section 5."""
        wire = self._wire_head()
        wire["transcript"] = [t.to_wire() for t in self.transcript]
        wire["metadata"] = dict(self.metadata)
        return wire

    def snapshot_json(self) -> str:
        """:meth:`to_wire` as compact JSON with an empty transcript: the form the store keeps.

        The store writes this snapshot on every event of the call; the transcript lines are
        kept apart, each written once (``TranscriptEntry.wire_json``, see
        :mod:`daemon.store.lines`), because on a long call they are most of the record and
        every write would repeat all of them. :meth:`from_stored` joins the two again.
        """
        head = _compact(self._wire_head())
        return f'{head[:-1]},"transcript":[],"metadata":{_compact(dict(self.metadata))}}}'

    @classmethod
    def from_stored(cls, snapshot: str, lines: str | None) -> CallRecord:
        """Rebuild a record from :meth:`snapshot_json` and its lines' JSON joined by commas
        (None or "": no lines).

        A snapshot with lines inside it was written by a voicecall from before lines were kept
        apart (a store not written since the upgrade, or an older daemon still running on a
        shared database): its lines are the call's transcript as that daemon last stored it.
        A snapshot of this version never has any.
        """
        data = json.loads(snapshot)
        if not data.get("transcript"):
            data["transcript"] = json.loads(f"[{lines}]") if lines else []
        return cls.from_wire(data)

    def _wire_head(self) -> dict[str, Any]:
        """The fields of :meth:`to_wire` before the transcript, in their order."""
        return {
            "callId": self.call_id,
            "providerCallId": self.provider_call_id,
            "provider": self.provider,
            "direction": self.direction.value,
            "mode": self.mode.value,
            "state": self.state.value,
            "from": self.from_number,
            "to": self.to_number,
            "startedAt": self.started_at,
            "answeredAt": self.answered_at,
            "endedAt": self.ended_at,
            "endReason": self.end_reason,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> CallRecord:
        """Rebuild a record from :meth:`to_wire` output (the store keeps that shape)."""
        return cls(
            call_id=data["callId"],
            provider=data["provider"],
            direction=Direction(data["direction"]),
            mode=CallMode(data["mode"]),
            from_number=data.get("from") or "",
            to_number=data.get("to") or "",
            state=CallState(data["state"]),
            provider_call_id=data.get("providerCallId"),
            started_at=data["startedAt"],
            answered_at=data.get("answeredAt"),
            ended_at=data.get("endedAt"),
            end_reason=data.get("endReason"),
            transcript=[TranscriptEntry(**t) for t in data.get("transcript") or []],
            metadata=dict(data.get("metadata") or {}),
        )

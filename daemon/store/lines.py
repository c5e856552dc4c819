"""Which transcript lines a `record()` must write: each line once, not the whole transcript.

A call's snapshot is written with every event of the call, and on a long call the transcript is
most of it: an hour is several hundred lines, so rewriting them all with each event put ~13 MB/s
into SQLite's WAL for 400 one-hour calls (and as much JSON for PostgreSQL to parse), for a few
new lines a minute. Both backends keep each line as its own row, keyed by (call, index), and the
snapshot without them (:meth:`CallRecord.snapshot_json`).

A line is never changed in place: a changed line is a new :class:`TranscriptEntry` at the same
index (barge-in shortens what the caller did not hear). So this daemon remembers, per call, the
entries it last stored, and a write carries only the indexes whose entry is not that same
object. A call this daemon has not written since it started (a restart, a call taken over from
a dead daemon, a late event of an ended call) is written whole once, and rows past its length
are removed, so the rows then match the record whatever was stored before.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.model.record import CallRecord, TranscriptEntry


@dataclass(frozen=True, slots=True)
class LineWrites:
    """What one `record()` writes of a call's transcript."""

    upserts: list[tuple[int, str]]
    """(index, the line's JSON) to insert or replace."""
    keep: int | None
    """Rows at or past this index are deleted; None when there can be none."""

    @property
    def indexes(self) -> list[int]:
        """The upserted indexes (a column for an array parameter)."""
        return [index for index, _ in self.upserts]

    @property
    def texts(self) -> list[str]:
        """The upserted lines' JSON, in the order of :attr:`indexes`."""
        return [text for _, text in self.upserts]


class WrittenLines:
    """The transcript entries this daemon knows are stored, per call it writes."""

    __slots__ = ("_stored",)

    def __init__(self) -> None:
        self._stored: dict[str, list[TranscriptEntry]] = {}

    def pending(self, call: CallRecord) -> LineWrites:
        """The lines `call` needs written for the stored rows to equal its transcript."""
        lines = call.transcript
        known = self._stored.get(call.call_id)
        if known is None:
            return LineWrites([(i, e.wire_json) for i, e in enumerate(lines)], len(lines))
        upserts = [
            (i, entry.wire_json)
            for i, (entry, old) in enumerate(zip(lines, known, strict=False))
            if entry is not old
        ]
        upserts.extend((i, lines[i].wire_json) for i in range(len(known), len(lines)))
        return LineWrites(upserts, len(lines) if len(lines) < len(known) else None)

    def stored(self, call: CallRecord) -> None:
        """`call` is durable as it is now. An ended call is forgotten: it is rarely written
        again, and then written whole."""
        if call.is_ended:
            self._stored.pop(call.call_id, None)
        else:
            self._stored[call.call_id] = list(call.transcript)

    def forget(self, call_id: str) -> None:
        """This daemon does not write `call_id` any more (another daemon runs it now)."""
        self._stored.pop(call_id, None)

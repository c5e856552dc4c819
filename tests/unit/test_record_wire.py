"""The call record's stored form: a snapshot without the transcript, and each line's JSON."""

from __future__ import annotations

import json

import pytest

from daemon.model.events import CallMode, Direction
from daemon.model.record import CallRecord, TranscriptEntry
from daemon.model.state import CallState


def record(lines: int, metadata: dict[str, object] | None = None) -> CallRecord:
    call = CallRecord(
        "c-1",
        "twilio",
        Direction.INBOUND,
        CallMode.CONVERSATION,
        "+15550001111",
        "+15550002222",
        state=CallState.LISTENING,
        provider_call_id="CA1",
        metadata=metadata or {},
    )
    texts = ['He said "hi"\\n', "ünïcode ☎ and \u2028", "", "a\tb"]
    call.transcript = [
        TranscriptEntry(f"2026-12-06T18:00:{n % 60:02d}.000Z", "user" if n % 2 else "bot", text)
        for n, text in ((n, texts[n % len(texts)]) for n in range(lines))
    ]
    return call


@pytest.mark.parametrize("lines", [0, 1, 4, 300])
def test_the_snapshot_and_the_lines_rebuild_the_record_exactly(lines: int) -> None:
    call = record(lines, {"agent": {"turns": [1, 2]}, "note": None, "ñ": "x"})
    snapshot = call.snapshot_json()
    assert json.loads(snapshot) == {**call.to_wire(), "transcript": []}
    assert "transcript" not in snapshot.split('"transcript":[]')[1], "one transcript key"
    for entry in call.transcript:
        assert entry.wire_json == json.dumps(entry.to_wire(), separators=(",", ":"))
    joined = ",".join(entry.wire_json for entry in call.transcript)
    assert CallRecord.from_stored(snapshot, joined) == call
    assert CallRecord.from_stored(snapshot, None).transcript == []


def test_the_snapshot_does_not_grow_with_the_transcript() -> None:
    """What makes a long call's writes cheap: the lines are stored apart, each once."""
    assert len(record(0).snapshot_json()) == len(record(500).snapshot_json())


def test_a_snapshot_with_its_lines_inside_is_read_as_its_writer_stored_it() -> None:
    """A snapshot written before lines were rows (by an older daemon still running on a
    shared database, say) carries the whole transcript as that daemon last stored it; the
    rows may be older. A snapshot of this version has none inside, and the rows are read."""
    call = record(3)
    old = json.dumps(call.to_wire())
    assert CallRecord.from_stored(old, call.transcript[0].wire_json) == call
    assert CallRecord.from_stored(old, None) == call
    current = call.snapshot_json()
    assert CallRecord.from_stored(current, call.transcript[0].wire_json).transcript == [
        call.transcript[0]
    ]


def test_a_lines_json_stays_out_of_its_repr() -> None:
    """Logs and assertion messages show what was said, not the line twice over."""
    assert repr(TranscriptEntry("t", "bot", "Hello.")) == (
        "TranscriptEntry(timestamp='t', speaker='bot', text='Hello.')"
    )

"""The call record's stored form: the JSON the store keeps, built from each line's JSON."""

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
def test_the_stored_form_is_exactly_the_compact_json_of_to_wire(lines: int) -> None:
    call = record(lines, {"agent": {"turns": [1, 2]}, "note": None, "ñ": "x"})
    assert call.wire_json() == json.dumps(call.to_wire(), separators=(",", ":"))
    assert CallRecord.from_wire(json.loads(call.wire_json())) == call


def test_a_line_is_serialised_once_and_a_new_line_changes_only_the_end() -> None:
    """What makes a long call's snapshot cheap: the lines' JSON is kept with them."""
    call = record(3)
    first = call.transcript[0]
    assert first.wire_json == json.dumps(first.to_wire(), separators=(",", ":"))
    before = call.wire_json()
    call.transcript.append(TranscriptEntry("2026-12-06T18:01:00.000Z", "bot", "Bye."))
    after = call.wire_json()
    assert after.startswith(before.split(',"metadata"')[0][:-1])


def test_a_lines_json_stays_out_of_its_repr() -> None:
    """Logs and assertion messages show what was said, not the line twice over."""
    assert repr(TranscriptEntry("t", "bot", "Hello.")) == (
        "TranscriptEntry(timestamp='t', speaker='bot', text='Hello.')"
    )

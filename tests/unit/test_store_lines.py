"""Which transcript lines a store write carries (daemon/store/lines.py): new and replaced ones
only, once this daemon has stored the call; everything, and a cut, when it has not."""

from __future__ import annotations

from dataclasses import replace

from daemon.model.events import CallMode, Direction
from daemon.model.record import CallRecord, TranscriptEntry
from daemon.model.state import CallState
from daemon.store.lines import WrittenLines


def call_with(lines: int) -> CallRecord:
    call = CallRecord("c-1", "twilio", Direction.INBOUND, CallMode.CONVERSATION, "+1555", "+1556")
    call.transcript = [TranscriptEntry(f"t{n}", "user", f"said {n}") for n in range(lines)]
    return call


def test_a_call_not_stored_by_this_daemon_is_written_whole_and_cut_to_its_length() -> None:
    call = call_with(3)
    writes = WrittenLines().pending(call)
    assert writes.upserts == [(n, call.transcript[n].wire_json) for n in range(3)]
    assert writes.keep == 3, "rows a previous daemon stored past the record go"
    assert writes.indexes == [0, 1, 2] and writes.texts == [e.wire_json for e in call.transcript]


def test_once_stored_only_new_lines_are_written() -> None:
    written, call = WrittenLines(), call_with(700)
    written.stored(call)
    assert written.pending(call).upserts == [] and written.pending(call).keep is None
    call.transcript.append(TranscriptEntry("t700", "bot", "Sure."))
    writes = written.pending(call)
    assert writes.upserts == [(700, call.transcript[700].wire_json)] and writes.keep is None


def test_a_line_replaced_in_place_is_written_again() -> None:
    """Barge-in replaces the last bot line with what the caller heard of it."""
    written, call = WrittenLines(), call_with(5)
    written.stored(call)
    call.transcript[3] = replace(call.transcript[3], text="cut")
    assert written.pending(call).upserts == [(3, call.transcript[3].wire_json)]


def test_an_equal_line_that_is_a_new_object_is_written_rather_than_missed() -> None:
    written, call = WrittenLines(), call_with(2)
    written.stored(call)
    call.transcript[1] = TranscriptEntry("t1", "user", "said 1")
    assert written.pending(call).indexes == [1]


def test_a_shorter_transcript_cuts_the_rows_past_it() -> None:
    written, call = WrittenLines(), call_with(4)
    written.stored(call)
    call.transcript = call.transcript[:2]
    writes = written.pending(call)
    assert writes.upserts == [] and writes.keep == 2


def test_a_failed_write_leaves_the_lines_pending() -> None:
    """Only `stored()` (called after a commit) moves what is known."""
    written, call = WrittenLines(), call_with(1)
    written.stored(call)
    call.transcript.append(TranscriptEntry("t1", "bot", "one"))
    assert written.pending(call).indexes == [1]
    assert written.pending(call).indexes == [1], "asking again changes nothing"


def test_an_ended_call_is_forgotten_and_written_whole_if_ever_again() -> None:
    written, call = WrittenLines(), call_with(3)
    written.stored(call)
    call.state = CallState.COMPLETED
    written.stored(call)
    writes = written.pending(call)
    assert writes.indexes == [0, 1, 2] and writes.keep == 3


def test_what_is_known_is_a_copy_not_the_calls_own_list() -> None:
    """The engine appends to the live record's list after a write; that must stay pending."""
    written, call = WrittenLines(), call_with(1)
    written.stored(call)
    call.transcript.append(TranscriptEntry("t1", "bot", "one"))
    assert written.pending(call).indexes == [1]


def test_a_call_another_daemon_runs_now_is_forgotten() -> None:
    written, call = WrittenLines(), call_with(2)
    written.stored(call)
    written.forget(call.call_id)
    assert written.pending(call).indexes == [0, 1]

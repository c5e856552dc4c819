"""The store contract: what every backend of `daemon.store.base.Store` must do.

A backend's test module subclasses :class:`StoreContract` and provides a `backend` fixture (a
:class:`Backend`); every test here then runs against that backend, on real storage. Nothing is
mocked: SQLite on a temporary folder, PostgreSQL on a real server (`tests/pg_cluster.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import pytest

from daemon.errors import StoreError, StoreInUseError
from daemon.model.events import CallMode, Direction, EventType
from daemon.model.record import CallRecord, TranscriptEntry
from daemon.model.state import CallState
from daemon.model.webhook import WebhookReply
from daemon.store.base import Store
from daemon.store.factory import create_store
from daemon.store.location import StoreLocation


class Backend(Protocol):
    """One backend under test: a fixed location (so a store can be reopened) and its quirks."""

    location: StoreLocation
    schema_version: int
    """The newest schema this voicecall knows for the backend."""

    async def set_schema_version(self, version: int) -> None:
        """Mark the (closed) store as written by a voicecall with schema `version`."""

    async def break_writes(self, broken: bool) -> None:
        """Make the database itself refuse (or accept again) new events: a trigger that raises,
        the way a full disk or a lost privilege makes a real server refuse them."""

    async def stored_form(self, call_id: str) -> tuple[str, list[str]]:
        """What the database holds for a call: its snapshot text and its transcript rows in
        order (read with a connection of the test's own)."""

    async def store_as_before_lines(self, record: CallRecord) -> None:
        """Make the (closed) store one written by the voicecall before transcript lines were
        rows, holding `record` as that version stored it: every line inside the snapshot."""


@dataclass
class Clock:
    """A clock the test moves by hand (replay expiry)."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stores:
    """Opens stores at the backend's location and closes whatever is left open at the end."""

    backend: Backend
    clock: Clock = field(default_factory=Clock)
    opened: list[Store] = field(default_factory=list)

    async def open(self) -> Store:
        store = create_store(self.backend.location, clock=self.clock)
        self.opened.append(store)
        await store.open()
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


def password_free(text: str, backend: Backend) -> bool:
    """Whether `text` is free of the store URL's password."""
    password = backend.location.password
    return password is None or password not in text


def call(
    call_id: str = "c1",
    *,
    provider_call_id: str | None = "p1",
    started_at: str = "2026-01-01T10:00:00.000Z",
) -> CallRecord:
    """A fresh outbound call record."""
    return CallRecord(
        call_id,
        "mock",
        Direction.OUTBOUND,
        CallMode.CONVERSATION,
        "+15550001111",
        "+15550002222",
        provider_call_id=provider_call_id,
        started_at=started_at,
    )


class StoreContract:
    """The tests every store backend passes."""

    @pytest.fixture
    async def stores(self, backend: Backend) -> AsyncIterator[Stores]:
        made = Stores(backend)
        yield made
        await made.close_all()

    # -------------------------------------------------------------- records and events

    async def test_record_saves_the_snapshot_and_appends_numbered_events(self, stores) -> None:
        """Each record() returns the stored event with a global, increasing sequence number."""
        store = await stores.open()
        c1, c2 = call("c1", provider_call_id="p1"), call("c2", provider_call_id="p2")
        first = await store.record(c1, EventType.INITIATED, {"to": "+15550002222"})
        assert first is not None
        assert (first.call_id, first.type, first.data) == (
            "c1",
            EventType.INITIATED,
            {"to": "+15550002222"},
        )
        second = await store.record(c2, EventType.INITIATED)
        c1.state = CallState.ANSWERED
        c1.answered_at = "2026-01-01T10:00:05.000Z"
        third = await store.record(c1, EventType.ANSWERED)
        assert second is not None and third is not None
        assert first.seq < second.seq < third.seq, "seq is global across calls"
        assert first.timestamp.endswith("Z")
        assert await store.get_call("c1") == c1
        assert await store.get_call("c2") == c2
        assert await store.get_call("nope") is None

    async def test_a_snapshot_without_an_event(self, stores) -> None:
        """record(call, None) rewrites the snapshot and appends nothing."""
        store = await stores.open()
        c1 = call()
        await store.record(c1, EventType.INITIATED)
        c1.metadata["note"] = "x"
        assert await store.record(c1, None) is None
        stored = await store.get_call("c1")
        assert stored is not None and stored.metadata == {"note": "x"}
        assert [e.type for e in await store.recent_events("c1", 10)] == [EventType.INITIATED]

    async def test_every_field_and_odd_text_round_trip(self, stores) -> None:
        """Transcript, metadata, unicode and a NUL character come back exactly."""
        store = await stores.open()
        c1 = call()
        c1.transcript.append(
            TranscriptEntry("2026-01-01T10:00:01.000Z", "user", 'héllo \u0000 ☎ "quoted" \\ back')
        )
        c1.metadata = {"nested": {"list": [1, 2.5, None, True]}, "text": "é\u0000"}
        c1.state, c1.end_reason = CallState.COMPLETED, "hangup-user"
        c1.ended_at = "2026-01-01T10:01:00.000Z"
        event = await store.record(
            c1, EventType.ENDED, {"reason": "hangup-user", "odd": "\u0000é☎"}
        )
        assert event is not None
        assert await store.get_call("c1") == c1
        [stored] = await store.recent_events("c1", 1)
        assert stored == event

    async def test_dedupe_key_writes_once(self, stores) -> None:
        """A processed provider-event id is refused the second time, and nothing is written."""
        store = await stores.open()
        c1 = call()
        await store.record(c1, EventType.INITIATED)
        c1.state = CallState.RINGING
        assert await store.record(c1, EventType.RINGING, dedupe_key="mock:evt-1") is not None
        c1.state = CallState.ANSWERED
        assert await store.record(c1, EventType.ANSWERED, dedupe_key="mock:evt-1") is None
        stored = await store.get_call("c1")
        assert stored is not None and stored.state is CallState.RINGING, (
            "a duplicate must not rewrite the snapshot"
        )
        assert [e.type for e in await store.recent_events("c1", 10)] == [
            EventType.INITIATED,
            EventType.RINGING,
        ]
        assert await store.record(c1, EventType.ANSWERED, dedupe_key="mock:evt-2") is not None

    async def test_concurrent_duplicates_write_once(self, stores) -> None:
        """Two deliveries of one provider event at the same moment: exactly one is stored."""
        store = await stores.open()
        records = [call(f"c{i}", provider_call_id=f"p{i}") for i in range(8)]
        results = await asyncio.gather(
            *(
                store.record(r, EventType.ANSWERED, dedupe_key=f"k{i // 2}")
                for i, r in enumerate(records)
            )
        )
        stored = [r for r in results if r is not None]
        assert len(stored) == 4
        assert len({e.seq for e in stored}) == 4
        assert len(await store.recent_events(None, 100)) == 4

    # -------------------------------------------------------------- lookups and listings

    async def test_find_by_provider_id(self, stores) -> None:
        """By the provider's id; the newest call when a provider reuses the id of one that
        ended (two live calls never share one: see the PostgreSQL store's tests)."""
        store = await stores.open()
        old = call("old", provider_call_id="same", started_at="2026-01-01T09:00:00.000Z")
        await store.record(old, EventType.INITIATED)
        old.state = CallState.FAILED
        await store.record(old, EventType.ENDED)
        newer = call("new", provider_call_id="same", started_at="2026-01-01T11:00:00.000Z")
        await store.record(newer, EventType.INITIATED)
        await store.record(call("none", provider_call_id=None), EventType.INITIATED)
        assert await store.find_by_provider_id("same") == newer
        assert await store.find_by_provider_id("unknown") is None

    async def test_list_calls_newest_first_with_filters(self, stores) -> None:
        """Newest started first, ties in the order stored (last first); live filter; limit."""
        store = await stores.open()
        times = {
            "a": "2026-01-01T10:00:01.000Z",
            "b": "2026-01-01T10:00:03.000Z",
            "c": "2026-01-01T10:00:02.000Z",
            "d": "2026-01-01T10:00:02.000Z",
        }
        for name, started in times.items():
            await store.record(
                call(name, provider_call_id=None, started_at=started), EventType.INITIATED
            )
        ended = call("c", provider_call_id=None, started_at=times["c"])
        ended.state, ended.end_reason = CallState.COMPLETED, "hangup-bot"
        await store.record(ended, EventType.ENDED)  # an update keeps its place among ties
        ids = [c.call_id for c in await store.list_calls()]
        assert ids == ["b", "d", "c", "a"]
        assert [c.call_id for c in await store.list_calls(live=True)] == ["b", "d", "a"]
        assert [c.call_id for c in await store.list_calls(live=False)] == ["c"]
        assert [c.call_id for c in await store.list_calls(limit=2)] == ["b", "d"]
        assert [c.call_id for c in await store.list_calls(live=True, limit=1)] == ["b"]
        since = "2026-01-01T10:00:02.000Z"
        assert [c.call_id for c in await store.list_calls(since=since)] == ["b", "d", "c"]
        assert [c.call_id for c in await store.list_calls(live=True, since=since, limit=2)] == [
            "b",
            "d",
        ]
        assert await store.list_calls(since="2026-01-02T00:00:00.000Z") == []

    async def test_recent_events_are_the_last_ones_oldest_first(self, stores) -> None:
        """Per call and across calls: the last `limit` events, in sequence order."""
        store = await stores.open()
        c1, c2 = call("c1", provider_call_id=None), call("c2", provider_call_id=None)
        kinds = [EventType.INITIATED, EventType.RINGING, EventType.ANSWERED, EventType.SPEAKING]
        seqs = []
        for kind in kinds:
            for c in (c1, c2):
                event = await store.record(c, kind)
                assert event is not None
                seqs.append(event.seq)
        mine = await store.recent_events("c1", 3)
        assert [e.type for e in mine] == kinds[1:] and {e.call_id for e in mine} == {"c1"}
        everything = await store.recent_events(None, 3)
        assert [e.seq for e in everything] == seqs[-3:]
        assert await store.recent_events("nobody", 5) == []

    async def test_turn_latencies_newest_first(self, stores) -> None:
        """Only speech events of completed turns count; a missing listen wait reads as 0."""
        store = await stores.open()
        c1 = call()
        await store.record(c1, EventType.SPEECH, {"transcript": "no turn"})
        await store.record(
            c1, EventType.SPEECH, {"transcript": "a", "turnLatencyMs": 10.5, "listenWaitMs": 2.0}
        )
        await store.record(c1, EventType.SPEAKING, {"turnLatencyMs": 99.0})
        await store.record(c1, EventType.SPEECH, {"transcript": "b", "turnLatencyMs": 20})
        await store.record(
            c1, EventType.SPEECH, {"transcript": "c", "turnLatencyMs": 30.25, "listenWaitMs": 4}
        )
        assert await store.turn_latencies(10) == [(30.25, 4.0), (20.0, 0.0), (10.5, 2.0)]
        assert await store.turn_latencies(1) == [(30.25, 4.0)]

    # -------------------------------------------------------------- replay cache

    async def test_replay_remember_lookup_and_expiry(self, stores) -> None:
        """A remembered reply is returned within its window only; remembering again replaces."""
        store = await stores.open()
        reply = WebhookReply(200, "application/xml", b"<Response/>\x00\xff")
        await store.replay_remember("twilio:req:1", reply, 600)
        assert await store.replay_lookup("twilio:req:1") == reply
        assert await store.replay_lookup("twilio:req:2") is None
        stores.clock.now += 600
        assert await store.replay_lookup("twilio:req:1") == reply, "the window is inclusive"
        stores.clock.now += 1
        assert await store.replay_lookup("twilio:req:1") is None
        again = WebhookReply(204, "text/plain", b"")
        await store.replay_remember("twilio:req:1", again, 60)
        assert await store.replay_lookup("twilio:req:1") == again

    async def test_a_refused_write_changes_nothing_and_is_a_fault(
        self, stores, backend: Backend
    ) -> None:
        """A write the database refuses raises StoreError, leaves no trace, and sets `fault`
        until a write succeeds again."""
        store = await stores.open()
        c1 = call()
        await store.record(c1, EventType.INITIATED)
        assert store.fault is None
        await backend.break_writes(True)
        c1.transcript.append(TranscriptEntry("2026-01-01T10:00:02.000Z", "user", "hello?"))
        c1.state = CallState.ANSWERED
        with pytest.raises(StoreError, match="nothing was changed") as refused:
            await store.record(c1, EventType.ANSWERED, dedupe_key="mock:answered")
        assert password_free(refused.value.message, backend)
        fault = store.fault
        assert fault is not None and fault.since.endswith("Z") and fault.error
        stored = await store.get_call("c1")
        assert stored is not None and stored.state is CallState.INITIATED, "snapshot unchanged"
        assert stored.transcript == [] and (await backend.stored_form("c1"))[1] == []
        assert [e.type for e in await store.recent_events("c1", 10)] == [EventType.INITIATED]
        await backend.break_writes(False)
        assert await store.record(c1, EventType.ANSWERED, dedupe_key="mock:answered") is not None, (
            "the refused delivery's id was not consumed"
        )
        assert store.fault is None
        assert await store.get_call("c1") == c1, "the line refused with it is written now"

    # -------------------------------------------------------------- transcript lines

    async def test_each_line_is_stored_once_and_reads_join_them_back(
        self, stores, backend: Backend
    ) -> None:
        """A long call's writes carry its new lines only: the snapshot stays the same size as
        the transcript grows, each line is one row, and every read returns the whole record
        (appends, a line replaced in place as barge-in does, NUL and quotes in the text)."""
        store = await stores.open()
        c1 = call()
        await store.record(c1, EventType.INITIATED)
        first_snapshot, _ = await backend.stored_form("c1")
        for n in range(60):
            speaker = "user" if n % 2 else "bot"
            text = f'line {n}: "quoted" \\ \u0000 é'
            c1.transcript.append(TranscriptEntry(f"2026-01-01T10:{n:02d}:00.000Z", speaker, text))
            await store.record(c1, EventType.SPEECH if n % 2 else EventType.SPEAKING)
            await store.record(c1, None)  # an event that changes no line
        snapshot, lines = await backend.stored_form("c1")
        assert "line " not in snapshot and len(snapshot) == len(first_snapshot)
        assert lines == [entry.wire_json for entry in c1.transcript]
        c1.transcript[-2] = replace(c1.transcript[-2], text="cut short")
        c1.state = CallState.SPEAKING
        await store.record(c1, EventType.SPEAKING)
        assert (await backend.stored_form("c1"))[1][-2] == c1.transcript[-2].wire_json
        assert await store.get_call("c1") == c1
        assert await store.find_by_provider_id("p1") == c1
        assert await store.list_calls() == [c1]
        assert await store.list_calls(live=True, since="2026-01-01T00:00:00.000Z") == [c1]
        await store.close()
        again = await stores.open()
        assert await again.claim_live_calls() == [c1]

    async def test_a_restarted_daemon_rewrites_a_calls_lines_once(
        self, stores, backend: Backend
    ) -> None:
        """A daemon knows which lines it stored only since it started: its first write of a
        call stores them all and drops rows past them, so the rows match the record whatever
        was stored before (here: more lines than the record has, as a record from before a
        crash may)."""
        store = await stores.open()
        c1 = call()
        c1.transcript = [TranscriptEntry(f"t{n}", "user", f"said {n}") for n in range(5)]
        await store.record(c1, EventType.INITIATED)
        await store.close()
        again = await stores.open()
        c1.transcript = [*c1.transcript[:2], TranscriptEntry("t9", "bot", "new")]
        await again.record(c1, EventType.SPEAKING)
        assert (await backend.stored_form("c1"))[1] == [e.wire_json for e in c1.transcript]
        assert await again.get_call("c1") == c1
        c1.state, c1.ended_at = CallState.COMPLETED, "2026-01-01T10:05:00.000Z"
        await again.record(c1, EventType.ENDED)
        c1.transcript = c1.transcript[:1]  # an ended call is written whole again, if ever
        await again.record(c1, None)
        assert await again.get_call("c1") == c1

    async def test_a_store_from_before_lines_keeps_its_transcripts(
        self, stores, backend: Backend
    ) -> None:
        """Opening a store written when every line lived inside the snapshot moves the lines
        into rows once: the calls read back whole, and their next writes go line by line."""
        store = await stores.open()
        await store.close()
        c1 = call()
        c1.transcript = [
            TranscriptEntry("2026-01-01T10:00:01.000Z", "bot", "Hello, how can I help?"),
            TranscriptEntry("2026-01-01T10:00:04.000Z", "user", 'it\'s "odd" \u0000 ☎'),
        ]
        await backend.store_as_before_lines(c1)
        again = await stores.open()
        assert await again.get_call("c1") == c1
        assert (await backend.stored_form("c1"))[1] == [e.wire_json for e in c1.transcript]
        c1.transcript.append(TranscriptEntry("2026-01-01T10:00:09.000Z", "bot", "Sure."))
        await again.record(c1, EventType.SPEAKING)
        snapshot, lines = await backend.stored_form("c1")
        assert "Hello" not in snapshot
        assert lines == [e.wire_json for e in c1.transcript]
        assert await again.get_call("c1") == c1

    # -------------------------------------------------------------- durability and ownership

    async def test_reopen_after_close_keeps_everything(self, stores) -> None:
        """Calls, events, sequence, processed ids and replay entries survive close and reopen."""
        store = await stores.open()
        c1 = call()
        c1.transcript.append(TranscriptEntry("2026-01-01T10:00:01.000Z", "user", "hello"))
        await store.record(c1, EventType.INITIATED)
        last = await store.record(
            c1,
            EventType.SPEECH,
            {"transcript": "hello", "turnLatencyMs": 12.5, "listenWaitMs": 3.0},
            dedupe_key="mock:e1",
        )
        assert last is not None
        reply = WebhookReply(200, "application/json", b"{}")
        await store.replay_remember("k-live", reply, 600)
        await store.replay_remember("k-short", reply, 5)
        await store.close()

        stores.clock.now += 10
        again = await stores.open()
        assert await again.get_call("c1") == c1
        assert await again.find_by_provider_id("p1") == c1
        assert [c.call_id for c in await again.list_calls(live=True)] == ["c1"]
        assert [e.type for e in await again.recent_events("c1", 10)] == [
            EventType.INITIATED,
            EventType.SPEECH,
        ]
        assert await again.turn_latencies(5) == [(12.5, 3.0)]
        assert await again.record(c1, EventType.SPEECH, dedupe_key="mock:e1") is None
        assert await again.replay_lookup("k-live") == reply
        assert await again.replay_lookup("k-short") is None
        following = await again.record(c1, EventType.SPEAKING)
        assert following is not None and following.seq > last.seq, "seq never goes back"

    async def test_one_daemon_per_store(self, stores) -> None:
        """A second open while the first holds the store is refused; after close it works."""
        first = await stores.open()
        with pytest.raises(StoreInUseError, match="already running on the store"):
            await stores.open()
        await first.close()
        second = await stores.open()
        assert await second.list_calls() == []

    async def test_a_newer_schema_is_refused(self, stores, backend: Backend) -> None:
        """A store written by a newer voicecall is not opened, and is not changed."""
        store = await stores.open()
        await store.record(call(), EventType.INITIATED)
        await store.close()
        await backend.set_schema_version(99)
        with pytest.raises(StoreError, match=r"schema version 99, newer than this voicecall"):
            await stores.open()
        await backend.set_schema_version(backend.schema_version)
        again = await stores.open()
        assert await again.get_call("c1") is not None

    async def test_close_twice_and_close_unopened(self, backend: Backend) -> None:
        """close() is safe on a store never opened, and twice."""
        store = create_store(backend.location)
        await store.close()
        await store.open()
        await store.close()
        await store.close()

    async def test_location_is_shown_without_secrets(self, stores) -> None:
        """The store says where it is, with any password masked."""
        store = await stores.open()
        shown = store.location.display
        assert shown == str(stores.backend.location)
        password = stores.backend.location.password
        assert password is None or password not in shown

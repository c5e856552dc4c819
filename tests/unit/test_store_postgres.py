"""PostgreSQL-only behaviour of the store, on a real server: the daemon's lock on its id survives
a dropped connection, and is not taken back while another holder has it; several daemons share one
database: each call has one owner, only the owner writes it, and a dead daemon's live calls go to
exactly one living one (SPEC section 16)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import asyncpg
import pytest

from daemon.errors import (
    CallMovedError,
    CallStoredElsewhereError,
    StoreError,
    StoreInUseError,
)
from daemon.model.events import CallMode, Direction, EventType
from daemon.model.record import CallRecord
from daemon.model.state import CallState
from daemon.model.webhook import WebhookReply
from daemon.store.location import StoreLocation
from daemon.store.postgres import PostgresStore


def call() -> CallRecord:
    return CallRecord(
        "c1",
        "mock",
        Direction.OUTBOUND,
        CallMode.CONVERSATION,
        "+15550001111",
        "+15550002222",
        provider_call_id="p1",
    )


async def until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def kill_lock_connection(url: str) -> None:
    """What a server restart or a DBA's pg_terminate_backend does to the daemon's lock."""
    admin = await asyncpg.connect(url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'voicecalld lock' AND datname = current_database()"
        )
        assert killed == 1
    finally:
        await admin.close()


async def test_a_dropped_lock_connection_is_taken_back(pg_url: str) -> None:
    """Writes are refused while the lock is not held, and resume once it is taken back."""
    store = PostgresStore(StoreLocation.postgres(pg_url), reclaim_interval_seconds=0.5)
    await store.open()
    try:
        record = call()
        assert await store.record(record, EventType.INITIATED) is not None
        await kill_lock_connection(pg_url)
        await until(lambda: store.fault is not None)
        assert "lost its lock" in store.fault.error  # type: ignore[union-attr]
        await until(lambda: store._claim_lost is None)
        assert await store.record(record, EventType.RINGING) is not None
        assert store.fault is None
    finally:
        await store.close()


async def test_a_lock_taken_meanwhile_keeps_writes_refused(pg_url: str) -> None:
    """If another process takes this daemon's id while the lock is down, this store writes
    nothing until that holder lets go: two processes never act as one daemon."""
    store = PostgresStore(StoreLocation.postgres(pg_url), reclaim_interval_seconds=2.0)
    await store.open()
    rival = await asyncpg.connect(pg_url)
    try:
        record = call()
        await store.record(record, EventType.INITIATED)
        await kill_lock_connection(pg_url)
        deadline = time.monotonic() + 1.5
        while not await rival.fetchval("SELECT pg_try_advisory_lock($1)", store.lock_key):
            assert time.monotonic() < deadline, "the rival never got the lock"
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.5)  # the store has tried to take it back at least once
        with pytest.raises(StoreError, match="lost its lock"):
            await store.record(record, EventType.RINGING)
        assert [e.type for e in await store.recent_events("c1", 5)] == [EventType.INITIATED]
        await rival.execute("SELECT pg_advisory_unlock_all()")
        await until(lambda: store._claim_lost is None)
        assert await store.record(record, EventType.RINGING) is not None
    finally:
        await rival.close()
        await store.close()


async def test_migrations_apply_once_in_order_and_atomically(pg_url: str) -> None:
    """A fresh database gets every step; a later version applies only the new ones; daemons
    starting together apply each once; a failing step changes nothing."""
    from daemon.store import pg_schema

    location = StoreLocation.postgres(pg_url)
    first = ("CREATE TABLE vc_t (a int);",)
    second = (*first, "ALTER TABLE vc_t ADD COLUMN b int;")
    broken = (*second, "ALTER TABLE vc_t ADD COLUMN c int; SELECT 1/0;")
    conns = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        found = await asyncio.gather(
            *(pg_schema.migrate(c, location, f"d{i}", first) for i, c in enumerate(conns))
        )
        assert sorted(found) == [0, 1, 1], "exactly one of three concurrent starts migrated"
        assert await pg_schema.migrate(conns[0], location, "later", second) == 1
        rows = await conns[0].fetch(
            "SELECT version, applied_by FROM voicecall_schema ORDER BY version"
        )
        assert [r["version"] for r in rows] == [1, 2] and rows[1]["applied_by"] == "later"
        with pytest.raises(asyncpg.DivisionByZeroError):
            await pg_schema.migrate(conns[0], location, "broken", broken)
        assert await pg_schema.current_version(conns[0]) == 2
        columns = await conns[0].fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'vc_t' ORDER BY column_name"
        )
        assert [c["column_name"] for c in columns] == ["a", "b"]
        with pytest.raises(
            StoreError,
            match="schema version 2, newer than this voicecall "
            r"knows \(1\)",
        ):
            await pg_schema.migrate(conns[1], location, "older", first)
    finally:
        for c in conns:
            await c.close()


async def test_a_lock_connection_that_stops_answering_is_dropped(pg_url: str) -> None:
    """A frozen server process (what a network cut looks like from the daemon: nothing comes
    back, nothing is closed) still holds the lock: the store notices within its watch interval,
    refuses writes, and takes the lock back once the old session is really gone."""
    import os
    import signal

    admin = await asyncpg.connect(pg_url)
    store = PostgresStore(
        StoreLocation.postgres(pg_url), reclaim_interval_seconds=0.5, watch_interval_seconds=1.0
    )
    await store.open()
    backend = await admin.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'voicecalld lock' "
        "AND datname = current_database()"
    )
    try:
        os.kill(backend, signal.SIGSTOP)
    except (PermissionError, ProcessLookupError) as exc:
        await store.close()
        await admin.close()
        pytest.skip(f"cannot freeze the server's process here (a remote server?): {exc}")
    try:
        record = call()
        await until(lambda: store._claim_lost is not None)
        with pytest.raises(StoreError, match="lost its lock"):
            await store.record(record, EventType.INITIATED)
        await asyncio.sleep(1.5)
        assert store._claim_lost is not None, "the frozen session still holds the lock"
    finally:
        os.kill(backend, signal.SIGCONT)
    try:
        await until(lambda: store._claim_lost is None)
        assert await store.record(record, EventType.INITIATED) is not None
        assert store.fault is None
    finally:
        await store.close()
        await admin.close()


def call_of(call_id: str) -> CallRecord:
    return CallRecord(
        call_id,
        "mock",
        Direction.OUTBOUND,
        CallMode.CONVERSATION,
        "+15550001111",
        "+15550002222",
        provider_call_id=f"p-{call_id}",
    )


async def test_daemons_share_a_database_and_only_the_owner_writes_a_call(pg_url: str) -> None:
    """Two daemon ids open one database; a call is written by its owner only: another daemon's
    write is refused as a whole (no event, no processed id kept), nothing of it stored."""
    location = StoreLocation.postgres(pg_url)
    a = PostgresStore(location, daemon_id="a")
    b = PostgresStore(location, daemon_id="b")
    await a.open()
    await b.open()
    try:
        record = call_of("c1")
        assert await a.record(record, EventType.INITIATED) is not None
        assert await b.get_call("c1") == record, "b reads what a wrote"
        with pytest.raises(CallMovedError, match="run by another voicecall daemon"):
            await b.record(record, EventType.RINGING, dedupe_key="twilio:e1")
        assert [e.type for e in await a.recent_events("c1", 10)] == [EventType.INITIATED]
        assert await a.record(record, EventType.RINGING, dedupe_key="twilio:e1") is not None, (
            "the refused write kept no processed id"
        )
        assert await a.owners(["c1", "nope"]) == {"c1": "a"}
        ids = {d["daemonId"]: d["alive"] for d in await a.daemons()}
        assert ids == {"a": True, "b": True}
        same = PostgresStore(location, daemon_id="a", claim_wait_seconds=0.3)
        with pytest.raises(StoreInUseError, match="with this daemon's id"):
            await same.open()
    finally:
        await a.close()
        await b.close()


async def test_a_dead_daemons_live_calls_go_to_exactly_one_taker(pg_url: str) -> None:
    """A daemon silent for four heartbeats is dead: its live calls (not its ended ones) are
    taken over once, by one of two racing daemons, who then writes them; a living owner's calls
    are never taken."""
    location = StoreLocation.postgres(pg_url)
    dead = PostgresStore(location, daemon_id="dead", watch_interval_seconds=0.2)
    await dead.open()
    live_ones = [call_of(f"c{i}") for i in range(20)]
    for record in live_ones:
        await dead.record(record, EventType.INITIATED)
    ended = call_of("ended")
    ended.state = CallState.COMPLETED
    await dead.record(ended, EventType.ENDED)
    takers = [
        PostgresStore(location, daemon_id=f"t{i}", watch_interval_seconds=0.2) for i in range(2)
    ]
    for taker in takers:
        await taker.open()
    try:
        assert [await t.take_over() for t in takers] == [[], []], "the owner is alive"
        # Silence `dead` the way a kill -9 does: its heartbeats stop (its row stays).
        assert dead._watchdog is not None
        dead._watchdog.cancel()
        await asyncio.sleep(dead.dead_after_seconds + 0.3)
        got = await asyncio.gather(*(t.take_over() for t in takers))
        taken = [record.call_id for batch in got for record, _ in batch]
        assert sorted(taken) == sorted(r.call_id for r in live_ones), "each exactly once"
        assert {previous for batch in got for _, previous in batch} == {"dead"}
        assert [await t.take_over() for t in takers] == [[], []]
        owner_of = await takers[0].owners([r.call_id for r in live_ones] + ["ended"])
        assert owner_of["ended"] == "dead", "ended calls are not taken"
        first = live_ones[0]
        winner = takers[0] if owner_of[first.call_id] == "t0" else takers[1]
        assert await winner.record(first, EventType.ANSWERED) is not None
        with pytest.raises(CallMovedError):
            await dead.record(first, EventType.ANSWERED)
        assert "dead" not in {d["daemonId"] for d in await takers[0].daemons()}
    finally:
        for store in (dead, *takers):
            await store.close()


async def test_a_daemon_presumed_dead_learns_it_at_its_next_heartbeat(pg_url: str) -> None:
    """Another daemon removed this one's row (taking its calls): the next heartbeat puts the row
    back and sets `evicted`, so the daemon lets go of what it no longer owns."""
    location = StoreLocation.postgres(pg_url)
    store = PostgresStore(location, daemon_id="a", watch_interval_seconds=0.2)
    await store.open()
    admin = await asyncpg.connect(pg_url)
    try:
        await asyncio.sleep(0.5)
        assert not store.evicted.is_set(), "its own first heartbeats are no eviction"
        await admin.execute("DELETE FROM voicecall_daemons WHERE daemon_id = 'a'")
        await until(store.evicted.is_set, timeout=5)
        assert await admin.fetchval("SELECT count(*) FROM voicecall_daemons") == 1
    finally:
        await store.close()
        await admin.close()


async def test_messages_between_daemons_of_any_length_and_event_announcements(pg_url: str) -> None:
    """`send` reaches the other daemon's `listen`, short (one NOTIFY) or long (through the
    mailbox, which is emptied); each stored event is announced as `seq:daemon id`, a refused
    write announces nothing."""
    location = StoreLocation.postgres(pg_url)
    a = PostgresStore(location, daemon_id="a")
    b = PostgresStore(location, daemon_id="b")
    await a.open()
    await b.open()
    got: list[str] = []
    announced: list[str] = []
    try:
        await b.listen("voicecall_d_test", got.append)
        await b.listen("voicecall_events", announced.append)
        long = "x" * 20_000 + "é"
        await a.send("voicecall_d_test", "short")
        await a.send("voicecall_d_test", long)
        await until(lambda: len(got) == 2)
        assert got == ["short", long]
        event = await a.record(call_of("c1"), EventType.INITIATED)
        assert event is not None
        await until(lambda: announced == [f"{event.seq}:a"])
        with pytest.raises(CallMovedError):
            await b.record(call_of("c1"), EventType.RINGING)
        assert [e.seq for e in await b.events_by_seq([event.seq])] == [event.seq]
        await asyncio.sleep(0.3)
        assert announced == [f"{event.seq}:a"], "the refused write announced nothing"
        admin = await asyncpg.connect(pg_url)
        try:
            assert await admin.fetchval("SELECT count(*) FROM voicecall_mailbox") == 0
        finally:
            await admin.close()
    finally:
        await a.close()
        await b.close()


async def test_one_live_record_per_provider_call_id_across_daemons(pg_url: str) -> None:
    """Two daemons storing a new call with one provider call id at once (its first delivery
    reached both): exactly one record is written, the other write is refused whole, naming the
    call and daemon that won. Once that call ended, a new call may reuse the id."""
    location = StoreLocation.postgres(pg_url)
    stores = [PostgresStore(location, daemon_id=name) for name in ("a", "b")]
    for store in stores:
        await store.open()
    try:
        for round_ in range(10):
            records = [call_of(f"{name}{round_}") for name in ("a", "b")]
            for record in records:
                record.provider_call_id = f"same-{round_}"
            got = await asyncio.gather(
                *(s.record(r, EventType.INITIATED) for s, r in zip(stores, records, strict=True)),
                return_exceptions=True,
            )
            refused = [g for g in got if isinstance(g, CallStoredElsewhereError)]
            assert len(refused) == 1 and len([g for g in got if g is not None]) == 2, got
            winner = records[got.index(next(g for g in got if g is not refused[0]))]
            assert refused[0].details["callId"] == winner.call_id
            assert f"call {winner.call_id}, run by daemon" in refused[0].message
            stored = await stores[0].list_calls(limit=100)
            assert [c.call_id for c in stored if c.provider_call_id == f"same-{round_}"] == [
                winner.call_id
            ]
            if round_ == 0:
                first_store = stores[records.index(winner)]
                first_store_record = winner
        first_store_record.state = CallState.COMPLETED
        await first_store.record(first_store_record, EventType.ENDED)
        reuse = call_of("reuse")
        reuse.provider_call_id = "same-0"
        assert await stores[0].record(reuse, EventType.INITIATED) is not None
    finally:
        for store in stores:
            await store.close()


async def test_a_delivery_is_claimed_by_one_daemon_and_the_other_waits_for_its_answer(
    pg_url: str,
) -> None:
    """`replay_claim` is atomic across daemons: of two claiming one delivery at once, one gets
    None (handle it), the other waits and then gets the first's reply (a replay). A released
    claim (the delivery failed) is claimable again; a key already answered is a replay."""
    location = StoreLocation.postgres(pg_url)
    a = PostgresStore(location, daemon_id="a")
    b = PostgresStore(location, daemon_id="b")
    await a.open()
    await b.open()
    reply = WebhookReply(200, "application/xml", b"<Response><Say>Hi</Say></Response>")
    try:
        for round_ in range(10):
            keys = [f"k{round_}", f"alias{round_}"]
            claims = [
                asyncio.create_task(a.replay_claim(keys)),
                asyncio.create_task(b.replay_claim(keys)),
            ]
            done, waiting = await asyncio.wait(claims, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            assert first.result() is None, "one claim wins"
            winner = a if first is claims[0] else b
            await asyncio.sleep(0.1)
            assert not waiting.pop().done(), "the other waits for the winner's answer"
            for key in keys:
                await winner.replay_remember(key, reply, 600)
            other = claims[1] if first is claims[0] else claims[0]
            assert await asyncio.wait_for(other, 10) == reply
        assert await a.replay_claim(["fresh"]) is None
        await a.replay_release(["fresh"])
        assert await b.replay_claim(["fresh"]) is None, "a released claim is free again"
        assert await b.replay_lookup("fresh") is None, "a claim is no reply"
    finally:
        await a.close()
        await b.close()


async def test_schema_5_keeps_live_duplicates_stored_before_it_readable_and_one_live(
    pg_url: str,
) -> None:
    """A database written by a version that could store a call twice (two daemons, one new
    call) migrates to schema 5: both records stay readable, the first stored stays live (the one
    routing and take-over see), and from then on a second live record is refused."""
    from daemon.store import pg_schema

    location = StoreLocation.postgres(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        await pg_schema.migrate(conn, location, "old", pg_schema.MIGRATIONS[:4])
        for call_id in ("first", "second"):
            record = call_of(call_id)
            record.provider_call_id = "dup"
            await conn.execute(
                "INSERT INTO voicecall_calls (call_id, provider_call_id, live, started_at, "
                "record, owner) VALUES ($1, 'dup', true, $2, $3, 'gone')",
                call_id,
                record.started_at,
                json.dumps(record.to_wire()),
            )
        assert await pg_schema.migrate(conn, location, "new") == 4
        rows = await conn.fetch(
            "SELECT call_id, live, provider FROM voicecall_calls ORDER BY created"
        )
        assert [(r["call_id"], r["live"], r["provider"]) for r in rows] == [
            ("first", True, "mock"),
            ("second", False, "mock"),
        ]
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("UPDATE voicecall_calls SET live = true WHERE call_id = 'second'")
    finally:
        await conn.close()


async def test_a_claim_whose_daemon_is_gone_is_taken_at_once(pg_url: str) -> None:
    """A delivery claimed by a daemon that is not running any more (killed while handling it:
    nobody holds its daemon lock) is claimable at once, not only when the claim expires; one
    claimed by a running daemon is not (the claimer's lock is what tells them apart)."""
    location = StoreLocation.postgres(pg_url)
    a = PostgresStore(location, daemon_id="a")
    b = PostgresStore(location, daemon_id="b")
    await a.open()
    await b.open()
    admin = await asyncpg.connect(pg_url)
    try:
        for key, claimer in (("by-ghost", "ghost"), ("by-a", "a")):
            await admin.execute(
                "INSERT INTO voicecall_replay (key, expires_at, status, content_type, body, "
                "claimed_by) VALUES ($1, $2, NULL, '', '', $3)",
                key,
                time.time() + 600,
                claimer,
            )
        started = time.monotonic()
        assert await b.replay_claim(["by-ghost"]) is None
        assert time.monotonic() - started < 2, "not held until the claim expires"
        waiting = asyncio.create_task(b.replay_claim(["by-a"]))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "a running daemon's claim is respected"
        reply = WebhookReply(200, "application/json", b"{}")
        await a.replay_remember("by-a", reply, 600)
        assert await asyncio.wait_for(waiting, 10) == reply
    finally:
        await admin.close()
        await a.close()
        await b.close()

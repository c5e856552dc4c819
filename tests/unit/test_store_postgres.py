"""PostgreSQL-only behaviour of the store, on a real server: the daemon's lock on the database
survives a dropped connection, and is not taken back while another holder has it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import pytest

from daemon.errors import StoreError
from daemon.model.events import CallMode, Direction, EventType
from daemon.model.record import CallRecord
from daemon.store.location import StoreLocation
from daemon.store.postgres import DAEMON_LOCK, PostgresStore


def call() -> CallRecord:
    return CallRecord("c1", "mock", Direction.OUTBOUND, CallMode.CONVERSATION, "+15550001111",
                      "+15550002222", provider_call_id="p1")


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
            "WHERE application_name = 'voicecalld lock' AND datname = current_database()")
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
    """If another holder takes the database while the lock is down, this store writes nothing
    until that holder lets go: two daemons never write one database."""
    store = PostgresStore(StoreLocation.postgres(pg_url), reclaim_interval_seconds=2.0)
    await store.open()
    rival = await asyncpg.connect(pg_url)
    try:
        record = call()
        await store.record(record, EventType.INITIATED)
        await kill_lock_connection(pg_url)
        deadline = time.monotonic() + 1.5
        while not await rival.fetchval("SELECT pg_try_advisory_lock($1)", DAEMON_LOCK):
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
        found = await asyncio.gather(*(pg_schema.migrate(c, location, f"d{i}", first)
                                       for i, c in enumerate(conns)))
        assert sorted(found) == [0, 1, 1], "exactly one of three concurrent starts migrated"
        assert await pg_schema.migrate(conns[0], location, "later", second) == 1
        rows = await conns[0].fetch("SELECT version, applied_by FROM voicecall_schema "
                                    "ORDER BY version")
        assert [r["version"] for r in rows] == [1, 2] and rows[1]["applied_by"] == "later"
        with pytest.raises(asyncpg.DivisionByZeroError):
            await pg_schema.migrate(conns[0], location, "broken", broken)
        assert await pg_schema.current_version(conns[0]) == 2
        columns = await conns[0].fetch("SELECT column_name FROM information_schema.columns "
                                       "WHERE table_name = 'vc_t' ORDER BY column_name")
        assert [c["column_name"] for c in columns] == ["a", "b"]
        with pytest.raises(StoreError, match="schema version 2, newer than this voicecall "
                                             r"knows \(1\)"):
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
    store = PostgresStore(StoreLocation.postgres(pg_url), reclaim_interval_seconds=0.5,
                          watch_interval_seconds=1.0)
    await store.open()
    backend = await admin.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'voicecalld lock' "
        "AND datname = current_database()")
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

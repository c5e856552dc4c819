"""PostgreSQL-only behaviour of the store, on a real server: the daemon's lock on the database
survives a dropped connection, and is not taken back while another holder has it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import pytest

from daemon.engine.record import CallRecord
from daemon.errors import StoreError
from daemon.events import CallMode, Direction, EventType
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

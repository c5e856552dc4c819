"""`tail` on any daemon sees every call's events (daemon/cluster/relay.py), on a real
PostgreSQL server: events another daemon stores while this one's listening connection is down
(a database restart, a network cut) are shown once the connection is back, each exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg

from daemon.cluster.relay import EventRelay
from daemon.model.events import CallEvent, CallMode, Direction, EventType
from daemon.model.record import CallRecord
from daemon.store.location import StoreLocation
from daemon.store.postgres import EVENTS_CHANNEL, PostgresStore


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


async def until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_events_stored_while_the_connection_was_down_reach_tail_once(pg_url: str) -> None:
    """B's relay has a `tail` subscriber; B's listening connection is cut; A stores events
    meanwhile (their announcements never reach B). When B's connection is back, B publishes
    them, in order, once; events announced afterwards are published once too, and B's own
    events are never relayed (B published them itself)."""
    location = StoreLocation.postgres(pg_url)
    a = PostgresStore(location, daemon_id="a")
    b = PostgresStore(location, daemon_id="b", reclaim_interval_seconds=1.0)
    await a.open()
    await b.open()
    shown: list[CallEvent] = []
    relay = EventRelay(b, EVENTS_CHANNEL, lambda: 1, shown.append)
    await relay.start()
    admin = await asyncpg.connect(pg_url)
    try:
        first = call_of("c1")
        await a.record(first, EventType.INITIATED)
        await until(lambda: len(shown) == 1)
        assert b._claim is not None
        await admin.execute("SELECT pg_terminate_backend($1)", b._claim.get_server_pid())
        await until(lambda: b._claim is None, 5)
        missed = [await a.record(first, EventType.RINGING)]
        missed.append(await a.record(first, EventType.ANSWERED))
        assert len(shown) == 1, "nothing reaches B while its connection is down"
        await until(lambda: b._claim is not None, 15)
        own = await b.record(call_of("c2"), EventType.INITIATED)
        assert own is not None
        later = await a.record(first, EventType.ACTIVE)
        await until(lambda: len(shown) >= 4)
        await asyncio.sleep(0.5)  # any duplicate would arrive by now
        seqs = [e.seq for e in shown]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 4, shown
        assert [e.type for e in shown[1:]] == [
            EventType.RINGING,
            EventType.ANSWERED,
            EventType.ACTIVE,
        ]
        assert {e.seq for e in missed if e is not None} <= set(seqs)
        assert later is not None and own.seq not in seqs
    finally:
        await admin.close()
        await relay.stop()
        await a.close()
        await b.close()

"""The take-over loop (daemon/cluster/node.py) on a real PostgreSQL server: what it hands the
engine, and what a daemon presumed dead lets go of. The engine's side is plain callables (the
node's whole interface to it), recorded here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from daemon.cluster.node import ClusterNode
from daemon.model.events import CallMode, Direction, EventType
from daemon.model.record import CallRecord
from daemon.store.location import StoreLocation
from daemon.store.postgres import PostgresStore


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


class Engine:
    """What an engine would have been told."""

    def __init__(self, live: list[str]) -> None:
        self.live = live
        self.adopted: list[str] = []
        self.released: list[str] = []

    async def adopt(self, records: Sequence[CallRecord]) -> None:
        self.adopted += [r.call_id for r in records]
        self.live += [r.call_id for r in records]

    def release(self, call_id: str) -> None:
        self.released.append(call_id)
        self.live.remove(call_id)


async def test_the_node_takes_the_dead_calls_and_a_presumed_dead_node_lets_go(pg_url: str) -> None:
    """A is silent past the limit: B's check adopts A's live calls. A comes back (its next
    heartbeat finds its row gone): A's check releases exactly the calls B owns now, and keeps
    the one it placed after B's take-over."""
    location = StoreLocation.postgres(pg_url)
    a = PostgresStore(location, daemon_id="a", watch_interval_seconds=0.2)
    b = PostgresStore(location, daemon_id="b", watch_interval_seconds=0.2)
    await a.open()
    await b.open()
    admin = await asyncpg.connect(pg_url)
    try:
        for call_id in ("c1", "c2"):
            await a.record(call_of(call_id), EventType.INITIATED)
        engine_a, engine_b = Engine(["c1", "c2"]), Engine([])
        node_a = ClusterNode(a, 0.2, engine_a.adopt, lambda: list(engine_a.live), engine_a.release)
        node_b = ClusterNode(b, 0.2, engine_b.adopt, lambda: list(engine_b.live), engine_b.release)
        await node_b.check()
        assert engine_b.adopted == [], "A is alive"
        # A's heartbeats stop for longer than four intervals (a frozen or cut-off daemon).
        assert a._watchdog is not None
        a._watchdog.cancel()
        await admin.execute(
            "UPDATE voicecall_daemons SET heartbeat_at = now() - interval "
            "'1 minute' WHERE daemon_id = 'a'"
        )
        await node_b.check()
        assert sorted(engine_b.adopted) == ["c1", "c2"]
        await a.record(call_of("c3"), EventType.INITIATED)  # new rows are A's again
        engine_a.live.append("c3")
        a._watchdog = asyncio.get_running_loop().create_task(a._watch())
        for _ in range(100):
            if a.evicted.is_set():
                break
            await asyncio.sleep(0.05)
        assert a.evicted.is_set()
        await node_a.check()
        assert sorted(engine_a.released) == ["c1", "c2"] and engine_a.live == ["c3"]
        assert not a.evicted.is_set()
    finally:
        await admin.close()
        await a.close()
        await b.close()

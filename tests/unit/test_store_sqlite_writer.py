"""The SQLite store writes on the event loop and keeps the slow parts off it.

A write answered through the worker thread costs the caller two loop turns (at 400 streamed
calls each as long as a pacer tick), so writes run inline; checkpoints and reads run on the
worker thread, and the periodic pruning is an indexed range delete.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from daemon.errors import StoreError
from daemon.model.events import CallMode, Direction, EventType
from daemon.model.record import CallRecord
from daemon.model.webhook import WebhookReply
from daemon.store.sqlite import CHECKPOINT_EVERY_WRITES, PROCESSED_KEEP, SqliteStore


def _record(call_id: str = "c1") -> CallRecord:
    return CallRecord(call_id, "mock", Direction.OUTBOUND, CallMode.CONVERSATION, "+1555", "+1666")


async def test_a_write_is_durable_without_giving_the_loop_a_turn(tmp_path: Path) -> None:
    """record() and replay_remember() finish before a callback queued ahead of them runs, and
    what they wrote is on disk for another connection at that moment."""
    store = SqliteStore(tmp_path)
    await store.open()
    try:
        turns: list[int] = []
        asyncio.get_running_loop().call_soon(turns.append, 1)
        event = await store.record(_record(), EventType.INITIATED, {"to": "+1666"})
        await store.replay_remember("k", WebhookReply(200, "text/xml", b"<R/>"), 60)
        assert turns == []
        assert event is not None
        other = sqlite3.connect(tmp_path / "voicecall.db")
        try:
            assert other.execute("SELECT count(*) FROM events").fetchone() == (1,)
            assert other.execute("SELECT count(*) FROM replay").fetchone() == (1,)
        finally:
            other.close()
    finally:
        await store.close()


async def test_reads_see_every_committed_write(tmp_path: Path) -> None:
    """Reads use their own connection on the worker thread: a read after a write sees it."""
    store = SqliteStore(tmp_path)
    await store.open()
    try:
        for n in range(50):
            await store.record(_record(f"c{n}"), EventType.INITIATED)
            assert (await store.get_call(f"c{n}")) is not None
        assert len(await store.list_calls(limit=100)) == 50
    finally:
        await store.close()


async def test_a_lookup_by_key_never_waits_for_the_worker_thread(tmp_path: Path) -> None:
    """A new inbound call looks its provider id up on the voice webhook's path: with the worker
    thread busy (a checkpoint's fsync took 50-100 ms at 400 calls) the lookups still answer at
    once, on the loop, and see what was just written; a scanning read still uses the thread."""
    store = SqliteStore(tmp_path)
    await store.open()
    busy = threading.Event()
    store._executor.submit(busy.wait, 10)  # the worker thread is taken, as by a checkpoint
    try:
        call = CallRecord(
            "c1",
            "mock",
            Direction.INBOUND,
            CallMode.CONVERSATION,
            "+1",
            "+2",
            provider_call_id="CA1",
        )
        await store.record(call, EventType.INITIATED)
        await store.replay_remember("k", WebhookReply(200, "text/xml", b"<R/>"), 60)
        store._replay.clear()
        store._replay_complete = False  # the index no longer in memory: ask the database
        found = await asyncio.wait_for(store.find_by_provider_id("CA1"), 1)
        assert found is not None and found.call_id == "c1"
        assert await asyncio.wait_for(store.find_by_provider_id("CA2"), 1) is None
        assert (await asyncio.wait_for(store.get_call("c1"), 1)) is not None
        reply = await asyncio.wait_for(store.replay_lookup("k"), 1)
        assert reply is not None and reply.body == b"<R/>"
        listing = asyncio.ensure_future(store.list_calls())
        await asyncio.sleep(0.05)
        assert not listing.done()  # a scan waits for the thread
        busy.set()
        assert len(await listing) == 1
    finally:
        busy.set()
        await store.close()


async def test_the_wal_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    """The writer never checkpoints itself; the worker thread copies the WAL into the
    database every few hundred writes, so the database file grows and the WAL does not."""
    store = SqliteStore(tmp_path)
    await store.open()
    database = tmp_path / "voicecall.db"
    try:
        before = database.stat().st_size
        payload = {"text": "x" * 2000}
        for n in range(CHECKPOINT_EVERY_WRITES * 3):
            await store.record(_record(f"c{n % 20}"), EventType.SPEAKING, payload)
        deadline = time.monotonic() + 30
        while database.stat().st_size < before + 1_000_000 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert database.stat().st_size >= before + 1_000_000
    finally:
        await store.close()
    # close checkpoints the rest and truncates the WAL
    wal = tmp_path / "voicecall.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


async def test_pruning_keeps_the_newest_processed_ids(tmp_path: Path) -> None:
    """Every PRUNE_EVERY_WRITES writes the oldest processed ids beyond PROCESSED_KEEP and
    expired replay rows go; the newest stay (a retry of a recent delivery is still recognised)."""
    store = SqliteStore(tmp_path)
    await store.open()
    await store.close()
    old = sqlite3.connect(tmp_path / "voicecall.db")
    now = time.time()
    with old:
        old.executemany(
            "INSERT INTO processed (key, at) VALUES (?, ?)",
            ((f"old-{n}", now - 10_000 + n * 0.01) for n in range(PROCESSED_KEEP + 500)),
        )
        old.execute(
            "INSERT INTO replay (key, expires_at, status, content_type, body) "
            "VALUES ('gone', ?, 200, 'text/xml', x'00')",
            (now - 5,),
        )
    old.close()
    store = SqliteStore(tmp_path)
    await store.open()
    try:
        call = _record()
        for n in range(1000):
            await store.record(call, EventType.SPEAKING, dedupe_key=f"new-{n}")
        check = sqlite3.connect(tmp_path / "voicecall.db")
        try:
            kept = check.execute("SELECT count(*) FROM processed").fetchone()[0]
            assert kept == PROCESSED_KEEP
            assert check.execute(
                "SELECT count(*) FROM processed WHERE key = 'old-0'"
            ).fetchone() == (0,)
            assert check.execute("SELECT count(*) FROM replay WHERE key = 'gone'").fetchone() == (
                0,
            )
        finally:
            check.close()
        # the newest old id and every new one are still recognised as processed
        assert await store.record(call, EventType.SPEAKING, dedupe_key="new-999") is None
        last_old = f"old-{PROCESSED_KEEP + 499}"
        assert await store.record(call, EventType.SPEAKING, dedupe_key=last_old) is None
    finally:
        await store.close()


async def test_a_write_after_close_began_is_refused_not_raced(tmp_path: Path) -> None:
    """Once close() has started (the writer goes to the worker thread to checkpoint), a late
    write is a StoreError, never a second thread on the same connection."""
    store = SqliteStore(tmp_path)
    await store.open()
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)  # close() ran up to its await on the worker thread
    with pytest.raises(StoreError, match="not open"):
        await store.record(_record(), EventType.INITIATED)
    await closing

"""The embedded store: SQLite in WAL mode, written on the event loop, read on a worker thread.

Durability: every `record()` is one transaction that appends the event and rewrites the call
snapshot, committed before the engine acts on the event or publishes it. WAL with
`synchronous=NORMAL` survives a crash or `kill -9` of the daemon (the OS keeps the written pages);
only a power loss can drop the last transactions.

Why writes run on the loop itself: with `synchronous=NORMAL` a commit is a few `write` calls into
the WAL (no fsync; p50 0.1 ms measured), while handing it to a thread costs two turns of the
event loop to get the answer back, and at 400 streamed calls a turn lasts as long as a pacer
tick (10-16 ms): a voice webhook's four writes then took 80-190 ms of waiting for ~0.4 ms of
work (docs/benchmarks.md). The one slow part of WAL, the checkpoint (it copies pages into the
database and fsyncs), is taken off the writer (`wal_autocheckpoint=0`) and run on the worker
thread on a second connection, as are reads that scan (a large `calls export` must not stall
the loop). WAL lets that reader and the writer work at once, and a read issued after a commit
sees it. A lookup of one row by an indexed key (a call by either id, a replay identity) runs on
the loop like a write: it takes microseconds, and on the worker thread it would wait behind a
checkpoint (an fsync, 50-100 ms measured at 400 calls) on the voice webhook's path.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from daemon.errors import StoreError, StoreInUseError
from daemon.model.events import CallEvent, EventType
from daemon.model.record import CallRecord, utc_now
from daemon.model.webhook import WebhookReply
from daemon.paths import STORE_LOCK_NAME
from daemon.store.health import StoreFault, StoreHealth
from daemon.store.lines import WrittenLines
from daemon.store.location import StoreLocation

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    provider_call_id TEXT,
    live INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_provider ON calls (provider_call_id);
CREATE INDEX IF NOT EXISTS calls_live ON calls (live, started_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    type TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_call ON events (call_id, seq);
CREATE TABLE IF NOT EXISTS processed (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS processed_at ON processed (at);
CREATE TABLE IF NOT EXISTS replay (
    key TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    status INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS replay_expires ON replay (expires_at);
CREATE TABLE IF NOT EXISTS transcript (
    call_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (call_id, idx)
) WITHOUT ROWID;
"""
"""The newest schema, made whole on a new database (`IF NOT EXISTS`: a no-op on an up-to-date
one). `transcript` holds each line of each call once (:mod:`daemon.store.lines`); the snapshot
in `calls.record` has an empty transcript since version 2."""

MIGRATIONS: dict[int, str] = {
    2: """
    INSERT OR IGNORE INTO transcript (call_id, idx, line)
    SELECT c.call_id, j.key, j.value FROM calls c, json_each(c.record, '$.transcript') j;
    """,
}
"""The step from version N - 1 to N, run on a database written by an older voicecall, in one
transaction with the schema and version update. Version 1 kept every line inside the snapshot:
they are copied into rows (the snapshot's own copy is ignored from then on, and dropped by the
call's next write)."""

REPLAY_MEMORY_MAX = 200_000
"""How many replay identities are kept in memory (about 10 minutes at 300 webhooks/s)."""

PROCESSED_KEEP = 50_000
"""How many processed provider-event ids are kept (oldest pruned first)."""

PRUNE_EVERY_WRITES = 1000
"""Writes (of any kind) between two prunings of old replay rows and processed ids."""

CHECKPOINT_EVERY_WRITES = 500
"""Writes between two checkpoints on the worker thread (SQLite's own default is ~1000 pages)."""


def _schema_version(db: sqlite3.Connection) -> int:
    """The schema version recorded in the database; 0 for a new one."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row is not None else 0


class _NewerSchemaError(Exception):
    """The database was written by a newer voicecall (raised on the store thread)."""

    def __init__(self, found: int) -> None:
        super().__init__(found)
        self.found = found


def _migrate(db: sqlite3.Connection, found: int) -> None:
    """Bring a new (`found` 0) or older database to :data:`SCHEMA_VERSION`: all or nothing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        if found > 0:
            for version in range(found + 1, SCHEMA_VERSION + 1):
                db.execute(MIGRATIONS[version])
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _checkpoint(reader: sqlite3.Connection) -> None:
    reader.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _checkpoint_done(future: asyncio.Future[None]) -> None:
    """A failed checkpoint loses nothing (the WAL keeps every commit): log it, retry later."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.warning("SQLite checkpoint failed (retried after more writes): %s", exc)


class SqliteStore:
    """The SQLite implementation of :class:`daemon.store.base.Store`."""

    def __init__(self, folder: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(folder) / "voicecall.db"
        self._location = StoreLocation.sqlite(Path(folder))
        self._lock_path = Path(folder) / STORE_LOCK_NAME
        self._lock_handle: IO[str] | None = None
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        """The writer: used on the event loop only (and by `close`)."""
        self._reader: sqlite3.Connection | None = None
        """Reads and checkpoints: used on the worker thread only."""
        self._checkpoint: asyncio.Future[None] | None = None
        self._writes = 0
        self._pruned_at = 0
        self._replay: dict[str, tuple[float, WebhookReply]] = {}
        self._replay_complete = True
        self._lines = WrittenLines()
        self.health = StoreHealth(str(self.path))

    @property
    def fault(self) -> StoreFault | None:
        """Why writes fail right now (disk full, I/O error, locked), or None."""
        return self.health.fault

    @property
    def location(self) -> StoreLocation:
        """The store's folder."""
        return self._location

    @property
    def description(self) -> str:
        """The database file."""
        return str(self.path)

    @property
    def lock_file(self) -> Path | None:
        """`daemon.lock` in the store's folder: flocked while the store is open."""
        return self._lock_path

    def _lock(self) -> None:
        """One daemon per store: two would both reconcile and time out the same calls."""
        folder = self._lock_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = folder.stat()
            if info.st_uid == os.getuid() and info.st_mode & 0o077:
                # Our own state folder, left readable by an older version: the store in it
                # holds transcripts. (A socket folder is never fixed this way: see
                # RpcServer._bind.)
                logger.warning(
                    "made the store folder %s private (mode %o -> 700)",
                    folder,
                    info.st_mode & 0o777,
                )
                folder.chmod(0o700)
            handle = open(self._lock_path, "a+")  # noqa: SIM115 - held while the store is open
        except OSError as exc:
            raise StoreError(
                f"cannot open the store in {folder}: {exc.strerror}; check the "
                "folder's permissions, or point `store` elsewhere"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise StoreInUseError(
                f"another voicecall daemon (pid {holder}) is already running on the store "
                f"{folder}; stop it with `voicecall daemon stop` or point `store` elsewhere"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle

    def _unlock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run `fn`; any SQLite or OS failure becomes a StoreError.

        A write runs here, on the loop, on the writer connection (see the module text); a read
        runs on the worker thread on the reader connection. A failed operation starts (or
        continues) the store's fault; a successful write ends it.
        """
        try:
            if write:
                if self._db is None:
                    raise StoreError("the store is not open")
                value = fn(self._db)
            else:
                if self._reader is None:
                    raise StoreError("the store is not open")
                value = await asyncio.get_running_loop().run_in_executor(
                    self._executor, fn, self._reader
                )
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(exc) from exc
        if write:
            self.health.succeeded()
            self._writes += 1
            if self._writes % CHECKPOINT_EVERY_WRITES == 0:
                self._start_checkpoint()
        return value

    async def _lookup(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn`, a read of at most a few rows by an indexed key, on the loop (writer
        connection): never behind a checkpoint on the worker thread (see the module text)."""
        if self._db is None:
            raise StoreError("the store is not open")
        try:
            return fn(self._db)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> StoreError:
        error = f"{type(exc).__name__}: {exc}"
        self.health.failed(error)
        return StoreError(
            f"the store {self.path} is unavailable ({exc}); nothing was "
            "changed: retry once it works again",
            error=error,
        )

    def _start_checkpoint(self) -> None:
        """Copy the WAL into the database on the worker thread (never two at once)."""
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        reader = self._reader
        if reader is None:
            return
        self._checkpoint = asyncio.get_running_loop().run_in_executor(
            self._executor, _checkpoint, reader
        )
        self._checkpoint.add_done_callback(_checkpoint_done)

    async def open(self) -> None:
        """Claim the folder (its lock file), then open the database."""
        self._lock()
        try:
            await self._open()
        except BaseException:
            self._unlock()
            raise

    async def _open(self) -> None:
        """Open the database, switch to WAL, create the schema and load the replay index."""
        now = self._clock()
        Row = tuple[str, float, int, str, bytes]

        def _open() -> tuple[sqlite3.Connection, sqlite3.Connection, list[Row]]:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                # Before the first write: SQLite gives the -wal and -shm files the database
                # file's mode, and one made by an older version may be 0644.
                self.path.chmod(0o600)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=5000")
                db.execute("PRAGMA wal_autocheckpoint=0")  # the worker thread checkpoints
                found = _schema_version(db)
                if found > SCHEMA_VERSION:
                    raise _NewerSchemaError(found)
                if found < SCHEMA_VERSION:
                    _migrate(db, found)
                rows: list[Row] = db.execute(
                    "SELECT key, expires_at, status, content_type, body FROM replay "
                    "WHERE expires_at >= ? ORDER BY expires_at",
                    (now,),
                ).fetchall()
                reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                reader.execute("PRAGMA busy_timeout=5000")
            except BaseException:
                db.close()
                raise
            return db, reader, rows

        loop = asyncio.get_running_loop()
        try:
            self._db, self._reader, rows = await loop.run_in_executor(self._executor, _open)
        except _NewerSchemaError as exc:
            raise StoreError(
                f"the SQLite store {self.path} has voicecall schema version {exc.found}, newer "
                f"than this voicecall knows ({SCHEMA_VERSION}): a newer voicecall has used it; "
                "upgrade voicecall, or point `store` at another folder"
            ) from None
        except (sqlite3.Error, OSError) as exc:
            if "locked" in str(exc):
                raise StoreError(
                    f"cannot open the store {self.path}: another process holds it locked ({exc}); "
                    "close that process (another voicecall daemon? a sqlite3 shell?) or point "
                    "`store` elsewhere"
                ) from exc
            raise StoreError(
                f"cannot open the store {self.path}: {exc}; check the folder's "
                "permissions and free space, or point `store` elsewhere"
            ) from exc
        for key, expires, status, content_type, body in rows:
            self._remember_in_memory(
                key, float(expires), WebhookReply(int(status), str(content_type), bytes(body))
            )

    async def close(self) -> None:
        """Checkpoint, close and release the folder."""
        if self._db is None:
            self._unlock()
            return
        db, reader = self._db, self._reader
        # From here a late write fails as "not open" instead of racing the close on the thread.
        self._db = self._reader = None

        def _close() -> None:
            if reader is not None:
                reader.close()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(exc) from exc
        finally:
            self._executor.shutdown(wait=True)
            self._unlock()

    async def record(
        self,
        call: CallRecord,
        event_type: EventType | None,
        data: dict[str, Any] | None = None,
        *,
        dedupe_key: str | None = None,
    ) -> CallEvent | None:
        """Save the snapshot and append the event in one transaction."""
        snapshot = call.snapshot_json()
        lines = self._lines.pending(call)
        payload = dict(data or {})
        timestamp = utc_now()
        now = self._clock()

        def _write(db: sqlite3.Connection) -> tuple[bool, CallEvent | None]:
            """(whether anything was written, the stored event)."""
            db.execute("BEGIN IMMEDIATE")
            try:
                if dedupe_key is not None:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO processed (key, at) VALUES (?, ?)", (dedupe_key, now)
                    )
                    if cur.rowcount == 0:
                        db.execute("ROLLBACK")
                        return False, None
                db.execute(
                    "INSERT INTO calls (call_id, provider_call_id, live, started_at, record) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(call_id) DO UPDATE SET "
                    "provider_call_id=excluded.provider_call_id, live=excluded.live, "
                    "record=excluded.record",
                    (
                        call.call_id,
                        call.provider_call_id,
                        0 if call.is_ended else 1,
                        call.started_at,
                        snapshot,
                    ),
                )
                if lines.upserts:
                    db.executemany(
                        "INSERT OR REPLACE INTO transcript (call_id, idx, line) VALUES (?, ?, ?)",
                        [(call.call_id, index, text) for index, text in lines.upserts],
                    )
                if lines.keep is not None:
                    db.execute(
                        "DELETE FROM transcript WHERE call_id = ? AND idx >= ?",
                        (call.call_id, lines.keep),
                    )
                event = None
                if event_type is not None:
                    cur = db.execute(
                        "INSERT INTO events (call_id, type, timestamp, data) VALUES (?, ?, ?, ?)",
                        (
                            call.call_id,
                            event_type.value,
                            timestamp,
                            json.dumps(payload, separators=(",", ":")),
                        ),
                    )
                    seq = cur.lastrowid
                    assert seq is not None
                    event = CallEvent(seq, timestamp, call.call_id, event_type, payload)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return True, event

        written, event = await self._run(_write, write=True)
        if not written:
            return None
        self._lines.stored(call)
        if self._writes - self._pruned_at >= PRUNE_EVERY_WRITES:
            self._pruned_at = self._writes
            await self._run(self._prune, write=True)
            self._prune_memory()
        return event

    def _prune(self, db: sqlite3.Connection) -> None:
        """Drop expired replay rows and all but the newest processed ids: one indexed range
        delete each (~2 ms on the loop every `PRUNE_EVERY_WRITES`; a sort took 160 ms)."""
        now = self._clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM replay WHERE expires_at < ?", (now,))
            db.execute(
                "DELETE FROM processed WHERE at < "
                "(SELECT at FROM processed ORDER BY at DESC LIMIT 1 OFFSET ?)",
                (PROCESSED_KEEP - 1,),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _calls(db: sqlite3.Connection, rows: list[tuple[str, str]]) -> list[CallRecord]:
        """Records from (call_id, snapshot) rows, each with its transcript lines attached.

        Run inside one read of `db` (a transaction on the reader, or on the loop on the writer)
        so the lines are those of the same moment as the snapshots.
        """
        calls = []
        for call_id, snapshot in rows:
            lines = db.execute(
                "SELECT line FROM transcript WHERE call_id = ? ORDER BY idx", (call_id,)
            ).fetchall()
            calls.append(CallRecord.from_stored(snapshot, ",".join(line for (line,) in lines)))
        return calls

    async def claim_live_calls(self) -> list[CallRecord]:
        """Every live call: one daemon runs everything in its SQLite store."""
        return await self.list_calls(live=True, limit=100_000)

    async def get_call(self, call_id: str) -> CallRecord | None:
        """One call by our id."""
        calls = await self._lookup(
            lambda db: self._calls(
                db,
                db.execute(
                    "SELECT call_id, record FROM calls WHERE call_id = ?", (call_id,)
                ).fetchall(),
            )
        )
        return calls[0] if calls else None

    async def find_by_provider_id(self, provider_call_id: str) -> CallRecord | None:
        """One call by the provider's id."""
        calls = await self._lookup(
            lambda db: self._calls(
                db,
                db.execute(
                    "SELECT call_id, record FROM calls WHERE provider_call_id = ? "
                    "ORDER BY started_at DESC LIMIT 1",
                    (provider_call_id,),
                ).fetchall(),
            )
        )
        return calls[0] if calls else None

    async def list_calls(
        self, *, live: bool | None = None, limit: int = 50, since: str | None = None
    ) -> list[CallRecord]:
        """Calls, newest first (timestamps share one format, so text order is time order)."""
        clauses = [] if live is None else [f"live = {1 if live else 0}"]
        args: list[Any] = []
        if since is not None:
            clauses.append("started_at >= ?")
            args.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def _read(db: sqlite3.Connection) -> list[CallRecord]:
            db.execute("BEGIN")  # the lines of the same moment as the snapshots
            try:
                return self._calls(
                    db,
                    db.execute(
                        f"SELECT call_id, record FROM calls {where} "  # noqa: S608
                        "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                        (*args, limit),
                    ).fetchall(),
                )
            finally:
                db.execute("COMMIT")

        return await self._run(_read)

    async def recent_events(self, call_id: str | None, limit: int) -> list[CallEvent]:
        """The last `limit` events, oldest first."""

        def _read(db: sqlite3.Connection) -> list[tuple[int, str, str, str, str]]:
            if call_id is None:
                cur = db.execute(
                    "SELECT seq, timestamp, call_id, type, data FROM events "
                    "ORDER BY seq DESC LIMIT ?",
                    (limit,),
                )
            else:
                cur = db.execute(
                    "SELECT seq, timestamp, call_id, type, data FROM events WHERE call_id = ? "
                    "ORDER BY seq DESC LIMIT ?",
                    (call_id, limit),
                )
            return cur.fetchall()

        rows = await self._run(_read)
        return [
            CallEvent(seq, ts, cid, EventType(kind), json.loads(data))
            for seq, ts, cid, kind, data in reversed(rows)
        ]

    async def turn_latencies(self, last: int) -> list[tuple[float, float]]:
        """(turn latency, listen wait) in ms of the last completed `continue` turns."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT json_extract(data, '$.turnLatencyMs'), json_extract(data, '$.listenWaitMs')"
                " FROM events WHERE type = 'call.speech' AND "
                "json_extract(data, '$.turnLatencyMs') IS NOT NULL ORDER BY seq DESC LIMIT ?",
                (last,),
            ).fetchall()
        )
        return [(float(a), float(b or 0.0)) for a, b in rows]

    async def replay_claim(self, keys: Sequence[str]) -> WebhookReply | None:
        """The first delivery's reply for any of `keys`, or None. One daemon owns a SQLite
        store, and its webhook server keeps one delivery in hand at a time: nothing to claim."""
        for key in keys:
            if (seen := await self.replay_lookup(key)) is not None:
                return seen
        return None

    async def replay_release(self, keys: Sequence[str]) -> None:
        """Nothing to give back (see `replay_claim`)."""

    async def replay_lookup(self, key: str) -> WebhookReply | None:
        """The first delivery's reply for a verified identity seen within its window, or None.

        Answered from memory: one daemon owns the store (it holds the store lock), so the index
        loaded at open plus what this process remembered is complete, and the webhook hot path
        makes no trip to the database thread for a new delivery.
        """
        now = self._clock()
        hit = self._replay.get(key)
        if hit is not None:
            if hit[0] >= now:
                return hit[1]
            del self._replay[key]
        if self._replay_complete:
            return None
        row = await self._lookup(
            lambda db: db.execute(
                "SELECT status, content_type, body FROM replay WHERE key = ? AND expires_at >= ?",
                (key, now),
            ).fetchone()
        )
        if row is None:
            return None
        return WebhookReply(int(row[0]), str(row[1]), bytes(row[2]))

    async def replay_remember(self, key: str, reply: WebhookReply, ttl_seconds: float) -> None:
        """Remember the reply of a verified delivery under its identity (memory and disk).

        Called only once the delivery's effects are stored: if this write then fails, the
        identity is still known to this process (memory), and the events' processed ids keep a
        retry after a restart from applying them twice.
        """
        expires = self._clock() + ttl_seconds
        self._remember_in_memory(key, expires, reply)
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO replay (key, expires_at, status, content_type, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, expires, reply.status, reply.content_type, reply.body),
            ),
            write=True,
        )

    def _prune_memory(self) -> None:
        """Drop expired replay identities (on the event loop: the only thread using them)."""
        now = self._clock()
        for key in [k for k, (expires, _) in self._replay.items() if expires < now]:
            del self._replay[key]

    def _remember_in_memory(self, key: str, expires: float, reply: WebhookReply) -> None:
        self._replay[key] = (expires, reply)
        if len(self._replay) > REPLAY_MEMORY_MAX:
            # Too many to hold: drop the oldest half and fall back to the database for misses.
            for old in list(self._replay)[: REPLAY_MEMORY_MAX // 2]:
                del self._replay[old]
            self._replay_complete = False

"""The PostgreSQL store (asyncpg): the same contract as SQLite, on a server (SPEC section 16).

Durability: every `record()` is one SQL statement, so one transaction, that may claim the
provider-event id, rewrites the call snapshot and appends the event; it is committed (with
`synchronous_commit = on`, whatever the server's default, so the commit is flushed to the
server's WAL) before `record()` returns, and the engine acts on or publishes an event only
after that.

For now one daemon owns a database, as one owns a SQLite folder: the daemon holds a session-level
advisory lock on a connection of its own for its whole life; the server drops it when that
connection ends, even after a `kill -9`. If that connection ends, or stops answering, while the
daemon runs, writes are refused until the lock is taken back. (Several daemons sharing one
database, with heartbeats and call hand-over, is the next step of SPEC section 16.)

The replay cache is read from the database on a miss, so it stays right if several daemons ever
share it; what this daemon remembered itself is answered from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg

from daemon.errors import StoreError, StoreInUseError
from daemon.model.events import CallEvent, EventType
from daemon.model.record import CallRecord, utc_now
from daemon.model.webhook import WebhookReply
from daemon.store import pg_schema
from daemon.store.health import StoreFault, StoreHealth
from daemon.store.location import StoreLocation

logger = logging.getLogger(__name__)

DAEMON_LOCK = 0x766F_6963_616C_6C02
"""Advisory lock key the owning daemon holds for its life (one daemon per database for now)."""

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long connecting to the server may take."""

RECLAIM_INTERVAL_SECONDS = 1.0
"""How often a daemon that lost its lock (its connection ended) tries to take it back."""

RECLAIM_LOG_INTERVAL_SECONDS = 60.0
"""While the lock cannot be taken back, the reason is logged at most this often."""

WATCH_INTERVAL_SECONDS = 5.0
"""How often the lock's connection is pinged (and how long the answer may take)."""

COMMAND_TIMEOUT_SECONDS = 30.0
"""The longest any one query may take before it fails as a store fault (a hung connection)."""

CLAIM_WAIT_SECONDS = 5.0
"""How long `open` retries the daemon lock: after a `kill -9` the server may take a moment to
notice the dead daemon's connection and drop its lock."""

POOL_SIZE = 8
"""Connections for requests (the lock has its own): enough for concurrent calls' writes."""

REPLAY_MEMORY_MAX = 50_000
"""How many replay identities this daemon remembers in memory (misses go to the database)."""

PROCESSED_KEEP = 50_000
"""How many processed provider-event ids are kept (oldest pruned first)."""

PRUNE_EVERY = 1000
"""Prune expired replay entries and old processed ids once per this many writes."""

RECORD_SQL = """
WITH claimed AS (
    INSERT INTO voicecall_processed (key, at)
    SELECT $1::text, $2::double precision WHERE $1::text IS NOT NULL
    ON CONFLICT (key) DO NOTHING
    RETURNING 1
), go AS (
    SELECT 1 WHERE $1::text IS NULL OR EXISTS (SELECT 1 FROM claimed)
), snapshot AS (
    INSERT INTO voicecall_calls (call_id, provider_call_id, live, started_at, record)
    SELECT $3, $4, $5, $6, $7 FROM go
    ON CONFLICT (call_id) DO UPDATE SET provider_call_id = excluded.provider_call_id,
        live = excluded.live, record = excluded.record
    RETURNING 1
), event AS (
    INSERT INTO voicecall_events (call_id, type, at, data, turn_latency_ms, listen_wait_ms)
    SELECT $3, $8::text, $9, $10, $11, $12 FROM go WHERE $8::text IS NOT NULL
    RETURNING seq
)
SELECT EXISTS (SELECT 1 FROM go) AS written, (SELECT seq FROM event) AS seq
"""
"""One `record()`: claim the provider-event id, upsert the snapshot, append the event. One
statement is one transaction, and one round trip instead of five (BEGIN, three statements,
COMMIT): the claim gates the other two, so a duplicate writes nothing at all."""

SERVER_SETTINGS = {
    "application_name": "voicecalld",
    "synchronous_commit": "on",  # durable before acknowledged, even on a relaxed server
}


class PostgresStore:
    """The PostgreSQL implementation of :class:`daemon.store.base.Store`."""

    def __init__(self, location: StoreLocation, *, clock: Callable[[], float] = time.time,
                 claim_wait_seconds: float = CLAIM_WAIT_SECONDS,
                 reclaim_interval_seconds: float = RECLAIM_INTERVAL_SECONDS,
                 watch_interval_seconds: float = WATCH_INTERVAL_SECONDS) -> None:
        if location.url is None:
            raise ValueError("a PostgreSQL store needs a postgresql:// URL")
        self._location = location
        self._clock = clock
        self._claim_wait = claim_wait_seconds
        self._claim: Any = None  # the connection holding DAEMON_LOCK
        self._claim_lost: str | None = None
        """Why this daemon does not hold the database right now (its lock's connection ended)."""
        self._reclaim_interval = reclaim_interval_seconds
        self._reclaimer: asyncio.Task[None] | None = None
        self._watch_interval = watch_interval_seconds
        self._watchdog: asyncio.Task[None] | None = None
        self._pool: Any = None
        self._writes = 0
        self._replay: dict[str, tuple[float, WebhookReply]] = {}
        self.health = StoreHealth(location.display)

    @property
    def location(self) -> StoreLocation:
        """The database URL (display it masked)."""
        return self._location

    @property
    def description(self) -> str:
        """The URL with its password masked."""
        return self._location.display

    @property
    def lock_file(self) -> Path | None:
        """None: the claim is an advisory lock on the server, not a file here."""
        return None

    @property
    def fault(self) -> StoreFault | None:
        """Why writes fail right now (server unreachable, disk full there, ...), or None."""
        return self.health.fault

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, claim the database, create or migrate the schema, open the pool."""
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> None:
        url = self._location.url
        try:
            self._claim = await self._connect_claim()
        except Exception as exc:
            raise pg_schema.connect_error(self._location, exc) from None
        async with self._guard("open"):
            await self._take_lock()
            self._claim.add_termination_listener(self._on_claim_lost)
            found = await pg_schema.migrate(self._claim, self._location,
                                            f"voicecalld pid {os.getpid()}")
            if found != pg_schema.SCHEMA_VERSION:
                logger.info("store %s: schema migrated from version %d to %d",
                            self._location.display, found, pg_schema.SCHEMA_VERSION)
            self._pool = await asyncpg.create_pool(
                url, min_size=1, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS, server_settings=SERVER_SETTINGS)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(),
                                                                name="store-lock-watch")

    async def _watch(self) -> None:
        """Ping the lock's connection. A network cut does not end a TCP connection by itself,
        while the server may well drop ours, and the lock with it: a ping that gets no answer
        in time counts as a lost connection (then `_on_claim_lost` takes over)."""
        while True:
            await asyncio.sleep(self._watch_interval)
            claim = self._claim
            if claim is None:
                continue  # being taken back
            try:
                await claim.fetchval("SELECT 1", timeout=self._watch_interval)
            except Exception as exc:
                if claim is self._claim:
                    logger.error("store %s: the lock's connection did not answer (%s); "
                                 "dropping it", self._location.display,
                                 pg_schema.describe(self._location, exc))
                    claim.terminate()  # calls _on_claim_lost

    async def _connect_claim(self) -> Any:
        """A connection of its own for the lock (named, so a DBA can tell it apart)."""
        return await asyncpg.connect(self._location.url, timeout=CONNECT_TIMEOUT_SECONDS,
                                     server_settings={**SERVER_SETTINGS,
                                                      "application_name": "voicecalld lock"})

    def _on_claim_lost(self, conn: Any) -> None:
        """The lock's connection ended without our asking (server restart, network, a DBA's
        pg_terminate_backend): the server dropped our lock with it, so another daemon may
        take the database. Refuse writes until the lock is ours again."""
        if conn is not self._claim or self._pool is None:
            return  # closed by close()
        self._claim = None
        self._claim_lost = (f"this daemon lost its lock on the PostgreSQL store "
                            f"{self._location.display} (its connection ended)")
        self.health.failed(self._claim_lost)
        self._reclaimer = asyncio.get_running_loop().create_task(self._reclaim(),
                                                                 name="store-reclaim")

    async def _reclaim(self) -> None:
        """Reconnect and take the lock again; until then writes are refused. Logged when it
        starts failing and then once a minute at most (the server may be down for a while)."""
        logged: dict[str, float] = {}

        def note(kind: str, message: str, *args: object) -> None:
            now, every = time.monotonic(), RECLAIM_LOG_INTERVAL_SECONDS
            if now - logged.get(kind, -every) >= every:
                logged[kind] = now
                logger.error(message, self._location.display, *args)

        while self._pool is not None:
            await asyncio.sleep(self._reclaim_interval)
            try:
                conn = await self._connect_claim()
            except Exception as exc:
                note("connect", "store %s: cannot reconnect to take the lock back (%s); "
                     "retrying every %gs", pg_schema.describe(self._location, exc),
                     self._reclaim_interval)
                continue
            try:
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", DAEMON_LOCK)
            except Exception:
                got = False
            if not got or self._pool is None:
                with contextlib.suppress(Exception):
                    await conn.close()
                note("held", "store %s: another daemon holds the database now; this daemon "
                     "refuses writes until it is free")
                continue
            self._claim = conn
            conn.add_termination_listener(self._on_claim_lost)
            self._claim_lost = None
            logger.warning("store %s: lock taken back; writes resume", self._location.display)
            return

    async def _take_lock(self) -> None:
        deadline = time.monotonic() + self._claim_wait
        while not await self._claim.fetchval("SELECT pg_try_advisory_lock($1)", DAEMON_LOCK):
            if time.monotonic() >= deadline:
                raise StoreInUseError(
                    f"another voicecall daemon is already running on the store "
                    f"{self._location.display}; stop it with `voicecall daemon stop` or point "
                    "`store` at another database")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        """Close the pool, then the lock's connection (which releases the database)."""
        pool, self._pool = self._pool, None
        claim, self._claim = self._claim, None
        for task in (self._reclaimer, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reclaimer = self._watchdog = None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT_SECONDS)
            except Exception:
                pool.terminate()
        if claim is not None:
            try:
                await claim.close(timeout=CONNECT_TIMEOUT_SECONDS)
            except Exception:
                claim.terminate()

    @contextlib.asynccontextmanager
    async def _guard(self, action: str, *, write: bool = False) -> AsyncIterator[None]:
        """Turn a driver failure into a StoreError naming the store (password scrubbed).

        A failure starts (or continues) the store's fault; a successful write ends it.
        """
        try:
            yield
        except StoreError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            error = pg_schema.describe(self._location, exc)
            running = self._pool is not None  # open() failing is not a fault of a running store
            if running:
                self.health.failed(error)
            raise StoreError(f"cannot {action} the PostgreSQL store {self._location.display}: "
                             f"{error}" + ("; nothing was changed: retry once it works again"
                                           if running else ""), error=error) from None
        if write:
            self.health.succeeded()

    @contextlib.asynccontextmanager
    async def _conn(self, action: str, *, write: bool = False) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        if write and self._claim_lost is not None:
            self.health.failed(self._claim_lost)
            raise StoreError(f"cannot {action} the PostgreSQL store: {self._claim_lost}; "
                             "nothing was changed: retry once it is taken back",
                             error=self._claim_lost)
        async with self._guard(action, write=write), pool.acquire() as conn:
            yield conn

    # ------------------------------------------------------------------ writes

    async def record(
        self,
        call: CallRecord,
        event_type: EventType | None,
        data: dict[str, Any] | None = None,
        *,
        dedupe_key: str | None = None,
    ) -> CallEvent | None:
        """Claim `dedupe_key`, save the snapshot and append the event: one committed statement."""
        snapshot = json.dumps(call.to_wire(), separators=(",", ":"))
        payload = dict(data or {})
        timestamp = utc_now()
        now = self._clock()
        turn, wait = _turn_figures(event_type, payload)
        async with self._conn(f"write call {call.call_id} to", write=True) as conn:
            row = await conn.fetchrow(
                RECORD_SQL, dedupe_key, now, call.call_id, call.provider_call_id,
                not call.is_ended, call.started_at, snapshot,
                event_type.value if event_type is not None else None, timestamp,
                json.dumps(payload, separators=(",", ":")), turn, wait)
        if not row["written"]:
            return None
        event = None
        if event_type is not None:
            event = CallEvent(int(row["seq"]), timestamp, call.call_id, event_type, payload)
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            await self._prune()
        return event

    async def _prune(self) -> None:
        now = self._clock()
        async with self._conn("prune", write=True) as conn:
            await conn.execute("DELETE FROM voicecall_replay WHERE expires_at < $1", now)
            await conn.execute(
                "DELETE FROM voicecall_processed WHERE key IN (SELECT key FROM "
                "voicecall_processed ORDER BY at DESC OFFSET $1)", PROCESSED_KEEP)
        for key in [k for k, (expires, _) in self._replay.items() if expires < now]:
            del self._replay[key]

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _calls(rows: list[Any]) -> list[CallRecord]:
        return [CallRecord.from_wire(json.loads(row["record"])) for row in rows]

    async def get_call(self, call_id: str) -> CallRecord | None:
        """One call by our id."""
        async with self._conn("read") as conn:
            rows = await conn.fetch("SELECT record FROM voicecall_calls WHERE call_id = $1",
                                    call_id)
        calls = self._calls(rows)
        return calls[0] if calls else None

    async def find_by_provider_id(self, provider_call_id: str) -> CallRecord | None:
        """One call by the provider's id (the newest, should a provider reuse one)."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT record FROM voicecall_calls WHERE provider_call_id = $1 "
                "ORDER BY started_at DESC, created DESC LIMIT 1", provider_call_id)
        calls = self._calls(rows)
        return calls[0] if calls else None

    async def list_calls(self, *, live: bool | None = None, limit: int = 50,
                         since: str | None = None) -> list[CallRecord]:
        """Calls, newest first (ties: the one stored last first); `since` keeps calls started at
        or after it (one timestamp format, compared bytewise, so text order is time order)."""
        clauses: list[str] = []
        args: list[Any] = []
        if live is not None:
            args.append(live)
            clauses.append(f"live = ${len(args)}")
        if since is not None:
            args.append(since)
            clauses.append(f"started_at >= ${len(args)}")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                f"SELECT record FROM voicecall_calls {where} "  # noqa: S608 - fixed clauses
                f"ORDER BY started_at DESC, created DESC LIMIT ${len(args)}", *args)
        return self._calls(rows)

    async def recent_events(self, call_id: str | None, limit: int) -> list[CallEvent]:
        """The last `limit` events (of one call, or of all), oldest first."""
        async with self._conn("read") as conn:
            if call_id is None:
                rows = await conn.fetch(
                    "SELECT seq, at, call_id, type, data FROM voicecall_events "
                    "ORDER BY seq DESC LIMIT $1", limit)
            else:
                rows = await conn.fetch(
                    "SELECT seq, at, call_id, type, data FROM voicecall_events "
                    "WHERE call_id = $1 ORDER BY seq DESC LIMIT $2", call_id, limit)
        return [CallEvent(int(r["seq"]), r["at"], r["call_id"], EventType(r["type"]),
                          json.loads(r["data"])) for r in reversed(rows)]

    async def turn_latencies(self, last: int) -> list[tuple[float, float]]:
        """(turn latency, listen wait) in ms of the last completed `continue` turns."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT turn_latency_ms, listen_wait_ms FROM voicecall_events "
                "WHERE turn_latency_ms IS NOT NULL ORDER BY seq DESC LIMIT $1", last)
        return [(float(r[0]), float(r[1] or 0.0)) for r in rows]

    # ------------------------------------------------------------------ replay cache

    async def replay_lookup(self, key: str) -> WebhookReply | None:
        """The first delivery's reply for a verified identity seen within its window, or None."""
        now = self._clock()
        hit = self._replay.get(key)
        if hit is not None:
            if hit[0] >= now:
                return hit[1]
            del self._replay[key]
        async with self._conn("read") as conn:
            row = await conn.fetchrow(
                "SELECT status, content_type, body FROM voicecall_replay "
                "WHERE key = $1 AND expires_at >= $2", key, now)
        if row is None:
            return None
        return WebhookReply(int(row["status"]), str(row["content_type"]), bytes(row["body"]))

    async def replay_remember(self, key: str, reply: WebhookReply, ttl_seconds: float) -> None:
        """Remember the reply of a verified delivery under its identity (database and memory)."""
        expires = self._clock() + ttl_seconds
        async with self._conn("write the replay cache of", write=True) as conn:
            await conn.execute(
                "INSERT INTO voicecall_replay (key, expires_at, status, content_type, body) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE SET "
                "expires_at = excluded.expires_at, status = excluded.status, "
                "content_type = excluded.content_type, body = excluded.body",
                key, expires, reply.status, reply.content_type, reply.body)
        self._replay[key] = (expires, reply)
        if len(self._replay) > REPLAY_MEMORY_MAX:  # misses go to the database anyway
            for old in list(self._replay)[: REPLAY_MEMORY_MAX // 2]:
                del self._replay[old]


def _turn_figures(event_type: EventType | None,
                  payload: dict[str, Any]) -> tuple[float | None, float | None]:
    """(turn latency, listen wait) of a completed `continue` turn's speech event, else Nones."""
    if event_type is not EventType.SPEECH:
        return None, None
    turn, wait = payload.get("turnLatencyMs"), payload.get("listenWaitMs")
    if not isinstance(turn, int | float) or isinstance(turn, bool):
        return None, None
    return float(turn), (float(wait) if isinstance(wait, int | float)
                         and not isinstance(wait, bool) else None)

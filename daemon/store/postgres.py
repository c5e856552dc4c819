"""The PostgreSQL store (asyncpg): the same contract as SQLite, on a server (SPEC section 16).

Durability: every `record()` is one SQL statement, so one transaction, that may claim the
provider-event id, rewrites the call snapshot and appends the event; it is committed (with
`synchronous_commit = on`, whatever the server's default, so the commit is flushed to the
server's WAL) before `record()` returns, and the engine acts on or publishes an event only
after that.

Several daemons share one database (SPEC section 16). Each has a daemon id (kept in its state
folder, see :mod:`daemon.cluster.identity`) and, on a connection of its own for its whole life,
holds a session-level advisory lock on that id, so two processes never act as the same daemon;
the server drops the lock when that connection ends, even after a `kill -9`. On the same
connection the daemon writes its heartbeat into `voicecall_daemons` every 5 s (the server's clock);
a daemon whose heartbeat is older than 20 s is dead. Every call has an owner, the daemon that runs
it; only the owner writes it (a write by anyone else is refused as a whole, :data:`RECORD_SQL`),
and :meth:`PostgresStore.take_over` hands a dead daemon's live calls to a living one, one call to
exactly one taker. If the lock's connection ends, or stops answering, while the daemon runs,
writes are refused until the lock is taken back.

The replay cache is shared: a daemon claims a delivery's identities in the database before
handling it (:meth:`PostgresStore.replay_claim`, one INSERT ... ON CONFLICT), so the same delivery
reaching two daemons at once is handled by one while the other waits for its answer; what this
daemon remembered itself is answered from memory. One live record per provider call id (a unique
index) makes a new call's first delivery at two daemons one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from daemon.errors import (
    CallMovedError,
    CallStoredElsewhereError,
    StoreError,
    StoreInUseError,
)
from daemon.model.events import CallEvent, EventType
from daemon.model.record import CallRecord, utc_now
from daemon.model.webhook import WebhookReply
from daemon.store import pg_schema
from daemon.store.health import StoreFault, StoreHealth
from daemon.store.lines import WrittenLines
from daemon.store.location import StoreLocation

logger = logging.getLogger(__name__)

DAEMON_LOCK = 0x766F_6963_616C_6C02
"""Mixed into each daemon's advisory lock key (:func:`lock_key`)."""

DEFAULT_DAEMON_ID = "voicecalld"
"""The id of a store opened without one (tests, tools); a daemon passes its own."""

HEARTBEAT_SECONDS = 5.0
"""How often a daemon writes its heartbeat (SPEC section 16)."""

DEAD_AFTER_HEARTBEATS = 4
"""A daemon silent for this many heartbeat intervals (20 s) is dead; its calls are taken over."""

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long connecting to the server may take."""

RECLAIM_INTERVAL_SECONDS = 1.0
"""How often a daemon that lost its lock (its connection ended) tries to take it back."""

RECLAIM_LOG_INTERVAL_SECONDS = 60.0
"""While the lock cannot be taken back, the reason is logged at most this often."""

WATCH_INTERVAL_SECONDS = HEARTBEAT_SECONDS
"""How often the lock's connection writes the heartbeat (and how long the answer may take)."""

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

REPLAY_CLAIM_SECONDS = 30.0
"""How long a daemon's claim on a delivery it is handling holds (then anyone may take it: the
claimer died mid-way)."""

REPLAY_WAIT_SECONDS = 10.0
"""How long a duplicate waits for another daemon handling the same delivery to answer it (then
503: the provider retries)."""

OWN_SEQS_KEPT = 10_000
"""How many of its own latest event numbers a daemon keeps (see :meth:`events_after`)."""

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
    INSERT INTO voicecall_calls (call_id, provider_call_id, live, started_at, record, owner,
        provider)
    SELECT $3, $4, $5, $6, $7, $13, $14 FROM go
    ON CONFLICT (call_id) DO UPDATE SET provider_call_id = excluded.provider_call_id,
        live = excluded.live, record = excluded.record, owner = excluded.owner,
        provider = excluded.provider
    WHERE voicecall_calls.owner IS NULL OR voicecall_calls.owner = excluded.owner
    RETURNING 1
), lines AS (
    INSERT INTO voicecall_transcript (call_id, idx, line)
    SELECT $3, u.idx, u.line FROM go, unnest($15::integer[], $16::text[]) AS u(idx, line)
    WHERE cardinality($15::integer[]) > 0
    ON CONFLICT (call_id, idx) DO UPDATE SET line = excluded.line
), cut AS (
    DELETE FROM voicecall_transcript
    WHERE $17::integer IS NOT NULL AND call_id = $3 AND idx >= $17::integer
        AND EXISTS (SELECT 1 FROM go)
), event AS (
    INSERT INTO voicecall_events (call_id, type, at, data, turn_latency_ms, listen_wait_ms)
    SELECT $3, $8::text, $9, $10, $11, $12 FROM go WHERE $8::text IS NOT NULL
    RETURNING seq
)
SELECT EXISTS (SELECT 1 FROM go) AS written, (SELECT seq FROM event) AS seq,
    CASE WHEN EXISTS (SELECT 1 FROM go) AND NOT EXISTS (SELECT 1 FROM snapshot)
         THEN voicecall_moved($3) END AS moved,
    (SELECT pg_notify('voicecall_events', seq::text || ':' || $13) FROM event) AS told
"""
"""One `record()`: claim the provider-event id, upsert the snapshot, write the transcript lines
it lacks ($15, $16; rows from $17 on are deleted, see :mod:`daemon.store.lines`), append the
event. One statement is one transaction, and one round trip instead of several (BEGIN, each
statement, COMMIT): the claim gates the rest, so a duplicate writes nothing at all. A call another
daemon owns is not updated, and `voicecall_moved` then aborts the statement, claim and event
included (SQLSTATE VC001). A stored event is announced on the channel `voicecall_events` as
`seq:daemon id` (PostgreSQL delivers it at commit, never for a rolled-back write), so the other
daemons' `tail` sees it. A second live call with the same provider call id violates
`voicecall_calls_provider_live` (:data:`ONE_LIVE_CALL`): the whole statement is refused."""

ONE_LIVE_CALL = "voicecall_calls_provider_live"
"""The unique index that keeps one live record per provider call id."""

REPLAY_CLAIM_SQL = """
WITH quick AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO voicecall_replay AS r (key, expires_at, status, content_type, body, claimed_by)
SELECT DISTINCT k, $2::double precision, NULL::integer, '', ''::bytea, $3::text
FROM unnest($1::text[]) AS k, quick
ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at, status = NULL,
    content_type = '', body = '', claimed_by = excluded.claimed_by
WHERE r.expires_at < $4 OR (r.status IS NULL AND NOT EXISTS (
    SELECT 1 FROM pg_locks l, LATERAL (SELECT ('x' || left(encode(sha256(convert_to(
        $5 || ':' || r.claimed_by, 'UTF8')), 'hex'), 16))::bit(64)::bigint AS k) held
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
    AND l.classid::bigint = (held.k >> 32) & 4294967295
    AND l.objid::bigint = held.k & 4294967295))
RETURNING key
"""
"""Claim a delivery's replay identities for this daemon (a row with no reply yet, held for
:data:`REPLAY_CLAIM_SECONDS`): a key someone else holds (claimed or answered, unexpired) is not
taken. Not flushed before it returns: a claim lost in a server crash only means the provider's
retry is handled afresh, as it must be anyway. A claim whose daemon is not running any more
(no process holds its daemon lock, :func:`lock_key`, computed here in SQL: a daemon killed while
handling the delivery) is taken at once rather than when it expires."""

EVENTS_CHANNEL = "voicecall_events"
"""Where every stored event is announced (`seq:daemon id`)."""

NOTIFY_LIMIT = 7000
"""A message longer than this goes through `voicecall_mailbox` (NOTIFY takes < 8000 bytes)."""

MAILBOX_PREFIX = "@"
"""A NOTIFY payload `@<id>` means: the message is row <id> of `voicecall_mailbox`."""

MOVED_SQLSTATE = "VC001"
"""What `voicecall_moved` raises: the call is run by another daemon now."""

LINES = (
    "(SELECT string_agg(t.line, ',' ORDER BY t.idx) FROM voicecall_transcript t "
    "WHERE t.call_id = c.call_id) AS lines"
)
"""A call's transcript lines' JSON joined by commas, beside `c.record` in every read of calls
(:meth:`CallRecord.from_stored` takes both)."""

CLAIM_SQL = f"""
UPDATE voicecall_calls c SET owner = $1
WHERE c.live AND (c.owner IS NULL OR c.owner = $1 OR NOT EXISTS (
    SELECT 1 FROM voicecall_daemons d WHERE d.daemon_id = c.owner
    AND d.heartbeat_at >= now() - make_interval(secs => $2)))
RETURNING c.record, {LINES}
"""  # noqa: S608 - LINES is a fixed fragment
"""At start: this daemon's own live calls from before a restart, and any dead daemon's (an owner
is alive while its heartbeat is younger than $2 seconds, on the server's clock)."""

TAKE_OVER_SQL = f"""
WITH dead AS (
    SELECT c.call_id, c.owner FROM voicecall_calls c
    WHERE c.live AND c.owner IS DISTINCT FROM $1 AND ($3::text IS NULL OR c.call_id = $3)
    AND (c.owner IS NULL OR NOT EXISTS (
        SELECT 1 FROM voicecall_daemons d WHERE d.daemon_id = c.owner
        AND d.heartbeat_at >= now() - make_interval(secs => $2)))
    FOR UPDATE SKIP LOCKED
)
UPDATE voicecall_calls c SET owner = $1 FROM dead WHERE c.call_id = dead.call_id
RETURNING c.record, {LINES}, dead.owner AS previous
"""  # noqa: S608 - LINES is a fixed fragment
"""While running: the live calls of dead daemons, with their previous owner. Each row goes to one
taker only: a row another taker holds is skipped, and one it changed meanwhile is re-checked and
found to have a living owner. $3: only that call (a request about it arrived), else all."""

HEARTBEAT_SQL = """
INSERT INTO voicecall_daemons AS d (daemon_id, host, pid, address) VALUES ($1, $2, $3, $4)
ON CONFLICT (daemon_id) DO UPDATE SET heartbeat_at = now(), host = excluded.host,
    pid = excluded.pid, address = CASE WHEN d.pid = excluded.pid AND d.host = excluded.host
        THEN coalesce(excluded.address, d.address) ELSE excluded.address END
RETURNING (xmax = 0) AS inserted
"""
"""Register or refresh this daemon; `inserted` says the row was gone (presumed dead and removed
by another daemon, or a first start). A new process under the id (a restart) clears the address
until it advertises one, which it does once it listens for requests (:meth:`advertise`)."""

SERVER_SETTINGS = {
    "application_name": "voicecalld",
    "synchronous_commit": "on",  # durable before acknowledged, even on a relaxed server
}


class PostgresStore:
    """The PostgreSQL implementation of :class:`daemon.store.base.Store`."""

    def __init__(
        self,
        location: StoreLocation,
        *,
        clock: Callable[[], float] = time.time,
        daemon_id: str = DEFAULT_DAEMON_ID,
        claim_wait_seconds: float = CLAIM_WAIT_SECONDS,
        reclaim_interval_seconds: float = RECLAIM_INTERVAL_SECONDS,
        watch_interval_seconds: float = WATCH_INTERVAL_SECONDS,
    ) -> None:
        if location.url is None:
            raise ValueError("a PostgreSQL store needs a postgresql:// URL")
        self._location = location
        self.daemon_id = daemon_id
        self.lock_key = lock_key(daemon_id)
        self.dead_after_seconds = watch_interval_seconds * DEAD_AFTER_HEARTBEATS
        self.evicted = asyncio.Event()
        """Set when a heartbeat found this daemon's row gone: the others presumed it dead and
        may have taken its calls (the cluster node then lets go of those)."""
        self._registered = False
        self._address: str | None = None
        self._listeners: dict[str, Callable[[str], None]] = {}
        self._reconnected: list[Callable[[], None]] = []
        self._own_seqs: deque[int] = deque(maxlen=OWN_SEQS_KEPT)
        """The numbers of the last events this daemon stored (told apart from the others')."""
        self._collecting: set[asyncio.Task[None]] = set()
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
        self._lines = WrittenLines()
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
    def watch_interval(self) -> float:
        """The heartbeat interval (seconds)."""
        return self._watch_interval

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
            found = await pg_schema.migrate(
                self._claim, self._location, f"voicecalld pid {os.getpid()}"
            )
            await self._heartbeat(self._claim, None)
            if found != pg_schema.SCHEMA_VERSION:
                logger.info(
                    "store %s: schema migrated from version %d to %d",
                    self._location.display,
                    found,
                    pg_schema.SCHEMA_VERSION,
                )
            self._pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                server_settings=SERVER_SETTINGS,
            )
        self._watchdog = asyncio.get_running_loop().create_task(
            self._watch(), name="store-lock-watch"
        )

    async def _heartbeat(self, conn: Any, deadline: float | None) -> None:
        """Write this daemon's heartbeat (its row comes back if another daemon removed it)."""
        inserted = await conn.fetchval(
            HEARTBEAT_SQL,
            self.daemon_id,
            socket.gethostname(),
            os.getpid(),
            self._address,
            timeout=deadline,
        )
        if inserted and self._registered:
            logger.error(
                "store %s: this daemon (%s) was presumed dead by the others (no "
                "heartbeat for %gs); its calls may have been taken over",
                self._location.display,
                self.daemon_id,
                self.dead_after_seconds,
            )
            self.evicted.set()
        self._registered = True

    async def _watch(self) -> None:
        """Write the heartbeat on the lock's connection. A network cut does not end a TCP
        connection by itself, while the server may well drop ours, and the lock with it: a
        heartbeat that gets no answer in time counts as a lost connection (then
        `_on_claim_lost` takes over)."""
        while True:
            await asyncio.sleep(self._watch_interval)
            claim = self._claim
            if claim is None:
                continue  # being taken back
            try:
                await self._heartbeat(claim, self._watch_interval)
            except Exception as exc:
                if claim is self._claim:
                    logger.error(
                        "store %s: the lock's connection did not answer (%s); dropping it",
                        self._location.display,
                        pg_schema.describe(self._location, exc),
                    )
                    claim.terminate()  # calls _on_claim_lost

    async def _connect_claim(self) -> Any:
        """A connection of its own for the lock (named, so a DBA can tell it apart)."""
        return await asyncpg.connect(
            self._location.url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={**SERVER_SETTINGS, "application_name": "voicecalld lock"},
        )

    def _on_claim_lost(self, conn: Any) -> None:
        """The lock's connection ended without our asking (server restart, network, a DBA's
        pg_terminate_backend): the server dropped our lock with it, so another daemon may
        take the database. Refuse writes until the lock is ours again."""
        if conn is not self._claim or self._pool is None:
            return  # closed by close()
        self._claim = None
        self._claim_lost = (
            f"this daemon lost its lock on the PostgreSQL store "
            f"{self._location.display} (its connection ended)"
        )
        self.health.failed(self._claim_lost)
        self._reclaimer = asyncio.get_running_loop().create_task(
            self._reclaim(), name="store-reclaim"
        )

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
                note(
                    "connect",
                    "store %s: cannot reconnect to take the lock back (%s); retrying every %gs",
                    pg_schema.describe(self._location, exc),
                    self._reclaim_interval,
                )
                continue
            try:
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key)
                if got:
                    await self._heartbeat(conn, self._watch_interval)
            except Exception:
                got = False
            if not got or self._pool is None:
                with contextlib.suppress(Exception):
                    await conn.close()
                note(
                    "held",
                    "store %s: another process holds this daemon's id (%s) now; "
                    "this daemon refuses writes until it is free",
                    self.daemon_id,
                )
                continue
            for callback in self._reconnected:  # before listening: nothing heard since the loss
                callback()
            for channel in self._listeners:
                with contextlib.suppress(Exception):
                    await conn.add_listener(channel, self._on_notify)
            self._claim = conn
            conn.add_termination_listener(self._on_claim_lost)
            self._claim_lost = None
            logger.warning("store %s: lock taken back; writes resume", self._location.display)
            return

    async def _take_lock(self) -> None:
        deadline = time.monotonic() + self._claim_wait
        while not await self._claim.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
            if time.monotonic() >= deadline:
                raise StoreInUseError(
                    f"another voicecall daemon is already running on the store "
                    f"{self._location.display} with this daemon's id ({self.daemon_id}): stop "
                    "it with `voicecall daemon stop`; a machine cloned with its state folder "
                    "shares the id: delete `daemon-id` in the clone's state folder"
                )
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        """Close the pool, then the lock's connection (which releases the daemon's id).

        A daemon that stops cleanly removes its row: the others take over its live calls at
        their next check (within a heartbeat), not 20 s later.
        """
        pool, self._pool = self._pool, None
        claim, self._claim = self._claim, None
        for task in (self._reclaimer, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reclaimer = self._watchdog = None
        if claim is not None and self._registered:
            with contextlib.suppress(Exception):
                await claim.execute(
                    "DELETE FROM voicecall_daemons WHERE daemon_id = $1",
                    self.daemon_id,
                    timeout=CONNECT_TIMEOUT_SECONDS,
                )
        self._registered = False
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
            raise StoreError(
                f"cannot {action} the PostgreSQL store {self._location.display}: "
                f"{error}"
                + ("; nothing was changed: retry once it works again" if running else ""),
                error=error,
            ) from None
        if write:
            self.health.succeeded()

    @contextlib.asynccontextmanager
    async def _conn(self, action: str, *, write: bool = False) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        if write and self._claim_lost is not None:
            self.health.failed(self._claim_lost)
            raise StoreError(
                f"cannot {action} the PostgreSQL store: {self._claim_lost}; "
                "nothing was changed: retry once it is taken back",
                error=self._claim_lost,
            )
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
        snapshot = call.snapshot_json()
        lines = self._lines.pending(call)
        payload = dict(data or {})
        timestamp = utc_now()
        now = self._clock()
        turn, wait = _turn_figures(event_type, payload)
        async with self._conn(f"write call {call.call_id} to", write=True) as conn:
            try:
                row = await conn.fetchrow(
                    RECORD_SQL,
                    dedupe_key,
                    now,
                    call.call_id,
                    call.provider_call_id,
                    not call.is_ended,
                    call.started_at,
                    snapshot,
                    event_type.value if event_type is not None else None,
                    timestamp,
                    json.dumps(payload, separators=(",", ":")),
                    turn,
                    wait,
                    self.daemon_id,
                    call.provider,
                    lines.indexes,
                    lines.texts,
                    lines.keep,
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != ONE_LIVE_CALL:
                    raise
                raise await self._stored_elsewhere(call) from None
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) == MOVED_SQLSTATE:
                    self._lines.forget(call.call_id)
                    raise CallMovedError(
                        f"call {call.call_id} is run by another voicecall daemon now (this "
                        "one was presumed dead); nothing was changed",
                        callId=call.call_id,
                    ) from None
                raise
        if not row["written"]:
            return None
        self._lines.stored(call)
        event = None
        if event_type is not None:
            event = CallEvent(int(row["seq"]), timestamp, call.call_id, event_type, payload)
            self._own_seqs.append(event.seq)
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            await self._prune()
        return event

    async def _stored_elsewhere(self, call: CallRecord) -> CallStoredElsewhereError:
        """The refusal of a second live record for a provider call id, naming the first."""
        first = await self.route(call.provider_call_id or "")
        where = f"call {first.call_id}, run by daemon {first.owner}" if first else "another call"
        return CallStoredElsewhereError(
            f"{call.provider} call {call.provider_call_id} is stored already ({where}): "
            "nothing was written",
            callId=first.call_id if first else None,
            daemon=first.owner if first else None,
        )

    async def _prune(self) -> None:
        now = self._clock()
        async with self._conn("prune", write=True) as conn:
            await conn.execute("DELETE FROM voicecall_replay WHERE expires_at < $1", now)
            await conn.execute(
                "DELETE FROM voicecall_mailbox WHERE at < now() - interval '1 hour'"
            )  # for daemons that died before collecting
            await conn.execute(
                "DELETE FROM voicecall_processed WHERE key IN (SELECT key FROM "
                "voicecall_processed ORDER BY at DESC OFFSET $1)",
                PROCESSED_KEEP,
            )
        for key in [k for k, (expires, _) in self._replay.items() if expires < now]:
            del self._replay[key]

    # ------------------------------------------------------------------ calls across daemons

    async def claim_live_calls(self) -> list[CallRecord]:
        """At start: the live calls this daemon runs from now on (its own from before a
        restart, and those of dead daemons), newest first."""
        async with self._conn("claim the live calls of", write=True) as conn:
            rows = await conn.fetch(CLAIM_SQL, self.daemon_id, self.dead_after_seconds)
        return sorted(self._calls(rows), key=lambda r: r.started_at, reverse=True)

    async def take_over(self, call_id: str | None = None) -> list[tuple[CallRecord, str | None]]:
        """The live calls of daemons silent for longer than `dead_after_seconds` (or gone), now
        this daemon's, with each one's previous owner; the dead daemons' rows are removed.
        `call_id`: only that call (a request about it arrived); no row is removed then."""
        async with self._conn("take over calls in", write=True) as conn:
            rows = await conn.fetch(TAKE_OVER_SQL, self.daemon_id, self.dead_after_seconds, call_id)
            if call_id is not None:
                return [
                    (CallRecord.from_stored(r["record"], r["lines"]), r["previous"]) for r in rows
                ]
            await conn.execute(
                "DELETE FROM voicecall_daemons WHERE daemon_id <> $1 "
                "AND heartbeat_at < now() - make_interval(secs => $2)",
                self.daemon_id,
                self.dead_after_seconds,
            )
        return [(CallRecord.from_stored(r["record"], r["lines"]), r["previous"]) for r in rows]

    async def owners(self, call_ids: list[str]) -> dict[str, str | None]:
        """Who runs each of these calls now (calls not stored are left out)."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT call_id, owner FROM voicecall_calls WHERE call_id = ANY($1::text[])",
                call_ids,
            )
        return {r["call_id"]: r["owner"] for r in rows}

    async def route(self, ref: str) -> CallRoute | None:
        """Who runs a call (by our id or the provider's), and whether that daemon is alive."""
        async with self._conn("read") as conn:
            row = await conn.fetchrow(
                "SELECT c.call_id, c.owner, c.live, d.host, d.pid, d.address, "
                "coalesce(d.heartbeat_at >= "
                "now() - make_interval(secs => $2), false) AS alive FROM voicecall_calls c "
                "LEFT JOIN voicecall_daemons d ON d.daemon_id = c.owner "
                "WHERE c.call_id = $1 OR c.provider_call_id = $1 "
                "ORDER BY c.started_at DESC LIMIT 1",
                ref,
                self.dead_after_seconds,
            )
        if row is None:
            return None
        listening = row["pid"] is not None and row["address"] is not None
        process = f"{row['host']}:{row['pid']}" if listening else None
        return CallRoute(
            row["call_id"], row["owner"], bool(row["live"]), bool(row["alive"]), process
        )

    async def events_by_seq(self, seqs: list[int]) -> list[CallEvent]:
        """Stored events by number, oldest first (those announced by other daemons)."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT seq, at, call_id, type, data FROM voicecall_events "
                "WHERE seq = ANY($1::bigint[]) ORDER BY seq",
                seqs,
            )
        return [
            CallEvent(
                int(r["seq"]), r["at"], r["call_id"], EventType(r["type"]), json.loads(r["data"])
            )
            for r in rows
        ]

    async def last_seq(self) -> int:
        """The number of the newest stored event (0: none)."""
        async with self._conn("read") as conn:
            return int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM voicecall_events"))

    async def events_after(self, seq: int, limit: int) -> list[CallEvent]:
        """Up to `limit` stored events numbered above `seq` that other daemons stored, oldest
        first (this daemon's own are left out: it published them itself)."""
        own = [n for n in self._own_seqs if n > seq]
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT seq, at, call_id, type, data FROM voicecall_events WHERE seq > $1 "
                "AND NOT (seq = ANY($2::bigint[])) ORDER BY seq LIMIT $3",
                seq,
                own,
                limit,
            )
        return [
            CallEvent(
                int(r["seq"]), r["at"], r["call_id"], EventType(r["type"]), json.loads(r["data"])
            )
            for r in rows
        ]

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time the listening connection is back after being lost, just
        before it listens again (what was announced meanwhile never reached this daemon)."""
        self._reconnected.append(callback)

    async def send(self, channel: str, message: str) -> None:
        """Deliver `message` to whoever listens on `channel` (any length: a long one goes
        through the mailbox table)."""
        async with self._conn("send a message through") as conn:
            if len(message.encode()) <= NOTIFY_LIMIT:
                await conn.execute("SELECT pg_notify($1, $2)", channel, message)
                return
            async with conn.transaction():
                box = await conn.fetchval(
                    "INSERT INTO voicecall_mailbox (body) VALUES ($1) RETURNING id", message
                )
                await conn.execute("SELECT pg_notify($1, $2)", channel, f"{MAILBOX_PREFIX}{box}")

    async def listen(self, channel: str, on_message: Callable[[str], None]) -> None:
        """Call `on_message` with every message sent to `channel` (in the event loop). Kept
        across a lost connection (messages sent while it was down are not: see `on_reconnect`)."""
        self._listeners[channel] = on_message
        if self._claim is not None:
            await self._claim.add_listener(channel, self._on_notify)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        on_message = self._listeners.get(channel)
        if on_message is None:
            return
        if not payload.startswith(MAILBOX_PREFIX):
            on_message(payload)
            return
        task = asyncio.get_running_loop().create_task(
            self._collect(payload[1:], on_message), name="store-mailbox"
        )
        self._collecting.add(task)
        task.add_done_callback(self._collecting.discard)

    async def _collect(self, box: str, on_message: Callable[[str], None]) -> None:
        try:
            async with self._conn("read a message from") as conn:
                body = await conn.fetchval(
                    "DELETE FROM voicecall_mailbox WHERE id = $1 RETURNING body", int(box)
                )
        except (StoreError, ValueError) as exc:
            logger.warning("a message between daemons was lost: %s", exc)
            return
        if body is not None:
            on_message(str(body))

    async def advertise(self, address: str) -> None:
        """Record where the other daemons reach this daemon's webhook port (host:port)."""
        self._address = address
        async with self._conn("advertise in", write=True) as conn:
            await conn.execute(
                "UPDATE voicecall_daemons SET address = $2 WHERE daemon_id = $1",
                self.daemon_id,
                address,
            )

    async def address_of(self, daemon_id: str) -> str | None:
        """Where another daemon's webhook port is reached, if it said."""
        async with self._conn("read") as conn:
            found = await conn.fetchval(
                "SELECT address FROM voicecall_daemons WHERE daemon_id = $1", daemon_id
            )
        return str(found) if found else None

    async def daemons(self) -> list[dict[str, Any]]:
        """The daemons registered on this database, with how long each has been silent."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT daemon_id, host, pid, extract(epoch FROM now() - heartbeat_at) AS "
                "silent FROM voicecall_daemons ORDER BY daemon_id"
            )
        return [
            {
                "daemonId": r["daemon_id"],
                "host": r["host"],
                "pid": r["pid"],
                "silentSeconds": round(float(r["silent"]), 1),
                "alive": float(r["silent"]) <= self.dead_after_seconds,
            }
            for r in rows
        ]

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _calls(rows: list[Any]) -> list[CallRecord]:
        return [CallRecord.from_stored(row["record"], row["lines"]) for row in rows]

    async def get_call(self, call_id: str) -> CallRecord | None:
        """One call by our id."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                f"SELECT c.record, {LINES} FROM voicecall_calls c WHERE c.call_id = $1",  # noqa: S608
                call_id,
            )
        calls = self._calls(rows)
        return calls[0] if calls else None

    async def find_by_provider_id(self, provider_call_id: str) -> CallRecord | None:
        """One call by the provider's id (the newest, should a provider reuse one)."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                f"SELECT c.record, {LINES} FROM voicecall_calls c "  # noqa: S608 - fixed
                "WHERE c.provider_call_id = $1 ORDER BY c.started_at DESC, c.created DESC LIMIT 1",
                provider_call_id,
            )
        calls = self._calls(rows)
        return calls[0] if calls else None

    async def list_calls(
        self, *, live: bool | None = None, limit: int = 50, since: str | None = None
    ) -> list[CallRecord]:
        """Calls, newest first (ties: the one stored last first); `since` keeps calls started at
        or after it (one timestamp format, compared bytewise, so text order is time order)."""
        clauses: list[str] = []
        args: list[Any] = []
        if live is not None:
            args.append(live)
            clauses.append(f"c.live = ${len(args)}")
        if since is not None:
            args.append(since)
            clauses.append(f"c.started_at >= ${len(args)}")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                f"SELECT c.record, {LINES} FROM voicecall_calls c {where} "  # noqa: S608 - fixed
                f"ORDER BY c.started_at DESC, c.created DESC LIMIT ${len(args)}",
                *args,
            )
        return self._calls(rows)

    async def recent_events(self, call_id: str | None, limit: int) -> list[CallEvent]:
        """The last `limit` events (of one call, or of all), oldest first."""
        async with self._conn("read") as conn:
            if call_id is None:
                rows = await conn.fetch(
                    "SELECT seq, at, call_id, type, data FROM voicecall_events "
                    "ORDER BY seq DESC LIMIT $1",
                    limit,
                )
            else:
                rows = await conn.fetch(
                    "SELECT seq, at, call_id, type, data FROM voicecall_events "
                    "WHERE call_id = $1 ORDER BY seq DESC LIMIT $2",
                    call_id,
                    limit,
                )
        return [
            CallEvent(
                int(r["seq"]), r["at"], r["call_id"], EventType(r["type"]), json.loads(r["data"])
            )
            for r in reversed(rows)
        ]

    async def turn_latencies(self, last: int) -> list[tuple[float, float]]:
        """(turn latency, listen wait) in ms of the last completed `continue` turns."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT turn_latency_ms, listen_wait_ms FROM voicecall_events "
                "WHERE turn_latency_ms IS NOT NULL ORDER BY seq DESC LIMIT $1",
                last,
            )
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
                "WHERE key = $1 AND expires_at >= $2 AND status IS NOT NULL",
                key,
                now,
            )
        if row is None:
            return None
        return WebhookReply(int(row["status"]), str(row["content_type"]), bytes(row["body"]))

    async def replay_claim(self, keys: Sequence[str]) -> WebhookReply | None:
        """Claim a verified delivery's identities for this daemon, or the first delivery's reply.

        None: no daemon has seen it; it is this daemon's to handle (then `replay_remember`, or
        `replay_release` if it could not be handled). A reply: a replay. Atomic across daemons
        (one INSERT ... ON CONFLICT): of two daemons claiming one delivery at once, one gets it
        and the other waits for its reply (at most :data:`REPLAY_WAIT_SECONDS`).

        Raises:
            StoreError: the store fails, or the other daemon did not answer in time.
        """
        now = self._clock()
        for key in keys:
            hit = self._replay.get(key)
            if hit is not None and hit[0] >= now:
                return hit[1]
        wanted = list(dict.fromkeys(keys))
        deadline = time.monotonic() + REPLAY_WAIT_SECONDS
        pause = 0.02
        while True:
            now = self._clock()
            async with self._conn("claim a webhook delivery in", write=True) as conn:
                got = await conn.fetch(
                    REPLAY_CLAIM_SQL,
                    wanted,
                    now + REPLAY_CLAIM_SECONDS,
                    self.daemon_id,
                    now,
                    str(DAEMON_LOCK),
                )
                if len(got) == len(wanted):
                    return None
                if got:  # part of a delivery someone else holds: give ours back
                    await self._unclaim(conn, [r["key"] for r in got])
                row = await conn.fetchrow(
                    "SELECT status, content_type, body FROM voicecall_replay WHERE key = "
                    "ANY($1::text[]) AND expires_at >= $2 AND status IS NOT NULL LIMIT 1",
                    wanted,
                    now,
                )
            if row is not None:
                return WebhookReply(
                    int(row["status"]), str(row["content_type"]), bytes(row["body"])
                )
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"another daemon has been handling this delivery for over "
                    f"{REPLAY_WAIT_SECONDS:g}s without answering it; the provider retries"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

    async def replay_release(self, keys: Sequence[str]) -> None:
        """Give back this daemon's claim on a delivery it could not handle (the provider's
        retry is handled afresh, here or by another daemon)."""
        async with self._conn("release a webhook delivery in") as conn:
            await self._unclaim(conn, list(keys))

    async def _unclaim(self, conn: Any, keys: list[str]) -> None:
        await conn.execute(
            "DELETE FROM voicecall_replay WHERE key = ANY($1::text[]) AND status IS NULL "
            "AND claimed_by = $2",
            keys,
            self.daemon_id,
        )

    async def replay_remember(self, key: str, reply: WebhookReply, ttl_seconds: float) -> None:
        """Remember the reply of a verified delivery under its identity (database and memory)."""
        expires = self._clock() + ttl_seconds
        async with self._conn("write the replay cache of", write=True) as conn:
            await conn.execute(
                "INSERT INTO voicecall_replay (key, expires_at, status, content_type, body) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE SET "
                "expires_at = excluded.expires_at, status = excluded.status, "
                "content_type = excluded.content_type, body = excluded.body, claimed_by = NULL",
                key,
                expires,
                reply.status,
                reply.content_type,
                reply.body,
            )
        self._replay[key] = (expires, reply)
        if len(self._replay) > REPLAY_MEMORY_MAX:  # misses go to the database anyway
            for old in list(self._replay)[: REPLAY_MEMORY_MAX // 2]:
                del self._replay[old]


def _turn_figures(
    event_type: EventType | None, payload: dict[str, Any]
) -> tuple[float | None, float | None]:
    """(turn latency, listen wait) of a completed `continue` turn's speech event, else Nones."""
    if event_type is not EventType.SPEECH:
        return None, None
    turn, wait = payload.get("turnLatencyMs"), payload.get("listenWaitMs")
    if not isinstance(turn, int | float) or isinstance(turn, bool):
        return None, None
    return float(turn), (
        float(wait) if isinstance(wait, int | float) and not isinstance(wait, bool) else None
    )


def lock_key(daemon_id: str) -> int:
    """The advisory lock key of one daemon id (a signed 64-bit number, as PostgreSQL takes)."""
    digest = hashlib.sha256(f"{DAEMON_LOCK}:{daemon_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True, slots=True)
class CallRoute:
    """Where a call runs, for a daemon that got a request about it."""

    call_id: str
    owner: str | None
    live: bool
    owner_alive: bool
    """False when the owner is dead by the heartbeat rule, or gone (its row removed)."""
    owner_process: str | None
    """`host:pid` of the owner's process now (a restart changes it); None when it is gone, or
    starting and not yet listening for requests."""

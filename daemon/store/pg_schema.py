"""The PostgreSQL store's schema: numbered migrations, the version table, and a read-only probe.

The daemon creates and migrates the schema at start (:func:`migrate`), under a transaction-level
advisory lock so that daemons starting together on one database apply each step once. Every
applied step is a row of `voicecall_schema`; a database whose highest version is newer than
:data:`SCHEMA_VERSION` was written by a newer voicecall and is refused rather than misread.

The driver (asyncpg) is imported only inside functions: `voicecall doctor` imports this module to
probe the database without putting asyncpg on the CLI's import path for other commands.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from daemon.errors import StoreError
from daemon.store.location import StoreLocation

VERSION_TABLE = "voicecall_schema"

LINES_TABLE = """
CREATE TABLE voicecall_transcript (
    call_id text NOT NULL,
    idx integer NOT NULL,
    line text NOT NULL,
    PRIMARY KEY (call_id, idx)
)
"""


async def _lines_apart(conn: Any) -> None:
    """Step 6: transcript lines become rows; those inside stored snapshots are copied out.

    A long call's every write repeated all its lines inside the snapshot. The copy is made
    here and not in SQL because PostgreSQL's JSON functions refuse the escaped NUL a caller's
    words may hold (and the snapshots are text for that reason). The snapshot's own copy is
    ignored from then on and dropped by the call's next write.
    """
    from daemon.model.record import TranscriptEntry

    await conn.execute(LINES_TABLE)
    rows: list[tuple[str, int, str]] = []
    async for row in conn.cursor("SELECT call_id, record FROM voicecall_calls"):
        said = json.loads(row["record"]).get("transcript") or []
        rows.extend(
            (row["call_id"], index, TranscriptEntry(**line).wire_json)
            for index, line in enumerate(said)
        )
        if len(rows) >= 5000:
            await conn.copy_records_to_table("voicecall_transcript", records=rows)
            rows = []
    if rows:
        await conn.copy_records_to_table("voicecall_transcript", records=rows)


Migration = str | Callable[[Any], Awaitable[None]]
"""A schema step: SQL, or a function of the migrating connection (a step SQL cannot do)."""

MIGRATIONS: tuple[Migration, ...] = (
    # 1: calls, events with a global sequence, processed provider-event ids, the replay cache.
    # JSON is kept as text: PostgreSQL's jsonb refuses "\u0000", which a caller's transcript or a
    # provider's field may hold; what SQL needs to filter on has its own column. Timestamps are
    # one ISO 8601 format compared bytewise (COLLATE "C"), whatever the database's locale.
    """
    CREATE TABLE voicecall_calls (
        call_id text PRIMARY KEY,
        provider_call_id text,
        live boolean NOT NULL,
        started_at text COLLATE "C" NOT NULL,
        created bigint GENERATED ALWAYS AS IDENTITY,
        record text NOT NULL
    );
    CREATE INDEX voicecall_calls_provider ON voicecall_calls (provider_call_id);
    CREATE INDEX voicecall_calls_newest ON voicecall_calls (started_at DESC, created DESC);
    CREATE INDEX voicecall_calls_live ON voicecall_calls (live, started_at DESC, created DESC);
    CREATE TABLE voicecall_events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        call_id text NOT NULL,
        type text NOT NULL,
        at text NOT NULL,
        data text NOT NULL,
        turn_latency_ms double precision,
        listen_wait_ms double precision
    );
    CREATE INDEX voicecall_events_call ON voicecall_events (call_id, seq);
    CREATE INDEX voicecall_events_turns ON voicecall_events (seq)
        WHERE turn_latency_ms IS NOT NULL;
    CREATE TABLE voicecall_processed (key text PRIMARY KEY, at double precision NOT NULL);
    CREATE INDEX voicecall_processed_at ON voicecall_processed (at);
    CREATE TABLE voicecall_replay (
        key text PRIMARY KEY,
        expires_at double precision NOT NULL,
        status integer NOT NULL,
        content_type text NOT NULL,
        body bytea NOT NULL
    );
    CREATE INDEX voicecall_replay_expires ON voicecall_replay (expires_at);
    """,
    # 2: several daemons on one database (SPEC section 16). Each daemon is a row it refreshes
    # (heartbeat_at, the server's clock, so machines' clocks never matter); each call has the
    # daemon that runs it (owner). Only the owner writes a call: `voicecall_moved` aborts a write
    # by anyone else (a daemon that was presumed dead while its calls were taken over), and with
    # it the whole statement, so nothing of it is kept.
    """
    CREATE TABLE voicecall_daemons (
        daemon_id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE voicecall_calls ADD COLUMN owner text;
    CREATE INDEX voicecall_calls_owner ON voicecall_calls (owner) WHERE live;
    CREATE FUNCTION voicecall_moved(call_id text) RETURNS boolean LANGUAGE plpgsql AS $fn$
    BEGIN
        RAISE EXCEPTION 'call % is run by another voicecall daemon', call_id
            USING ERRCODE = 'VC001';
    END
    $fn$;
    """,
    # 3: messages between daemons too large for one NOTIFY payload (8000 bytes): the body waits
    # here, the NOTIFY carries its number, and the receiver takes it out.
    """
    CREATE TABLE voicecall_mailbox (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        body text NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 4: where the other daemons reach a daemon's webhook port (host:port), for media streams
    # that land on one daemon while another runs their call.
    """
    ALTER TABLE voicecall_daemons ADD COLUMN address text;
    """,
    # 5: races between daemons. One live record per provider call id (a new call's first
    # delivery reaching two daemons at once makes one call: the second insert fails and that
    # daemon passes the delivery to the first). A replay-cache row may be a claim without a reply
    # yet (`status` NULL, `claimed_by` the daemon handling that delivery now), so a duplicate
    # reaching another daemon meanwhile waits for the first's answer instead of racing it.
    # Duplicates stored before this step keep their record; only the first stays live here.
    r"""
    ALTER TABLE voicecall_calls ADD COLUMN provider text;
    UPDATE voicecall_calls SET provider = substring(record FROM '"provider": ?"([^"]*)"');
    UPDATE voicecall_calls c SET live = false
    WHERE c.live AND c.provider_call_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM voicecall_calls o WHERE o.live AND o.provider_call_id = c.provider_call_id
        AND o.provider IS NOT DISTINCT FROM c.provider AND o.created < c.created);
    CREATE UNIQUE INDEX voicecall_calls_provider_live
        ON voicecall_calls (provider, provider_call_id) WHERE live AND provider_call_id IS NOT NULL;
    ALTER TABLE voicecall_replay ALTER COLUMN status DROP NOT NULL;
    ALTER TABLE voicecall_replay ADD COLUMN claimed_by text;
    """,
    # 6: each transcript line once, as its own row (daemon/store/lines.py).
    _lines_apart,
)
"""Migration N (1-based) is `MIGRATIONS[N - 1]`; append, never edit a released step."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The newest schema this version of voicecall knows."""

MIGRATION_LOCK = 0x766F_6963_616C_6C01
"""Advisory lock key held (per transaction) while the schema is checked and migrated."""

CREATE_VERSION_TABLE = f"""
CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL
)
"""


def newer_schema_error(
    location: StoreLocation, found: int, known: int = SCHEMA_VERSION
) -> StoreError:
    """The refusal of a database written by a newer voicecall."""
    return StoreError(
        f"the PostgreSQL store {location.display} has voicecall schema version {found}, newer "
        f"than this voicecall knows ({known}): a newer voicecall has used it; upgrade "
        "voicecall on this machine (every daemon sharing a database must run the same version) "
        "or point `store` at another database"
    )


async def current_version(conn: Any) -> int | None:
    """The highest applied migration, or None when the schema was never created."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE)
    if not exists:
        return None
    version = await conn.fetchval(f"SELECT max(version) FROM {VERSION_TABLE}")  # noqa: S608
    return int(version) if version is not None else None


async def migrate(
    conn: Any,
    location: StoreLocation,
    applied_by: str,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> int:
    """Create or migrate the schema to the last of `migrations`; return the version found before.

    All steps run in one transaction: a failing step leaves the database as it was.

    Raises:
        StoreError: the schema is newer than `migrations` know (nothing is changed).
    """
    known = len(migrations)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(CREATE_VERSION_TABLE)
        found = await current_version(conn) or 0
        if found > known:
            raise newer_schema_error(location, found, known)
        for version in range(found + 1, known + 1):
            step = migrations[version - 1]
            if isinstance(step, str):
                await conn.execute(step)
            else:
                await step(conn)
            await conn.execute(
                f"INSERT INTO {VERSION_TABLE} (version, applied_by) VALUES ($1, $2)",  # noqa: S608
                version,
                applied_by,
            )
    return found


@dataclass(frozen=True, slots=True)
class SchemaProbe:
    """What a read-only look at a PostgreSQL store found (for `voicecall doctor`)."""

    server_version: str
    schema_version: int | None
    """None: the schema was never created (the daemon creates it at start)."""

    @property
    def known(self) -> int:
        """The newest schema this voicecall knows."""
        return SCHEMA_VERSION


async def probe(location: StoreLocation, deadline_seconds: float) -> SchemaProbe:
    """Connect once, read the server and schema versions, change nothing.

    Raises:
        StoreError: the database cannot be reached or refused us (password masked).
    """
    import asyncpg

    try:
        conn = await asyncpg.connect(
            location.url,
            timeout=deadline_seconds,
            server_settings={"application_name": "voicecall doctor"},
        )
    except Exception as exc:
        raise connect_error(location, exc) from None
    try:
        server = await conn.fetchval("SHOW server_version")
        return SchemaProbe(str(server), await current_version(conn))
    except Exception as exc:
        raise StoreError(
            f"cannot read the PostgreSQL store {location.display}: {describe(location, exc)}"
        ) from None
    finally:
        await conn.close(timeout=deadline_seconds)


def describe(location: StoreLocation, exc: BaseException) -> str:
    """A driver error as one line, with the password scrubbed out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return location.scrub(f"{name}: {text}" if text else name)


def connect_error(location: StoreLocation, exc: BaseException) -> StoreError:
    """The error for a failed connection, with what to check."""
    return StoreError(
        f"cannot connect to the PostgreSQL store {location.display}: {describe(location, exc)}; "
        "check that the server runs and accepts this host, and the user, password (in the URL, "
        "PGPASSWORD or ~/.pgpass) and database name"
    )

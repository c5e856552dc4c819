"""The store contract (tests/store_contract.py) against every backend, on real storage:
SQLite in a temporary folder, PostgreSQL on a real server (tests/pg_cluster.py)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest

from daemon.model.record import CallRecord
from daemon.store import pg_schema, sqlite
from daemon.store.location import StoreLocation
from daemon.store.pg_schema import VERSION_TABLE
from tests.sqlite_rows import stored_form
from tests.store_contract import StoreContract


def _old_form(record: CallRecord) -> str:
    """A snapshot as stored before transcript lines were rows (`json.dumps` of the whole
    record, the lines inside it)."""
    return json.dumps(record.to_wire())


class SqliteBackend:
    """A SQLite store in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.location = StoreLocation.sqlite(folder)
        self.schema_version = sqlite.SCHEMA_VERSION

    async def set_schema_version(self, version: int) -> None:
        assert self.location.folder is not None
        with sqlite3.connect(self.location.folder / "voicecall.db") as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))

    async def break_writes(self, broken: bool) -> None:
        assert self.location.folder is not None
        with sqlite3.connect(self.location.folder / "voicecall.db") as db:
            if broken:
                db.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON events "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            else:
                db.execute("DROP TRIGGER refuse")

    def _connect(self) -> sqlite3.Connection:
        assert self.location.folder is not None
        return sqlite3.connect(self.location.folder / "voicecall.db")

    async def stored_form(self, call_id: str) -> tuple[str, list[str]]:
        assert self.location.folder is not None
        return stored_form(self.location.folder / "voicecall.db", call_id)

    async def store_as_before_lines(self, record: CallRecord) -> None:
        with closing(self._connect()) as db, db:
            db.execute("DROP TABLE transcript")
            db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
            db.execute(
                "INSERT INTO calls (call_id, provider_call_id, live, started_at, record) "
                "VALUES (?, ?, 1, ?, ?)",
                (record.call_id, record.provider_call_id, record.started_at, _old_form(record)),
            )


class PostgresBackend:
    """A PostgreSQL store in a new database of the test server."""

    def __init__(self, url: str) -> None:
        self.location = StoreLocation.postgres(url)
        self.schema_version = pg_schema.SCHEMA_VERSION

    async def set_schema_version(self, version: int) -> None:
        conn = await asyncpg.connect(self.location.url)
        try:
            await conn.execute(f"DELETE FROM {VERSION_TABLE} WHERE version > $1", version)
            await conn.execute(
                f"INSERT INTO {VERSION_TABLE} (version, applied_by) "
                "VALUES ($1, 'test') ON CONFLICT DO NOTHING",
                version,
            )
        finally:
            await conn.close()

    async def break_writes(self, broken: bool) -> None:
        conn = await asyncpg.connect(self.location.url)
        try:
            if broken:
                await conn.execute(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;"
                    "CREATE TRIGGER refuse BEFORE INSERT ON voicecall_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            else:
                await conn.execute("DROP TRIGGER refuse ON voicecall_events;DROP FUNCTION refuse()")
        finally:
            await conn.close()

    async def stored_form(self, call_id: str) -> tuple[str, list[str]]:
        conn = await asyncpg.connect(self.location.url)
        try:
            snapshot = await conn.fetchval(
                "SELECT record FROM voicecall_calls WHERE call_id = $1", call_id
            )
            rows = await conn.fetch(
                "SELECT line FROM voicecall_transcript WHERE call_id = $1 ORDER BY idx", call_id
            )
        finally:
            await conn.close()
        return snapshot, [row["line"] for row in rows]

    async def store_as_before_lines(self, record: CallRecord) -> None:
        conn = await asyncpg.connect(self.location.url)
        try:
            await conn.execute("DROP TABLE voicecall_transcript")
            await conn.execute(f"DELETE FROM {VERSION_TABLE} WHERE version >= 6")
            await conn.execute(
                "INSERT INTO voicecall_calls (call_id, provider_call_id, live, started_at, "
                "record, provider) VALUES ($1, $2, true, $3, $4, $5)",
                record.call_id,
                record.provider_call_id,
                record.started_at,
                _old_form(record),
                record.provider,
            )
        finally:
            await conn.close()


class TestSqliteStore(StoreContract):
    """SQLite, the embedded default."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> SqliteBackend:
        return SqliteBackend(tmp_path / "store")


class TestPostgresStore(StoreContract):
    """PostgreSQL (asyncpg) on a real server."""

    @pytest.fixture
    def backend(self, pg_url: str) -> PostgresBackend:
        return PostgresBackend(pg_url)

"""Build the store a `store` setting names (SPEC sections 3 and 16).

Each backend is imported only when chosen, so a SQLite daemon never loads the PostgreSQL driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from daemon.store.base import Store
from daemon.store.location import StoreKind, StoreLocation


def create_store(
    location: StoreLocation,
    *,
    clock: Callable[[], float] = time.time,
    daemon_id: str | None = None,
    heartbeat_seconds: float | None = None,
) -> Store:
    """The store at `location` (not yet opened). `daemon_id` and `heartbeat_seconds` matter
    only to a shared (PostgreSQL) store: who this daemon is there, and how often it beats."""
    if location.kind is StoreKind.POSTGRESQL:
        from daemon.store import postgres

        return postgres.PostgresStore(
            location,
            clock=clock,
            daemon_id=daemon_id or postgres.DEFAULT_DAEMON_ID,
            watch_interval_seconds=heartbeat_seconds or postgres.HEARTBEAT_SECONDS,
        )
    from daemon.store.sqlite import SqliteStore

    assert location.folder is not None
    return SqliteStore(location.folder, clock=clock)

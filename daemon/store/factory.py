"""Build the store a `store` setting names (SPEC sections 3 and 16).

Each backend is imported only when chosen, so a SQLite daemon never loads the PostgreSQL driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from daemon.store.base import Store
from daemon.store.location import StoreKind, StoreLocation


def create_store(location: StoreLocation, *, clock: Callable[[], float] = time.time) -> Store:
    """The store at `location` (not yet opened)."""
    if location.kind is StoreKind.POSTGRESQL:
        from daemon.store.postgres import PostgresStore

        return PostgresStore(location, clock=clock)
    from daemon.store.sqlite import SqliteStore

    assert location.folder is not None
    return SqliteStore(location.folder, clock=clock)

"""What the SQLite store keeps for one call, read straight from its file (for tests that check
the stored form, not what the store's API gives back)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path


def stored_form(db_path: Path, call_id: str) -> tuple[str, list[str]]:
    """The call's snapshot (`calls.record`) and its transcript lines in order."""
    with closing(sqlite3.connect(db_path)) as db:
        (snapshot,) = db.execute(
            "SELECT record FROM calls WHERE call_id = ?", (call_id,)
        ).fetchone()
        rows = db.execute(
            "SELECT line FROM transcript WHERE call_id = ? ORDER BY idx", (call_id,)
        ).fetchall()
    return snapshot, [line for (line,) in rows]

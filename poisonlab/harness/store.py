"""SQLite store of finished cells: one row per cell, written in its own transaction.

The store lives in the run folder (``results.sqlite``). A cell is keyed by the hash of its
resolved config and seed (:meth:`Suite.key`), so ``--resume`` skips exactly the cells that
finished, and results.json and the reports are regenerated from the store alone.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import ConfigError

STORE_NAME = "results.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    record TEXT NOT NULL
);
"""


class Store:
    """A run's results store. Use as a context manager; every ``put`` commits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise ConfigError(f"--out store {str(self.path)!r} cannot be opened: {e}") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              (key, json.dumps(value, sort_keys=True)))

    def keys(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT key FROM cells")}

    def put(self, position: int, record: dict[str, Any]) -> None:
        """Store one finished cell in one transaction (replacing an earlier try of it)."""
        blob = json.dumps(record, sort_keys=True, allow_nan=True)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?)",
                              (record["key"], position, blob))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def records(self) -> list[dict[str, Any]]:
        """Every stored cell, in grid order."""
        rows = self.conn.execute("SELECT record FROM cells ORDER BY position").fetchall()
        return [json.loads(r[0]) for r in rows]

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

from ..errors import ConfigError, RunError

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
        existed = self.path.is_file() and self.path.stat().st_size > 0
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            if not existed:
                self.conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise ConfigError(f"--out store {str(self.path)!r} cannot be opened: {e}") from None
        if existed:  # never add tables to someone else's database
            tables = {r[0] for r in self._read(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = sorted({"meta", "cells"} - tables)
            if missing:
                self.conn.close()
                raise self.damaged(f"no table {' or '.join(missing)}")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a query; a store that is damaged or not poisonlab's is one line."""
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise self.damaged(str(e)) from None

    def damaged(self, why: str) -> ConfigError:
        return ConfigError(f"store {str(self.path)!r} is damaged or not a poisonlab run's "
                           f"({why}): expected a results.sqlite written by 'poisonlab run'")

    def _json(self, text: Any, what: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise self.damaged(f"{what} is not JSON") from None

    def get_meta(self, key: str) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return None if not rows else self._json(rows[0][0], f"meta {key!r}")

    def _write_failed(self, e: sqlite3.Error) -> RunError:
        """The one line for a write the store refused (disk full, read-only folder...)."""
        try:
            n = len(self.keys())
        except ConfigError:
            n = 0
        kept = f"the {n} cell{'s' * (n != 1)} stored before are kept" if n else (
            "no cell was stored yet")
        return RunError(f"--out store {str(self.path)!r} cannot be written ({e}): {kept}; "
                        "free disk space or fix the folder's permissions, then rerun with "
                        "--resume")

    def set_meta(self, key: str, value: Any) -> None:
        try:
            with self.conn:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  (key, json.dumps(value, sort_keys=True)))
        except sqlite3.Error as e:
            raise self._write_failed(e) from None

    def keys(self) -> set[str]:
        return {r[0] for r in self._read("SELECT key FROM cells")}

    def put(self, position: int, record: dict[str, Any]) -> None:
        """Store one finished cell in one transaction (replacing an earlier try of it)."""
        blob = json.dumps(record, sort_keys=True, allow_nan=True)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?)",
                                  (record["key"], position, blob))
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # SQLite may have rolled back already
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise self._write_failed(e) from None

    def records(self) -> list[dict[str, Any]]:
        """Every stored cell, in grid order."""
        records = []
        for i, (text,) in enumerate(self._read("SELECT record FROM cells ORDER BY position")):
            record = self._json(text, f"cell row {i}")
            if not isinstance(record, dict) or not {"key", "status"} <= record.keys():
                raise self.damaged(f"cell row {i} is not a cell record")
            records.append(record)
        return records


def count_cells(out_dir: Path) -> int:
    """Cells stored in the run folder ``out_dir`` (0 without a readable store), read-only."""
    db = Path(out_dir) / STORE_NAME
    if not db.is_file():
        return 0
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0

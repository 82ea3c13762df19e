"""Run folders handed to ``poisonlab report`` / ``run --resume``: their results.sqlite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import yaml

from poisonlab.harness import parse_suite
from poisonlab.harness.store import Store

from .harness import cli_case

SUITE = {"name": "s", "version": 1, "description": "d",
         "datasets": [{"name": "blobs", "n_samples": 60}], "models": [{"name": "logistic"}],
         "training": {"epochs": 1}, "defenses": ["none"], "seeds": [0]}


def _run_dir(tmp: Path, fill: str | None = None, *, garbage: bool = False) -> Path:
    """A run folder whose store is random bytes, or a real store with one bad row."""
    out = tmp / "run"
    out.mkdir()
    db = out / "results.sqlite"
    if garbage:
        db.write_bytes(b"not a database, just bytes " * 40)
        return out
    with Store(db) as store:
        store.set_meta("suite", parse_suite(SUITE).to_dict())
    if fill is not None:
        conn = sqlite3.connect(db)
        conn.execute(fill)
        conn.commit()
        conn.close()
    return out


def _suite(tmp: Path) -> Path:
    (tmp / "s.yaml").write_text(yaml.safe_dump(SUITE))
    return tmp / "s.yaml"


NOT_A_DB = (r"store '<tmp>/run/results.sqlite' is damaged or not a poisonlab run's "
            r"\(file is not a database\)")

CASES = [
    cli_case("results file", "poisonlab report on a results.sqlite of random bytes",
             lambda tmp: ["report", _run_dir(tmp, garbage=True)],
             NOT_A_DB),
    cli_case("results file", "poisonlab run --resume into a results.sqlite of random bytes",
             lambda tmp: ["run", _suite(tmp), "--out", _run_dir(tmp, garbage=True),
                          "--resume", "--quiet"],
             NOT_A_DB),
    cli_case("results file", "poisonlab report on a store whose cell row is not JSON",
             lambda tmp: ["report", _run_dir(tmp, "INSERT INTO cells VALUES ('k', 0, '{oops')")],
             r"is damaged or not a poisonlab run's \(cell row 0 is not JSON\)"),
    cli_case("results file", "poisonlab report on a store whose cell row is not a record",
             lambda tmp: ["report", _run_dir(tmp, "INSERT INTO cells VALUES ('k', 0, '[1, 2]')")],
             r"is damaged or not a poisonlab run's \(cell row 0 is not a cell record\)"),
    cli_case("results file", "poisonlab report on a store whose meta value is not JSON",
             lambda tmp: ["report", _run_dir(tmp, "UPDATE meta SET value = 'x{' WHERE key = "
                                                   "'suite'")],
             r"is damaged or not a poisonlab run's \(meta 'suite' is not JSON\)"),
    cli_case("results file", "poisonlab report on another program's SQLite file",
             lambda tmp: ["report", _run_dir(tmp, "DROP TABLE cells")],
             r"is damaged or not a poisonlab run's \(no table cells\)"),
    cli_case("results file", "poisonlab report on a store that recorded no suite",
             lambda tmp: ["report", _run_dir(tmp, "DELETE FROM meta")],
             r"is damaged or not a poisonlab run's \(no suite recorded\)"),
    cli_case("results file", "poisonlab report on a folder without a run",
             lambda tmp: ["report", tmp], r"run_dir='<tmp>' holds no results.sqlite"),
]

"""``poisonlab run --workers N``: cells in worker processes, the same bytes as one worker."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from poisonlab.cli import main
from poisonlab.harness import load_suite
from poisonlab.harness.executors import CELL_THREADS, run_local

from .conftest import TINY, write_suite
from .test_cli import run, stable


@pytest.mark.slow  # starts worker processes: seconds
def test_two_workers_give_the_same_results_as_one(tiny_local: dict[str, Any],
                                                  tiny: Path, tmp_path: Path, capsys):
    out = tmp_path / "two"
    code, _, err = run(["run", str(tiny), "--out", str(out), "--quiet", "--workers", "2"],
                       capsys)
    assert code == 0, err
    two = json.loads((out / "results.json").read_text())
    assert two["n_cells"] == 8 and two["n_failed"] == 0
    assert stable(two) == stable(tiny_local)
    # Cells are in grid order, whatever order the workers finished them in.
    with sqlite3.connect(out / "results.sqlite") as conn:
        positions = [p for (p,) in conn.execute("SELECT position FROM cells ORDER BY position")]
    assert positions == list(range(8))
    assert two["environment"]["torch_threads"] == CELL_THREADS


@pytest.mark.slow  # starts worker processes: seconds
def test_resume_with_workers_finishes_only_the_missing_cells(
    tiny_local: dict[str, Any], tiny: Path, tmp_path: Path, capsys
):
    part = tmp_path / "part"
    assert run(["run", str(tiny), "--out", str(part), "--quiet"], capsys)[0] == 0
    with sqlite3.connect(part / "results.sqlite") as conn:  # lose half the cells
        conn.execute("DELETE FROM cells WHERE position % 2 = 1")
        kept = dict(conn.execute("SELECT key, record FROM cells"))
    code, _, err = run(["run", str(tiny), "--out", str(part), "--resume", "--quiet",
                        "--workers", "2"], capsys)
    assert code == 0, err
    with sqlite3.connect(part / "results.sqlite") as conn:
        after = dict(conn.execute("SELECT key, record FROM cells"))
    assert len(after) == 8
    assert {k: after[k] for k in kept} == kept  # stored cells were skipped, not rerun
    assert stable(json.loads((part / "results.json").read_text())) == stable(tiny_local)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_workers_below_one_exit_2_with_one_line(value: str, tiny: Path, tmp_path: Path,
                                                capsys):
    out = tmp_path / "out"
    code, _, err = run(["run", str(tiny), "--out", str(out), "--workers", value], capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("poisonlab: error: ") and f"workers={value}" in err
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("value", ["two", "1.5"])
def test_workers_not_an_integer_is_a_one_line_usage_error(value: str, tiny: Path,
                                                          tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(tiny), "--out", str(tmp_path / "out"), "--workers", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers" in err


@pytest.mark.slow  # starts worker processes: seconds
def test_records_come_back_to_the_parent_and_an_interrupt_stops_the_workers(tmp_path: Path):
    data = copy.deepcopy(TINY)
    data["defenses"], data["threat_model"] = ["none"], {"evasion": TINY["threat_model"]["evasion"]}
    suite = load_suite(write_suite(tmp_path, data))
    cells = list(enumerate(suite.cells()))
    assert len(cells) == 2
    seen: list[tuple[int, int]] = []

    def on_done(position: int, record: dict[str, Any]) -> None:
        seen.append((position, os.getpid()))
        assert record["status"] == "ok" and record["key"] == suite.key(cells[position][1])
        raise KeyboardInterrupt  # as if Ctrl-C arrived while storing the first record

    with pytest.raises(KeyboardInterrupt):
        run_local(suite, cells, on_done, progress=False, workers=2)
    assert len(seen) == 1 and seen[0][1] == os.getpid()
    assert multiprocessing.active_children() == []  # no worker left running

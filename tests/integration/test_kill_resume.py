"""A run killed with SIGKILL mid-way and resumed gives the uninterrupted run's results.

The run is a real ``poisonlab run`` subprocess; the test watches its store
(``results.sqlite``, opened read-only) and kills the process the moment the store reaches a
chosen state: two cells stored, or the suite recorded but no cell finished yet. If the
process got past that state before the kill landed (a loaded machine), the test retries
with slower cells; it never passes without having resumed a run that was really cut short.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import TINY, write_suite
from .test_cli import stable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

#: Epochs per try: each try makes every cell slower, in case the kill came too late.
EPOCHS = (40, 160, 640)
#: 2 defenses x (clean + 2 poisonings) x 2 seeds
N_CELLS = 12
RUN_TIMEOUT_S = 300.0


def kill_suite(epochs: int) -> dict[str, Any]:
    data = copy.deepcopy(TINY)
    data["training"] = {**data["training"], "epochs": epochs}
    data["threat_model"] = {
        **data["threat_model"],
        "poisoning": [{"strategy": "random", "rate": 0.3}, {"strategy": "random", "rate": 0.1}],
    }
    return data


def poisonlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "poisonlab.cli", *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_to_end(*args: str) -> None:
    proc = subprocess.run(poisonlab(*args), env=child_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr


def store_state(db: Path) -> tuple[bool, int] | None:
    """(suite recorded, cells stored) read through a read-only connection; None if the
    store or its tables do not exist yet or it is locked for a commit."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=0.05)
    except sqlite3.OperationalError:
        return None
    try:
        has_suite = conn.execute("SELECT 1 FROM meta WHERE key = 'suite'").fetchone()
        (n,) = conn.execute("SELECT COUNT(*) FROM cells").fetchone()
    except sqlite3.OperationalError:  # no such table yet, or locked
        return None
    finally:
        conn.close()
    return has_suite is not None, n


def stored_rows(db: Path) -> dict[str, tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, position, record FROM cells").fetchall()
    return {k: (p, r) for k, p, r in rows}


def run_and_kill(suite: Path, out: Path, when: Callable[[bool, int], bool]) -> bool:
    """Start a run and SIGKILL it as soon as ``when(suite_recorded, n_cells)`` holds.

    Returns False if the process ended on its own before that (nothing was tested)."""
    proc = subprocess.Popen(poisonlab("run", str(suite), "--out", str(out), "--quiet"),
                            env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    db = out / "results.sqlite"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            state = store_state(db)
            if state is not None and when(*state):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                # ended on its own just before the kill: exit code 0, not -SIGKILL
                return proc.returncode == -signal.SIGKILL
            if proc.poll() is not None:
                _, err = proc.communicate()
                assert proc.returncode == 0, err
                return False
            time.sleep(0.005)
        pytest.fail(f"the run never reached the state to kill it in ({RUN_TIMEOUT_S} s)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    return False  # unreachable: pytest.fail raises


class Suites:
    """The kill suites, one file per epoch count, and their uninterrupted runs (run once
    per module: results.json names the suite file, so the runs share it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results: dict[int, dict[str, Any]] = {}

    def path(self, epochs: int) -> Path:
        path = self.root / f"kill{epochs}.yaml"
        if not path.exists():
            write_suite(self.root, kill_suite(epochs), path.name)
        return path

    def reference(self, epochs: int) -> dict[str, Any]:
        if epochs not in self.results:
            full = self.root / f"full{epochs}"
            run_to_end("run", str(self.path(epochs)), "--out", str(full), "--quiet")
            self.results[epochs] = json.loads((full / "results.json").read_text())
        return self.results[epochs]


@pytest.fixture(scope="module")
def suites(tmp_path_factory: pytest.TempPathFactory) -> Suites:
    return Suites(tmp_path_factory.mktemp("suites"))


def kill_and_resume(tmp_path: Path, suites: Suites, when: Callable[[bool, int], bool],
                    check_killed: Callable[[int], bool]) -> None:
    for epochs in EPOCHS:
        suite = suites.path(epochs)
        part = tmp_path / f"part{epochs}"
        if not run_and_kill(suite, part, when):
            continue
        before = stored_rows(part / "results.sqlite")
        if check_killed(len(before)):
            break
        # killed later than meant to: try again with slower cells
    else:
        pytest.fail(f"no run was killed in the state meant (epochs {EPOCHS})")

    # the killed run left no results.json: it is written only from a finished store
    assert not (part / "results.json").exists()
    run_to_end("run", str(suite), "--out", str(part), "--resume", "--quiet")

    after = stored_rows(part / "results.sqlite")
    assert len(after) == N_CELLS
    # cells stored before the kill were kept as they were, not evaluated again
    for key, row in before.items():
        assert after[key] == row
    a = suites.reference(epochs)
    b = json.loads((part / "results.json").read_text())
    assert b["n_cells"] == a["n_cells"] == N_CELLS
    keys_a = [c["key"] for c in a["cells"]]
    keys_b = [c["key"] for c in b["cells"]]
    assert keys_b == keys_a and len(set(keys_b)) == N_CELLS
    for ca, cb in zip(stable(a)["cells"], stable(b)["cells"], strict=True):
        assert cb == ca, ca["key"]
    assert stable(b) == stable(a)


def test_sigkill_after_two_cells_then_resume(tmp_path: Path, suites: Suites):
    kill_and_resume(tmp_path, suites, when=lambda has_suite, n: n >= 2,
                    check_killed=lambda n: 2 <= n < N_CELLS)


def test_sigkill_during_the_first_cell_then_resume(tmp_path: Path, suites: Suites):
    kill_and_resume(tmp_path, suites, when=lambda has_suite, n: has_suite,
                    check_killed=lambda n: n == 0)

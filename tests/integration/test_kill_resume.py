"""A run stopped mid-way and resumed gives the uninterrupted run's results.

The run is a real ``poisonlab run`` subprocess; the test watches its store
(``results.sqlite``, opened read-only) and signals the process the moment the store reaches
a chosen state: two cells stored, or the suite recorded but no cell finished yet.

- SIGKILL: nothing can be cleaned up; the store's transactions keep what was committed.
- SIGINT and SIGTERM (also sent to the whole process group, as a terminal's Ctrl-C or a
  CI timeout does, with worker processes in it): the run stops cleanly, exits with
  128 + the signal's number, says how many cells it kept and the command that finishes it,
  and writes no results.json or report.

If the process got past that state before the signal landed (a loaded machine), the test
retries with slower cells; it never passes without having resumed a run that was really
cut short.
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


def run_and_kill(suite: Path, out: Path, when: Callable[[bool, int], bool], *,
                 sig: int = signal.SIGKILL, workers: int = 1, group: bool = False) -> bool:
    """Start a run and send it ``sig`` as soon as ``when(suite_recorded, n_cells)`` holds
    (to its whole process group with ``group``, workers included).

    Returns False if the process ended on its own before that (nothing was tested). A
    process that got SIGINT or SIGTERM must exit with 128 + the signal's number, print one
    line naming the cells it kept and the --resume command, and leave no temporary file.
    """
    proc = subprocess.Popen(poisonlab("run", str(suite), "--out", str(out), "--quiet",
                                      "--workers", str(workers)),
                            env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=group)
    db = out / "results.sqlite"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            state = store_state(db)
            if state is not None and when(*state):
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    os.kill(proc.pid, sig)
                _, err = proc.communicate(timeout=60)
                if proc.returncode == 0:  # ended on its own just before the signal
                    return False
                if sig == signal.SIGKILL:
                    assert proc.returncode == -signal.SIGKILL, err
                else:
                    check_clean_stop(proc.returncode, err, sig, suite, out)
                return True
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


def check_clean_stop(code: int, err: str, sig: int, suite: Path, out: Path) -> None:
    """What a run stopped by SIGINT/SIGTERM must have done."""
    assert code == 128 + sig, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    n = stored_count(out / "results.sqlite")
    kept = f"{n} finished cell{'s' * (n != 1)} kept" if n else "no cell had finished"
    assert err.startswith(f"poisonlab: interrupted by {signal.Signals(sig).name}: {kept}"), err
    assert err.rstrip().endswith(f"poisonlab run {suite} --out {out} --resume"), err
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")] if out.exists() else []
    assert not leftovers, leftovers
    if n == 0:  # a fresh run stopped before any cell finished leaves no store behind
        assert not (out / "results.sqlite").exists()


def stored_count(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])


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
                    check_killed: Callable[[int], bool], *, sig: int = signal.SIGKILL,
                    workers: int = 1, group: bool = False) -> None:
    for epochs in EPOCHS:
        suite = suites.path(epochs)
        part = tmp_path / f"part{epochs}"
        if not run_and_kill(suite, part, when, sig=sig, workers=workers, group=group):
            continue
        db = part / "results.sqlite"
        before = stored_rows(db) if db.exists() else {}
        if check_killed(len(before)):
            break
        # killed later than meant to: try again with slower cells
    else:
        pytest.fail(f"no run was killed in the state meant (epochs {EPOCHS})")

    # the killed run left no results.json: it is written only from a finished store
    assert not (part / "results.json").exists()
    assert not (part / "report.html").exists() and not (part / "report.md").exists()
    if before:
        conn = sqlite3.connect(part / "results.sqlite")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            conn.close()
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_after_two_cells_stops_cleanly_then_resume(tmp_path: Path, suites: Suites,
                                                         sig: int):
    kill_and_resume(tmp_path, suites, when=lambda has_suite, n: n >= 2,
                    check_killed=lambda n: 2 <= n < N_CELLS, sig=sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_the_process_group_with_workers_then_resume(tmp_path: Path,
                                                             suites: Suites, sig: int):
    # Ctrl-C in a terminal and a CI job's timeout signal every process of the group: the
    # worker processes get it too.
    kill_and_resume(tmp_path, suites, when=lambda has_suite, n: n >= 2,
                    check_killed=lambda n: 2 <= n < N_CELLS, sig=sig, workers=2, group=True)


def test_sigterm_during_the_first_cell_keeps_no_store(tmp_path: Path, suites: Suites):
    # Stopped before any cell finished: the run leaves no store behind, and the command it
    # prints (with --resume) starts it afresh.
    kill_and_resume(tmp_path, suites, when=lambda has_suite, n: has_suite,
                    check_killed=lambda n: n == 0, sig=signal.SIGTERM)

"""Faults outside the input: a full disk, an unwritable --out, a worker process that dies.

A full disk is made real for one ``poisonlab run`` subprocess with RLIMIT_FSIZE (no file
of the process may grow past the limit: writes past it fail with EFBIG, as ENOSPC would;
SIGXFSZ is ignored so that the write returns the error). Each must end with one line and
exit code 2, keep every cell stored before the fault intact, and leave no half-written
file; rerunning with --resume (or ``poisonlab report``) then finishes with the results of
a run that never failed.
"""

from __future__ import annotations

import json
import math
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

resource = pytest.importorskip("resource")  # POSIX only

pytestmark = pytest.mark.slow

N_CELLS = 8  # TINY: 2 defenses x (clean + 1 poisoning) x 2 seeds


def poisonlab(*args: str | Path, limit: int | None = None, **kw: Any
              ) -> subprocess.CompletedProcess[str]:
    def cap_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "poisonlab.cli", *map(str, args)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300, check=False,
                          preexec_fn=cap_file_size if limit is not None else None, **kw)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("poisonlab: error: ")
    return proc.stderr


def stored(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return dict(conn.execute("SELECT key, record FROM cells").fetchall())
    finally:
        conn.close()


def no_temporary_files(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not left, left


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The TINY suite's file and its results from a run without faults."""
    root = tmp_path_factory.mktemp("faults")
    suite = write_suite(root, TINY)
    proc = poisonlab("run", suite, "--out", root / "full", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return suite, json.loads((root / "full" / "results.json").read_text())



def test_disk_full_while_storing_cells_keeps_them_and_resume_finishes(
        reference: tuple[Path, dict[str, Any]], tmp_path: Path):
    suite, full = reference
    out = tmp_path / "run"
    # The store grows by about 8 KiB a cell (78 KiB for 8): 40,000 bytes lets some cells
    # in and refuses a later one.
    proc = poisonlab("run", suite, "--out", out, "--quiet", limit=40_000)
    err = one_error_line(proc)
    before = stored(out / "results.sqlite")
    assert 1 <= len(before) < N_CELLS
    assert f"the {len(before)} cell{'s' * (len(before) != 1)} stored before are kept" in err
    assert "results.sqlite" in err and "--resume" in err
    assert not (out / "results.json").exists() and not (out / "report.md").exists()
    no_temporary_files(out)

    proc = poisonlab("run", suite, "--out", out, "--resume", "--quiet")
    assert proc.returncode == 0, proc.stderr
    after = stored(out / "results.sqlite")
    assert len(after) == N_CELLS
    assert all(after[k] == v for k, v in before.items())  # kept as they were
    assert stable(json.loads((out / "results.json").read_text())) == stable(full)


def test_disk_full_while_writing_reports_leaves_no_partial_file(
        reference: tuple[Path, dict[str, Any]], tmp_path: Path):
    suite, full = reference
    out = tmp_path / "run"
    # Room for the store (78 KiB) and results.json (108 KiB), not for report.html (318 KiB).
    proc = poisonlab("run", suite, "--out", out, "--quiet", limit=200_000)
    err = one_error_line(proc)
    assert "report.html" in err and "cannot be written" in err
    assert f"the run's {N_CELLS} cells are kept in results.sqlite" in err
    assert f"'poisonlab report {out}'" in err
    assert len(stored(out / "results.sqlite")) == N_CELLS
    assert not (out / "report.html").exists()  # never a truncated report
    no_temporary_files(out)
    assert stable(json.loads((out / "results.json").read_text())) == stable(full)

    proc = poisonlab("report", out)
    assert proc.returncode == 0, proc.stderr
    html = (out / "report.html").read_text()
    assert html.rstrip().endswith("</html>")


def test_unwritable_out_is_one_line(reference: tuple[Path, dict[str, Any]], tmp_path: Path):
    suite, _ = reference
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = one_error_line(poisonlab("run", suite, "--out", blocker / "run"))
    assert "cannot be created" in err
    if os.geteuid() == 0:  # root writes through permission bits: only the case above
        return
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        err = one_error_line(poisonlab("run", suite, "--out", locked / "run"))
        assert "cannot be created" in err or "not writable" in err
    finally:
        locked.chmod(0o755)


def worker_pids(parent: int) -> list[int]:
    """The multiprocessing workers among ``parent``'s children (Linux /proc)."""
    pids = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"multiprocessing" in cmd and b"resource_tracker" not in cmd:
                pids.append(int(child))
    return pids


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_worker_killed_mid_run_is_one_line_and_resume_finishes(tmp_path: Path):
    out = tmp_path / "run"
    data = dict(TINY, training={**TINY["training"], "epochs": 200})  # slow cells
    slow = write_suite(tmp_path, data, "slow.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "poisonlab.cli", "run", str(slow),
                             "--out", str(out), "--quiet", "--workers", "2"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(worker_pids(proc.pid)) == 2 or proc.poll() is not None,
                 "two workers")
        # the out-of-memory killer's way: SIGKILL, no cleanup
        os.kill(worker_pids(proc.pid)[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "worker process ended without finishing its cell" in err and "--resume" in err
    assert not (out / "results.json").exists()
    proc2 = poisonlab("run", slow, "--out", out, "--resume", "--quiet")
    assert proc2.returncode == 0, proc2.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["n_cells"] == N_CELLS and doc["n_failed"] == 0


HELPERS = "tests.integration.byo_helpers"


def test_cells_whose_loss_goes_nan_or_whose_model_raises_fail_and_the_run_goes_on(
        tmp_path: Path):
    data = dict(TINY, models=[{"name": "mlp", "hidden": [16]}, f"{HELPERS}:diverging_net",
                              f"{HELPERS}:failing_net"],
                threat_model={"poisoning": [], "evasion": TINY["threat_model"]["evasion"]})
    suite = write_suite(tmp_path, data)
    out = tmp_path / "run"
    proc = poisonlab("run", suite, "--out", out, "--quiet",
                     cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 3, proc.stderr  # a failed cell: exit 3, each one named
    doc = json.loads((out / "results.json").read_text())
    failed = {c["key"]: c for c in doc["cells"] if c["status"] != "ok"}
    assert doc["n_cells"] == 12 and doc["n_failed"] == len(failed) == 8
    named = [line for line in proc.stderr.splitlines() if line.startswith(
        "poisonlab: cell failed: ")]
    assert sorted(line.split(": ")[2] for line in named) == sorted(failed)
    why = {f"{HELPERS}:diverging_net": "training loss became nan at epoch 1, batch 1",
           f"{HELPERS}:failing_net": "unexpected ValueError at byo_helpers.py:"}
    for c in failed.values():
        assert c["error"].startswith(why[c["model"]["name"]]), c["error"]
        assert c["metrics"] == []  # no NaN passed off as a number
    ok = [c for c in doc["cells"] if c["status"] == "ok"]
    assert {c["model"]["name"] for c in ok} == {"mlp"}
    assert all(m["value"] is None or math.isfinite(m["value"]) for c in ok for m in c["metrics"])
    # no aggregate stands for the failed models: none of their numbers exist
    assert doc["aggregates"] and {a["model"] for a in doc["aggregates"]} == {"mlp(hidden=[16])"}
    md = (out / "report.md").read_text()
    assert "**8 of 12 cells failed" in md and "## Failed cells" in md
    assert md.count("training loss became nan") == 4
    assert md.count("ValueError at byo_helpers.py") == 4
    assert md.count(f"blobs(n_samples=300) / {HELPERS}:diverging_net") == 4
    html = (out / "report.html").read_text()
    assert "<h2>Failed cells</h2>" in html and html.count("training loss became nan") == 4
    assert proc.stderr.splitlines()[-1] == (
        f"poisonlab: 8 of 12 cells failed; their numbers are missing (why: 'Failed cells' in "
        f"{out / 'report.md'})")

"""``poisonlab run --executor ray``: cells as Ray tasks, the same numbers as the local
executor, stored as they finish so that ``--resume`` works across executors.

The tests need the ``ray`` extra. Without it they are skipped, unless
``POISONLAB_REQUIRE_RAY=1`` (set by ``make test``) turns the skip into a failure.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import CI_SUITE
from .test_cli import run, stable

pytestmark = [pytest.mark.ray, pytest.mark.slow]

try:
    import ray
except ImportError:  # pragma: no cover - depends on the extras installed
    if os.environ.get("POISONLAB_REQUIRE_RAY") == "1":
        raise
    pytest.skip("ray is not installed (pip install 'poisonlab[ray]')", allow_module_level=True)


# Runs first, before the module's shared instance exists: without a running Ray, the
# executor starts its own instance for the run and stops it afterwards.
def test_ray_starts_and_stops_its_own_instance(tiny: Path, tiny_local: dict[str, Any],
                                               tmp_path: Path, capsys):
    assert not ray.is_initialized()
    out = tmp_path / "own"
    code, _, err = run(["run", str(tiny), "--out", str(out), "--executor", "ray",
                        "--quiet"], capsys)
    assert code == 0, err
    assert not ray.is_initialized()
    doc = json.loads((out / "results.json").read_text())
    assert doc["environment"]["executors"] == ["ray"]
    assert stable(doc) == stable(tiny_local)


def _marked(mark: str) -> list[str]:
    """The command lines of the live processes whose environment holds ``mark``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes():
                out.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_ray_run_leaves_no_process_behind(tiny: Path, tmp_path: Path) -> None:
    # the run in its own process, as a user starts it: every process it (and Ray) starts
    # inherits the mark; once the command has returned, none may be left
    import subprocess
    import sys
    import time
    import uuid

    mark = f"POISONLAB_RAY_LEFTOVER={uuid.uuid4().hex}"
    key, value = mark.split("=")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from poisonlab.cli import main; sys.exit(main())",
         "run", str(tiny), "--out", str(tmp_path / "r"), "--executor", "ray", "--quiet"],
        env={**os.environ, key: value}, capture_output=True, text=True, timeout=600,
        check=False)
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 20  # shutdown signals, then the processes exit
    left = _marked(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _marked(mark)
    assert not left, f"left behind after the run: {left}"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance with 2 CPUs, shared by the tests below (the executor uses a
    running instance and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             object_store_memory=128 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


def test_ci_suite_on_two_cpu_ray_matches_the_local_executor(ci_run: Path, local_ray: None,
                                                            tmp_path: Path, capsys):
    out = tmp_path / "ray"
    code, _, err = run(["run", str(CI_SUITE), "--out", str(out), "--executor", "ray",
                        "--quiet"], capsys)
    assert code == 0, err
    assert ray.is_initialized()  # a running instance is used, not stopped
    on_ray = json.loads((out / "results.json").read_text())
    local = json.loads((ci_run / "results.json").read_text())
    assert on_ray["n_cells"] == local["n_cells"] == 40 and on_ray["n_failed"] == 0
    assert on_ray["environment"]["executors"] == ["ray"]
    assert local["environment"]["executors"] == ["local"]
    assert {c["device"] for c in on_ray["cells"]} == {"cpu"}
    # Every number, check and verdict, byte for byte.
    assert stable(on_ray) == stable(local)
    with sqlite3.connect(out / "results.sqlite") as conn:  # grid order, whatever finished first
        positions = [p for (p,) in conn.execute("SELECT position FROM cells ORDER BY position")]
    assert positions == list(range(40))


def test_partition_chunks_run_as_ray_tasks_with_the_local_numbers(
        local_ray: None, tmp_path: Path, capsys) -> None:
    # k=40 base models are 3 chunks of 16 (poisonlab.defenses._stacked.CHUNK): each
    # clean and poisoned cell ships them as 3 Ray tasks of its own, and every number is
    # the local executor's, byte for byte.
    from .conftest import write_suite
    from .test_certified_suite import SUITE as CERTIFIED

    suite = write_suite(tmp_path, {**CERTIFIED, "seeds": [0], "defenses": [
        {"name": "dpa", "k": 40, "features": "pca", "n_components": 10, "epochs": 5}]})
    docs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        code, _, err = run(["run", str(suite), "--out", str(out), "--executor", executor,
                            "--quiet"], capsys)
        assert code == 0, err
        docs[executor] = json.loads((out / "results.json").read_text())
    assert stable(docs["ray"]) == stable(docs["local"])
    import time

    deadline, chunks = time.monotonic() + 20, 0
    while chunks < 9 and time.monotonic() < deadline:  # task events reach GCS in batches
        chunks = sum(e.get("cat") == "task::_ray_chunk" for e in ray.timeline())
        time.sleep(0.5)
    assert chunks == 3 * 3  # 3 cells (clean + 2 poisonings) x 3 chunks


def test_resume_on_ray_finishes_a_local_run(tiny: Path, tiny_local: dict[str, Any],
                                            local_ray: None, tmp_path: Path, capsys):
    part = tmp_path / "part"
    assert run(["run", str(tiny), "--out", str(part), "--quiet"], capsys)[0] == 0
    with sqlite3.connect(part / "results.sqlite") as conn:  # lose half the cells
        conn.execute("DELETE FROM cells WHERE position % 2 = 0")
        kept = dict(conn.execute("SELECT key, record FROM cells"))
    code, _, err = run(["run", str(tiny), "--out", str(part), "--resume", "--executor",
                        "ray", "--quiet"], capsys)
    assert code == 0, err
    with sqlite3.connect(part / "results.sqlite") as conn:
        after = dict(conn.execute("SELECT key, record FROM cells"))
    assert len(after) == 8
    assert {k: after[k] for k in kept} == kept  # stored cells were skipped, not rerun
    doc = json.loads((part / "results.json").read_text())
    assert doc["environment"]["executors"] == ["local", "ray"]
    assert stable(doc) == stable(tiny_local)


def test_workers_caps_the_cells_in_flight(tiny: Path, tiny_local: dict[str, Any],
                                          local_ray: None, tmp_path: Path, capsys):
    out = tmp_path / "one"
    code, _, err = run(["run", str(tiny), "--out", str(out), "--executor", "ray",
                        "--workers", "1", "--quiet"], capsys)
    assert code == 0, err
    assert stable(json.loads((out / "results.json").read_text())) == stable(tiny_local)


def _closed_port() -> int:
    with socket.socket() as s:  # a port nothing listens on once it is closed again
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("address, says", [
    ("nonsense", "expected 'auto', 'HOST:PORT' or 'ray://HOST:PORT'"),
    ("127.0.0.1:99999", "expected 'auto', 'HOST:PORT' or 'ray://HOST:PORT'"),
    (None, "cannot be reached"),  # a closed local port, filled in below
])
def test_a_bad_address_exits_2_at_once_and_leaves_no_run(address: str | None, says: str,
                                                         tiny: Path, tmp_path: Path, capsys):
    address = address or f"127.0.0.1:{_closed_port()}"
    out = tmp_path / "out"
    code, _, err = run(["run", str(tiny), "--out", str(out), "--executor", "ray",
                        "--address", address, "--quiet"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and f"--address={address!r}" in err and says in err, err
    assert not out.exists()  # refused before the run folder was made


def test_address_without_ray_executor_exits_2(tiny: Path, tmp_path: Path, capsys):
    code, _, err = run(["run", str(tiny), "--out", str(tmp_path / "o"), "--address",
                        "auto"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--address='auto' is not allowed with --executor local" in err


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_cells_on_ray_match_local_cuda(tiny: Path, local_ray: None,
                                            tmp_path: Path, capsys):  # pragma: no cover
    ray.shutdown()  # the shared instance was started without GPUs
    try:
        local, on_ray = tmp_path / "local", tmp_path / "ray"
        assert run(["run", str(tiny), "--out", str(local), "--device", "cuda", "--quiet"],
                   capsys)[0] == 0
        assert run(["run", str(tiny), "--out", str(on_ray), "--device", "cuda",
                    "--executor", "ray", "--quiet"], capsys)[0] == 0
        a, b = (json.loads((p / "results.json").read_text()) for p in (local, on_ray))
        assert {c["device"] for c in b["cells"]} == {"cuda"}
        assert a["environment"]["device"].startswith("cuda")
        assert stable(a) == stable(b)
    finally:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 object_store_memory=128 * 2**20)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cluster_without_gpus_is_refused_not_left_waiting(
        tiny: Path, local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    import torch

    # This process believes it has a GPU; the Ray instance (2 CPUs, no GPUs) does not. A
    # task asking for a GPU would wait forever: the run must refuse at once instead.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "test GPU")
    out = tmp_path / "out"
    code, _, err = run(["run", str(tiny), "--out", str(out), "--executor", "ray",
                        "--device", "cuda", "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--device='cuda' is not available on the Ray cluster: it has no GPUs" in err
    assert not (out / "results.sqlite").exists()  # a run that never started leaves no store

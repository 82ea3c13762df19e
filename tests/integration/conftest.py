from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from poisonlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
CI_SUITE = ROOT / "benchmarks" / "suites" / "ci.yaml"
QUICKSTART = ROOT / "benchmarks" / "suites" / "quickstart.yaml"

TINY = {
    "name": "tiny",
    "version": 1,
    "description": "two defenses, one flip threat, two eps, two seeds on 2-D blobs",
    "datasets": [{"name": "blobs", "n_samples": 300}],
    "models": [{"name": "mlp", "hidden": [16]}],
    "training": {"epochs": 5, "batch_size": 32, "lr": 0.01},
    "defenses": ["none", {"name": "label_smoothing", "eps": 0.1}],
    "threat_model": {
        "poisoning": [{"strategy": "random", "rate": 0.3}],
        "evasion": [{"norm": "linf", "eps": [0.05, 0.2]}],
    },
    "attacks": ["fgsm", {"name": "pgd", "steps": 10}],
    "seeds": [0, 1],
    "offmanifold": {"n_noise": 100},
}


def write_suite(tmp_path: Path, data: dict | str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_suite(tmp_path: Path) -> Path:
    return write_suite(tmp_path, TINY)


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """benchmarks/suites/ci.yaml run by the local executor with 2 workers (40 cells, ~25 s
    on 2 cores): the gate's numbers and the Ray executor's reference."""
    out = tmp_path_factory.mktemp("ci") / "run"
    assert main(["run", str(CI_SUITE), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TINY suite file, one path for the session (results.json records the path)."""
    return write_suite(tmp_path_factory.mktemp("suite"), TINY)


@pytest.fixture(scope="session")
def tiny_local(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """results.json of the TINY suite run in this process: what every executor and any
    number of workers must reproduce."""
    out = tmp_path_factory.mktemp("local") / "r"
    assert main(["run", str(tiny), "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """benchmarks/suites/quickstart.yaml run once (what `make demo` runs: 36 cells, about a
    minute on 2 cores), for the tests that read its results and its report."""
    out = tmp_path_factory.mktemp("quickstart") / "run"
    assert main(["run", str(QUICKSTART), "--out", str(out), "--quiet"]) == 0
    return out

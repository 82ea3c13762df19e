"""Suites whose mistakes show only with the data loaded: refused before any cell runs.

``poisonlab validate`` and ``poisonlab run`` load each dataset with each seed and check
the budgets and class ids against it (harness.suite.validate_suite_data); without that, these
cells would fail half-way through a run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .harness import cli_case

BASE: dict[str, Any] = {"name": "s", "version": 1, "description": "d", "datasets": ["digits"],
                        "models": ["logistic"], "training": {"epochs": 1},
                        "defenses": ["none"], "seeds": [0]}


def _validate(command: str = "validate", **changes: Any) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        (tmp / "s.yaml").write_text(yaml.safe_dump({**BASE, **changes}))
        out = ["--out", str(tmp / "out")] if command == "run" else []
        return [command, str(tmp / "s.yaml"), *out]
    return argv


def _poison(**threat: Any) -> dict[str, Any]:
    return {"poisoning": [threat]}


CASES = [
    cli_case("suite", "a dataset parameter out of the loader's range (n_samples: -5)",
             _validate(datasets=[{"name": "blobs", "n_samples": -5}]),
             r"datasets\[0\] \(blobs\(n_samples=-5\), seed 0\): n_samples=-5 is not allowed"),
    cli_case("suite", "more pairwise flips than the source class has (validate)",
             _validate(threat_model=_poison(strategy="pairwise", rate=0.5, source=3,
                                            target=8)),
             r"threat_model\.poisoning\[0\] on datasets\[0\] \(digits, seed 0\): rate=0\.5 "
             r"asks for 584 pairwise flips but source class 3 has 119 training labels"),
    cli_case("suite", "more pairwise flips than the source class has (run: no run folder)",
             _validate("run", threat_model=_poison(strategy="pairwise", rate=0.5, source=3,
                                                   target=8)),
             r"asks for 584 pairwise flips but source class 3 has 119"),
    cli_case("suite", "a pairwise target beyond the dataset's classes",
             _validate(threat_model=_poison(strategy="pairwise", rate=0.05, source=3,
                                            target=12)),
             r"target=12 is not allowed: expected a class id in \[0, 9\]"),
    cli_case("suite", "a pairwise source beyond the dataset's classes",
             _validate(threat_model=_poison(strategy="pairwise", rate=0.05, source=10,
                                            target=1)),
             r"source=10 is not allowed: expected a class id in \[0, 9\]"),
    cli_case("suite", "a 2 x 2 noise matrix for a 10-class dataset",
             _validate(threat_model=_poison(strategy="noise_matrix", rate=0.1,
                                            noise_matrix=[[0.9, 0.1], [0.1, 0.9]])),
             r"poisoning\[0\] on datasets\[0\] \(digits, seed 0\): .*noise_matrix.*10"),
    cli_case("suite", "per-class caps too small for an adversarial budget",
             _validate(threat_model=_poison(strategy="adversarial", rate=0.3,
                                            max_per_class=0.1)),
             r"max_per_class=0\.1 allows at most \d+ flips .* but rate=0\.3 asks for"),
    cli_case("suite", "mutual-information classes beyond the dataset's",
             _validate(metrics=["accuracy", "information"], information={"classes": [0, 12]}),
             r"information\.classes=\[0, 12\] is not allowed on datasets\[0\] \(digits, "
             r"seed 0\): expected class ids in \[0, 9\]"),
    cli_case("suite", "evasion bounds that do not hold the test inputs",
             _validate(threat_model={"evasion": [{"norm": "linf", "eps": [0.1],
                                                  "bounds": [0.0, 0.5]}]}, attacks=["fgsm"]),
             r"threat_model\.evasion\[0\]\.bounds=\[0\.0, 0\.5\] is not allowed on "
             r"datasets\[0\] \(digits, seed 0\): its test inputs lie in \[0, 1\]"),
    cli_case("suite", "a user's dataset function that raises its own error",
             _validate(datasets=["tests.integration.byo_helpers:broken_loader"]),
             r"datasets\[0\] \(tests\.integration\.byo_helpers:broken_loader, seed 0\): "
             r"dataset '.*broken_loader': the loader raised ValueError: cannot reach the data "
             r"share \(seed 0\)"),
]

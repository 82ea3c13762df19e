"""benchmarks/perf/pgd.py still runs and still measures the same work on every side.

Speed goals are not asserted here (they live in the benchmark and benchmarks/perf/README.md);
this smoke run (``--quick``: a few images, one epoch) checks what does not depend on the
machine: the plain loop and our PGD produce the same adversarial points, every side stays
inside its eps-ball and the bounds and is deterministic, and the security curve does less
work than foolbox and ART for robust accuracy no higher.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.perf.pgd import main

pytestmark = pytest.mark.slow


def test_quick_benchmark_measures_the_same_work_on_every_side(tmp_path: Path, capsys) -> None:
    out = tmp_path / "perf.json"
    assert main(["--quick", "--runs", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "acceptance" in printed

    single = doc["single_eps"]
    assert set(single["sides"]) == {"plain", "ours", "foolbox", "art"}
    # Our PGD is the plain loop: the same points, bit for bit, and the same gradients.
    assert single["plain_vs_ours_max_abs_diff"] == 0.0
    assert single["sides"]["ours"]["gradients"] == single["sides"]["plain"]["gradients"]
    assert not single["sides"]["ours"]["audit"]["param_grads"]
    for name, side in (*single["sides"].items(), *doc["curve"]["sides"].items()):
        assert side["deterministic"] and side["inside_bounds"], name
        assert side["robust_accuracy"] == side["robust_accuracy_recomputed"], name

    curve = doc["curve"]["sides"]
    eps = doc["config"]["curve_eps"]
    for i, e in enumerate(eps):
        assert curve["ours"]["max_linf_perturbation"][i] <= e + 1e-6
        for other in ("foolbox", "art"):
            assert curve["ours"]["robust_accuracy"][i] <= curve[other]["robust_accuracy"][i]
    # Shared work: fewer gradients than 40 steps per sample at every eps.
    n, steps = doc["config"]["n"], doc["config"]["steps"]
    assert curve["ours"]["gradients"] < len(eps) * steps * n
    assert [a["check"].split(" = ")[0] for a in doc["acceptance"]][:3] == [
        "ours/plain", "curve speedup vs foolbox", "curve speedup vs art"]

"""The regression gate: baselines, the tolerance rule, verdicts, warnings and bad input.

Every results document here is synthetic, built by :func:`make_doc` from per-seed values,
so that means, spreads and n are known exactly.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from scipy import stats

from poisonlab.errors import ConfigError, DataError, UnknownNameError
from poisonlab.harness.gate import (
    DEFAULT_K,
    IDENTITY,
    REL_FLOORS,
    GateResult,
    Verdict,
    check,
    default_floor,
    load_baseline,
    make_baseline,
    parse_tolerances,
    tolerance,
    write_baseline,
)
from poisonlab.metrics import HIGHER_IS_BETTER
from poisonlab.testing import assert_no_regression

ENV: dict[str, Any] = {
    "python": "3.11.7", "platform": "Linux-6.1-x86_64-with-glibc2.36", "machine": "x86_64",
    "torch_threads": 1, "git": None,
    "packages": {"poisonlab": "0.1.0", "torch": "2.13.0+cpu", "numpy": "2.4.6",
                 "scikit-learn": "1.9.1"},
}

Num = tuple[str, str, str, str, str, str | None, str | None]


def num(metric: str, *, threat: str | None = None, attack: str | None = None,
        defense: str = "none", poisoning: str = "none", dataset: str = "digits",
        model: str = "mlp") -> Num:
    """The identity of one gated number, in the order of IDENTITY."""
    return (dataset, model, defense, poisoning, metric, threat, attack)


def _poison(pid: str) -> dict[str, Any] | None:
    if pid == "none":
        return None
    return {"kind": "label_flip", "rate": 0.2, "strategy": "random", "source": None,
            "target": None, "knowledge": "black-box", "id": pid}


def make_doc(
    values: Mapping[Num, Sequence[float | None]],
    *,
    directions: Mapping[str, bool | None] | None = None,
    n_test: int = 450,
    env: Mapping[str, Any] = ENV,
    suite: tuple[str, int] = ("gate-test", 1),
    tolerances: Any = None,
) -> dict[str, Any]:
    """A results document (results.schema.json) from per-seed values of each number.

    Cells are (dataset, model, defense, poisoning) x seed; a None value is a metric
    undefined for that seed (left out of n, as the runner does).
    """
    directions = {**HIGHER_IS_BETTER, **(directions or {})}
    groups: dict[tuple[str, ...], list[Num]] = {}
    for ident in values:
        groups.setdefault(ident[:4], []).append(ident)
    cells = []
    for (dataset, model, defense, poisoning), idents in groups.items():
        for seed in range(max(len(values[i]) for i in idents)):
            metrics = [{"metric": i[4], "threat": i[5], "attack": i[6],
                        "value": values[i][seed], "higher_is_better": directions[i[4]]}
                       for i in idents if seed < len(values[i])]
            cells.append({
                "key": f"{dataset}-{defense}-{poisoning}-{seed}",
                "dataset": {"name": dataset, "params": {}},
                "model": {"name": model, "params": {}},
                "defense": {"name": defense, "params": {}},
                "poisoning": _poison(poisoning), "seed": seed, "status": "ok", "error": None,
                "dataset_summary": {"n_test": n_test}, "metrics": metrics,
                "timing": {"wall_s": 0.1}})
    aggregates = []
    for ident, vals in values.items():
        v = np.array([x for x in vals if x is not None], dtype=np.float64)
        aggregates.append({
            **dict(zip(IDENTITY, ident, strict=True)),
            "mean": float(v.mean()) if len(v) else None,
            "std": (float(v.std(ddof=1)) if len(v) > 1 else 0.0) if len(v) else None,
            "n": len(v), "n_failed": 0, "higher_is_better": directions[ident[4]]})
    name, version = suite
    suite_doc: dict[str, Any] = {"name": name, "version": version, "description": "",
                                 "source": None, "config": {}}
    if tolerances is not None:
        suite_doc["tolerances"] = tolerances
    return {"schema_version": 1, "poisonlab_version": "0.1.0",
            "created": "2026-01-01T00:00:00Z", "suite": suite_doc,
            "threat_model": {"evasion": [], "poisoning": [], "attacks": []},
            "environment": copy.deepcopy(dict(env)), "n_cells": len(cells), "n_failed": 0,
            "cells": cells, "aggregates": aggregates}


CLEAN = num("clean_accuracy")
ROBUST = num("robust_accuracy", threat="linf eps=0.1", attack="pgd")
ROBUST_LS = num("robust_accuracy", threat="linf eps=0.1", attack="pgd", defense="ls")
WORST = num("robust_accuracy", threat="linf eps=0.1", attack="worst-case")
ASR = num("attack_success_rate", threat="linf eps=0.1", attack="pgd")
DROP = num("accuracy_drop", poisoning="random 0.2", threat="random 0.2")
ECE = num("ece")
ACCURACIES = [CLEAN, ROBUST, ROBUST_LS, WORST]

SPREADS: dict[Num, list[float | None]] = {
    CLEAN: [0.96, 0.97, 0.965],
    ROBUST: [0.40, 0.45, 0.42],
    ROBUST_LS: [0.50, 0.48, 0.53],
    WORST: [0.38, 0.44, 0.41],
    ASR: [0.58, 0.53, 0.56],
    DROP: [0.05, 0.08, 0.06],
    ECE: [0.015, 0.020, 0.012],
    num("nll"): [0.11, 0.13, 0.10],
    num("alpha_star", threat="uniform"): [3.2, 4.2, 2.4],
}


@pytest.fixture
def doc() -> dict[str, Any]:
    return make_doc(SPREADS)


def moved(doc: dict[str, Any], ident: Num, by: float) -> dict[str, Any]:
    """A copy of ``doc`` with the mean of one number moved by ``by``."""
    out = copy.deepcopy(doc)
    (agg,) = [a for a in out["aggregates"] if tuple(a[k] for k in IDENTITY) == ident]
    agg["mean"] += by
    return out


def entry(baseline: dict[str, Any], ident: Num) -> dict[str, Any]:
    (e,) = [e for e in baseline["entries"] if tuple(e[k] for k in IDENTITY) == ident]
    return e


def schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("poisonlab").joinpath(f"schemas/{name}").read_text())


# --------------------------------------------------------------------------- round trip


def test_synthetic_documents_follow_the_results_schema(doc):
    jsonschema.validate(doc, schema("results.schema.json"))


def test_a_baseline_passes_against_the_run_it_was_made_from(doc):
    base = make_baseline(doc)
    jsonschema.validate(base, schema("baseline.schema.json"))
    assert len(base["entries"]) == len(SPREADS)
    res = check(doc, base)
    assert isinstance(res, GateResult)
    from poisonlab.harness.gate import CheckResult

    assert CheckResult is GateResult  # the name before issue 20 keeps working
    assert res.exit_code == 0 and res.ok and res.warnings == ()
    assert len(res.within) == len(SPREADS) and not res.failing
    assert all(r.delta == 0 for r in res.rows)


def test_baseline_records_environment_suite_rule_and_version(doc):
    base = make_baseline(doc, k=3.0)
    assert base["kind"] == "poisonlab-baseline" and base["schema_version"] == 1
    assert base["environment"] == ENV
    assert base["suite"] == {"name": "gate-test", "version": 1,
                             "config": doc["suite"].get("config")}
    assert base["rule"]["k"] == 3.0 and base["rule"]["n_test"] == {"digits": 450}
    assert "sqrt(1/n + 1/n_new)" in base["rule"]["formula"]
    e = entry(base, ROBUST)
    assert e["value"] == pytest.approx(np.mean(SPREADS[ROBUST]))
    assert e["std"] == pytest.approx(np.std(SPREADS[ROBUST], ddof=1))
    assert (e["n"], e["higher_is_better"], e["k"]) == (3, True, 3.0)
    assert entry(base, ECE)["higher_is_better"] is False


def test_baseline_survives_a_file_round_trip(doc, tmp_path: Path):
    base = make_baseline(doc)
    path = write_baseline(base, tmp_path / "sub" / "baseline.json")
    assert load_baseline(path) == base
    assert check(doc, load_baseline(path)).exit_code == 0


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("ident", ACCURACIES, ids=lambda i: f"{i[4]}-{i[2]}-{i[6]}")
def test_lowering_any_accuracy_beyond_its_tolerance_fails_and_names_it(doc, ident):
    base = make_baseline(doc)
    tol = entry(base, ident)["tolerance"]
    res = check(moved(doc, ident, -(tol + 1e-3)), base)
    assert res.exit_code == 1 and not res.ok
    (row,) = res.regressed
    assert row.identity == ident and row.delta == pytest.approx(-(tol + 1e-3))
    assert row.tolerance == pytest.approx(tol) and row.gain < -tol
    assert len(res.within) == len(SPREADS) - 1
    text = res.text()
    assert "FAILED" in text and "regressed" in text
    line = next(line for line in text.splitlines() if "regressed" in line and row.cell in line)
    assert ident[4] in line and row.cell == (
        f"digits/mlp/{ident[2]}/none @ linf eps=0.1 [{ident[6]}]" if ident[5] else
        "digits/mlp/none/none")


@pytest.mark.parametrize("ident", ACCURACIES, ids=lambda i: f"{i[4]}-{i[2]}-{i[6]}")
def test_raising_an_accuracy_passes_and_reports_an_improvement(doc, ident):
    base = make_baseline(doc)
    tol = entry(base, ident)["tolerance"]
    better = moved(doc, ident, tol + 1e-3)
    res = check(better, base)
    assert res.exit_code == 0 and [r.identity for r in res.improved] == [ident]
    assert "improved" in res.text() and "passed" in res.text()
    strict = check(better, base, fail_on_improvement=True)
    assert strict.exit_code == 1 and strict.failing == strict.improved
    assert "--fail-on-improvement" in strict.headline()


def test_a_change_smaller_than_the_tolerance_is_within(doc):
    base = make_baseline(doc)
    tol = entry(base, ROBUST)["tolerance"]
    for by in (-0.99 * tol, 0.99 * tol):
        res = check(moved(doc, ROBUST, by), base)
        assert res.exit_code == 0 and not res.regressed and not res.improved


@pytest.mark.parametrize("ident", [ASR, ECE, DROP], ids=lambda i: i[4])
def test_lower_is_better_metrics_regress_upwards(doc, ident):
    base = make_baseline(doc)
    tol = entry(base, ident)["tolerance"]
    up = check(moved(doc, ident, tol + 1e-3), base)
    assert [r.identity for r in up.regressed] == [ident]
    assert up.regressed[0].delta > 0 and up.regressed[0].gain < 0
    down = check(moved(doc, ident, -(tol + 1e-3)), base)
    assert [r.identity for r in down.improved] == [ident] and down.exit_code == 0


def test_rows_list_regressions_first_worst_first_then_improvements(doc):
    base = make_baseline(doc)
    t_clean, t_rob, t_ls = (entry(base, i)["tolerance"] for i in (CLEAN, ROBUST, ROBUST_LS))
    changed = moved(moved(moved(doc, CLEAN, -1.5 * t_clean), ROBUST, -3 * t_rob),
                    ROBUST_LS, +2 * t_ls)
    res = check(changed, base)
    assert [r.verdict for r in res.rows[:3]] == [Verdict.REGRESSED, Verdict.REGRESSED,
                                                 Verdict.IMPROVED]
    assert [r.identity for r in res.rows[:3]] == [ROBUST, CLEAN, ROBUST_LS]
    text = res.text()
    assert text.index("regressed") < text.index("improved")
    assert f"{len(SPREADS) - 3} more within tolerance" in text
    assert "within" not in res.table()[1][-1][-1]  # within rows are counted, not listed
    headers, rows = res.table(show_within=True)
    assert len(rows) == len(SPREADS) and headers[-1] == "verdict"


# --------------------------------------------------------------------------- the rule


def test_tolerance_equals_the_two_sample_formula_on_known_spreads():
    vals = [0.50, 0.60, 0.70, 0.55]  # std (ddof=1) = 0.0854..., n = 4
    doc = make_doc({ROBUST: vals})
    s = float(np.std(vals, ddof=1))
    for k in (2.0, 3.0, DEFAULT_K):
        e = entry(make_baseline(doc, k=k), ROBUST)
        assert e["tolerance"] == pytest.approx(k * s * math.sqrt(1 / 4 + 1 / 4), rel=1e-12)
        assert e["basis"] == "spread"
    assert tolerance(s, 4, n_new=2, k=3.0) == pytest.approx(3.0 * s * math.sqrt(1 / 4 + 1 / 2))


def test_floor_applies_when_there_is_no_spread_or_one_seed():
    doc = make_doc({CLEAN: [0.9, 0.9, 0.9], ROBUST: [0.4], ECE: [0.02, 0.021]})
    base = make_baseline(doc)
    flat, one = entry(base, CLEAN), entry(base, ROBUST)
    assert (flat["tolerance"], flat["basis"]) == (0.01, "floor")
    assert (one["tolerance"], one["basis"], one["std"]) == (0.01, "floor-only", 0.0)
    # tiny spread: the floor is larger than 4 SE
    assert entry(base, ECE)["basis"] == "floor" and entry(base, ECE)["tolerance"] == 0.01
    res = check(doc, base)
    assert res.exit_code == 0
    assert any("n=1" in w and "floor alone" in w for w in res.warnings)
    assert tolerance(0.3, 1, floor=0.01) == 0.01  # n=1 ignores any std


def test_rate_floors_respect_the_test_set_granularity():
    small = make_baseline(make_doc({CLEAN: [0.9], ECE: [0.02]}, n_test=50))
    assert entry(small, CLEAN)["floor"] == pytest.approx(2 / 50)  # two test points
    assert entry(small, ECE)["floor"] == 0.01  # not a fraction of test points
    assert entry(make_baseline(make_doc({CLEAN: [0.9]}, n_test=2000)), CLEAN)["floor"] == 0.01
    assert default_floor("my_metric") == 0.01


def test_alpha_star_has_a_relative_floor_of_one_grid_step():
    ident = num("alpha_star", threat="uniform")
    e = entry(make_baseline(make_doc({ident: [100.0]})), ident)
    assert e["rel_floor"] == pytest.approx(10 ** (1 / 8) - 1) == REL_FLOORS["alpha_star"]
    assert e["tolerance"] == pytest.approx(100 * (10 ** (1 / 8) - 1))


def test_tolerance_is_recomputed_when_the_results_have_another_n():
    vals = [0.40, 0.45, 0.42, 0.47]
    base = make_baseline(make_doc({ROBUST: vals}), floor=0.0)
    res = check(make_doc({ROBUST: vals[:2]}), base)
    (row,) = res.rows
    s = float(np.std(vals, ddof=1))
    assert row.tolerance == pytest.approx(DEFAULT_K * s * math.sqrt(1 / 4 + 1 / 2))
    assert row.n_now == 2 and "n 4 -> 2" in row.note
    assert any("another n" in w for w in res.warnings)


def _noise_doc(rng: np.random.Generator, m: int, n: int, shift: float = 0.0,
               sigma: float = 0.02) -> dict[str, Any]:
    return make_doc({num("clean_accuracy", dataset=f"d{i}"): list(0.8 + shift + sigma *
                                                                   rng.standard_normal(n))
                     for i in range(m)})


@pytest.mark.parametrize("n", [3, 10])
def test_false_alarm_rate_on_pure_noise_is_within_the_documented_bound(n):
    """Two independent runs from one distribution: the rate is P(T_{n-1} > k) at most."""
    rng = np.random.default_rng(20240601)
    m, reps = 2500, 8
    alarms = 0
    for _ in range(reps):
        base = make_baseline(_noise_doc(rng, m, n), floor=0.0)  # the bare rule, no floor
        alarms += len(check(_noise_doc(rng, m, n), base).regressed)
    rate, trials = alarms / (m * reps), m * reps
    bound = float(stats.t.sf(DEFAULT_K, n - 1))  # one-sided: only regressions fail
    assert rate <= bound + 4 * math.sqrt(bound * (1 - bound) / trials)
    # the bound is exact for the bare rule, so the rate is not far below it either
    assert rate >= bound - 4 * math.sqrt(bound * (1 - bound) / trials)


def test_floors_only_lower_the_false_alarm_rate():
    """With a floor, a false alarm also needs the difference to pass the floor."""
    rng = np.random.default_rng(7)
    m, n, sigma = 2000, 3, 0.005
    a, b = _noise_doc(rng, m, n, sigma=sigma), _noise_doc(rng, m, n, sigma=sigma)
    bare = len(check(b, make_baseline(a, floor=0.0)).regressed)
    floored = len(check(b, make_baseline(a)).regressed)
    p = float(stats.norm.sf(0.01 / (sigma * math.sqrt(2 / n))))  # P(drop > floor)
    assert floored <= bare
    assert floored / m <= p + 4 * math.sqrt(p * (1 - p) / m)


def test_a_shift_far_beyond_the_tolerance_is_caught_almost_always():
    """A drop of k + 4 standard errors of the difference, with 10 seeds."""
    rng = np.random.default_rng(11)
    m, n, sigma = 2000, 10, 0.02
    se = sigma * math.sqrt(2 / n)
    base = make_baseline(_noise_doc(rng, m, n, sigma=sigma), floor=0.0)
    res = check(_noise_doc(rng, m, n, shift=-(DEFAULT_K + 4) * se, sigma=sigma), base)
    assert len(res.regressed) >= 0.98 * m
    assert not res.improved


# --------------------------------------------------------------------------- missing / new


def test_numbers_missing_from_the_results_fail_and_new_ones_are_reported(doc):
    base = make_baseline(doc)
    fewer = copy.deepcopy(doc)
    fewer["aggregates"] = [a for a in fewer["aggregates"]
                           if tuple(a[k] for k in IDENTITY) != WORST]
    res = check(fewer, base)
    assert res.exit_code == 1 and [r.identity for r in res.missing] == [WORST]
    assert "missing in results" in res.text() and "worst-case" in res.text()

    extra = make_doc({**SPREADS, num("clean_accuracy", defense="gce"): [0.9, 0.91, 0.92]})
    res = check(extra, base)
    assert res.exit_code == 0 and [r.identity for r in res.new] == [
        num("clean_accuracy", defense="gce")]
    assert "new in results" in res.text()


def test_a_number_without_a_value_in_the_results_is_missing(doc):
    base = make_baseline(doc)
    res = check(make_doc({**SPREADS, CLEAN: [None, None, None]}), base)
    (row,) = res.missing
    assert row.identity == CLEAN and row.now is None and "no value" in row.note
    assert res.exit_code == 1


def test_numbers_without_a_value_are_skipped_by_the_baseline():
    base = make_baseline(make_doc({CLEAN: [0.9, 0.9], ASR: [None, None]}))
    assert [e["metric"] for e in base["entries"]] == ["clean_accuracy"]
    assert base["skipped"][0]["metric"] == "attack_success_rate"


# --------------------------------------------------------------------------- warnings


def test_another_environment_warns_without_failing(doc):
    base = make_baseline(doc)
    env = copy.deepcopy(ENV)
    env["packages"]["torch"] = "2.12.0"
    env["packages"]["numpy"] = "1.26.4"
    env["torch_threads"] = 4
    env["python"] = "3.12.1"
    res = check(make_doc(SPREADS, env=env), base)
    assert res.exit_code == 0
    text = " ".join(res.warnings)
    for needle in ("torch 2.13.0+cpu in the baseline, 2.12.0 now", "numpy", "torch_threads",
                   "python"):
        assert needle in text
    assert "warning: environment differs" in res.text()
    assert "- warning: environment differs" in res.markdown()


def test_another_suite_warns(doc):
    res = check(make_doc(SPREADS, suite=("other", 2)), make_baseline(doc))
    assert any("suite differs" in w and "'other'" in w for w in res.warnings)


# --------------------------------------------------------------------------- descriptive


def test_descriptive_metrics_are_never_gated():
    entropy = num("entropy")
    dirs = {"entropy": None}
    doc = make_doc({CLEAN: [0.9, 0.91], entropy: [1.0, 1.1]}, directions=dirs)
    base = make_baseline(doc)
    assert base["descriptive"] == ["entropy"]
    assert [e["metric"] for e in base["entries"]] == ["clean_accuracy"]
    later = make_doc({CLEAN: [0.9, 0.91], entropy: [9.0, 9.5],
                      num("entropy", defense="ls"): [3.0, 3.0]}, directions=dirs)
    res = check(later, base)
    assert res.exit_code == 0 and [r.metric for r in res.rows] == ["clean_accuracy"]
    with pytest.raises(ConfigError, match="'entropy' is descriptive"):
        make_baseline(doc, overrides={"entropy": {"floor": 0.1}})


def test_a_metric_whose_direction_changed_is_compared_with_the_baseline_direction(doc):
    base = make_baseline(doc)
    flipped = copy.deepcopy(doc)
    for a in flipped["aggregates"]:
        if a["metric"] == "ece":
            a["higher_is_better"] = None
    res = check(flipped, base)
    (row,) = [r for r in res.rows if r.metric == "ece"]
    assert row.verdict is Verdict.WITHIN and "direction differs" in row.note
    assert any("higher_is_better" in w for w in res.warnings)


# --------------------------------------------------------------------------- overrides


def test_overrides_from_the_suite_and_the_caller(doc):
    suite_doc = make_doc(SPREADS, tolerances={"ece": {"floor": 0.05},
                                              "robust_accuracy": {"tolerance": 0.2}})
    base = make_baseline(suite_doc)
    assert entry(base, ECE)["floor"] == 0.05 and entry(base, ECE)["tolerance"] >= 0.05
    fixed = entry(base, ROBUST)
    assert (fixed["tolerance"], fixed["fixed"], fixed["basis"], fixed["k"]) == (
        0.2, True, "fixed", None)
    assert base["rule"]["overrides"]["ece"] == {"floor": 0.05}
    # the caller's entry replaces the suite's, metric by metric
    base = make_baseline(suite_doc, overrides={"robust_accuracy": {"k": 1.0}})
    e = entry(base, ROBUST)
    s = float(np.std(SPREADS[ROBUST], ddof=1))
    assert not e["fixed"] and e["tolerance"] == pytest.approx(max(0.01, s * math.sqrt(2 / 3)))
    assert entry(base, ECE)["floor"] == 0.05
    # a fixed tolerance holds whatever n the results have
    res = check(make_doc({**SPREADS, ROBUST: [0.4, 0.45]}),
                make_baseline(suite_doc))
    (row,) = [r for r in res.rows if r.identity == ROBUST]
    assert row.tolerance == 0.2


def test_suite_tolerances_are_also_read_from_the_suite_config(doc):
    doc["suite"]["config"]["tolerances"] = {"ece": {"tolerance": 0.5}}
    assert entry(make_baseline(doc), ECE)["tolerance"] == 0.5


@pytest.mark.parametrize(("raw", "error", "match"), [
    ({"ece": {"floor": -1}}, ConfigError,
     r"^tolerances\.ece\.floor=-1 is not allowed: expected a number >= 0$"),
    ({"ece": {"k": 0}}, ConfigError, r"tolerances\.ece\.k=0 is not allowed: expected a number > 0"),
    ({"ece": {"floor": True}}, ConfigError, r"tolerances\.ece\.floor=True is not allowed"),
    ({"ece": {"floor": float("nan")}}, ConfigError, r"tolerances\.ece\.floor=nan"),
    ({"ece": {"flor": 0.1}}, ConfigError, r"unknown field 'flor'.*did you mean 'floor'"),
    ({"ece": {"tolerance": 0.1, "k": 2}}, ConfigError, r"tolerance together with k"),
    ({"ece": 0.1}, ConfigError, r"tolerances\.ece=0\.1 is not allowed: expected a mapping"),
    ({"ece": {}}, ConfigError, r"tolerances\.ece=\{\} is not allowed"),
    ({"robust_acuracy": {"floor": 0.1}}, UnknownNameError,
     r"metric='robust_acuracy' is not known.*did you mean 'robust_accuracy'"),
    ([1, 2], ConfigError, r"tolerances=\[1, 2\] is not allowed: expected a mapping"),
])
def test_parse_tolerances_names_the_bad_field(raw, error, match):
    with pytest.raises(error, match=match):
        parse_tolerances(raw)


def test_parse_tolerances_accepts_the_documented_forms():
    assert parse_tolerances(None) == {}
    assert parse_tolerances({"ece": {"floor": 0, "rel_floor": 0.1, "k": 3}}) == {
        "ece": {"floor": 0.0, "rel_floor": 0.1, "k": 3.0}}
    assert parse_tolerances({"mine": {"floor": 1}}, metrics={"mine": True}) == {
        "mine": {"floor": 1.0}}


def test_unknown_metric_in_overrides_is_bad_input(doc):
    with pytest.raises(UnknownNameError, match=r"overrides: metric='eec'.*did you mean 'ece'"):
        make_baseline(doc, overrides={"eec": {"floor": 0.1}})
    with pytest.raises(ConfigError, match=r"^k=-1\.0 is not allowed: expected a number > 0$"):
        make_baseline(doc, k=-1.0)
    with pytest.raises(ConfigError, match=r"^floor=-0\.1 is not allowed"):
        make_baseline(doc, floor=-0.1)


# --------------------------------------------------------------------------- bad input


def test_documents_swapped_or_malformed_are_bad_input(doc):
    base = make_baseline(doc)
    with pytest.raises(DataError, match="results is a poisonlab baseline"):
        check(base, base)
    with pytest.raises(DataError, match=r"baseline is a results\.json, not a baseline: make one"):
        check(doc, doc)
    with pytest.raises(DataError, match=r"results is a list"):
        make_baseline([])  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"schema_version=2 is not supported"):
        check(doc, {**base, "schema_version": 2})
    with pytest.raises(DataError, match=r"schema_version=None, expected 1"):
        make_baseline({"hello": "world"})
    bad = copy.deepcopy(doc)
    bad["aggregates"][2]["mean"] = "0.9"
    with pytest.raises(DataError, match=r"results\.aggregates\[2\]\.mean='0\.9' is not allowed"):
        make_baseline(bad)
    twice = copy.deepcopy(doc)
    twice["aggregates"].append(copy.deepcopy(twice["aggregates"][0]))
    with pytest.raises(DataError, match=r"repeats aggregates\[0\]"):
        make_baseline(twice)
    broken = copy.deepcopy(base)
    broken["entries"][1]["tolerance"] = -1
    with pytest.raises(DataError, match=r"baseline\.entries\[1\]\.tolerance=-1"):
        check(doc, broken)
    del broken["entries"][1]["tolerance"]
    with pytest.raises(DataError, match=r"baseline\.entries\[1\] has no 'tolerance'"):
        check(doc, broken)


def test_loaders_name_the_file(tmp_path: Path):
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(DataError, match=r"baseline='.*junk\.json' is not a JSON file"):
        load_baseline(tmp_path / "junk.json")
    with pytest.raises(DataError, match=r"does not exist"):
        load_baseline(tmp_path / "nope.json")


# --------------------------------------------------------------------------- rendering


def test_markdown_table_has_the_columns_and_escapes_pipes():
    ident = num("robust_accuracy", threat="linf eps=0.1", attack="a|b")
    doc = make_doc({ident: [0.4, 0.45, 0.42]})
    base = make_baseline(doc)
    md = check(moved(doc, ident, -0.5), base).markdown()
    assert md.startswith("### poisonlab check") and "FAILED" in md
    assert "| metric | cell | baseline | now | delta | tolerance | verdict |" in md
    assert "[a\\|b]" in md and "| regressed |" in md


def test_text_of_a_clean_pass_is_short(doc):
    text = check(doc, make_baseline(doc)).text()
    assert text.splitlines()[0].endswith(f"passed: {len(SPREADS)} numbers: "
                                         f"{len(SPREADS)} within")
    assert f"{len(SPREADS)} within tolerance (not listed)." in text


# --------------------------------------------------------------------------- pytest helper


def test_assert_no_regression_passes_and_returns_the_result(doc, tmp_path: Path):
    base = make_baseline(doc)
    assert assert_no_regression(doc, base).exit_code == 0
    (tmp_path / "results.json").write_text(json.dumps(doc))
    write_baseline(base, tmp_path / "baseline.json")
    res = assert_no_regression(tmp_path, tmp_path / "baseline.json")  # a run folder works
    assert res.ok and len(res.within) == len(SPREADS)


def test_assert_no_regression_fails_with_the_table(doc):
    base = make_baseline(doc)
    tol = entry(base, ROBUST)["tolerance"]
    with pytest.raises(AssertionError, match=r"(?s)FAILED.*robust_accuracy.*regressed"):
        assert_no_regression(moved(doc, ROBUST, -2 * tol), base)
    with pytest.raises(AssertionError, match="improved"):
        assert_no_regression(moved(doc, ROBUST, 2 * tol), base, fail_on_improvement=True)
    with pytest.raises(DataError):
        assert_no_regression(doc, doc)

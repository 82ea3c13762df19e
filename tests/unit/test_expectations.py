"""Expectations: parsing both forms, errors with did-you-mean, verdicts on synthetic spreads,
storage in results.json, and the gate's exit code.

Every results document here is synthetic (:func:`make_doc`), built from per-seed values,
so that means, spreads and n are known exactly.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

import jsonschema
import numpy as np
import pytest

from poisonlab.errors import ConfigError, DataError, SuiteError, UnknownNameError
from poisonlab.harness.claims import parse_expectations
from poisonlab.harness.expectations import (
    GROUP_METRICS,
    WORST_CASE,
    Expectation,
    ExpectationVerdict,
    evaluate_expectations,
    expectations_from_doc,
    expectations_to_doc,
    measured_metrics,
    overall,
)
from poisonlab.harness.gate import check, make_baseline
from poisonlab.harness.stats import Z_SE
from poisonlab.harness.suite import parse_suite, parse_suite_expectations
from poisonlab.metrics import HIGHER_IS_BETTER
from poisonlab.testing import assert_no_regression

HOLDS = ExpectationVerdict.HOLDS
FAILS = ExpectationVerdict.DOES_NOT_HOLD
UNSURE = ExpectationVerdict.INCONCLUSIVE

LS = "label_smoothing(eps=0.1)"
GCE = "gce(q=0.7)"
PGD_AT = "pgd_at(eps=0.1)"
PGD = "pgd(rel_stepsize=0.1, steps=40)"
DEFENSES = ["none", LS, GCE, PGD_AT, "flip_augment(alpha=0.1)", "flip_augment(alpha=0.3)"]
POISONINGS = ["random 0.2", "random 0.4"]
THREATS = ["linf eps=0.05", "linf eps=0.1"]
ATTACKS = ["fgsm", PGD]


def parse(raw: Any, **kw: Any) -> tuple[Expectation, ...]:
    names: dict[str, Any] = {"defenses": DEFENSES, "poisonings": POISONINGS,
                             "threats": THREATS, "attacks": ATTACKS, **kw}
    return parse_expectations(raw, **names)


def one(line: Any, **kw: Any) -> Expectation:
    (e,) = parse([line], **kw)
    return e


# --------------------------------------------------------------------------- documents


def agg(defense: str, metric: str, values: Sequence[float], *, poisoning: str = "none",
        threat: str | None = None, attack: str | None = None, dataset: str = "digits",
        model: str = "mlp") -> dict[str, Any]:
    """One aggregate (mean, std with ddof=1, n) from per-seed values."""
    v = np.asarray(values, dtype=np.float64)
    return {"dataset": dataset, "model": model, "defense": defense, "poisoning": poisoning,
            "metric": metric, "threat": threat, "attack": attack,
            "mean": float(v.mean()) if len(v) else None,
            "std": (float(v.std(ddof=1)) if len(v) > 1 else 0.0) if len(v) else None,
            "n": len(v), "n_failed": 0, "higher_is_better": HIGHER_IS_BETTER[metric]}


def make_doc(aggregates: Sequence[dict[str, Any]],
             expectations: Sequence[Expectation] = ()) -> dict[str, Any]:
    """A results document (results.schema.json) with these aggregates and expectations."""
    doc: dict[str, Any] = {
        "schema_version": 1, "poisonlab_version": "0.1.0", "created": "2026-01-01T00:00:00Z",
        "suite": {"name": "expect-test", "version": 1, "description": "", "source": None,
                  "config": {}},
        "threat_model": {"evasion": [], "poisoning": [], "attacks": []},
        "environment": {"python": "3.11.7", "platform": "Linux", "machine": "x86_64",
                        "torch_threads": 1, "git": None, "packages": {"poisonlab": "0.1.0"}},
        "n_cells": 0, "n_failed": 0, "cells": [], "aggregates": list(aggregates)}
    if expectations:
        doc["expectations"] = expectations_to_doc(evaluate_expectations(doc, expectations))
    return doc


def schema() -> dict[str, Any]:
    text = resources.files("poisonlab").joinpath("schemas/results.schema.json").read_text()
    return json.loads(text)


# ECE: label smoothing clearly below none; gce within noise of none.
ECE_DOC = [
    agg("none", "ece", [0.10, 0.12, 0.11]),
    agg(LS, "ece", [0.03, 0.04, 0.035]),
    agg(GCE, "ece", [0.09, 0.13, 0.11]),
]


# --------------------------------------------------------------------------- parsing


def test_the_documented_forms_parse():
    es = parse([
        "ece of label_smoothing below none",
        "accuracy_drop of gce below none under random 0.4",
        {"claim": "robust_accuracy of pgd_at above none at linf eps=0.1 by worst-case",
         "required": True},
        {"metric": "ece", "defense": LS, "below": "none", "required": True, "dataset": "d"},
    ])
    assert es[0] == Expectation("ece", LS, "below", "none",
                                claim="ece of label_smoothing below none")
    assert es[1] == Expectation("accuracy_drop", GCE, "below", "none", poisoning="random 0.4",
                                threat="random 0.4",
                                claim="accuracy_drop of gce below none under random 0.4")
    assert (es[2].metric, es[2].defense, es[2].relation, es[2].than, es[2].threat,
            es[2].attack, es[2].required) == ("robust_accuracy", PGD_AT, "above", "none",
                                              "linf eps=0.1", WORST_CASE, True)
    assert (es[3].defense, es[3].than, es[3].required, es[3].dataset) == (LS, "none", True, "d")
    assert es[3].claim == f"ece of {LS} below none"  # no text given: the canonical line


def test_nothing_is_no_expectations():
    assert parse(None) == ()
    assert parse([]) == ()


@pytest.mark.parametrize("line, threat, attack", [
    # several attacks: robust accuracy defaults to the per-sample worst case
    ("robust_accuracy of pgd_at above none at linf eps=0.1", "linf eps=0.1", WORST_CASE),
    ("robust_accuracy of pgd_at above none at linf eps=0.1 by fgsm", "linf eps=0.1", "fgsm"),
    # a bare attack name unique in the suite; a label with spaces inside its brackets
    ("attack_success_rate of pgd_at below none at linf eps=0.05 by pgd", "linf eps=0.05", PGD),
    (f"attack_success_rate of pgd_at below none by {PGD} at linf eps=0.05", "linf eps=0.05",
     PGD),
    ("offmanifold_confidence of label_smoothing below none", "uniform", None),
    ("alpha_star of label_smoothing above none", "uniform", None),
    ("gaussian_confidence of label_smoothing below none", "gaussian", None),
    ("ray_confidence of label_smoothing below none at alpha=10", "alpha=10", None),
    ("ece of label_smoothing below none", None, None),
    ("weight_norm of label_smoothing below none", None, None),  # descriptive: allowed
])
def test_threat_and_attack_defaults(line, threat, attack):
    e = one(line)
    assert (e.threat, e.attack) == (threat, attack)


def test_defaults_from_a_suite_with_one_threat_one_attack_one_poisoning():
    kw = {"threats": ["linf eps=0.1"], "attacks": ["fgsm"], "poisonings": ["random 0.2"]}
    e = one("robust_accuracy of pgd_at above none", **kw)
    assert (e.threat, e.attack) == ("linf eps=0.1", "fgsm")
    e = one("accuracy_drop of gce below none", **kw)
    assert (e.poisoning, e.threat) == ("random 0.2", "random 0.2")


def test_clean_metrics_may_be_claimed_under_a_poisoning():
    e = one("ece of gce below none under random 0.2")
    assert (e.poisoning, e.threat) == ("random 0.2", None)


def test_margin_and_clause_order():
    e = one("robust_accuracy of pgd_at above none by more than 0.05 by fgsm at linf eps=0.1")
    assert (e.margin, e.attack, e.threat) == (0.05, "fgsm", "linf eps=0.1")
    e = one({"metric": "ece", "defense": "label_smoothing", "below": "none", "margin": 0.01})
    assert e.margin == 0.01


def test_a_poisoning_named_margin_is_not_a_margin():
    e = one("accuracy_drop of gce below none under margin 0.2 by more than 0.01",
            poisonings=["margin 0.2"])
    assert (e.poisoning, e.threat, e.margin) == ("margin 0.2", "margin 0.2", 0.01)


def test_canonical_text_parses_back_to_the_same_claim():
    lines = ["ece of label_smoothing below none by more than 0.02",
             "accuracy_drop of gce below none under random 0.4",
             "robust_accuracy of pgd_at above none under random 0.2 at linf eps=0.1 by fgsm",
             "offmanifold_auroc of label_smoothing above none",
             "ray_confidence of label_smoothing below none at alpha=100"]
    for line in lines:
        e = one(line)
        back = one(e.canonical())
        assert back == Expectation(**{**e.to_dict(), "claim": e.canonical()})


def test_whitespace_in_a_line_is_normalised():
    e = one("  ece   of label_smoothing\tbelow none ")
    assert e.claim == "ece of label_smoothing below none"


@pytest.mark.parametrize("raw, error, match", [
    # unknown names, each with a did-you-mean
    (["ece of lable_smoothing below none"], UnknownNameError,
     r"expectations\[0\]\.defense='lable_smoothing' is not known: expected one of none, "
     r"label_smoothing\(eps=0\.1\).*did you mean 'label_smoothing'"),
    (["ece of label_smoothing below nnoe"], UnknownNameError,
     r"expectations\[0\]\.than='nnoe' is not known.*did you mean 'none'"),
    ([{"metric": "ece", "defense": "label_smoothing", "below": "nnoe"}], UnknownNameError,
     r"expectations\[0\]\.below='nnoe' is not known.*did you mean 'none'"),
    (["eec of label_smoothing below none"], UnknownNameError,
     r"expectations\[0\]\.metric='eec' is not known: expected one of .*did you mean 'ece'"),
    (["accuracy_drop of gce below none under random 0.3"], UnknownNameError,
     r"expectations\[0\]\.poisoning='random 0.3' is not known: expected one of none, "
     r"random 0\.2, random 0\.4 \(did you mean"),
    (["robust_accuracy of pgd_at above none at linf eps=0.2"], UnknownNameError,
     r"expectations\[0\]\.threat='linf eps=0\.2' is not known: expected one of "
     r"linf eps=0\.05, linf eps=0\.1 \(did you mean"),
    (["robust_accuracy of pgd_at above none at linf eps=0.1 by fgms"], UnknownNameError,
     r"expectations\[0\]\.attack='fgms' is not known.*did you mean 'fgsm'"),
    (["ray_confidence of label_smoothing below none at alpha=3"], UnknownNameError,
     r"expectations\[0\]\.threat='alpha=3' is not known: expected one of alpha=1, alpha=2"),
    # the relation
    (["ece of label_smoothing bellow none"], SuiteError,
     r"expectations\[0\]='ece of label_smoothing bellow none' is not allowed: no 'below' or "
     r"'above' \(did you mean 'below'\?\); expected 'METRIC of DEFENSE below\|above"),
    ([{"metric": "ece", "defense": "label_smoothing", "bellow": "none"}], SuiteError,
     r"expectations\[0\]: unknown key 'bellow'.*did you mean 'below'"),
    ([{"metric": "ece", "defense": "label_smoothing", "below": "none", "above": "gce"}],
     SuiteError, r"expectations\[0\] has below and above: expected exactly one"),
    ([{"metric": "ece", "defense": "label_smoothing"}], SuiteError,
     r"expectations\[0\] has neither below nor above"),
    (["ece of label_smoothing below none above gce"], SuiteError,
     r"'below'/'above' given twice"),
    # the grammar
    (["ece for label_smoothing below none"], SuiteError, r"the second word must be 'of'"),
    (["ece of label_smoothing below"], SuiteError, r"nothing after 'below'"),
    (["ece of below none"], SuiteError, r"nothing after 'of'"),
    (["robust_accuracy of pgd_at above none at linf eps=0.1 at linf eps=0.05"], SuiteError,
     r"'at' given twice"),
    (["robust_accuracy of pgd_at above none by pgd(steps=40"], SuiteError,
     r"unbalanced brackets"),
    (["ece of label_smoothing below none by more than lots"], ConfigError,
     r"expectations\[0\]\.margin='lots' is not allowed: expected a number >= 0"),
    ([{"metric": "ece", "defense": "label_smoothing", "below": "none", "margin": -0.1}],
     ConfigError, r"expectations\[0\]\.margin=-0\.1 is not allowed: expected a number >= 0"),
    ([{"claim": "ece of label_smoothing below none", "required": "yes"}], ConfigError,
     r"expectations\[0\]\.required='yes' is not allowed: expected true or false"),
    ([{"claim": "ece of label_smoothing below none", "metric": "ece"}], SuiteError,
     r"expectations\[0\] has no 'defense'"),
    ([{"required": True}], SuiteError, r"expectations\[0\] has neither claim nor metric"),
    ([{"claim": "ece of label_smoothing below none", "margin": 0.1}], SuiteError,
     r"expectations\[0\]: margin beside a one-line claim is not allowed: expected only "
     r"required, dataset, model \(a margin goes in the line: 'by more than M'\)"),
    ([{"claim": "ece of label_smoothing below nnoe"}], UnknownNameError,
     r"expectations\[0\]\.than='nnoe' is not known"),
    ([3], SuiteError, r"expectations\[0\]=3 is not allowed: expected a string"),
    ("ece of label_smoothing below none", SuiteError,
     r"expectations='ece of label_smoothing below none' is not allowed: expected a list"),
    # names that do not pick one defense
    (["ece of flip_augment below none"], ConfigError,
     r"expectations\[0\]\.defense='flip_augment' is ambiguous: the suite has "
     r"flip_augment\(alpha=0\.1\), flip_augment\(alpha=0\.3\)"),
    (["ece of none below none"], ConfigError, r"compared with itself"),
    # threats and attacks a metric does not have
    (["ece of label_smoothing below none at linf eps=0.1"], ConfigError,
     r"expectations\[0\]\.threat='linf eps=0\.1' is not allowed: ece is measured on the "
     r"clean test inputs"),
    (["ece of label_smoothing below none by fgsm"], ConfigError,
     r"expectations\[0\]\.attack='fgsm' is not allowed: ece is not measured by an attack"),
    (["offmanifold_confidence of label_smoothing below none at gaussian"], ConfigError,
     r"threat='gaussian' is not allowed: offmanifold_confidence is measured on 'uniform'"),
    (["accuracy_drop of gce below none under random 0.4 at random 0.2"], ConfigError,
     r"threat='random 0\.2' is not allowed: accuracy_drop is measured under its poisoning"),
    (["attack_success_rate of pgd_at below none at linf eps=0.1 by worst-case"],
     UnknownNameError, r"attack='worst-case' is not known: expected one of fgsm, pgd\("),
    # what needs saying when the suite has several
    (["accuracy_drop of gce below none"], ConfigError,
     r"expectations\[0\]\.poisoning is missing: accuracy_drop needs a poisoning: add "
     r"'under X'.*random 0\.2, random 0\.4"),
    ([{"metric": "accuracy_drop", "defense": "gce", "below": "none", "poisoning": "none"}],
     ConfigError, r"poisoning='none' is not allowed: accuracy_drop is measured under a "),
    (["robust_accuracy of pgd_at above none"], ConfigError,
     r"expectations\[0\]\.threat is missing: robust_accuracy needs an evasion threat: add "
     r"'at X'"),
    (["attack_success_rate of pgd_at below none at linf eps=0.1"], ConfigError,
     r"expectations\[0\]\.attack is missing: attack_success_rate needs an attack: add 'by X'"),
    (["ray_confidence of label_smoothing below none"], ConfigError,
     r"threat is missing: ray_confidence needs a ray multiplier"),
    # duplicates and contradictions
    (["ece of label_smoothing below none", "ece of label_smoothing(eps=0.1) below none"],
     SuiteError, r"expectations\[1\] repeats expectations\[0\]"),
    (["ece of label_smoothing below none", "ece of none above label_smoothing"],
     SuiteError, r"expectations\[1\] repeats expectations\[0\]"),
    (["ece of label_smoothing below none", "ece of label_smoothing above none"],
     SuiteError, r"expectations\[1\] contradicts expectations\[0\]"),
])
def test_bad_expectations_name_the_field(raw, error, match):
    with pytest.raises(error, match=match):
        parse(raw)


def test_a_poisoning_metric_in_a_suite_without_poisoning():
    with pytest.raises(ConfigError, match=r"accuracy_drop needs a poisoning, and the suite "
                                          r"declares none"):
        parse(["accuracy_drop of gce below none"], poisonings=[])


def test_metrics_the_suite_does_not_measure():
    with pytest.raises(ConfigError, match=r"metric='ece' is not measured by this suite: "
                                          r"expected one of clean_accuracy"):
        parse(["ece of label_smoothing below none"], metrics=measured_metrics(["accuracy"]))


def test_dataset_and_model_are_checked_when_the_suite_names_them():
    e = one({"claim": "ece of label_smoothing below none", "dataset": "digits",
             "model": "mlp"}, datasets=["digits", "moons"], models=["mlp(hidden=[64])"])
    assert (e.dataset, e.model) == ("digits", "mlp(hidden=[64])")
    with pytest.raises(UnknownNameError, match=r"expectations\[0\]\.dataset='digts' is not "
                                               r"known.*did you mean 'digits'"):
        parse([{"claim": "ece of label_smoothing below none", "dataset": "digts"}],
              datasets=["digits", "moons"])


def test_every_metric_belongs_to_a_group():
    grouped = {m for ms in GROUP_METRICS.values() for m in ms}
    assert grouped == set(HIGHER_IS_BETTER)
    assert set(measured_metrics(GROUP_METRICS)) == set(HIGHER_IS_BETTER)


def test_parse_suite_expectations_takes_the_names_from_a_suite():
    suite = parse_suite({
        "name": "s", "datasets": ["digits"], "models": ["mlp"],
        "defenses": ["none", {"name": "label_smoothing", "eps": 0.1}], "seeds": [0],
        "attacks": ["fgsm"], "metrics": ["accuracy", "evasion", "calibration"],
        "threat_model": {"evasion": [{"norm": "linf", "eps": [0.1]}],
                         "poisoning": [{"strategy": "random", "rate": 0.2}]}})
    es = parse_suite_expectations(
        ["robust_accuracy of label_smoothing above none",
         "accuracy_drop of label_smoothing below none", "ece of label_smoothing below none"],
        suite)
    assert [(e.threat, e.attack) for e in es] == [("linf eps=0.1", "fgsm"),
                                                  ("random 0.2", None), (None, None)]
    with pytest.raises(ConfigError, match="offmanifold_confidence' is not measured"):
        parse_suite_expectations(["offmanifold_confidence of label_smoothing below none"],
                                 suite)


# --------------------------------------------------------------------------- verdicts


def verdicts(aggregates: Sequence[dict[str, Any]], *lines: Any, **kw: Any) -> list[Any]:
    return evaluate_expectations(make_doc(aggregates), parse(list(lines), **kw))


def test_holds_does_not_hold_inconclusive():
    (r,) = verdicts(ECE_DOC, "ece of label_smoothing below none")
    assert r.verdict is HOLDS and r.reason == ""
    a, b = np.array([0.03, 0.04, 0.035]), np.array([0.10, 0.12, 0.11])
    assert r.diff == pytest.approx(a.mean() - b.mean())
    assert r.se == pytest.approx(math.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 3))
    assert (r.a_n, r.b_n, r.dataset, r.model) == (3, 3, "digits", "mlp")
    (r,) = verdicts(ECE_DOC, "ece of label_smoothing above none")
    assert r.verdict is FAILS
    (r,) = verdicts(ECE_DOC, "ece of gce below none")
    assert r.verdict is UNSURE and "no clear difference" in r.reason


def test_the_threshold_is_z_se_standard_errors():
    assert Z_SE == 2.0
    # two seeds each, std 0.01*sqrt(2) per side: se = 0.01*sqrt(2)*sqrt(1/2 + 1/2)...
    base = [0.50, 0.52]                            # mean 0.51, std 0.01414
    se = math.sqrt(2 * np.var(base, ddof=1) / 2)   # 0.01414
    for k, expected in ((1.9, UNSURE), (2.1, HOLDS)):
        shift = k * se
        docs = [agg("none", "clean_accuracy", base),
                agg(LS, "clean_accuracy", [x + shift for x in base])]
        (r,) = verdicts(docs, "clean_accuracy of label_smoothing above none")
        assert r.se == pytest.approx(se)
        assert r.verdict is expected, k


def test_no_spread_decides_on_the_sign_alone():
    docs = [agg("none", "ece", [0.1, 0.1]), agg(LS, "ece", [0.05, 0.05])]
    (r,) = verdicts(docs, "ece of label_smoothing below none")
    assert (r.verdict, r.se) == (HOLDS, 0.0)
    docs = [agg("none", "ece", [0.1, 0.1]), agg(LS, "ece", [0.1, 0.1])]
    (r,) = verdicts(docs, "ece of label_smoothing below none")
    assert r.verdict is UNSURE  # equal means: not beyond a margin of 0


def test_one_seed_is_inconclusive_however_large_the_difference():
    docs = [agg("none", "ece", [0.5]), agg(LS, "ece", [0.01, 0.02, 0.015])]
    (r,) = verdicts(docs, "ece of label_smoothing below none")
    assert r.verdict is UNSURE
    assert r.diff == pytest.approx(0.015 - 0.5)
    assert "n=1 for none" in r.reason and "needs n >= 2" in r.reason


def test_a_missing_or_empty_cell_is_inconclusive_and_named():
    (r,) = verdicts(ECE_DOC, "accuracy_drop of gce below none under random 0.4")
    assert r.verdict is UNSURE
    assert r.reason == f"no accuracy_drop under random 0.4 for {GCE} in the results"
    docs = [*ECE_DOC[:1], {**agg(LS, "ece", []), "n_failed": 3}]
    (r,) = verdicts(docs, "ece of label_smoothing below none")
    assert r.verdict is UNSURE
    assert r.reason == f"no value of ece for {LS} (n=0, n_failed=3)"
    assert (r.a_mean, r.a_n, r.b_n) == (None, 0, 3)


def test_margin():
    # diff 0.075 with se ~0.0065: holds beyond 0.05, inconclusive near 0.07, fails at 0.1
    for margin, expected in ((0.0, HOLDS), (0.05, HOLDS), (0.07, UNSURE), (0.1, FAILS)):
        (r,) = verdicts(ECE_DOC, f"ece of label_smoothing below none by more than {margin}")
        assert r.verdict is expected, margin
        if expected is UNSURE:
            assert "margin 0.07" in r.reason


def test_a_claim_is_judged_in_every_scope_or_only_in_its_own():
    docs = [*ECE_DOC,
            agg("none", "ece", [0.10, 0.12, 0.11], dataset="moons"),
            agg(LS, "ece", [0.20, 0.22, 0.21], dataset="moons")]
    rs = verdicts(docs, "ece of label_smoothing below none")
    assert [(r.dataset, r.verdict) for r in rs] == [("digits", HOLDS), ("moons", FAILS)]
    assert overall(rs) is FAILS
    (r,) = verdicts(docs, {"claim": "ece of label_smoothing below none", "dataset": "digits"})
    assert (r.dataset, r.verdict) == ("digits", HOLDS)
    (r,) = verdicts(docs, {"claim": "ece of label_smoothing below none", "model": "cnn"})
    assert (r.verdict, r.reason, r.scope) == (UNSURE, "no results for model 'cnn'", "*/cnn")


def test_overall_verdict():
    rs = verdicts(ECE_DOC, "ece of label_smoothing below none")
    assert overall(rs) is HOLDS
    assert overall([*rs, *verdicts(ECE_DOC, "ece of gce below none")]) is UNSURE
    assert overall([]) is UNSURE


def test_descriptive_metrics_get_a_verdict_too():
    docs = [agg("none", "weight_norm", [30.0, 31.0, 29.0]),
            agg(LS, "weight_norm", [20.0, 21.0, 19.0])]
    (r,) = verdicts(docs, "weight_norm of label_smoothing below none")
    assert r.verdict is HOLDS


def test_evasion_claims_read_the_right_attack():
    t = "linf eps=0.1"
    docs = [agg("none", "robust_accuracy", [0.30, 0.32, 0.31], threat=t, attack=WORST_CASE),
            agg(PGD_AT, "robust_accuracy", [0.60, 0.62, 0.61], threat=t, attack=WORST_CASE),
            agg("none", "robust_accuracy", [0.50, 0.52, 0.51], threat=t, attack="fgsm"),
            agg(PGD_AT, "robust_accuracy", [0.40, 0.42, 0.41], threat=t, attack="fgsm")]
    rs = verdicts(docs, f"robust_accuracy of pgd_at above none at {t}",
                  f"robust_accuracy of pgd_at above none at {t} by fgsm")
    assert [r.verdict for r in rs] == [HOLDS, FAILS]


# --------------------------------------------------------------------------- storage


def test_stored_expectations_follow_the_schema_and_round_trip():
    es = parse([{"metric": "ece", "defense": "label_smoothing", "below": "none"},
                {"metric": "ece", "defense": "gce", "below": "none", "required": True,
                 "margin": 0.01, "claim": "GCE calibrates better"},
                "accuracy_drop of gce below none under random 0.4"])
    doc = make_doc(ECE_DOC, es)
    jsonschema.validate(doc, schema())
    stored = doc["expectations"]
    assert [s["verdict"] for s in stored] == ["holds", "inconclusive", "inconclusive"]
    assert stored[1]["claim"] == "GCE calibrates better"
    assert stored[0]["claim"] == f"ece of {LS} below none"
    assert stored[0]["results"][0]["dataset"] == "digits"
    assert set(stored[0]["results"][0]) == {"dataset", "model", "verdict", "a_mean", "a_std",
                                            "a_n", "b_mean", "b_std", "b_n", "diff", "se",
                                            "reason"}
    assert expectations_from_doc(json.loads(json.dumps(doc))) == es
    e = es[0]
    assert Expectation.from_dict(e.to_dict()) == e
    assert expectations_from_doc(make_doc(ECE_DOC)) == ()


@pytest.mark.parametrize("change, match", [
    ({"relation": "beneath"}, r"results\.expectations\[0\]\.relation='beneath' is not "
                              r"allowed: expected 'below' or 'above'"),
    ({"margin": -1}, r"\.margin=-1 is not allowed: expected a number >= 0"),
    ({"required": "true"}, r"\.required='true' is not allowed: expected true or false"),
    ({"metric": None}, r"\.metric=None is not allowed"),
])
def test_malformed_stored_expectations_are_data_errors(change, match):
    doc = make_doc(ECE_DOC, parse(["ece of label_smoothing below none"]))
    doc["expectations"][0].update(change)
    with pytest.raises(DataError, match=match):
        expectations_from_doc(doc)


def test_a_stored_expectation_without_a_field_is_a_data_error():
    doc = make_doc(ECE_DOC, parse(["ece of label_smoothing below none"]))
    del doc["expectations"][0]["than"]
    with pytest.raises(DataError, match=r"results\.expectations\[0\] has no 'than'"):
        expectations_from_doc(doc)
    doc["expectations"] = {"ece": "below"}
    with pytest.raises(DataError, match=r"results\.expectations=.* expected a list"):
        expectations_from_doc(doc)


# --------------------------------------------------------------------------- the gate


def gate(aggregates: Sequence[dict[str, Any]], *lines: Any) -> Any:
    doc = make_doc(aggregates, parse(list(lines)))
    return check(doc, make_baseline(doc))


def test_a_required_claim_that_does_not_hold_fails_the_gate():
    result = gate(ECE_DOC, {"claim": "ece of label_smoothing above none", "required": True})
    assert not result.rows or not result.failing  # no number regressed...
    assert result.exit_code == 1                   # ...the claim fails it
    (r,) = result.failing_expectations
    assert r.verdict is FAILS
    assert "FAILED" in result.headline()
    assert "1 required not holding" in result.headline()


def test_a_required_claim_that_is_inconclusive_fails_the_gate():
    result = gate(ECE_DOC, {"claim": "ece of gce below none", "required": True})
    assert result.exit_code == 1
    assert result.failing_expectations[0].verdict is UNSURE


def test_claims_that_are_not_required_never_fail_the_gate():
    result = gate(ECE_DOC, "ece of label_smoothing above gce", "ece of gce below none",
                  {"claim": "ece of label_smoothing below none", "required": True})
    assert result.exit_code == 0
    assert [r.verdict for r in result.expectations] == [FAILS, UNSURE, HOLDS]
    assert "passed" in result.headline()
    assert "expectations: 1 holds, 1 does not hold, 1 inconclusive" in result.headline()
    two = gate(ECE_DOC, "ece of label_smoothing below none", "ece of label_smoothing below gce")
    assert "expectations: 2 hold" in two.headline()


def test_the_gate_judges_again_and_ignores_stored_verdicts():
    doc = make_doc(ECE_DOC, parse([{"claim": "ece of label_smoothing below none",
                                    "required": True}]))
    assert doc["expectations"][0]["verdict"] == "holds"
    worse = copy.deepcopy(doc)
    for a in worse["aggregates"]:
        if a["defense"] == LS:
            a["mean"] = 0.5  # label smoothing's ECE now far above none's
    result = check(worse, make_baseline(doc))
    assert result.exit_code == 1
    assert result.failing_expectations[0].verdict is FAILS
    assert worse["expectations"][0]["verdict"] == "holds"  # stored, not trusted


def test_check_without_a_baseline_judges_expectations_only():
    doc = make_doc(ECE_DOC, parse([{"claim": "ece of gce below none", "required": True}]))
    result = check(doc, None)
    assert (result.rows, result.exit_code) == ((), 1)
    assert "(no baseline): FAILED" in result.headline()
    assert check(make_doc(ECE_DOC), None).exit_code == 0


def test_rendering_lists_the_claims():
    result = gate(ECE_DOC, {"claim": "ece of gce below none", "required": True},
                  "ece of label_smoothing below none by more than 0.01")
    text = result.text()
    assert "Expectations: a required claim fails the gate unless it holds" in text
    assert "ece of gce below none" in text and "yes: FAILS" in text
    assert "ece of label_smoothing below none by more than 0.01" in text
    assert "(margin 0.01)" in text and "diff ± 2se" in text
    headers, rows = result.expectation_table()
    assert headers == ["claim", "scope", "verdict", "a vs b", "diff ± 2se", "required"]
    gce_row = rows[0]
    assert gce_row[:3] == ["ece of gce below none", "digits/mlp",
                           "inconclusive (no clear difference: |diff| <= 2 standard errors)"]
    assert gce_row[3] == "0.11 vs 0.11" and gce_row[5] == "yes: FAILS"
    md = result.markdown()
    assert "#### Expectations" in md
    assert "| claim | scope | verdict | a vs b | diff ± 2se | required |" in md
    assert "| ece of label_smoothing below none by more than 0.01 | digits/mlp | holds |" in md


def test_assert_no_regression_fails_on_a_required_claim():
    doc = make_doc(ECE_DOC, parse([{"claim": "ece of label_smoothing above none",
                                    "required": True}]))
    with pytest.raises(AssertionError, match="ece of label_smoothing above none"):
        assert_no_regression(doc, make_baseline(doc))
    ok = make_doc(ECE_DOC, parse(["ece of label_smoothing above none"]))
    assert assert_no_regression(ok, make_baseline(ok)).expectations[0].verdict is FAILS

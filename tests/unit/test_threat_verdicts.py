"""Threat models as the unit of comparison (issue 21): named threats in a suite, the
ThreatModel accepted by the entry points, and the report's verdict per threat model."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

from poisonlab import EvasionThreat, NamedThreat, PoisonThreat, ThreatModel, load_dataset
from poisonlab.errors import ConfigError, SuiteError
from poisonlab.harness.pretrained import evaluate_model
from poisonlab.harness.report.tables import ranking
from poisonlab.harness.report.threats import threat_models, verdict
from poisonlab.harness.report.view import Results, fmt
from poisonlab.harness.suite import parse_suite

SUITE: dict[str, Any] = {
    "name": "threats", "version": 1,
    "datasets": [{"name": "blobs", "n_samples": 200}], "models": ["logistic"],
    "defenses": ["none", {"name": "label_smoothing", "eps": 0.1}],
    "threat_model": {"poisoning": [{"strategy": "random", "rate": 0.2}],
                     "evasion": [{"norm": "linf", "eps": [0.1, 0.2]}]},
    "attacks": ["fgsm", {"name": "pgd", "steps": 5}], "seeds": [0, 1],
}


def with_threats(*threats: dict[str, Any]) -> dict[str, Any]:
    return {**SUITE, "threat_model": {**SUITE["threat_model"], "threats": list(threats)}}


def test_named_threats_are_parsed_and_kept_out_of_the_cell_keys() -> None:
    plain = parse_suite(SUITE)
    named = parse_suite(with_threats(
        {"name": "noisy labels", "poisoning": "random 0.2"},
        {"name": "pgd at 0.1", "evasion": "linf eps=0.1", "attack": "pgd(steps=5)"},
        {"name": "poison then evade", "poisoning": "random 0.2", "evasion": "linf eps=0.2",
         "knowledge": "white-box"}))
    assert [t.kind for t in named.threats] == ["poisoning", "evasion", "combined"]
    assert named.threats[2].knowledge == "white-box"
    # naming the attackers changes no number: the cells and their keys are the same
    assert [plain.key(c) for c in plain.cells()] == [named.key(c) for c in named.cells()]
    assert named.gate_dict()["threats"][0] == {
        "name": "noisy labels", "poisoning": "random 0.2", "evasion": None, "attack": None,
        "knowledge": None}


@pytest.mark.parametrize("threat, message", [
    ({"name": "x", "poisoning": "random 0.3"},
     "threat_model.threats[0].poisoning='random 0.3' is not one of the suite's "
     "threat_model.poisoning: expected one of random 0.2 (did you mean 'random 0.2'?)"),
    ({"name": "x", "evasion": "linf eps=0.3"}, "(did you mean 'linf eps=0.2'?)"),
    ({"name": "x", "evasion": "linf eps=0.1", "attack": "pgd(step=5)"},
     "(did you mean 'pgd(steps=5)'?)"),
    ({"name": "x", "evasion": "linf eps=0.1", "knowledge": "black-box"},
     "knowledge='black-box': no attack of the suite has it (theirs: white-box)"),
    ({"name": "x"}, "has neither poisoning nor evasion"),
    ({"name": "x", "poisoning": "random 0.2", "attack": "fgsm"},
     "attack and knowledge need an evasion threat"),
    ({"name": "x", "evasoin": "linf eps=0.1"}, "did you mean 'evasion'"),
])
def test_a_bad_named_threat_is_one_line(threat: dict[str, Any], message: str) -> None:
    with pytest.raises(SuiteError) as e:
        parse_suite(with_threats(threat))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_two_threats_of_one_name_are_refused() -> None:
    t = {"name": "same", "poisoning": "random 0.2"}
    with pytest.raises(SuiteError, match="same"):
        parse_suite(with_threats(t, dict(t, evasion="linf eps=0.1")))


def test_a_threat_model_object_is_the_same_suite_as_its_mapping() -> None:
    tm = ThreatModel(poisoning=[PoisonThreat(rate=0.2)],
                     evasion=[EvasionThreat(eps=0.1), EvasionThreat(eps=0.2)],
                     threats=[NamedThreat("both", poisoning="random 0.2",
                                          evasion="linf eps=0.1")])
    as_object = parse_suite({**SUITE, "threat_model": tm})
    # an EvasionThreat carries its bounds ((0, 1) by default): the mapping it stands for
    mapping = with_threats({"name": "both", "poisoning": "random 0.2",
                            "evasion": "linf eps=0.1"})
    mapping["threat_model"]["evasion"][0] = {"norm": "linf", "eps": [0.1, 0.2],
                                             "bounds": [0.0, 1.0]}
    as_mapping = parse_suite(mapping)
    assert [as_object.key(c) for c in as_object.cells()] == \
        [as_mapping.key(c) for c in as_mapping.cells()]
    assert as_object.threats == as_mapping.threats


def test_evaluate_model_takes_a_threat_model_and_refuses_poisoning() -> None:
    ds = load_dataset("blobs", seed=0, n_samples=200)
    net = nn.Linear(2, ds.n_classes)
    threats = [EvasionThreat(eps=0.1, bounds=ds.bounds), EvasionThreat(eps=0.2,
                                                                      bounds=ds.bounds)]
    kw: dict[str, Any] = {"attacks": ["fgsm"], "metrics": ["evasion"], "seed": 0}
    assert evaluate_model(net, ds, threats=ThreatModel(evasion=threats), **kw) == \
        evaluate_model(net, ds, threats=threats, **kw)
    with pytest.raises(ConfigError, match="a trained model cannot be poisoned"):
        evaluate_model(net, ds, threats=ThreatModel(evasion=threats,
                                                    poisoning=[PoisonThreat(rate=0.1)]), **kw)


# --------------------------------------------------------------------------- verdicts

SCOPE = ("digits", "mlp")


def agg(defense: str, metric: str, mean: float, std: float, n: int = 3, *,
        poisoning: str = "none", threat: str | None = None,
        attack: str | None = None) -> dict[str, Any]:
    return {"dataset": SCOPE[0], "model": SCOPE[1], "defense": defense,
            "poisoning": poisoning, "metric": metric, "threat": threat, "attack": attack,
            "mean": mean, "std": std, "n": n, "n_failed": 0, "higher_is_better": True}


def doc(robust: dict[str, tuple[float, float]], n: int = 3) -> dict[str, Any]:
    """A results document with clean accuracy and robust accuracy (worst case) at
    linf eps=0.1 for each defense: ``{defense: (mean, std)}``."""
    aggs = []
    for d, (m, s) in robust.items():
        aggs.append(agg(d, "clean_accuracy", 0.95 if d == "none" else 0.93, 0.01, n))
        aggs.append(agg(d, "robust_accuracy", m, s, n, threat="linf eps=0.1",
                        attack="worst-case"))
    return {"aggregates": aggs,
            "cells": [{"defense": {"name": d, "params": {}}} for d in robust],
            "threat_model": {"attacks": [{"name": "fgsm", "params": {}},
                                         {"name": "pgd", "params": {}}],
                             "poisoning": [],
                             "evasion": [{"norm": "linf", "eps": [0.1], "targeted": False,
                                          "bounds": None}]}}


def the_verdict(d: dict[str, Any]) -> tuple[list[list[str]], str]:
    r = Results(d)
    (t,) = threat_models(r)
    table, sentence = verdict(r, SCOPE, t)  # type: ignore[misc]
    return table.rows, sentence


def test_a_defense_clear_of_none_beats_it_and_the_cost_is_shown() -> None:
    rows, sentence = the_verdict(doc({"none": (0.40, 0.01), "at": (0.60, 0.01)}))
    assert [r[:2] for r in rows] == [["#1", "at"], ["#2", "none"]]
    assert rows[0][3] == "0.930 (-0.020 vs none)"
    assert rows[0][2].startswith("0.600 [") and rows[0][2].endswith("(n=3)")
    assert sentence.startswith("Under **evasion linf eps=0.1**, **at** ranks first (0.600,")
    assert sentence.endswith("**at** beats `none` (0.400) beyond seed noise.")


def test_overlapping_intervals_are_ties_and_the_sentence_says_none_is_not_beaten() -> None:
    rows, sentence = the_verdict(doc({"none": (0.40, 0.05), "ls": (0.42, 0.05)}))
    assert [r[0] for r in rows] == ["#1", "#1"]
    assert "tied within seed noise with **none**" in sentence
    assert sentence.endswith("no defense is distinguishable from `none` (0.400) beyond seed "
                             "noise.")


def test_a_tie_with_the_leader_is_not_a_win_over_none() -> None:
    # b ties with the leader a but also with none; only a is clear of none
    rows, sentence = the_verdict(doc({"none": (0.40, 0.01), "a": (0.50, 0.01),
                                      "b": (0.45, 0.04)}))
    assert dict((r[1], r[0]) for r in rows) == {"a": "#1", "b": "#1", "none": "#3"}
    assert "**a** beats `none`" in sentence and "**b** does not separate from `none`" in \
        sentence


def test_a_single_seed_is_never_ranked_as_if_it_were_known() -> None:
    rows, sentence = the_verdict(doc({"none": (0.40, 0.0), "a": (0.50, 0.0)}, n=1))
    assert [r[0] for r in rows] == ["#1", "#1"] and "(n=1, no interval)" in rows[0][2]
    assert "with a single seed no two defenses can be told apart" in sentence
    assert fmt({"mean": 0.5, "std": 0.0, "n": 1}) == "0.500 (n=1)"


def test_the_ranking_table_shows_the_same_ties_as_the_verdict() -> None:
    d = doc({"none": (0.40, 0.01), "a": (0.50, 0.01), "b": (0.45, 0.04)})
    rows, _ = the_verdict(d)
    by_defense = {x[0]: x[2] for x in ranking(Results(d), SCOPE)}
    verdict_rank = {r[1]: int(r[0][1:]) for r in rows}
    assert {k: v["evasion linf eps=0.1"] for k, v in by_defense.items()} == verdict_rank


def test_a_knowledge_picks_the_strongest_attack_of_that_knowledge_per_defense() -> None:
    d = doc({"none": (0.40, 0.01), "at": (0.60, 0.01)})
    d["threat_model"]["attacks"] = [{"name": "fgsm", "params": {}},
                                    {"name": "noise", "params": {}},
                                    {"name": "square", "params": {}}]
    d["threat_model"]["attack_knowledge"] = {"fgsm": "white-box", "noise": "black-box",
                                             "square": "black-box"}
    d["threat_model"]["threats"] = [{"name": "black-box only", "evasion": "linf eps=0.1",
                                     "knowledge": "black-box"}]
    for defense, noise, square in (("none", 0.80, 0.70), ("at", 0.85, 0.90)):
        d["aggregates"] += [agg(defense, "robust_accuracy", noise, 0.01, threat="linf eps=0.1",
                                attack="noise"),
                            agg(defense, "robust_accuracy", square, 0.01,
                                threat="linf eps=0.1", attack="square")]
    rows, sentence = the_verdict(d)
    assert [(r[1], r[2][:5], r[-1]) for r in rows] == [("at", "0.850", "noise"),
                                                       ("none", "0.700", "square")]
    assert sentence.startswith("Under **black-box only**")

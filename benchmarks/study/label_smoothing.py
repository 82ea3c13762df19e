"""The label-smoothing study: run its suites, then write docs/label_smoothing_study.md.

::

    python -m benchmarks.study.label_smoothing --workers 2       # what `make study` runs
    python -m benchmarks.study.label_smoothing --no-run          # the page from existing runs
    python -m benchmarks.study.label_smoothing --reduced ...     # the CI-sized grid

The study is the entry suite ``benchmarks/suites/label_smoothing_study.yaml`` and every
suite in ``benchmarks/suites/label_smoothing_study/`` (each includes the entry and changes
what it measures). Each runs with :func:`poisonlab.harness.run_suite` into
``OUT/<file stem>/`` (results.json, report.md, report.html); ``OUT/study.json`` records the
wall time. The page and its figures are then generated from those results.json files
alone: every number on it is read from them, and every verdict is recomputed from their
aggregates by :func:`poisonlab.harness.expectations.evaluate_expectations` (the rule
``poisonlab check`` applies), never written by hand.

The reduced grid (:data:`CI_REDUCTION`, ``--reduced``) is the same suites with fewer
datasets, seeds and epochs, and only the flip rates and eps that some claim names
(:func:`reduce_suite`); tests/integration/test_study.py runs it through :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import inspect
import itertools
import json
import math
import os
import platform
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poisonlab._text import spec_label
from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.harness.expectations import (
    EVASION_METRICS,
    POISONING_METRICS,
    WORST_CASE,
    Expectation,
    ExpectationResult,
    ExpectationVerdict,
    evaluate_expectations,
    z_se,
)
from poisonlab.harness.runner import RESULTS_NAME, run_suite
from poisonlab.harness.spec import Suite
from poisonlab.harness.suite import load_suite
from poisonlab.metrics import AUGMENT_NOISE, AUGMENT_SHIFT
from poisonlab.models import models

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "benchmarks" / "suites" / "label_smoothing_study.yaml"
DEFAULT_OUT = Path("runs") / "label_smoothing_study"
DEFAULT_DOC = Path("docs") / "label_smoothing_study.md"
STUDY_META = "study.json"
VERDICTS = tuple(v.value for v in ExpectationVerdict)

# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Reduction:
    """A smaller grid of the same suites (the CI test's).

    ``datasets``: the dataset labels kept; ``seeds``: the first n seeds; ``epochs``: at
    most this many; ``n_noise``: at most this many noise inputs; ``claimed_only``: keep
    only the poisonings (flip rates) that some expectation names.
    """

    datasets: tuple[str, ...] = ("digits",)
    seeds: int = 2
    epochs: int = 10
    n_noise: int = 200
    claimed_only: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def describe(d: Mapping[str, Any]) -> str:
        """In words, from :meth:`to_dict`."""
        return (f"datasets {', '.join(d['datasets'])}; the first {d['seeds']} seeds; at most "
                f"{d['epochs']} epochs; at most {d['n_noise']} noise inputs"
                + ("; only the flip rates a claim names" if d["claimed_only"] else ""))


CI_REDUCTION = Reduction()


@dataclass(frozen=True)
class Part:
    """One suite of the study: ``key`` (its file stem) names its run folder."""

    key: str
    path: Path
    suite: Suite


def study_files(entry: Path = ENTRY) -> list[Path]:
    """The entry suite, then every suite in the folder named like it, sorted."""
    return [entry, *sorted(entry.with_suffix("").glob("*.yaml"))]


def reduce_suite(suite: Suite, r: Reduction) -> Suite:
    """``suite`` with the grid of ``r``: the same cells' code path, fewer of them.

    Defenses, attacks, evasion threats, metric groups and checks are kept: every claim
    stays valid, and the sanity checks still see several eps.

    Expectations scoped to a dropped dataset are dropped; every other one is kept as is
    (its defenses, attacks, poisoning and threat all remain in the reduced suite).

    Raises
    ------
    ConfigError
        No dataset of the suite is kept.
    """
    datasets = tuple(d for d in suite.datasets if d.label in r.datasets)
    if not datasets:
        raise ConfigError(f"datasets={list(r.datasets)!r} is not allowed: the suite "
                          f"{suite.name!r} has {[d.label for d in suite.datasets]}")
    kept = {d.label for d in datasets}
    expectations = tuple(e for e in suite.expectations if e.dataset in (None, *kept))
    poisoning = suite.poisoning
    if r.claimed_only:
        named = {e.poisoning for e in expectations}
        poisoning = tuple(p for p in poisoning if p.id in named)
    return dataclasses.replace(
        suite, datasets=datasets, seeds=suite.seeds[:r.seeds],
        training=dataclasses.replace(suite.training,
                                     epochs=min(suite.training.epochs, r.epochs)),
        poisoning=poisoning, n_noise=min(suite.n_noise, r.n_noise),
        expectations=expectations)


def load_study(entry: Path = ENTRY, *, reduction: Reduction | None = None) -> list[Part]:
    """Load (and validate) every suite of the study, reduced when asked."""
    parts = []
    for path in study_files(entry):
        suite = load_suite(path)
        if reduction is not None:
            suite = reduce_suite(suite, reduction)
        parts.append(Part(path.stem, path, suite))
    return parts


def run_study(parts: Sequence[Part], out: Path, *, workers: int = 1, resume: bool = False,
              progress: bool = False, report: bool = True,
              reduction: Reduction | None = None) -> dict[str, Any]:
    """Run every part into ``out/<key>/`` and record the wall times in ``out/study.json``."""
    out.mkdir(parents=True, exist_ok=True)
    walls: dict[str, float] = {}
    t_all = time.perf_counter()
    for p in parts:
        t0 = time.perf_counter()
        run_suite(p.suite, out / p.key, workers=workers, resume=resume, progress=progress,
                  report=report)
        walls[p.key] = round(time.perf_counter() - t0, 1)
    meta = {
        "parts": [{"key": p.key, "suite": _rel(p.path), "cells": len(list(p.suite.cells())),
                   "wall_s": walls[p.key]} for p in parts],
        "total_wall_s": round(time.perf_counter() - t_all, 1),
        "workers": workers, "cpu_count": os.cpu_count(), "resumed": resume,
        "platform": platform.platform(),
        "reduction": None if reduction is None else reduction.to_dict(),
        "finished": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (out / STUDY_META).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


# --------------------------------------------------------------------------- results


class PartResults:
    """One part's results.json with its claims judged again from its aggregates."""

    def __init__(self, key: str, path: Path) -> None:
        self.key = key
        self.path = path
        self.doc: dict[str, Any] = json.loads(path.read_text())
        self.config: dict[str, Any] = self.doc["suite"]["config"]
        self.judged: list[ExpectationResult] = evaluate_expectations(self.doc)
        self._index = {(a["dataset"], a["model"], a["defense"], a["poisoning"], a["metric"],
                        a["threat"], a["attack"]): a for a in self.doc["aggregates"]}

    @property
    def datasets(self) -> list[str]:
        return [spec_label(d) for d in self.config["datasets"]]

    @property
    def model(self) -> str:
        return spec_label(self.config["models"][0])

    @property
    def defenses(self) -> list[str]:
        return [spec_label(d) for d in self.config["defenses"]]

    @property
    def attacks(self) -> list[str]:
        return [spec_label(a) for a in self.config.get("attacks", [])]

    @property
    def poisonings(self) -> list[dict[str, Any]]:
        return list(self.config.get("poisoning", []))

    @property
    def metrics(self) -> list[str]:
        return list(self.config["metrics"])

    def seeds(self) -> list[int]:
        return list(self.config["seeds"])

    def agg(self, dataset: str, defense: str, metric: str, *, poisoning: str = "none",
            threat: str | None = None, attack: str | None = None) -> dict[str, Any] | None:
        return self._index.get((dataset, self.model, defense, poisoning, metric, threat,
                                attack))


def load_parts(out: Path, entry: Path = ENTRY) -> list[PartResults]:
    """The results of every part of the study under ``out``, in the study's order."""
    parts = []
    for path in study_files(entry):
        res = out / path.stem / RESULTS_NAME
        if not res.is_file():
            raise ConfigError(f"--out={str(out)!r} has no {path.stem}/{RESULTS_NAME}: run the "
                              "study first (without --no-run)")
        parts.append(PartResults(path.stem, res))
    return parts


def judge_pair(dataset: str, model: str, a: Mapping[str, Any] | None,
               b: Mapping[str, Any] | None, *, a_name: str, b_name: str, metric: str,
               relation: str) -> ExpectationResult:
    """A claim between two aggregates that the suite grammar cannot state (it compares
    defenses, not threats), judged by the same function as the suite's claims."""
    rows = []
    for name, agg in ((a_name, a), (b_name, b)):
        if agg is not None:
            rows.append({"dataset": dataset, "model": model, "defense": name,
                         "poisoning": "none", "metric": metric, "threat": None,
                         "attack": None, "mean": agg.get("mean"), "std": agg.get("std"),
                         "n": agg.get("n"), "n_failed": agg.get("n_failed")})
    e = Expectation(metric, a_name, relation, b_name, dataset=dataset, model=model)
    (res,) = evaluate_expectations({"aggregates": rows}, [e])
    return res


# --------------------------------------------------------------------------- formatting


def num(x: Any) -> str:
    """A number as the page shows it: 4 decimals below 100, fewer above; n/a if missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    a = abs(float(x))
    if a >= 1000:
        return f"{x:.0f}"
    if a >= 100:
        return f"{x:.1f}"
    return f"{x:.4f}"


def signed(x: Any) -> str:
    """:func:`num` with a sign; a value that rounds to zero shows none."""
    s = num(x)
    if s == "n/a" or float(s) == 0:
        return s.lstrip("-")
    return "+" + s if float(x) > 0 else s


def mean_std(agg: Mapping[str, Any] | None) -> str:
    if agg is None or agg.get("mean") is None:
        return "n/a"
    return f"{num(agg['mean'])} ± {num(agg['std'])}"


def effect(r: ExpectationResult) -> str:
    """``diff ± 2 SE`` (diff = mean of the claim's defense minus the other's)."""
    if r.diff is None:
        return "n/a"
    if r.se is None:
        return f"{signed(r.diff)} ± n/a"
    return f"{signed(r.diff)} ± {num(z_se() * r.se)}"


def verdict_cell(r: ExpectationResult) -> str:
    out = f"**{r.verdict.value}**"
    if r.reason and not r.reason.startswith("no clear difference"):
        out += f" ({r.reason})"
    elif r.reason:
        out += f" (within {z_se():g} SE)"
    return out


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def bare(label: str) -> str:
    return label.split("(", 1)[0]


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------- the papers

#: key -> (citation, what the paper reported). Only what the papers say; where a claim of
#: the study is not a claim of the paper, the claim table says so.
REFERENCES: dict[str, tuple[str, str]] = {
    "szegedy2016": (
        "Szegedy, Vanhoucke, Ioffe, Shlens & Wojna 2016, *Rethinking the Inception "
        "Architecture for Computer Vision*, CVPR",
        "introduced label-smoothing regularisation, targets (1 − ε)·onehot + ε/K, with "
        "ε = 0.1 and K = 1000 on ImageNet, and reported a consistent improvement of about "
        "0.2 % absolute in top-1 and top-5 error."),
    "muller2019": (
        "Müller, Kornblith & Hinton 2019, *When Does Label Smoothing Help?*, NeurIPS",
        "label smoothing improves generalisation and calibration (lower ECE on image "
        "classification, which also helps beam search in translation); but if a teacher is "
        "trained with label smoothing, knowledge distillation into a student is much less "
        "effective. Smoothing pulls the penultimate-layer representations of each class "
        "into tight clusters, erasing information in the logits about resemblances between "
        "examples of different classes; the paper estimates it as the mutual information "
        "between an example's index and its logit gap over augmented copies."),
    "pereyra2017": (
        "Pereyra, Tucker, Chorowski, Kaiser & Hinton 2017, *Regularizing Neural Networks by "
        "Penalizing Confident Output Distributions*, ICLR workshop",
        "penalising low-entropy output distributions (the confidence penalty), like label "
        "smoothing, improved state-of-the-art models across six benchmarks (MNIST and "
        "CIFAR-10 classification, language modelling, machine translation, speech "
        "recognition) without changing their hyperparameters. A regulariser on clean "
        "labels: robustness to flipped labels or to evasion is not a claim of the paper."),
    "xie2016": (
        "Xie, Wang, Wei, Wang & Tian 2016, *DisturbLabel: Regularizing CNN on the Loss "
        "Layer*, CVPR",
        "replacing a part of the labels with incorrect ones in every iteration prevents a "
        "CNN from over-fitting, complements dropout, and gave competitive results on "
        "several image recognition datasets. A regulariser on clean labels: robustness to an "
        "attacker's flips is the study's question, not a claim of the paper."),
    "zhang2018": (
        "Zhang & Sabuncu 2018, *Generalized Cross Entropy Loss for Training Deep Neural "
        "Networks with Noisy Labels*, NeurIPS",
        "the L_q loss (GCE), between cross-entropy and MAE, is robust to noisy labels and "
        "trains well where MAE does not, in experiments on CIFAR-10, CIFAR-100 and "
        "Fashion-MNIST with synthetically generated noisy labels."),
    "lukasik2020": (
        "Lukasik, Bhojanapalli, Menon & Kumar 2020, *Does Label Smoothing Mitigate Label "
        "Noise?*, ICML",
        "although smoothing looks like injecting symmetric label noise, it relates to loss "
        "correction and is competitive with loss-correction techniques under label noise; "
        "when distilling from noisy data, smoothing the teacher helps (unlike the "
        "noise-free case of Müller et al.)."),
    "guo2017": (
        "Guo, Pleiss, Sun & Weinberger 2017, *On Calibration of Modern Neural Networks*, ICML",
        "modern deep networks are poorly calibrated (over-confident), unlike those of a "
        "decade earlier (a 5-layer LeNet on CIFAR-100 was well calibrated, a 110-layer "
        "ResNet was not); depth, width, weight decay and batch normalisation matter; "
        "temperature scaling, one parameter fitted on a validation set, is surprisingly "
        "effective."),
    "hein2019": (
        "Hein, Andriushchenko & Bitterwolf 2019, *Why ReLU Networks Yield High-Confidence "
        "Predictions Far Away from the Training Data and How to Mitigate the Problem*, CVPR",
        "proved that a ReLU network's confidence tends to 1 along almost every ray α·x as "
        "α grows, and proposed training that enforces low confidence on noise inputs "
        "(CEDA, ACET). Label-side defenses are the study's question, not the paper's."),
    "fu2020": (
        "Fu, Chen, Ruan & Jia 2020, *Label Smoothing and Adversarial Robustness*, "
        "arXiv:2009.08233",
        "a model trained with label smoothing reaches striking accuracy under most "
        "gradient-based attacks (a CIFAR-10 WideResNet up to 75 % under PGD), but the "
        "robustness is incomplete: volatile, and no defense against attacks transferred "
        "from a naturally trained model."),
    "shafahi2019": (
        "Shafahi, Ghiasi, Huang & Goldstein 2019, *Label Smoothing and Logit Squeezing: A "
        "Replacement for Adversarial Training?*, arXiv:1910.11585",
        "label smoothing and logit squeezing combined with Gaussian noise injection reached "
        "adversarial robustness often exceeding adversarial training's, without adversarial "
        "examples."),
    "xiao2012": (
        "Xiao, Xiao & Eckert 2012, *Adversarial Label Flips Attack on Support Vector "
        "Machines*, ECAI",
        "choosing the label flips that maximise the classifier's loss (ALFA) degrades an SVM "
        "far more than flipping random labels at the same budget."),
}

_SHORT = {
    "szegedy2016": "Szegedy 2016", "muller2019": "Müller 2019", "pereyra2017": "Pereyra 2017",
    "xie2016": "Xie 2016", "zhang2018": "Zhang & Sabuncu 2018", "lukasik2020": "Lukasik 2020",
    "guo2017": "Guo 2017", "hein2019": "Hein 2019", "fu2020": "Fu 2020",
    "shafahi2019": "Shafahi 2019", "xiao2012": "Xiao 2012",
}


def cite(key: str) -> str:
    return f"[{_SHORT[key]}](#{key})"


HOLDS, FAILS = ExpectationVerdict.HOLDS.value, ExpectationVerdict.DOES_NOT_HOLD.value


def literature(e: Expectation) -> tuple[str, str | None]:
    """What the literature reported on this claim, cited, and the verdict it leads one to
    expect (None: no paper makes the claim; it is the study's question or hypothesis)."""
    d, o, m = bare(e.defense), bare(e.than), e.metric
    eps = e.defense.partition("eps=")[2].rstrip(")")
    if m in POISONING_METRICS:
        text, expect = {
            "label_smoothing": (f"{cite('lukasik2020')}: competitive with loss correction "
                                "under label noise", HOLDS),
            "gce": (f"{cite('zhang2018')}: robust to synthetic label noise", HOLDS),
            "flip_augment": (f"{cite('xie2016')}: a regulariser on clean labels; no claim "
                             "about flipped labels", None),
            "confidence_penalty": (f"{cite('pereyra2017')}: a regulariser on clean labels; "
                                   "no claim about flipped labels", None),
        }.get(d, ("no paper claim (the study's question)", None))
        if e.poisoning.startswith("adversarial"):
            text += f"; flips chosen to hurt most (ALFA, {cite('xiao2012')})"
        return text, expect
    if m in EVASION_METRICS:
        if d == "label_smoothing":
            if m == "robust_accuracy":
                return (f"{cite('shafahi2019')}: robust (with logit squeezing and Gaussian "
                        f"noise); {cite('fu2020')}: the robustness is incomplete", None)
            if e.attack and e.attack.startswith("transfer"):
                return (f"{cite('fu2020')}: smoothing does not resist attacks transferred "
                        "from a naturally trained model", FAILS)
            if e.attack and "loss=margin" in e.attack:
                return (f"{cite('fu2020')}: smoothing resists most gradient-based attacks; "
                        "if it only masks the CE gradient, the margin loss is not resisted",
                        None)
            return f"{cite('fu2020')}: smoothing resists most gradient-based attacks", HOLDS
        if d == "confidence_penalty":
            return ("no paper claim; it flattens the softmax like smoothing "
                    f"({cite('pereyra2017')})", None)
        return "no paper claim (the study's question)", None
    if d == "distillation" or o == "distillation" or m == "teacher_accuracy":
        return (f"{cite('muller2019')}: a label-smoothed teacher distils much worse "
                f"({cite('lukasik2020')}: but better when the labels are noisy)", HOLDS)
    if m in ("offmanifold_confidence", "gaussian_confidence", "alpha_star",
             "offmanifold_auroc", "ray_confidence"):
        return (f"{cite('hein2019')}: ReLU networks grow confident far from the data; "
                "label-side defenses are not the paper's subject", None)
    if m == "mutual_information":
        if d == "label_smoothing":
            return f"{cite('muller2019')}: smoothing erases this information", HOLDS
        return ("no paper claim; the confidence penalty also flattens the softmax "
                f"({cite('pereyra2017')})", None)
    if m == "clean_accuracy":
        return (f"{cite('szegedy2016')}: about 0.2 % lower ImageNet error; "
                f"{cite('muller2019')}: better generalisation", HOLDS)
    if m == "temperature":
        if d == "none":
            return (f"{cite('guo2017')}: modern deep networks are over-confident (T* > 1), "
                    "a 5-layer LeNet was well calibrated", None)
        return ("the study's explanation of the U: too much smoothing leaves the model "
                "under-confident (T* < 1)", None)
    if m == "ece":
        if d == "temperature_scaling":
            return f"{cite('guo2017')}: temperature scaling calibrates", HOLDS
        if o == "label_smoothing":
            return ("the study's hypothesis (the U): too much smoothing overshoots", None)
        if d == "label_smoothing" and eps and float(eps) <= 0.1:
            return f"{cite('muller2019')}: smoothing improves calibration", HOLDS
        return (f"{cite('muller2019')}: smoothing improves calibration; no claim at this "
                "large an ε (the U hypothesis expects over-smoothing)", None)
    return "no paper claim (the study's question)", None


def paper_cell(e: Expectation) -> str:
    text, expect = literature(e)
    return text + (f" (expects: {expect})" if expect else "")


def against(r: ExpectationResult) -> bool:
    """The verdict is decisive and opposite to what the literature leads one to expect."""
    expect = literature(r.expectation)[1]
    return (expect is not None and r.verdict.value in (HOLDS, FAILS)
            and r.verdict.value != expect)


# --------------------------------------------------------------------------- the claims


TOPICS: dict[str, str] = {
    "noise": "Label flips: accuracy lost to poisoned training labels",
    "calibration": "Accuracy and calibration across the smoothing ε",
    "offmanifold": "Confidence off the data manifold",
    "evasion": "Evasion: FGSM, PGD-CE, PGD-margin, transfer, and the masking checks",
    "distillation": "Distillation: students of a plain and of a smoothed teacher",
    "information": "The mutual-information estimate",
}


def topic_of(e: Expectation) -> str:
    if e.metric in POISONING_METRICS:
        return "noise"
    if e.metric in EVASION_METRICS:
        return "evasion"
    if "distillation" in (bare(e.defense), bare(e.than)) or e.metric == "teacher_accuracy":
        return "distillation"
    if e.metric in ("offmanifold_confidence", "gaussian_confidence", "alpha_star",
                    "offmanifold_auroc", "ray_confidence"):
        return "offmanifold"
    if e.metric in ("mutual_information", "logit_norm", "weight_norm"):
        return "information"
    return "calibration"


def info_setting(part: PartResults) -> str:
    info = part.config.get("information") or {}
    shift = info.get("shift", AUGMENT_SHIFT)
    noise = info.get("noise", AUGMENT_NOISE)
    return (f"shift {shift} px, noise {noise:g}, classes {info.get('classes', [0, 1])}, "
            f"N = {info.get('n_examples', 200)}, L = {info.get('n_augment', 32)}")


def claim_head(with_setting: bool = False) -> list[str]:
    head = ["claim", "dataset"]
    if with_setting:
        head.append("setting")
    return [*head, "a vs b (means)", "effect: a − b ± 2 SE", "n (a, b)", "verdict",
            "the literature"]


def claim_row(part: PartResults, r: ExpectationResult,
              with_setting: bool = False) -> list[str]:
    e = r.expectation
    row = [f"`{e.text}`", r.dataset or "*"]
    if with_setting:
        row.append(info_setting(part))
    means = ("n/a" if r.a_mean is None or r.b_mean is None
             else f"{num(r.a_mean)} vs {num(r.b_mean)}")
    n = "n/a" if r.a_n is None or r.b_n is None else f"{r.a_n}, {r.b_n}"
    return [*row, means, effect(r), n, verdict_cell(r), paper_cell(e)]


def claims_by_topic(parts: Sequence[PartResults]
                    ) -> dict[str, list[tuple[PartResults, ExpectationResult]]]:
    out: dict[str, list[tuple[PartResults, ExpectationResult]]] = defaultdict(list)
    for p in parts:
        for r in p.judged:
            out[topic_of(r.expectation)].append((p, r))
    return out


def claims_table(rows: Sequence[tuple[PartResults, ExpectationResult]],
                 with_setting: bool = False) -> list[str]:
    if not rows:
        return ["No claims of this kind in the results."]
    return table(claim_head(with_setting), (claim_row(p, r, with_setting) for p, r in rows))


# --------------------------------------------------------------------------- sections


def _parts_with(parts: Sequence[PartResults],
                pred: Callable[[PartResults], bool]) -> list[PartResults]:
    return [p for p in parts if pred(p)]


def scale_words(parts: Sequence[PartResults]) -> str:
    """The models and data of the results, in words (for the summary)."""
    models = sorted({spec_label(m) for p in parts for m in p.config["models"]})
    epochs = sorted({p.config["training"]["epochs"] for p in parts})
    datasets = sorted({d for p in parts for d in p.datasets})
    hidden = [_mlp_hidden(m) for p in parts for m in p.config["models"]]
    arch = (f" (ReLU hidden layers of {', '.join(map(str, hidden[0]))} units)"
            if hidden and all(h == hidden[0] and h for h in hidden) else "")
    return (f"The models are small: `{'`, `'.join(models)}`{arch} trained for "
            f"{' or '.join(map(str, epochs))} epochs on {', '.join(datasets)}, far from the "
            "deep networks and large datasets of the papers. A verdict is about this scale "
            "only.")


def _mlp_hidden(spec: Mapping[str, Any]) -> list[int] | None:
    if spec["name"] != "mlp":
        return None
    default = inspect.signature(models.resolve("mlp")).parameters["hidden"].default
    return list((spec.get("params") or {}).get("hidden", default))


def summary_section(parts: Sequence[PartResults]) -> list[str]:
    rows = [(p, r) for p in parts for r in p.judged]
    by: dict[str, list[tuple[PartResults, ExpectationResult]]] = defaultdict(list)
    for p, r in rows:
        by[r.verdict.value].append((p, r))
    counts = ", ".join(f"{len(by[v])} {v}" for v in VERDICTS)
    lines = [
        "## What holds at this scale, and what does not",
        "",
        f"{len(rows)} verdicts ({counts}) on "
        f"{sum(len(p.doc.get('expectations') or []) for p in parts)} claims, each judged per "
        f"dataset. {scale_words(parts)} Each claim is listed with what the literature "
        "reported and, where a paper makes the claim, the verdict it leads one to expect.",
        "",
    ]

    def bullet(p: PartResults, r: ExpectationResult) -> str:
        e = r.expectation
        extra = f" ({info_setting(p)})" if e.metric == "mutual_information" else ""
        return (f"- `{e.text}` on {r.dataset}{extra}: **{r.verdict.value}**, effect "
                f"{effect(r)} (means {num(r.a_mean)} vs {num(r.b_mean)}); the literature: "
                f"{paper_cell(e)}")

    lines.append("**Where the literature's expectation fails for these small models** (a "
                 "paper makes the claim, or its opposite, and the measurement decides the "
                 "other way by more than 2 standard errors):")
    lines.append("")
    lines += [bullet(p, r) for p, r in rows if against(r)] or ["- none"]
    lines += ["", "**Claims that do not hold for these small models** (the measured effect "
              "goes the other way by more than 2 standard errors):", ""]
    lines += [bullet(p, r) for p, r in by[FAILS]] or ["- none"]
    lines += ["", "**Inconclusive at this scale** (the difference is within 2 standard "
              "errors of the seed spread, or a number is missing):", ""]
    lines += [bullet(p, r) for p, r in by[ExpectationVerdict.INCONCLUSIVE.value]] or ["- none"]
    lines += ["", "**Claims that hold** (beyond 2 standard errors):", ""]
    lines += [bullet(p, r) for p, r in by[HOLDS]] or ["- none"]
    return lines


def design_section(parts: Sequence[PartResults], meta: Mapping[str, Any] | None) -> list[str]:
    walls = {m["key"]: m["wall_s"] for m in (meta or {}).get("parts", [])}
    rows = []
    for p in parts:
        poison = ", ".join(q["id"] for q in p.poisonings) or "none"
        ev = p.config.get("evasion") or []
        threats = "; ".join(f"{e['norm']} eps {', '.join(f'{x:g}' for x in e['eps'])}"
                            for e in ev)
        attacks = f"{threats}: {', '.join(f'`{a}`' for a in p.attacks)}" if ev else "none"
        tr = p.config["training"]
        cells = p.doc["n_cells"]
        wall = walls.get(p.key)
        rows.append([f"`{_rel(Path(p.doc['suite']['source'] or p.key))}`",
                     ", ".join(p.datasets), ", ".join(f"`{d}`" for d in p.defenses), poison,
                     attacks, ", ".join(p.metrics),
                     f"{len(p.seeds())} ({', '.join(map(str, p.seeds()))})",
                     f"{tr['epochs']} (batch {tr['batch_size']}, lr {tr['lr']:g})",
                     f"{cells} ({p.doc['n_failed']} failed)",
                     "n/a" if wall is None else f"{wall:.0f}"])
    lines = ["## The study", ""]
    lines += table(["suite", "datasets", "defenses", "label flips", "evasion", "metric groups",
                    "seeds", "epochs", "cells", "wall s"], rows)
    lines.append("")
    if meta:
        lines.append(
            f"The whole study took {meta['total_wall_s']:.0f} s "
            f"({meta['total_wall_s'] / 60:.1f} min) of wall time with `--workers "
            f"{meta['workers']}` on a machine with {meta['cpu_count']} CPU cores "
            f"({meta['platform']}){', resumed from a partial run' if meta['resumed'] else ''}"
            ". Every cell runs on one torch thread, so the numbers do not depend on the "
            "number of workers.")
        if meta.get("reduction"):
            lines += ["", "**This is the reduced CI grid** ("
                      f"{Reduction.describe(meta['reduction'])}), not the "
                      "full study: verdicts rest on fewer seeds and shorter training."]
        lines.append("")
    z = z_se()
    lines += [
        "Each claim is an `expectations:` entry of its suite (none is required) and is "
        "judged per dataset on the seed spread, as `poisonlab check` judges it "
        "(docs/regression.md): with `diff` = mean of the claim's defense (a) minus the "
        "other's (b), signed the way the claim goes, and `SE = sqrt(std_a²/n_a + "
        f"std_b²/n_b)`, the claim **holds** when it exceeds {z:g} SE, **does not hold** "
        f"when it goes the other way by more than {z:g} SE, and is **inconclusive** "
        "otherwise. The effect column shows `a − b ± 2 SE` in the metric's units "
        "(std with ddof = 1 over seeds). Poisoned models are compared with the same "
        "defense trained on clean labels (same split, initialisation and training seed): "
        "`accuracy_drop` = clean-trained accuracy − poisoned-trained accuracy "
        "(docs/metrics.md).",
    ]
    adv = [p for p in parts if any(q["strategy"] == "adversarial" for q in p.poisonings)]
    if adv:
        lines += ["", "Adversarial (ALFA) flips ran on "
                  + ", ".join(sorted({d for p in adv for d in p.datasets}))
                  + " only: the attack's softmax-regression surrogate has an exact Hessian of "
                  "(K·(d + 1))² entries, and on mnist5k (d = 784) one cell's flips at rate "
                  "0.05 took 466 s on one core (see the suite file's header)."]
    return lines


def _noise_parts(parts: Sequence[PartResults]) -> list[PartResults]:
    return _parts_with(parts, lambda p: bool(p.poisonings))


def noise_section(parts: Sequence[PartResults], claims: Sequence[Any],
                  fig: str | None) -> list[str]:
    lines = [f"## {TOPICS['noise']}", ""]
    lines += claims_table(claims)
    noise = _noise_parts(parts)
    if not noise:
        return lines
    lines += ["", "Accuracy lost to the flips, mean ± std over seeds (each defense against "
              "itself trained on clean labels):", ""]
    defenses = list(dict.fromkeys(d for p in noise for d in p.defenses))
    rows = []
    for p in noise:
        for ds in p.datasets:
            for q in p.poisonings:
                rows.append([ds, q["id"], *(mean_std(p.agg(ds, d, "accuracy_drop",
                                                           poisoning=q["id"],
                                                           threat=q["id"]))
                                            for d in defenses)])
    lines += table(["dataset", "flips", *(f"`{d}`" for d in defenses)], rows)
    if fig:
        lines += ["", f"![accuracy drop vs flip rate]({fig})"]
    lines += ["", *xiao_section(noise)]
    return lines


def xiao_section(noise: Sequence[PartResults]) -> list[str]:
    """Adversarial vs random flips at the same rate (Xiao et al. 2012): a comparison of two
    threats, which the suite grammar (it compares defenses) cannot state."""
    rand: dict[tuple[str, float], tuple[PartResults, str]] = {}
    adv: dict[tuple[str, float], tuple[PartResults, str]] = {}
    for p in noise:
        for ds in p.datasets:
            for q in p.poisonings:
                into = {"random": rand, "adversarial": adv}.get(q["strategy"])
                if into is not None:
                    into[(ds, q["rate"])] = (p, q["id"])
    both = sorted(set(rand) & set(adv))
    if not both:
        return []
    lines = ["Do flips chosen by ALFA cost more accuracy than random flips at the same rate "
             f"({cite('xiao2012')})? The suite grammar compares defenses, not threats, so "
             "this is not a suite expectation; it is judged by the same function "
             "(`evaluate_expectations`) on the two aggregates:", ""]
    rows = []
    for ds, rate in both:
        pa, ida = adv[(ds, rate)]
        pr, idr = rand[(ds, rate)]
        for d in pa.defenses:
            if d not in pr.defenses:
                continue
            a = pa.agg(ds, d, "accuracy_drop", poisoning=ida, threat=ida)
            b = pr.agg(ds, d, "accuracy_drop", poisoning=idr, threat=idr)
            r = judge_pair(ds, pa.model, a, b, a_name=ida, b_name=idr,
                           metric="accuracy_drop", relation="above")
            rows.append([f"accuracy_drop under `{ida}` above `{idr}`", ds, f"`{d}`",
                         f"{num(r.a_mean)} vs {num(r.b_mean)}", effect(r),
                         f"{r.a_n}, {r.b_n}", verdict_cell(r)])
    return lines + table(["claim", "dataset", "defense", "a vs b (means)",
                          "effect: a − b ± 2 SE", "n (a, b)", "verdict"], rows)


def calibration_section(parts: Sequence[PartResults], claims: Sequence[Any],
                        fig: str | None) -> list[str]:
    lines = [f"## {TOPICS['calibration']}", ""]
    lines += claims_table(claims)
    cal = _parts_with(parts, lambda p: "calibration" in p.metrics)
    for p in cal:
        defenses = [d for d in p.defenses if bare(d) != "distillation"]
        lines += ["", f"Clean-label models of `{p.key}`, mean ± std over "
                  f"{len(p.seeds())} seeds (T*: the temperature fitted on the validation "
                  "split; T* > 1 over-confident, T* < 1 under-confident):", ""]
        rows = []
        for ds in p.datasets:
            for d in defenses:
                rows.append([ds, f"`{d}`",
                             *(mean_std(p.agg(ds, d, m)) for m in
                               ("clean_accuracy", "ece", "temperature", "nll",
                                "mean_entropy"))])
        lines += table(["dataset", "defense", "clean accuracy", "ECE", "T*", "NLL",
                        "entropy (nats)"], rows)
    for p in cal:
        words = eps_words(p)
        if words:
            lines += ["", *words]
    if fig:
        lines += ["", f"![ECE and T* vs label-smoothing eps]({fig})"]
    return lines


def eps_words(p: PartResults) -> list[str]:
    """ECE along the smoothing eps (0 = none) and the plain model's T*, in words."""
    series = sorted(((_ls_eps(d), spec_label(d)) for d in p.config["defenses"]
                     if _ls_eps(d) is not None), key=lambda t: t[0] or 0.0)
    if len(series) < 3:
        return []
    out = []
    for ds in p.datasets:
        eces = [(eps, p.agg(ds, label, "ece")) for eps, label in series]
        if any(a is None or a.get("mean") is None for _, a in eces):
            continue
        means = [float(a["mean"]) for _, a in eces]  # type: ignore[index]
        best = min(range(len(means)), key=means.__getitem__)
        shape = ("rises with every step of eps" if all(
            x < y for x, y in itertools.pairwise(means))
            else "falls with every step of eps" if all(
                x > y for x, y in itertools.pairwise(means))
            else "is U-shaped" if 0 < best < len(means) - 1
            else "is not monotone")
        t = p.agg(ds, "none", "temperature")
        conf = ""
        if t is not None and t.get("mean") is not None and t.get("n"):
            band = z_se() * float(t["std"]) / math.sqrt(t["n"])
            state = ("over-confident" if t["mean"] - band > 1 else
                     "under-confident" if t["mean"] + band < 1 else
                     "not clearly mis-calibrated (T* within 2 SE of 1)")
            conf = (f"the plain model's T* is {num(t['mean'])} ± {num(band)} (2 SE): "
                    f"{state}; ")
        grid = ", ".join(f"{num(m)} at eps {eps:g}" for (eps, _), m in zip(eces, means,
                                                                       strict=True))
        out.append(f"- {ds}: {conf}the ECE ({grid}) {shape}, lowest at eps "
                   f"{eces[best][0]:g}.")
    return out


def offmanifold_section(parts: Sequence[PartResults], claims: Sequence[Any]) -> list[str]:
    lines = [f"## {TOPICS['offmanifold']}", ""]
    lines += claims_table(claims)
    for p in _parts_with(parts, lambda p: "offmanifold" in p.metrics):
        defenses = [d for d in p.defenses if bare(d) != "distillation"]
        lines += ["", "Mean max-softmax on uniform noise in the input bounds and on Gaussian "
                  "noise with the training mean and std; alpha_star: median smallest α "
                  "(grid 1 .. 1e4) at which the confidence on α·u reaches 0.999; AUROC of "
                  "clean test inputs against the uniform noise (mean ± std):", ""]
        rows = []
        for ds in p.datasets:
            for d in defenses:
                rows.append([ds, f"`{d}`",
                             mean_std(p.agg(ds, d, "offmanifold_confidence", threat="uniform")),
                             mean_std(p.agg(ds, d, "gaussian_confidence", threat="gaussian")),
                             mean_std(p.agg(ds, d, "alpha_star", threat="uniform")),
                             mean_std(p.agg(ds, d, "offmanifold_auroc", threat="uniform"))])
        lines += table(["dataset", "defense", "uniform-noise confidence",
                        "Gaussian-noise confidence", "alpha_star", "AUROC"], rows)
    return lines


def _checks(part: PartResults) -> dict[tuple[str, str, str], list[tuple[int, dict]]]:
    by: dict[tuple[str, str, str], list[tuple[int, dict]]] = defaultdict(list)
    for c in part.doc["cells"]:
        if c["status"] != "ok" or c["poisoning"] is not None:
            continue
        for o in c.get("checks") or []:
            by[(spec_label(c["dataset"]), spec_label(c["defense"]), o["check"])].append(
                (c["seed"], o))
    return by


def _doc_link(ref: str) -> str:
    target = ref[len("docs/"):] if ref.startswith("docs/") else "../" + ref
    return f"[{ref}]({target})"


def flags_of(part: PartResults, dataset: str, defense: str) -> str:
    """``check k/n`` for each check that flagged the model in k of the n seeds that ran it."""
    by = _checks(part)
    out = []
    for (ds, d, name), outs in sorted(by.items()):
        if (ds, d) != (dataset, defense):
            continue
        k = sum(o["status"] == "flag" for _, o in outs)
        n = sum(o["status"] != "skipped" for _, o in outs)
        if k:
            out.append(f"`{name}` {k}/{n}")
    return ", ".join(out) if out else ("none" if by else "n/a")


def masking_lines(part: PartResults) -> list[str]:
    by = _checks(part)
    if not by:
        return ["The results carry no gradient-masking checks (no cell has a `checks` "
                "list): they come from a poisonlab without them. Regenerate after a run "
                "that has them to see the flags here."]
    rows = []
    n_flags = 0
    for ds in part.datasets:
        for d in part.defenses:
            names = sorted({k[2] for k in by if k[:2] == (ds, d)})
            ran = [nm for nm in names
                   if any(o["status"] != "skipped" for _, o in by[(ds, d, nm)])]
            skipped = [nm for nm in names if nm not in ran]
            example = "—"
            for nm in names:
                flagged = [(s, o) for s, o in by[(ds, d, nm)] if o["status"] == "flag"]
                n_flags += len(flagged)
                if flagged and example == "—":
                    s, o = flagged[0]
                    example = f"seed {s}: {o['message']} ({_doc_link(o['doc'])})"
            rows.append([ds, f"`{d}`", flags_of(part, ds, d), f"{len(ran)} of {len(names)}",
                         ", ".join(f"`{nm}`" for nm in skipped) or "none", example])
    checks_run = sorted({k[2] for k in by})
    head = (f"No gradient-masking check flagged any model ({len(checks_run)} checks per "
            f"model: {', '.join(f'`{c}`' for c in checks_run)}; docs/checks.md)."
            if not n_flags else
            f"The gradient-masking checks raised {n_flags} flags (docs/checks.md); a flag "
            "means the robust accuracy of that model is likely overstated.")
    return [head + " Per model, a flag counts the seeds that raised it out of the seeds "
            "that ran the check:", "",
            *table(["dataset", "defense", "flags (seeds)", "checks run", "skipped",
                    "one flag's message"], rows)]


def evasion_section(parts: Sequence[PartResults], claims: Sequence[Any],
                    fig: str | None) -> list[str]:
    lines = [f"## {TOPICS['evasion']}", ""]
    lines += claims_table(claims)
    for p in _parts_with(parts, lambda p: "evasion" in p.metrics and bool(p.attacks)):
        eps_ids = [f"{e['norm']} eps={x:g}" for e in p.config["evasion"] for x in e["eps"]]
        lines += ["", "Attack success rate (among points classified correctly when clean, the "
                  "fraction the attack flips) per attack, and the robust accuracy of the "
                  "per-sample worst case over all attacks, mean ± std:", ""]
        rows = []
        for ds in p.datasets:
            for t in eps_ids:
                for d in p.defenses:
                    rows.append([ds, t, f"`{d}`",
                                 mean_std(p.agg(ds, d, "clean_accuracy")),
                                 *(mean_std(p.agg(ds, d, "attack_success_rate", threat=t,
                                                  attack=a)) for a in p.attacks),
                                 mean_std(p.agg(ds, d, "robust_accuracy", threat=t,
                                                attack=WORST_CASE)),
                                 flags_of(p, ds, d)])
        lines += table(["dataset", "threat", "defense", "clean accuracy",
                        *(f"success: `{a}`" for a in p.attacks),
                        "robust accuracy (worst case)", "masking flags (seeds)"], rows)
        if fig:
            lines += ["", f"![attack success per attack and defense]({fig})"]
        lines += ["", *masking_lines(p)]
    return lines


def distillation_section(parts: Sequence[PartResults], claims: Sequence[Any]) -> list[str]:
    lines = [f"## {TOPICS['distillation']}", ""]
    lines += claims_table(claims)
    for p in parts:
        dist = [d for d in p.defenses if bare(d) == "distillation"]
        if not dist or "accuracy" not in p.metrics:
            continue
        lines += ["", "Students (same MLP, trained only on the teacher's outputs softened at "
                  "the temperature T) and their teachers (trained by the harness on the same "
                  "labels, another seed), clean test accuracy, mean ± std:", ""]
        rows = []
        for ds in p.datasets:
            for d in dist:
                rows.append([ds, f"`{d}`", mean_std(p.agg(ds, d, "teacher_accuracy")),
                             mean_std(p.agg(ds, d, "clean_accuracy"))])
        lines += table(["dataset", "student of", "teacher accuracy", "student accuracy"], rows)
    return lines


def information_section(parts: Sequence[PartResults], claims: Sequence[Any]) -> list[str]:
    lines = [f"## {TOPICS['information']}", "",
             "The estimate (docs/metrics.md) depends on the augmentation that makes the "
             "copies of an example: on 8 × 8 digits a one-pixel shift dominates the spread "
             "of an example's logit gap. The study measures it with two settings, and each "
             "claim is shown with its setting; read neither alone.", ""]
    lines += claims_table(claims, with_setting=True)
    for p in _parts_with(parts, lambda p: "information" in p.metrics):
        lines += ["", f"`{p.key}` ({info_setting(p)}), in nats (log N = "
                  f"{math.log((p.config.get('information') or {}).get('n_examples', 200)):.2f}"
                  " at most), with the logit and weight norms, mean ± std:", ""]
        rows = []
        for ds in p.datasets:
            for d in p.defenses:
                if bare(d) == "distillation":
                    continue
                rows.append([ds, f"`{d}`", mean_std(p.agg(ds, d, "mutual_information")),
                             mean_std(p.agg(ds, d, "logit_norm")),
                             mean_std(p.agg(ds, d, "weight_norm"))])
        lines += table(["dataset", "defense", "mutual information", "logit norm",
                        "weight norm"], rows)
    return lines


def references_section() -> list[str]:
    lines = ["## The papers, and what they reported", ""]
    for key, (citation, reported) in REFERENCES.items():
        lines.append(f"- <a id=\"{key}\"></a>{citation}: {reported}")
    return lines


# --------------------------------------------------------------------------- figures


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    _plt().close(fig)


def fig_accuracy_drop(parts: Sequence[PartResults], path: Path) -> bool:
    panels = []
    for p in _noise_parts(parts):
        for ds in p.datasets:
            for strategy in dict.fromkeys(q["strategy"] for q in p.poisonings):
                panels.append((p, ds, strategy))
    if not panels:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (p, ds, strategy) in zip(axes[0], panels, strict=True):
        qs = sorted((q for q in p.poisonings if q["strategy"] == strategy),
                    key=lambda q: q["rate"])
        for d in p.defenses:
            xs, ms, ss = [0.0], [0.0], [0.0]
            for q in qs:
                a = p.agg(ds, d, "accuracy_drop", poisoning=q["id"], threat=q["id"])
                if a is None or a.get("mean") is None:
                    continue
                xs.append(q["rate"])
                ms.append(a["mean"])
                ss.append(a["std"])
            line, = ax.plot(xs, ms, marker="o", label=d)
            ax.fill_between(xs, [m - s for m, s in zip(ms, ss, strict=True)],
                            [m + s for m, s in zip(ms, ss, strict=True)],
                            color=line.get_color(), alpha=0.15)
        ax.set_title(f"{ds}: {strategy} flips (n={len(p.seeds())} seeds)")
        ax.set_xlabel("flip rate")
        ax.set_ylabel("accuracy drop (mean ± std)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    _save(fig, path)
    return True


def _ls_eps(spec: Mapping[str, Any]) -> float | None:
    if spec["name"] == "none":
        return 0.0
    if spec["name"] == "label_smoothing":
        return float((spec.get("params") or {}).get("eps", 0.1))
    return None


def fig_ece(parts: Sequence[PartResults], path: Path) -> bool:
    cal = [p for p in parts if "calibration" in p.metrics
           and sum(_ls_eps(d) is not None for d in p.config["defenses"]) >= 3]
    if not cal:
        return False
    p = cal[0]
    series = sorted(((_ls_eps(d), spec_label(d)) for d in p.config["defenses"]
                     if _ls_eps(d) is not None), key=lambda t: t[0] or 0.0)
    plt = _plt()
    fig, axes = plt.subplots(1, len(p.datasets), figsize=(4.8 * len(p.datasets), 3.6),
                             squeeze=False)
    for ax, ds in zip(axes[0], p.datasets, strict=True):
        xs, em, es, tm, ts = [], [], [], [], []
        for eps, label in series:
            e, t = p.agg(ds, label, "ece"), p.agg(ds, label, "temperature")
            if e is None or t is None or e.get("mean") is None:
                continue
            xs.append(eps)
            em.append(e["mean"])
            es.append(e["std"])
            tm.append(t["mean"])
            ts.append(t["std"])
        ax.errorbar(xs, em, yerr=es, marker="o", color="C0", capsize=3, label="ECE")
        ts_ece = p.agg(ds, "temperature_scaling", "ece")
        if ts_ece is not None and ts_ece.get("mean") is not None:
            ax.axhline(ts_ece["mean"], color="C0", ls="--", lw=1,
                       label="ECE after temperature scaling")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xticks(xs, [f"{x:g}" for x in xs], fontsize=7)
        ax.set_xlabel("label-smoothing eps (0 = none; symlog axis)")
        ax.set_ylabel("ECE (mean ± std)", color="C0")
        ax.set_title(f"{ds} (n={len(p.seeds())} seeds)")
        ax2 = ax.twinx()
        ax2.errorbar(xs, tm, yerr=ts, marker="s", color="C3", capsize=3, label="T*")
        ax2.axhline(1.0, color="C3", ls=":", lw=1, label="T* = 1")
        ax2.set_ylabel("T* (> 1: over-confident)", color="C3")
        handles = ax.get_legend_handles_labels()
        handles2 = ax2.get_legend_handles_labels()
        ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=7,
                  loc="upper center")
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def fig_evasion(parts: Sequence[PartResults], path: Path) -> bool:
    ev = [p for p in parts if "evasion" in p.metrics and p.attacks]
    if not ev:
        return False
    p = ev[0]
    named = [r.expectation.threat for r in p.judged if r.expectation.metric in EVASION_METRICS]
    last = p.config["evasion"][0]
    threat = (max(set(named), key=named.count) if named
              else f"{last['norm']} eps={max(last['eps']):g}")
    plt = _plt()
    fig, axes = plt.subplots(1, len(p.datasets), figsize=(6.0 * len(p.datasets), 3.8),
                             squeeze=False)
    width = 0.8 / len(p.defenses)
    short = [bare(a) + (" margin" if "loss=margin" in a else "") for a in p.attacks]
    for ax, ds in zip(axes[0], p.datasets, strict=True):
        for j, d in enumerate(p.defenses):
            ms, ss = [], []
            for a in p.attacks:
                agg = p.agg(ds, d, "attack_success_rate", threat=threat, attack=a)
                ok = agg is not None and agg.get("mean") is not None
                ms.append(agg["mean"] if ok else 0.0)
                ss.append(agg["std"] if ok else 0.0)
            ax.bar([i + j * width for i in range(len(p.attacks))], ms, width, yerr=ss,
                   capsize=2, label=d)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(p.attacks))], short)
        ax.set_ylabel("attack success rate (mean ± std)")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{ds}, {threat} (n={len(p.seeds())} seeds)")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=7)
    _save(fig, path)
    return True


# --------------------------------------------------------------------------- the page


def render(parts: Sequence[PartResults], *, doc: Path, figures: Path, command: str,
           meta: Mapping[str, Any] | None = None) -> str:
    """Write the page (and its figures under ``figures``) from the parts' results."""
    rel = os.path.relpath(figures, doc.parent)
    figs = {}
    for name, make in (("accuracy_drop.png", fig_accuracy_drop), ("ece_vs_eps.png", fig_ece),
                       ("attack_success.png", fig_evasion)):
        figs[name] = f"{rel}/{name}" if make(parts, figures / name) else None
    claims = claims_by_topic(parts)
    sources = [f"`{_rel(p.path)}` ({p.doc['suite']['name']}, created {p.doc['created']}, "
               f"git {(p.doc['environment'].get('git') or 'unknown')[:12]}, "
               f"{p.doc['n_cells']} cells)" for p in parts]
    lines = [
        "<!-- GENERATED FILE: do not edit by hand. Regenerate it with `make study`, or "
        "`python -m benchmarks.study.label_smoothing --no-run` from existing runs. -->",
        "",
        "# The label-smoothing study",
        "",
        f"This page is generated, never edited by hand: `{command}` wrote it from these "
        "results (benchmarks/study/label_smoothing.py; every number below is read from "
        "them and every verdict is recomputed from their aggregates):",
        "",
        *(f"- {s}" for s in sources),
        "",
        "Does label smoothing (and flip augmentation, the confidence penalty, GCE) make a "
        "small classifier resist label flips, calibrate better, stay humbler off the data, "
        "resist evasion, teach a student well, and forget which training example it saw? "
        "Each claim of the literature is stated as an expectation in the suites "
        "(benchmarks/suites/label_smoothing_study.yaml and label_smoothing_study/), "
        "measured over several seeds, and given a verdict: holds, does not hold, or "
        "inconclusive at this scale.",
        "",
        *summary_section(parts),
        "",
        *design_section(parts, meta),
        "",
        *noise_section(parts, claims.get("noise", []), figs["accuracy_drop.png"]),
        "",
        *calibration_section(parts, claims.get("calibration", []), figs["ece_vs_eps.png"]),
        "",
        *offmanifold_section(parts, claims.get("offmanifold", [])),
        "",
        *evasion_section(parts, claims.get("evasion", []), figs["attack_success.png"]),
        "",
        *distillation_section(parts, claims.get("distillation", [])),
        "",
        *information_section(parts, claims.get("information", [])),
        "",
        *references_section(),
        "",
    ]
    text = "\n".join(lines)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return text


def generate(out: Path, *, doc: Path, figures: Path | None = None, entry: Path = ENTRY,
             command: str = "make study") -> str:
    """The page from the run folders under ``out`` (and ``out/study.json`` if present)."""
    parts = load_parts(out, entry)
    meta_path = out / STUDY_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    return render(parts, doc=doc, figures=figures or doc.with_suffix(""), command=command,
                  meta=meta)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study (unless ``--no-run``) and write the page. Exit 0, or 2 on bad input."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.study.label_smoothing",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--entry", type=Path, default=ENTRY, help="the study's entry suite")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="study folder: one run folder per suite (default %(default)s)")
    ap.add_argument("--doc", type=Path, default=DEFAULT_DOC,
                    help="the page to write (default %(default)s)")
    ap.add_argument("--figures", type=Path, default=None,
                    help="folder of the page's figures (default: the page's path without .md)")
    ap.add_argument("--workers", type=int, default=1, help="processes per suite run")
    ap.add_argument("--resume", action="store_true", help="finish interrupted run folders")
    ap.add_argument("--no-run", action="store_true",
                    help="only regenerate the page from the run folders under --out")
    ap.add_argument("--reduced", action="store_true",
                    help=f"the CI-sized grid ({CI_REDUCTION})")
    ap.add_argument("--no-reports", action="store_true",
                    help="skip each run's report.md/report.html (results.json only)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(args_list)
    command = shlex.join(["python", "-m", "benchmarks.study.label_smoothing", *args_list])
    reduction = CI_REDUCTION if args.reduced else None
    try:
        if not args.no_run:
            parts = load_study(args.entry, reduction=reduction)
            run_study(parts, args.out, workers=args.workers, resume=args.resume,
                      progress=not args.quiet, report=not args.no_reports,
                      reduction=reduction)
        generate(args.out, doc=args.doc, figures=args.figures, entry=args.entry,
                 command=command)
    except PoisonlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

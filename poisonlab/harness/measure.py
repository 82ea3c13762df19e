"""Measure one cell: poison, train, attack, measure -> a :class:`CellResult`.

Pure in its inputs: same cell, same suite settings, same machine -> the same numbers,
whichever executor runs it. No IO (but reading the cell's data set), no printing, no
knowledge of reports or the gate: the executors schedule cells, the runner stores their
records, stats and the report read them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._torch import child_seeds, validate_once
from ..attacks import LabelFlip, get_attack, security_curve
from ..attacks.transfer import SurrogateSpec, Transfer
from ..batching import DEFAULT_BATCH_SIZE
from ..data import Dataset, load_dataset
from ..defenses import Defense, get_defense
from ..defenses.compose import Compose
from ..defenses.distillation import Distillation
from ..errors import DataError, EvaluationWarning, PoisonlabError, first_line
from ..metrics import (
    HIGHER_IS_BETTER,
    RAY_ALPHAS,
    accuracy,
    alpha_star,
    brier,
    ece,
    gaussian_noise,
    logit_norm,
    mean_entropy,
    mutual_information,
    nll,
    offmanifold_auroc,
    offmanifold_confidence,
    poisoning_success_rate,
    predict_proba,
    ray_confidence,
    reliability,
    temperature,
    uniform_noise,
    weight_norm,
)
from ..models import build_model
from ..sanity import SuiteAttack, run_sanity
from ..training import train
from .certified import certified_measurements, check_certificates, flip_counts, twin_key
from .spec import (
    Cell,
    InformationSpec,
    Suite,
)

#: Order of the child seeds drawn from a cell's seed (append only: children are
#: index-stable, so a new slot leaves the others' seeds unchanged).
_SEED_SLOTS = ("model", "train", "flip", "attack", "noise", "surrogate", "teacher",
               "information", "checks")

#: Trained transfer surrogates and distillation teachers, keyed by everything that
#: determines them; a surrogate depends on the dataset split and its own seed, not on the
#: cell's defense or poisoning, so cells of one seed share it. Training is deterministic,
#: so the cache never changes a number, only the time.
_SURROGATES: OrderedDict[str, nn.Module] = OrderedDict()
_CPU = torch.device("cpu")
_SURROGATE_CACHE_SIZE = 8


def metric(name: str, value: float, *, threat: str | None = None,
           attack: str | None = None) -> dict[str, Any]:
    """One metric entry of a cell: the number, where it was measured, and its direction."""
    return {"metric": name, "value": value, "threat": threat, "attack": attack,
            "higher_is_better": HIGHER_IS_BETTER[name]}


@dataclass(frozen=True)
class CellResult:
    """What measuring one cell gives: plain numbers and their provenance, nothing else.

    ``metrics`` are metric entries (``{"metric", "value", "threat", "attack",
    "higher_is_better"}``, one per number, see :func:`metric`); ``sanity`` the outcomes of
    the sanity checks (``SanityOutcome.to_dict()``); ``internal`` what the runner needs to
    derive the poisoning metrics against the clean cell (never in results.json). A failed
    cell has ``status`` "failed", its one-line ``error`` and no numbers. ``to_record``
    is the JSON-ready record the store keeps and results.json lists.

    >>> r = CellResult(key="k", cell={"seed": 0}, status="failed", error="boom")
    >>> r.to_record()["checks"], r.ok
    ([], False)
    """

    key: str
    cell: dict[str, Any]
    status: str
    error: str | None = None
    dataset_summary: dict[str, Any] | None = None
    seeds: dict[str, int] | None = None
    poisoning_info: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    reliability: dict[str, Any] | None = None
    certified: dict[str, Any] | None = None
    sanity: list[dict[str, Any]] = field(default_factory=list)
    internal: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    device: str = "cpu"
    batch: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_record(self) -> dict[str, Any]:
        """The record of this cell as the store and results.json hold it."""
        record: dict[str, Any] = {"key": self.key, **self.cell, "status": self.status,
                                  "error": self.error}
        if self.ok:
            record.update(dataset_summary=self.dataset_summary, seeds=self.seeds,
                          poisoning_info=self.poisoning_info)
        record.update(metrics=self.metrics, reliability=self.reliability,
                      **({"certified": self.certified} if self.certified else {}),
                      checks=self.sanity, internal=self.internal,
                      timing={"wall_s": self.wall_s}, device=self.device, **self.batch)
        return record


def cell_stages(suite: Suite, cell: Cell) -> int:
    """How many times :func:`measure_cell` calls its ``tick``: training, each attack at each
    eps, the sanity checks, the off-manifold and the information metrics."""
    return (1 + ("evasion" in suite.metrics) * len(suite.attacks)
            * sum(len(e.eps) for e in suite.evasion)
            + _runs_checks(suite, cell)
            + ("offmanifold" in suite.metrics) + ("information" in suite.metrics))


def measure_cell(suite: Suite, cell: Cell, *, device: str | torch.device = "cpu",
                 tick: Callable[[str], None] | None = None) -> CellResult:
    """Run one cell (poison, train, attack, measure) and return its :class:`CellResult`.

    The cell's models (and its surrogates and teachers) are built on the CPU, so their
    initial weights do not depend on ``device``, then moved to ``device``, where they are
    trained, attacked and measured; random draws come from CPU generators and are moved,
    so they do not depend on it either. Label flips run on the CPU. Each model is probed
    once (:func:`~poisonlab._torch.validate_once`).

    A :class:`PoisonlabError` inside the cell (a diverging loss, too few labels for a
    pairwise flip) gives a failed result with its message; so does an unexpected
    exception, saying where it was raised. ``tick(stage)`` is called after each of the
    :func:`cell_stages` stages (an executor's progress bar); it changes no number.
    No IO but reading the cell's data set, no printing.
    """
    t0 = time.perf_counter()
    common = {"key": suite.key(cell), "cell": cell.to_dict(), "device": str(device),
              "batch": suite.batch_dict()}  # provenance: how much ran at once, never a number
    try:
        with validate_once():  # the cell's models are probed once each
            measured = _evaluate(suite, cell, tick or _no_tick, torch.device(device))
        return CellResult(status="ok", **measured, **common,
                          wall_s=round(time.perf_counter() - t0, 3))
    except PoisonlabError as e:
        error = str(e)
    except Exception as e:  # user code (a model's forward, a loss) or a poisonlab bug:
        # the cell fails saying where; the run goes on and reports it
        error = unexpected_error(e)
    return CellResult(status="failed", error=error, **common,
                      wall_s=round(time.perf_counter() - t0, 3))


def unexpected_error(e: BaseException) -> str:
    """One line for an exception no check anticipated: its type, message and where it was
    raised (file name and line, no folder: the line is the same on every machine)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return (f"unexpected {type(e).__name__}{where}: {first_line(e)} (raised "
            "by the model's or data's own code, or a poisonlab bug: please report it if the "
            "file is poisonlab's)")


def _no_tick(what: str) -> None:
    """A progress hook that shows nothing."""


def _runs_checks(suite: Suite, cell: Cell) -> bool:
    """The sanity checks run on every clean-label cell with evasion threats."""
    return ("evasion" in suite.metrics and bool(suite.evasion) and cell.poisoning is None
            and bool(suite.checks.enabled))


def _poison(cell: Cell, ds: Dataset, seed: int) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """The cell's training labels (flipped when it is poisoned) and what the flip did."""
    if cell.poisoning is None:
        return ds.y_train, None
    # The clean validation split is the objective of the "adversarial" strategy.
    flip = LabelFlip(cell.poisoning)(ds.x_train, ds.y_train, n_classes=ds.n_classes,
                                     seed=seed, x_val=ds.x_val, y_val=ds.y_val)
    return flip.y_poisoned, {"n_flipped": flip.n_flipped, "n_train": len(flip.y_poisoned)}


def _train_cell(suite: Suite, cell: Cell, ds: Dataset, y_train: torch.Tensor,
                seeds: dict[str, int], device: torch.device
                ) -> tuple[nn.Module, list[nn.Module]]:
    """Build and train the cell's model under its defense; the teachers it trained."""
    model = build_model(cell.model.name, ds.input_shape, ds.n_classes, seed=seeds["model"],
                        **cell.model.kwargs).to(device)
    tr = suite.training
    teachers: list[nn.Module] = []

    def teacher(spec: SurrogateSpec) -> nn.Module:  # trained on this cell's labels
        t = _auxiliary(suite, cell, ds, spec, seeds["teacher"], y_train,
                       labels=cell.poison_id, device=device)
        teachers.append(t)
        return t

    defense = with_teachers(get_defense(cell.defense.name, **cell.defense.kwargs), teacher)
    # Post-hoc defenses (temperature scaling) are fitted on the validation split and
    # return a wrapper: use what train() returns.
    model = train(model, ds.x_train, y_train, defense=defense, epochs=tr.epochs,
                  batch_size=tr.batch_size, lr=tr.lr, weight_decay=tr.weight_decay,
                  seed=seeds["train"], x_val=ds.x_val, y_val=ds.y_val, bounds=ds.bounds)
    return model, teachers


def _evaluate(suite: Suite, cell: Cell, tick: Callable[[str], None] = _no_tick,
              device: torch.device = _CPU) -> dict[str, Any]:
    """The fields of an ok :class:`CellResult`: every number of the cell."""
    seeds = dict(zip(_SEED_SLOTS, child_seeds(cell.seed, len(_SEED_SLOTS)), strict=True))
    ds = load_dataset(cell.dataset.name, seed=cell.seed, **cell.dataset.kwargs)
    y_train, poison_info = _poison(cell, ds, seeds["flip"])
    model, teachers = _train_cell(suite, cell, ds, y_train, seeds, device)
    tick("trained")

    bs = suite.batch_size
    probs = predict_proba(model, ds.x_test, bs)
    pred_clean = probs.argmax(dim=1)
    out, diagram = _clean_metrics(suite, model, ds, probs)
    certified, radii = None, None
    if "accuracy" in suite.metrics:
        # The clean test accuracy of each distillation teacher the harness trained, to set
        # beside its student's.
        out += [metric("teacher_accuracy",
                       accuracy(predict_proba(t, ds.x_test, bs).argmax(dim=1), ds.y_test))
                for t in teachers]
        # A partition ensemble's certificates (nothing for any other model).
        flips = flip_counts(suite.certified_flips, [p.rate for p in suite.poisoning],
                            len(ds.x_train))
        found, certified, radii = certified_measurements(
            model, ds.x_test, ds.y_test, flips=flips, batch_size=bs, metric=metric)
        out += found
    sanity: list[dict[str, Any]] = []
    if "evasion" in suite.metrics:
        def surrogate(spec: SurrogateSpec) -> nn.Module:  # trained on clean labels
            return _auxiliary(suite, cell, ds, spec, seeds["surrogate"], ds.y_train,
                              labels="clean", device=device)

        runs: list[SuiteAttack] = []
        out += _evasion(suite, model, ds.x_test, ds.y_test, ds.n_classes, ds.bounds,
                        seeds["attack"], surrogate, tick, collect=runs)
        if _runs_checks(suite, cell):
            # After every metric of the group: the probes draw from their own seed and
            # change no number above.
            sanity = [o.to_dict() for o in run_sanity(
                model, ds.x_test, ds.y_test,
                groups=[e.threats(ds.bounds) for e in suite.evasion],
                settings=suite.checks, seed=seeds["checks"], suite_results=runs,
                surrogate=lambda: surrogate(SurrogateSpec()), batch_size=bs)]
            tick("sanity checks")
    if "offmanifold" in suite.metrics:
        out += _offmanifold(suite, model, ds.x_train, ds.x_test, ds.input_shape, ds.bounds,
                            seeds["noise"])
        tick("off-manifold")
    if "information" in suite.metrics:
        out += _information(suite.information, model, ds, seeds["information"],
                            batch_size=bs)
        tick("information")
    if poison_info is not None:
        out.append(metric("n_flipped", float(poison_info["n_flipped"]),
                          threat=cell.poison_id))
    return {
        "dataset_summary": ds.summary(),
        "seeds": seeds,
        "poisoning_info": poison_info,
        "metrics": out,
        "reliability": diagram,
        "certified": certified,
        "sanity": sanity,
        # Needed to derive the poisoning metrics (and check the certificates) against the
        # clean cell; not in results.json.
        "internal": {"pred_clean": pred_clean.tolist(), "y_test": ds.y_test.tolist(),
                     **({"certified_radii": radii} if radii is not None else {})},
    }


def with_teachers(defense: Defense, teacher: Callable[[SurrogateSpec], nn.Module]) -> Defense:
    """``defense`` with every declared distillation teacher trained by ``teacher``."""
    if isinstance(defense, Compose):
        members = [with_teachers(m, teacher) for m in defense.members()]
        return dataclasses.replace(defense, defenses=tuple(members))
    if isinstance(defense, Distillation) and defense.needs_teacher:
        return defense.with_teacher(teacher(defense.teacher))
    return defense


def _clean_metrics(suite: Suite, model: nn.Module, ds: Dataset, probs: torch.Tensor
                   ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Accuracy and calibration on the clean test split; the reliability diagram's data.

    Returns the metric records and the reliability data (None without "calibration").
    """
    out: list[dict[str, Any]] = []
    if "accuracy" in suite.metrics:
        out.append(metric("clean_accuracy", accuracy(probs.argmax(dim=1), ds.y_test)))
    if "calibration" not in suite.metrics:
        return out, None
    out += [metric("ece", ece(probs, ds.y_test)), metric("nll", nll(probs, ds.y_test)),
            metric("brier", brier(probs, ds.y_test)),
            # Fitted on the validation split, on the model as deployed.
            metric("temperature", temperature(model, ds.x_val, ds.y_val,
                                              batch_size=suite.batch_size)),
            metric("mean_entropy", mean_entropy(probs))]
    return out, reliability(probs, ds.y_test)


def _information(spec: InformationSpec, model: nn.Module, ds: Dataset,
                 seed: int, *, batch_size: int | None = DEFAULT_BATCH_SIZE
                 ) -> list[dict[str, Any]]:
    """Mutual information on clean training examples, logit norm on test, weight norm.

    A class of ``spec.classes`` with fewer than 2 training examples leaves the mutual
    information undefined (NaN, with an EvaluationWarning) rather than failing the cell.
    """
    try:
        mi = mutual_information(model, ds.x_train, ds.y_train, classes=spec.classes,
                                n_examples=spec.n_examples, n_augment=spec.n_augment,
                                bounds=ds.bounds, seed=seed, shift=spec.shift,
                                noise=spec.noise, batch_size=batch_size)
    except DataError as e:
        warnings.warn(f"mutual_information is undefined: {e}", EvaluationWarning,
                      stacklevel=2)
        mi = math.nan
    return [metric("mutual_information", mi),
            metric("logit_norm", logit_norm(model, ds.x_test, batch_size=batch_size)),
            metric("weight_norm", weight_norm(model))]


def _auxiliary(suite: Suite, cell: Cell, ds: Dataset, spec: SurrogateSpec,
               default_seed: int, y: torch.Tensor, *, labels: str,
               device: torch.device = _CPU) -> nn.Module:
    """Train (or reuse) a transfer surrogate or a distillation teacher on ``(x_train, y)``.

    ``labels`` names the label set (``"clean"`` or the cell's poisoning id) in the cache key.
    """
    name = spec.model or cell.model.name
    params = dict(spec.model_params) if spec.model else cell.model.kwargs
    seed = spec.seed if spec.seed is not None else default_seed
    key = json.dumps([cell.dataset.to_dict(), cell.seed, labels, name, params, spec.defense,
                      dict(spec.defense_params), seed, suite.training.to_dict(),
                      str(device)],
                     sort_keys=True)
    if key in _SURROGATES:
        _SURROGATES.move_to_end(key)
        return _SURROGATES[key]
    s_model, s_train = child_seeds(seed, 2)
    model = build_model(name, ds.input_shape, ds.n_classes, seed=s_model, **params).to(device)
    tr = suite.training
    model = train(model, ds.x_train, y,
                  defense=get_defense(spec.defense, **dict(spec.defense_params)),
                  epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr,
                  weight_decay=tr.weight_decay, seed=s_train, x_val=ds.x_val, y_val=ds.y_val,
                  bounds=ds.bounds)
    _SURROGATES[key] = model
    if len(_SURROGATES) > _SURROGATE_CACHE_SIZE:
        _SURROGATES.popitem(last=False)
    return model


def _evasion(suite: Suite, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             n_classes: int, bounds: tuple[float, float], seed: int,
             surrogate: Callable[[SurrogateSpec], nn.Module],
             tick: Callable[[str], None] = _no_tick, *,
             collect: list[SuiteAttack] | None = None) -> list[dict[str, Any]]:
    """Robust accuracy and attack success per attack and threat, and the per-sample worst
    case over attacks; ``collect``, if given, receives every AttackResult (for the checks).

    Each attack runs ``suite.attack_batch_size(i)`` inputs at a time and keeps only the
    per-sample outcomes (``keep_adv=False``): nothing here reads the adversarial examples.
    """
    out: list[dict[str, Any]] = []
    # One child seed per (threat group, attack), then one per group for its targets;
    # SeedSequence children are index-stable, so the attack seeds do not depend on the rest.
    n_attack_seeds = len(suite.evasion) * len(suite.attacks)
    all_seeds = child_seeds(seed, n_attack_seeds + len(suite.evasion))
    attack_seeds, target_seeds = all_seeds[:n_attack_seeds], all_seeds[n_attack_seeds:]
    for gi, spec in enumerate(suite.evasion):
        threats = spec.threats(bounds)
        target = None
        if spec.targeted:
            g = torch.Generator().manual_seed(target_seeds[gi])
            target = (y + torch.randint(1, n_classes, y.shape, generator=g)) % n_classes
        # Per threat: samples still correctly classified under every attack so far.
        robust_all = {t.id: torch.ones(len(y), dtype=torch.bool) for t in threats}
        for ai, a in enumerate(suite.attacks):
            attack = get_attack(a.name, **a.kwargs)
            if isinstance(attack, Transfer) and attack.needs_training:
                attack = attack.with_surrogate(surrogate(attack.surrogate))
            results = security_curve(attack, model, x, y, threats=threats,
                                     seed=attack_seeds[gi * len(suite.attacks) + ai],
                                     target=target,
                                     on_result=lambda t, _r, a=a: tick(f"{a.label} {t.id}"),
                                     batch_size=suite.attack_batch_size(ai), keep_adv=False)
            for t, r in zip(threats, results, strict=True):
                out.append(metric("robust_accuracy", r.robust_accuracy, threat=t.id,
                                  attack=a.label))
                out.append(metric("attack_success_rate", r.attack_success_rate,
                                  threat=t.id, attack=a.label))
                # an ensemble (autoattack): which component fooled each point first
                out += [metric("fooled_first_by", float(count / len(y)), threat=t.id,
                               attack=f"{a.label}: {component}")
                        for component, count in r.breakdown().items()]
                robust_all[t.id] &= (r.pred_adv == r.y).cpu()
                if collect is not None:
                    collect.append(SuiteAttack(a.label, attack.knowledge, r))
        if len(suite.attacks) > 1:
            # The reported robustness is the worst case over every attack, per sample.
            for t in threats:
                still = robust_all[t.id]
                out.append(metric("robust_accuracy", float(still.numpy().mean()),
                                  threat=t.id, attack="worst-case"))
    return out


def _offmanifold(suite: Suite, model: nn.Module, x_train: torch.Tensor,
                 x_test: torch.Tensor, input_shape: tuple[int, ...],
                 bounds: tuple[float, float], seed: int) -> list[dict[str, Any]]:
    s_uniform, s_gauss = child_seeds(seed, 2)
    # The noise is drawn whole (on the CPU) before any batching: the same for every
    # batch size.
    u = uniform_noise(suite.n_noise, input_shape, bounds, s_uniform)
    g = gaussian_noise(suite.n_noise, x_train, s_gauss)
    bs = suite.batch_size
    out = [
        metric("offmanifold_confidence", offmanifold_confidence(model, u, batch_size=bs),
               threat="uniform"),
        metric("gaussian_confidence", offmanifold_confidence(model, g, batch_size=bs),
               threat="gaussian"),
        metric("alpha_star", alpha_star(model, u, batch_size=bs), threat="uniform"),
        metric("offmanifold_auroc", offmanifold_auroc(model, x_test, u, batch_size=bs),
               threat="uniform"),
    ]
    rays = ray_confidence(model, x_test, RAY_ALPHAS, batch_size=bs)
    out += [metric("ray_confidence", v, threat=f"alpha={a:g}") for a, v in rays.items()]
    return out


def derive_poisoning(records: list[dict[str, Any]]) -> None:
    """Add accuracy_drop and poisoning_success_rate to each poisoned record, in place.

    The reference is the clean cell with the same dataset, model, defense and seed (same
    split, same initialisation, same training randomness: only the labels differ). A
    poisoned partition-aggregation record also gets its certificate check
    (:func:`~poisonlab.harness.certified.check_certificates`).
    """
    check_certificates(records)

    clean = {twin_key(r): r for r in records if r["poisoning"] is None and r["status"] == "ok"}
    for r in records:
        if r["poisoning"] is None or r["status"] != "ok":
            continue
        ref = clean.get(twin_key(r))
        if ref is None:
            continue
        p = r["poisoning"]
        y = np.asarray(r["internal"]["y_test"])
        pc = np.asarray(ref["internal"]["pred_clean"])
        pp = np.asarray(r["internal"]["pred_clean"])
        pairwise = p["strategy"] == "pairwise"
        asr = poisoning_success_rate(pc, pp, y, source=p["source"] if pairwise else None,
                                     target=p["target"] if pairwise else None)
        r["metrics"] = [m for m in r["metrics"]
                        if m["metric"] not in ("accuracy_drop", "poisoning_success_rate")]
        r["metrics"] += [
            metric("accuracy_drop", accuracy(pc, y) - accuracy(pp, y), threat=p["id"]),
            metric("poisoning_success_rate", asr, threat=p["id"]),
        ]

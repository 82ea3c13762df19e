"""Evaluate your own trained model on your own data, without training (``poisonlab evaluate``).

The model is ``"package.module:factory"`` (or a registered architecture) with a
``state_dict`` file loaded by ``torch.load(weights_only=True)``; the data is an ``.npz``
file, a folder of memory-mapped ``.npy`` arrays, an image folder (see
:mod:`poisonlab.data_sources`), a ``"package.module:function"`` or a registered dataset
(see :mod:`poisonlab.data`).
The measurements are :func:`evaluate_model`'s: clean accuracy,
calibration (with the reliability diagram's data), evasion (robust accuracy and attack
success per eps and attack, with the per-sample worst case), off-manifold confidence and
the information metrics (mutual information, logit and weight norms).

The output folder gets a schema-valid ``results.json`` holding one cell whose defense is
``pretrained`` (the model as given; nothing trained, no poisoning) and the usual
``report.md`` / ``report.html``. A folder holding a suite run is refused; an earlier
``evaluate`` result in the folder is replaced.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write
from .._torch import child_seeds, probe_model, probes_quiet, validate_once
from .._validation import (
    validate_device,
    validate_distinct,
    validate_model,
    validate_scalar,
    validate_seed,
)
from ..attacks import get_attack
from ..attacks.transfer import SurrogateSpec
from ..batching import DEFAULT_BATCH_SIZE, validate_batch_size
from ..data import Dataset, load_dataset, load_npz
from ..errors import ConfigError
from ..input_sanity import warn_threat_scale
from ..metrics import (
    predict_proba,
)
from ..models import build_model
from ..registry import split_named
from ..sanity import SanitySettings, SuiteAttack, run_sanity
from ..threat import EvasionThreat, Norm, ThreatModel
from .measure import (
    _SEED_SLOTS,
    _clean_metrics,
    _evasion,
    _information,
    _offmanifold,
)
from .runner import build_results, prepare_out
from .schema import RESULTS_NAME
from .spec import (
    METRIC_GROUPS,
    PRETRAINED,
    SUITE_VERSION,
    EvasionSpec,
    InformationSpec,
    Spec,
    Suite,
    group_threats,
)
from .suite import split_batch_size, validate_n_noise, validate_suite_seed

#: Order of the child seeds drawn from a cell's seed (append only: children are
#: index-stable, so a new slot leaves the others' seeds unchanged).

def load_data(data: str | Path, *, seed: int = 0) -> tuple[Dataset, dict[str, Any]]:
    """Load ``data`` and its ``{"name", "params"}`` spec for results.json.

    ``data`` is tried in this order: an ``.npz`` path or any existing file; a folder (or
    file-name prefix) holding ``x_test.npy`` (memory-mapped arrays, ``npy``); any other
    folder (an image folder: ``train/`` and ``test/`` sub-folders, or itself one
    ``ImageFolder`` that is the test set); else a dataset name or
    ``"package.module:function"``. Without training images or arrays the training and
    validation splits are empty: the Gaussian noise (training mean/std), the mutual
    information (training examples) and the temperature (validation split) are NaN.
    """
    if not isinstance(data, str | Path):
        raise ConfigError(f"data={data!r} is not allowed: expected an .npz path, a folder, "
                          "'package.module:function' or a dataset name")
    if str(data).endswith(".npz") or Path(data).is_file():
        return load_npz(data, seed=seed), {"name": "npz", "params": {"path": str(data)}}
    from ..data_folders import load_arrays, load_image_folder

    p = Path(data)
    if (p / "x_test.npy").is_file() or (not p.is_dir() and Path(f"{data}x_test.npy").is_file()):
        ds = load_arrays(data, seed=seed, test_only=True)
        return ds, {"name": "npy", "params": {"path": str(data)}}
    if p.is_dir():
        ds = load_image_folder(data, seed=seed, test_only=True)
        return ds, {"name": "image_folder", "params": {"root": str(data)}}
    return load_dataset(str(data), seed=seed), {"name": str(data), "params": {}}


#: What :func:`evaluate_model` measures by default (poisoning needs training, so never).
PRETRAINED_METRICS: tuple[str, ...] = ("accuracy", "calibration", "evasion", "offmanifold",
                                       "information")


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    threats: Sequence[EvasionSpec | EvasionThreat] | ThreatModel = (),
    attacks: Sequence[str | Mapping[str, Any] | Spec] = (),
    seed: int = 0,
    metrics: Sequence[str] = PRETRAINED_METRICS,
    n_noise: int = 1000,
    information: InformationSpec | Mapping[str, Any] | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> list[dict[str, Any]]:
    """Evaluate an already trained model on ``dataset``'s test split, without training.

    The same measurements as a suite cell (clean accuracy, calibration, evasion under every
    threat and attack with a per-sample worst case, off-manifold confidence, the
    information metrics), with seeds derived from ``seed`` exactly as in a cell.

    Parameters
    ----------
    model : nn.Module
        Returns logits of shape (n, dataset.n_classes) for inputs inside ``dataset.bounds``.
    dataset : Dataset
        ``x_test``/``y_test``, ``x_val``/``y_val`` (for the temperature) and
        ``x_train``/``y_train`` (Gaussian noise, mutual information) are used.
    threats : sequence of EvasionSpec or EvasionThreat, or a ThreatModel
        Consecutive threats with the same norm, targeting and bounds form one group (one
        attack seed per group and attack, like a suite's ``threat_model.evasion`` entry).
        An EvasionSpec without bounds uses the dataset's. A ThreatModel gives its evasion
        threats (one with poisoning is refused: a trained model cannot be poisoned).
    attacks : sequence of str, mapping with ``name`` or Spec
        E.g. ``["fgsm", {"name": "pgd", "steps": 40}]``. Transfer attacks that need a
        trained surrogate are refused (nothing is trained here). A ``batch_size`` in an
        attack's mapping is that attack's batch size (a call argument: it is not passed to
        the attack's constructor and is not part of its label).
    seed : int >= 0
    metrics : sequence of "accuracy", "calibration", "evasion", "offmanifold", "information"
    n_noise : int >= 10
        Noise inputs for the off-manifold metrics.
    information : InformationSpec or mapping with ``classes``, ``n_examples``, ``n_augment``
        Settings of the mutual information (a suite's ``information:`` block); default
        classes (0, 1), 200 examples, 32 augmentations.
    batch_size : int >= 1 or None
        Test inputs per forward pass of every attack, metric and sanity check (None: all
        at once; default 256). It changes memory and speed, never a number beyond float
        rounding (docs/batching.md).

    Returns
    -------
    list of metric records ``{"metric", "value", "threat", "attack", "higher_is_better"}``,
    the same records as a cell's ``metrics``. :func:`evaluate_model_details` also returns
    the reliability diagram's data and runs the sanity checks (skipped here: they change
    no metric).

    Raises
    ------
    ConfigError
        Unknown attacks, metrics or parameters; threats without attacks or the reverse; a
        model whose output does not fit the dataset.
    """
    return evaluate_model_details(model, dataset, threats=threats, attacks=attacks, seed=seed,
                                  metrics=metrics, n_noise=n_noise,
                                  information=information,
                                  checks=SanitySettings(enabled=()),
                                  batch_size=batch_size)["metrics"]


def evaluate_model_details(
    model: nn.Module,
    dataset: Dataset,
    *,
    threats: Sequence[EvasionSpec | EvasionThreat] | ThreatModel = (),
    attacks: Sequence[str | Mapping[str, Any] | Spec] = (),
    checks: SanitySettings | Mapping[str, Any] | None = None,
    seed: int = 0,
    metrics: Sequence[str] = PRETRAINED_METRICS,
    n_noise: int = 1000,
    information: InformationSpec | Mapping[str, Any] | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """:func:`evaluate_model` with everything a cell record holds besides the metrics.

    Same parameters and errors as :func:`evaluate_model`, and ``checks``: the sanity
    checks' settings (:class:`poisonlab.sanity.SanitySettings` or a suite's ``checks:``
    mapping; default: every check). They run with the "evasion" group and threats; the
    transfer probe is skipped (nothing is trained here).

    Returns
    -------
    dict with ``"metrics"`` (the metric records :func:`evaluate_model` returns),
    ``"reliability"`` (:func:`poisonlab.metrics.reliability` of the clean test split, as in
    a cell record; None without the "calibration" group) and ``"checks"`` (the sanity
    checks' outcomes as in a cell record, :meth:`poisonlab.sanity.SanityOutcome.to_dict`;
    empty without evasion threats).
    """
    seed = validate_seed("seed", seed)
    batch_size = validate_batch_size("batch_size", batch_size)
    validate_model(model)
    sanity_settings, n_noise, info, specs, a_specs, a_batch, grad_attack = _settings(
        dataset, threats=threats, attacks=attacks, checks=checks, metrics=metrics,
        n_noise=n_noise, information=information)
    # One probe of the model here; every call below answers from it (validate_once).
    with validate_once():
        k = probe_model(model, dataset.x_test, input_grad=bool(grad_attack), what=grad_attack)
        if k != dataset.n_classes:
            raise ConfigError(f"the model returns {k} logits per input: expected logits of shape "
                              f"(n, {dataset.n_classes}) for the dataset's {dataset.n_classes} "
                              "classes")
        if "information" in metrics:
            for i, c in enumerate(info.classes):
                if c >= dataset.n_classes:
                    raise ConfigError(f"information: classes[{i}]={c} is not allowed: expected a "
                                      f"class id in [0, {dataset.n_classes - 1}]")
        suite = Suite(name="evaluate", version=SUITE_VERSION, description="", datasets=(),
                      models=(), defenses=(), poisoning=(), evasion=tuple(specs),
                      attacks=tuple(a_specs), seeds=(seed,),
                      metrics=tuple(m for m in METRIC_GROUPS if m in metrics), n_noise=n_noise,
                      information=info, batch_size=batch_size, attack_batch_sizes=tuple(a_batch))
        seeds = dict(zip(_SEED_SLOTS, child_seeds(seed, len(_SEED_SLOTS)), strict=True))
        # The model was probed above (one warning at most): poisonlab's own calls after
        # it stay quiet.
        with probes_quiet():
            ds = dataset
            probs = predict_proba(model, ds.x_test, batch_size)
            out, diagram = _clean_metrics(suite, model, ds, probs)
            checks_out: list[dict[str, Any]] = []
            if "evasion" in suite.metrics and specs:
                def no_surrogate(spec: SurrogateSpec) -> nn.Module:
                    raise ConfigError("a transfer attack with a surrogate to train is not "
                                      "available for a pretrained model: give the transfer "
                                      "attack a trained surrogate or evaluate it in a suite")

                runs: list[SuiteAttack] = []
                out += _evasion(suite, model, ds.x_test, ds.y_test, ds.n_classes, ds.bounds,
                                seeds["attack"], no_surrogate, collect=runs)
                checks_out = [o.to_dict() for o in run_sanity(
                    model, ds.x_test, ds.y_test, groups=[e.threats(ds.bounds) for e in specs],
                    settings=sanity_settings, seed=seeds["checks"], suite_results=runs,
                    batch_size=batch_size)]
            if "offmanifold" in suite.metrics:
                out += _offmanifold(suite, model, ds.x_train, ds.x_test, ds.input_shape, ds.bounds,
                                    seeds["noise"])
            if "information" in suite.metrics:
                out += _information(info, model, ds, seeds["information"],
                                    batch_size=batch_size)
        return {"metrics": out, "reliability": diagram, "checks": checks_out}


def _settings(dataset: Dataset, *, threats: Sequence[EvasionSpec | EvasionThreat] | ThreatModel,
              attacks: Sequence[str | Mapping[str, Any] | Spec],
              checks: SanitySettings | Mapping[str, Any] | None, metrics: Sequence[str],
              n_noise: int, information: InformationSpec | Mapping[str, Any] | None
              ) -> tuple[SanitySettings, int, InformationSpec, list[EvasionSpec], list[Spec],
                         list[int | None], str]:
    """:func:`evaluate_model_details`' settings, checked: the checks, ``n_noise``, the
    information settings, the threat groups, the attack specs and batch sizes, and the
    first attack that needs the model's input gradients ("" if none)."""
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"dataset={dataset!r} is not allowed: expected a Dataset "
                          "(load_dataset(name), load_npz(path) or as_dataset(arrays, name=...))")
    if isinstance(metrics, str):
        raise ConfigError(f"metrics={metrics!r} is not allowed: expected a list of "
                          f"{', '.join(PRETRAINED_METRICS)}")
    sanity_settings = SanitySettings.from_config(checks)
    n_noise = validate_scalar("n_noise", n_noise, lo=10, integer=True)
    for m in metrics:
        if m not in PRETRAINED_METRICS:
            raise ConfigError(f"metrics={m!r} is not allowed: expected one of "
                              f"{', '.join(PRETRAINED_METRICS)}")
    if information is None:
        info = InformationSpec()
    elif isinstance(information, InformationSpec):
        info = information
    elif isinstance(information, Mapping):
        allowed = ("classes", "n_examples", "n_augment")
        for k in information:
            if k not in allowed:
                raise ConfigError(f"information got unknown key {k!r}: expected one of "
                                  f"{', '.join(allowed)}")
        info = InformationSpec(**information)
    else:
        raise ConfigError(f"information={information!r} is not allowed: expected a mapping "
                          "{classes: [a, b], n_examples: int, n_augment: int}")
    if isinstance(threats, ThreatModel):  # its evasion threats; no poisoning after training
        threats = _threats_of(threats, (), Norm.LINF, dataset.bounds)
    specs = group_threats(threats)
    a_specs, a_batch = [], []
    for a in attacks:
        spec, bs = split_batch_size(_as_spec(a))
        a_specs.append(spec)
        a_batch.append(bs)
    if "evasion" in metrics and bool(specs) != bool(a_specs):
        missing = "attacks" if specs else "threats"
        raise ConfigError(f"{missing} is empty: evasion needs both threats and attacks")
    grad_attack = ""  # the first attack that differentiates the model, if any runs
    for a in a_specs:
        attack = get_attack(a.name, **a.kwargs)
        if not grad_attack and "evasion" in metrics and specs and attack.needs_gradients():
            grad_attack = f"attack {attack.name!r}"
        for e in specs:
            attack.validate_threat(e.threats(dataset.bounds)[0])
    if "evasion" in metrics and specs:  # an eps out of scale with the data: a warning
        x = dataset.x_test
        data_range = (float(x.min()), float(x.max()))
        for j, e in enumerate(specs):
            warn_threat_scale(f"threats[{j}]", e.eps, e.norm.value,
                              bounds=e.bounds or dataset.bounds, data_range=data_range,
                              n_features=math.prod(dataset.input_shape))
    return sanity_settings, n_noise, info, specs, a_specs, a_batch, grad_attack


def _as_spec(a: str | Mapping[str, Any] | Spec) -> Spec:
    if isinstance(a, Spec):
        return a
    named = split_named(a)
    if named is not None:
        return Spec.of(*named)
    raise ConfigError(f"attack={a!r} is not allowed: expected a name or a mapping with 'name'")


def _threats_of(threat_model: ThreatModel | None, eps: Sequence[float], norm: Norm | str,
                bounds: tuple[float, float]) -> list[EvasionThreat]:
    """The evasion threats of :func:`evaluate_pretrained`: a ThreatModel's, or one per eps."""
    if threat_model is None:
        return [EvasionThreat(norm=norm, eps=e, bounds=bounds) for e in eps]
    if not isinstance(threat_model, ThreatModel):
        raise ConfigError(f"threat_model={threat_model!r} is not allowed: expected a "
                          "poisonlab.ThreatModel")
    if eps:
        raise ConfigError("eps and threat_model are both given: expected the threats once "
                          "(the ThreatModel's evasion, or eps with norm)")
    if threat_model.poisoning:
        raise ConfigError(f"threat_model.poisoning={[p.id for p in threat_model.poisoning]} "
                          "is not allowed here: a trained model cannot be poisoned any "
                          "more; run a suite to measure poisoning")
    return list(threat_model.evasion)


def evaluate_pretrained(
    model: str,
    weights: str | Path,
    data: str,
    out: str | Path,
    *,
    eps: Sequence[float] = (),
    norm: Norm | str = Norm.LINF,
    attacks: Sequence[str | Mapping[str, Any]] = ("pgd",),
    seed: int = 0,
    n_noise: int = 1000,
    report: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    model_params: Mapping[str, Any] | None = None,
    threat_model: ThreatModel | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on a dataset's test split and write results to ``out``.

    Parameters
    ----------
    model : str
        ``"package.module:factory"`` or a registered architecture name.
    weights : path
        Its ``state_dict`` (``torch.save(model.state_dict(), path)``).
    data : str
        An ``.npz`` path, a folder of ``.npy`` arrays or images (see :func:`load_data`),
        ``"package.module:function"`` or a registered dataset name.
    out : path
        Output folder (created); gets results.json, report.md, report.html.
    eps : sequence of float >= 0
        Evasion budgets; empty: no evasion metrics.
    norm : "linf" | "l2"
    attacks : sequence of attack names or ``{name: ..., **params}`` mappings
    seed : int >= 0
        Seeds the validation split, the attacks and the noise, as in a suite cell.
    n_noise : int >= 10
    report : bool
        Also write report.md and report.html.
    device : "cpu", "cuda", "cuda:N", "auto" or torch.device
        Where the model is evaluated: it is built (and its weights loaded) on the CPU, then
        moved there; the data stays on the CPU and is moved batch by batch, and the random
        draws (noise, attack starts) are made on CPU generators, so they do not depend on
        it. Recorded in the cell as ``device``.
    batch_size : int >= 1 or None
        Test inputs per forward pass of every attack, metric and sanity check (None: all
        at once); an attack's ``{name: ..., batch_size: n}`` overrides it for that attack.
        It bounds the memory and changes no number (docs/batching.md); recorded in the
        cell as ``batch_size``, outside its key.
    model_params : mapping, optional
        Keyword arguments of the architecture, e.g. ``{"mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2471, 0.2435, 0.2616]}`` for a built-in residual network trained on
        normalised inputs (``poisonlab evaluate --model-param mean=[...]``).
    threat_model : ThreatModel, optional
        The evasion threats as objects (any norms, targeting, bounds), instead of ``eps``
        and ``norm``; its named threats head the report. A pretrained model cannot be
        poisoned any more: a ThreatModel with poisoning is refused.

    Returns
    -------
    dict, the results document (the content of results.json).

    Raises
    ------
    ConfigError, DataError, UnknownNameError
        Bad input, before anything is written.
    """
    t0 = time.perf_counter()
    dev = validate_device("device", device)
    batch_size = validate_batch_size("batch_size", batch_size)
    seed = validate_suite_seed("seed", seed)  # the same bounds as a suite's
    n_noise = validate_n_noise("n_noise", n_noise)
    if isinstance(eps, str | bytes) or not isinstance(eps, Sequence):
        raise ConfigError(f"eps={eps!r} is not allowed: expected a list of budgets")
    if isinstance(attacks, str | bytes) or not isinstance(attacks, Sequence):
        raise ConfigError(f"attacks={attacks!r} is not allowed: expected a list of attacks")
    validate_distinct("eps", list(eps), what="budgets")
    ds, ds_spec = load_data(data, seed=seed)
    if model_params is None:
        model_params = {}
    if not isinstance(model_params, Mapping):
        raise ConfigError(f"model_params={model_params!r} is not allowed: expected a mapping "
                          "of the architecture's parameters")
    net = build_model(model, ds.input_shape, ds.n_classes, seed=seed, weights=weights,
                      **model_params).to(dev)
    threats = _threats_of(threat_model, eps, norm, ds.bounds)
    given = [_as_spec(a) for a in attacks]
    split = [split_batch_size(a) for a in given]  # batch_size: a call argument, no setting
    a_specs = [a for a, _ in split]
    validate_distinct("attacks", [a.label for a in a_specs], what="attacks")
    knowledge = {a.label: get_attack(a.name, **a.kwargs).knowledge.value for a in a_specs}
    info = InformationSpec()
    details = evaluate_model_details(net, ds, threats=threats,
                                     attacks=given if threats else (), seed=seed,
                                     n_noise=n_noise, information=info,
                                     batch_size=batch_size)
    out_dir = prepare_out(out, resume=False)
    evasion = [g.to_dict() for g in group_threats(threats)]
    config: dict[str, Any] = {
        "name": "evaluate", "version": SUITE_VERSION,
        "description": f"pretrained model {model} (weights {weights}) evaluated on {data}",
        "datasets": [ds_spec], "models": [{"name": model,
                    "params": {**model_params, "weights": str(weights)}}],
        "defenses": [{"name": PRETRAINED, "params": {}}], "poisoning": [], "seeds": [seed],
        "training": None, "evasion": evasion,
        "attacks": [a.to_dict() for a in a_specs] if threats else [],
        "metrics": list(PRETRAINED_METRICS), "n_noise": n_noise,
        "information": info.to_dict(),
        "attack_knowledge": knowledge if threats else {},
    }
    own = {a.label: b for a, b in split if b is not None} if threats else {}
    cell: dict[str, Any] = {
        "dataset": ds_spec, "model": config["models"][0], "defense": config["defenses"][0],
        "poisoning": None, "seed": seed,
    }
    blob = json.dumps({"cell": cell, "eval": config}, sort_keys=True, separators=(",", ":"))
    record = {
        "key": hashlib.sha256(blob.encode()).hexdigest()[:24], **cell,
        "seeds": dict(zip(_SEED_SLOTS, child_seeds(seed, len(_SEED_SLOTS)), strict=True)),
        "status": "ok", "error": None, "dataset_summary": ds.summary(),
        "poisoning_info": None, "metrics": details["metrics"],
        "reliability": details["reliability"], "checks": details["checks"],
        "timing": {"wall_s": round(time.perf_counter() - t0, 3)}, "device": str(dev),
        # Outside the key: how much ran at once changes no number.
        "batch_size": batch_size, **({"attack_batch_sizes": own} if own else {}),
    }
    named = {"threats": [n.to_dict() for n in threat_model.threats]} if (
        threat_model is not None and threat_model.threats) else {}
    doc = build_results(config, None, [record], gate=named)
    atomic_write(out_dir / RESULTS_NAME, json.dumps(doc, indent=1) + "\n")
    if report:
        from .report import write_reports

        write_reports(doc, out_dir)
    return doc

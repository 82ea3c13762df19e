"""Suites: a YAML file declaring a threat model and the grid it is measured on.

A suite is loaded with ``yaml.safe_load`` into frozen dataclasses and validated before
anything runs: every name is looked up in its registry (with did-you-mean), every
parameter is checked by the object it builds, and an error names the entry
(``defenses[1]: alpha=1.5 is not allowed: ...``). ``include:`` merges another suite file
(a path relative to this one) underneath this one's keys.

Format (version 1)::

    name: quickstart
    version: 1
    description: what this suite answers
    datasets: [digits]                         # or {name: moons, n_samples: 500}
    # your own data: {name: npz, path: data.npz} or {name: "mypkg.data:load"}
    models: [mlp]                              # or {name: mlp, hidden: [64, 64]}
    # your own model: {name: "mypkg.models:make_net", weights: net.pt}; weights (a
    # state_dict) are the initialisation that training starts from
    training: {epochs: 30, batch_size: 64, lr: 0.001, weight_decay: 0.0}
    defenses:
      - none
      - {name: label_smoothing, eps: 0.1}
    threat_model:
      poisoning:                               # the clean cell (rate 0) is always run
        - {strategy: random, rate: 0.2}
        - {strategy: pairwise, rate: 0.1, source: 3, target: 8}
        - {strategy: adversarial, rate: 0.2, max_per_class: 0.5}   # also margin,
        # noise_matrix (with noise_matrix: K x K, P(observed i | true j))
      evasion:
        - {norm: linf, eps: [0.05, 0.1, 0.2]}  # targeted: false, bounds: the dataset's
    attacks:                                   # `poisonlab list attacks`
      - fgsm
      - {name: pgd, steps: 40, loss: dlr}
      - {name: transfer, attack: {name: pgd, steps: 40}, surrogate: {defense: none}}
      - {name: "foolbox:LinfPGD", steps: 40}
    seeds: [0, 1, 2]
    metrics: [accuracy, evasion, poisoning, offmanifold, calibration, information]
    offmanifold: {n_noise: 1000}
    information: {classes: [0, 1], n_examples: 200, n_augment: 32}   # mutual information
    checks: {n_probe: 200, steps: 20, transfer: true, square: false}  # docs/checks.md
    # (enabled: [gradient_norms, ...] picks the sanity checks; [] runs none)
    batch_size: 256                            # docs/batching.md

``batch_size:`` (an integer >= 1, default 256) is how many test inputs the evaluation runs
through the model at once: every attack, metric and sanity check of a cell. An attack
entry may override it for that attack (``{name: pgd, steps: 40, batch_size: 64}``); there
it is a call argument, not an attack setting, so it is never part of the attack's label or
parameters (also for ``art:*`` attacks, whose own ``batch_size`` setting keeps its
default). It changes memory and speed, never a number, so it is outside the cell keys;
each cell records the batch sizes it ran with. Not to be confused with ``training:
{batch_size: 64}``, the training minibatch, which does change the numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._text import short_repr as _r
from .._validation import (
    validate_bool,
    validate_distinct,
    validate_hinted_types,
    validate_params,
    validate_scalar,
    validate_seed,
)
from ..attacks import get_attack
from ..batching import DEFAULT_BATCH_SIZE
from ..data import datasets
from ..defenses import get_defense
from ..errors import ConfigError, PoisonlabError, SuiteError, first_line
from ..models import models, read_state_dict
from ..registry import did_you_mean, split_named
from ..sanity import SanitySettings
from ..threat import EvasionThreat, PoisonThreat, ThreatModel
from .certified import DEFAULT_FLIPS
from .claims import parse_expectations
from .expectations import Expectation, measured_metrics
from .named_threats import parse_named_threats, threat_model_mapping
from .spec import (
    METRIC_GROUPS,
    N_NOISE_MAX,
    SEED_MAX,
    SUITE_VERSION,
    EvasionSpec,
    InformationSpec,
    Spec,
    Suite,
    TrainSpec,
)
from .suite_file import EntryContext as _Ctx
from .suite_file import raw_list as _list
from .suite_file import raw_mapping as _mapping
from .suite_file import read_suite_file, refuse_unknown_keys, validate_plain
from .tolerance import parse_tolerances

_TOP_KEYS = (
    "name", "version", "description", "include", "datasets", "models", "training",
    "defenses", "threat_model", "attacks", "seeds", "metrics", "offmanifold", "information",
    "tolerances", "expectations", "checks", "batch_size", "certified",
)




# --------------------------------------------------------------------------- loading


def validate_suite_data(suite: Suite) -> None:
    """The checks that need the data, run before any cell (validate, run).

    Loads each dataset with each of the suite's seeds (the split depends on it) and checks
    what a cell would otherwise fail on half-way: the loader's own parameters, each
    poisoning budget on the training labels (class ids within K, more pairwise flips than
    the source class has, per-class caps, the noise matrix's size;
    :func:`~poisonlab.attacks.label_flip.validate_flip_budget`), the mutual-information
    classes, and declared evasion bounds that must hold the test inputs.

    Raises
    ------
    SuiteError
        One line naming the entry, the dataset and seed, and the problem.
    """
    from ..attacks.label_flip import validate_flip_budget
    from ..data import load_dataset

    for i, spec in enumerate(suite.datasets):
        for seed in suite.seeds:
            where = f"datasets[{i}] ({spec.label}, seed {seed})"
            with _Ctx(where):
                ds = load_dataset(spec.name, seed=seed, **spec.kwargs)
            for j, threat in enumerate(suite.poisoning):
                with _Ctx(f"threat_model.poisoning[{j}] on {where}"):
                    validate_flip_budget(threat, ds.y_train, n_classes=ds.n_classes)
            if "information" in suite.metrics:
                bad = [c for c in suite.information.classes if c >= ds.n_classes]
                if bad:
                    raise SuiteError(f"information.classes={list(suite.information.classes)} "
                                     f"is not allowed on {where}: expected class ids in "
                                     f"[0, {ds.n_classes - 1}]")
            lo, hi = float(ds.x_test.min()), float(ds.x_test.max())
            if seed == suite.seeds[0]:  # the scale does not depend on the split
                _warn_scale(suite, spec.label, ds, (lo, hi))
            for j, ev in enumerate(suite.evasion):
                if ev.bounds is not None and (lo < ev.bounds[0] or hi > ev.bounds[1]):
                    raise SuiteError(
                        f"threat_model.evasion[{j}].bounds={list(ev.bounds)} is not allowed "
                        f"on {where}: its test inputs lie in [{lo:g}, {hi:g}]; expected "
                        "bounds that hold them (or no bounds: the dataset's)")


def _warn_scale(suite: Suite, label: str, ds: Any, data_range: tuple[float, float]) -> None:
    """An InputWarning per evasion eps (or bounds) out of scale with dataset ``label``."""
    from ..input_sanity import warn_threat_scale

    for j, ev in enumerate(suite.evasion):
        warn_threat_scale(f"threat_model.evasion[{j}] on dataset {label}", ev.eps,
                          ev.norm.value, bounds=ev.bounds or ds.bounds,
                          data_range=data_range, n_features=math.prod(ds.input_shape))


def load_suite(path: str | Path) -> Suite:
    """Read, merge includes, and validate a suite file. Raises SuiteError (one line)."""
    p = Path(path)
    raw = read_suite_file(p)
    try:
        return parse_suite(raw, source=str(p))
    except SuiteError:
        raise
    except PoisonlabError as e:
        raise SuiteError(f"{p}: {e}") from None



def _spec(entry: Any, where: str, field_name: str = "name") -> Spec:
    named = split_named(entry, field_name)
    if named is not None:
        return Spec.of(*named)
    raise SuiteError(f"{where}={_r(entry)} is not allowed: expected a name or a mapping with "
                     f"'{field_name}'")


def validate_eval_batch_size(name: str, value: Any) -> int:
    """An evaluation batch size of a suite or the CLI: an integer >= 1 (null is refused:
    a suite never runs a whole test set at once)."""
    if value is None:
        raise ConfigError(f"{name}=None is not allowed: expected an integer >= 1 (test "
                          "inputs per forward pass; default 256)")
    return int(validate_scalar(name, value, lo=1, integer=True))


def split_batch_size(spec: Spec) -> tuple[Spec, int | None]:
    """An attack's Spec without its ``batch_size`` and that batch size (None: none given).

    ``batch_size`` on an attack entry is a call argument, not an attack setting: it stays
    out of the attack's label and parameters, so results and cell keys do not change with
    it. Raises ConfigError for a value that is not an integer >= 1.

    >>> split_batch_size(Spec.of("pgd", {"steps": 10, "batch_size": 64}))
    (Spec(name='pgd', params=(('steps', 10),)), 64)
    """
    params = spec.kwargs
    if "batch_size" not in params:
        return spec, None
    bs = validate_eval_batch_size("batch_size", params.pop("batch_size"))
    return Spec.of(spec.name, params), bs


def _attack_spec(entry: Any, where: str) -> tuple[Spec, int | None]:
    spec = _spec(entry, where)
    with _Ctx(where):
        return split_batch_size(spec)


def validate_suite_seed(name: str, value: Any) -> int:
    """A seed of a suite: an integer in [0, SEED_MAX] (scikit-learn takes 32-bit seeds)."""
    seed = validate_seed(name, value)
    if seed > SEED_MAX:
        raise ConfigError(f"{name}={value!r} is not allowed: expected an integer in "
                          "[0, 2**32 - 1] (scikit-learn takes 32-bit seeds)")
    return seed


def validate_n_noise(name: str, value: Any) -> int:
    """Noise inputs for the off-manifold metrics: an integer in [10, N_NOISE_MAX]."""
    n = int(validate_scalar(name, value, lo=10, integer=True))
    if n > N_NOISE_MAX:
        raise ConfigError(f"{name}={value!r} is not allowed: expected an integer in "
                          f"[10, {N_NOISE_MAX}]")
    return n


def _check_builds(where: str, name: str, builder: Callable[..., Any],
                  params: dict[str, Any]) -> None:
    """Build a registered architecture on the meta device (no memory, no data) with a
    stand-in image shape: its own checks (e.g. ``hidden`` >= 1) run before anything does.
    Per-channel ``mean``/``std`` lists set the stand-in's channel count."""
    per_channel = [v for k, v in params.items() if k in ("mean", "std") and isinstance(v, list)]
    c = len(per_channel[0]) if per_channel and per_channel[0] else 1
    try:
        with torch.device("meta"):
            builder(input_shape=(c, 8, 8), n_classes=2, **params)
    except PoisonlabError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        first = first_line(e)
        shown = ", ".join(f"{k}={_r(v)}" for k, v in sorted(params.items()))
        raise SuiteError(f"{where}: model {name!r} cannot be built with {shown}: "
                         f"{first}") from None


def parse_suite(raw: dict[str, Any], *, source: str = "<memory>") -> Suite:
    """Validate a suite mapping (as loaded from YAML) into a :class:`Suite`.

    Raises
    ------
    SuiteError
        (or a subclass of ConfigError) naming the entry, the value and what is allowed.

    ``threat_model`` may be a :class:`~poisonlab.ThreatModel` (the Python form): it is read
    as the mapping it stands for.
    """
    if isinstance(raw, dict) and isinstance(raw.get("threat_model"), ThreatModel):
        raw = {**raw, "threat_model": threat_model_mapping(raw["threat_model"])}
    name, version, description = _parse_header(raw)
    ds_specs, m_specs, d_specs = _parse_grid(raw)
    a_specs, a_batch, built = _parse_attacks(raw)
    poisoning, evasion = _parse_threat_model(raw, a_specs, built)
    seeds = _parse_seeds(raw)
    training = _parse_training(raw)
    metrics_raw, n_noise, information, checks, batch_size = _parse_evaluation(raw)

    suite = Suite(
        name=name, version=version, description=description.strip(),
        datasets=tuple(ds_specs), models=tuple(m_specs), defenses=tuple(d_specs),
        poisoning=tuple(poisoning), evasion=tuple(evasion), attacks=tuple(a_specs),
        seeds=tuple(seeds), training=training,
        metrics=tuple(m for m in METRIC_GROUPS if m in metrics_raw),
        n_noise=n_noise, information=information, checks=checks, source=source,
        attack_knowledge=tuple(a.knowledge.value for a in built),
        batch_size=batch_size, attack_batch_sizes=tuple(a_batch),
        certified_flips=_parse_certified(raw),
    )
    for key, items, ident in (
        ("datasets", ds_specs, lambda s: s.label), ("models", m_specs, lambda s: s.label),
        ("defenses", d_specs, lambda s: s.label), ("attacks", a_specs, lambda s: s.label),
        ("seeds", seeds, str), ("threat_model.poisoning", poisoning, lambda t: t.id),
    ):
        validate_distinct(key, [ident(x) for x in items], show=str, error=SuiteError)
    eps_ids = [(e.norm, e.targeted, x) for e in evasion for x in e.eps]
    if len(set(eps_ids)) != len(eps_ids):
        raise SuiteError("threat_model.evasion lists one norm/eps twice: expected distinct "
                         "threats")
    return dataclasses.replace(
        suite, tolerances=parse_tolerances(raw.get("tolerances"), where="tolerances"),
        expectations=parse_suite_expectations(raw.get("expectations"), suite),
        threats=parse_named_threats(raw, suite))


def _parse_header(raw: Any) -> tuple[str, int, str]:
    """The top-level keys (known, plain values) and the name, version, description."""
    if not isinstance(raw, dict):
        raise SuiteError(f"suite={_r(raw)} is not allowed: expected a mapping of suite keys")
    refuse_unknown_keys(raw, _TOP_KEYS, section="suite")
    if "include" in raw:
        raise SuiteError(f"include={_r(raw['include'])} is not allowed here: parse_suite takes "
                         "a merged mapping; load_suite(path) reads a file's includes")
    validate_plain(raw)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SuiteError(f"name={_r(name)} is not allowed: expected a non-empty string")
    version = raw.get("version", SUITE_VERSION)
    if type(version) is not int or version != SUITE_VERSION:
        raise SuiteError(f"version={_r(version)} is not allowed: expected {SUITE_VERSION}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(f"description={_r(description)} is not allowed: expected a string")
    return name, version, description


def _parse_grid(raw: dict[str, Any]) -> tuple[list[Spec], list[Spec], list[Spec]]:
    """datasets, models, defenses: each entry resolved and its parameters checked."""
    ds_specs = [_spec(e, f"datasets[{i}]") for i, e in enumerate(_list(raw, "datasets"))]
    for i, s in enumerate(ds_specs):
        with _Ctx(f"datasets[{i}]"):
            loader = datasets.resolve(s.name)
            validate_params(f"dataset {s.name!r}", loader, s.kwargs, skip=("seed",))
            validate_hinted_types(f"dataset {s.name!r}", loader, s.kwargs)
            if s.name == "npz":
                _check_file(f"datasets[{i}]", "path", s.kwargs.get("path"))
    m_specs = [_spec(e, f"models[{i}]") for i, e in enumerate(_list(raw, "models"))]
    for i, s in enumerate(m_specs):
        with _Ctx(f"models[{i}]"):
            params = {k: v for k, v in s.kwargs.items() if k != "weights"}
            builder = models.resolve(s.name)
            validate_params(f"model {s.name!r}", builder, params,
                         skip=("input_shape", "n_classes"))
            validate_hinted_types(f"model {s.name!r}", builder, params)
            if s.name in models.names():
                _check_builds(f"models[{i}]", s.name, builder, params)
            if "weights" in s.kwargs:
                _check_file(f"models[{i}]", "weights", s.kwargs["weights"])
                # Read now, with torch.load(weights_only=True): a file that would run
                # code, or is no state_dict, is refused before any cell.
                read_state_dict(s.kwargs["weights"])
    d_specs = [_spec(e, f"defenses[{i}]") for i, e in enumerate(_list(raw, "defenses"))]
    for i, s in enumerate(d_specs):
        with _Ctx(f"defenses[{i}]"):
            get_defense(s.name, **s.kwargs)
    return ds_specs, m_specs, d_specs


def _parse_attacks(raw: dict[str, Any]) -> tuple[list[Spec], list[int | None], list[Any]]:
    """attacks: their specs, per-attack batch sizes and the built attacks."""
    a_specs, a_batch = [], []
    for i, e in enumerate(_list(raw, "attacks", required=False)):
        s, bs = _attack_spec(e, f"attacks[{i}]")
        a_specs.append(s)
        a_batch.append(bs)
    built = []
    for i, s in enumerate(a_specs):
        with _Ctx(f"attacks[{i}]"):
            built.append(get_attack(s.name, **s.kwargs))

    return a_specs, a_batch, built


def _parse_threat_model(raw: dict[str, Any], a_specs: list[Spec], built: list[Any]
                        ) -> tuple[list[PoisonThreat], list[EvasionSpec]]:
    """threat_model: poisoning and evasion threats, checked against the attacks."""
    tm = _mapping(raw, "threat_model")
    if not isinstance(tm, dict):
        raise SuiteError(f"threat_model={_r(tm)} is not allowed: expected a mapping")
    refuse_unknown_keys(tm, _TM_KEYS, section="threat_model")
    poisoning = [_poison(e, f"threat_model.poisoning[{i}]")
                 for i, e in enumerate(_list(tm, "poisoning", required=False))]
    evasion = [_evasion(e, f"threat_model.evasion[{i}]")
               for i, e in enumerate(_list(tm, "evasion", required=False))]
    if evasion and not a_specs:
        raise SuiteError("attacks is missing: evasion threats need at least one attack")
    if a_specs and not evasion:
        raise SuiteError("threat_model.evasion is missing: attacks need evasion threats")
    for i, attack in enumerate(built):  # e.g. an untargeted-only attack, a fixed-norm class
        with _Ctx(f"attacks[{i}]"):
            for e in evasion:
                attack.validate_threat(e.threats((0.0, 1.0))[0])

    return poisoning, evasion


_TM_KEYS = ("poisoning", "evasion", "threats")


def _parse_seeds(raw: dict[str, Any]) -> list[int]:
    seeds_raw = _list(raw, "seeds")
    seeds = []
    for i, s in enumerate(seeds_raw):
        with _Ctx(f"seeds[{i}]"):
            seeds.append(validate_suite_seed("seed", s))

    return seeds


def _parse_training(raw: dict[str, Any]) -> TrainSpec:
    tr = _mapping(raw, "training")
    if not isinstance(tr, dict):
        raise SuiteError(f"training={_r(tr)} is not allowed: expected a mapping")
    with _Ctx("training"):
        validate_params("training", TrainSpec, tr)
        return TrainSpec(
            epochs=validate_scalar("epochs", tr.get("epochs", 30), lo=1, integer=True),
            batch_size=validate_scalar("batch_size", tr.get("batch_size", 64), lo=1, integer=True),
            lr=validate_scalar("lr", tr.get("lr", 1e-3), lo=0, lo_closed=False),
            weight_decay=validate_scalar("weight_decay", tr.get("weight_decay", 0.0), lo=0),
        )


def _parse_certified(raw: dict[str, Any]) -> tuple[float, ...]:
    """``certified: {flips: [...]}``: the radii of the certified accuracy (dpa cells)."""
    c = _mapping(raw, "certified")
    if not isinstance(c, dict) or any(k != "flips" for k in c):
        raise SuiteError(f"certified={_r(c)} is not allowed: expected {{flips: [a number of "
                         "flips or a fraction of the training set, ...]}")
    flips = c.get("flips", list(DEFAULT_FLIPS))
    if not isinstance(flips, list) or not flips:
        raise SuiteError(f"certified.flips={_r(flips)} is not allowed: expected a non-empty "
                         "list of numbers of flips or fractions of the training set")
    for i, f in enumerate(flips):
        whole = isinstance(f, int) and not isinstance(f, bool) and f >= 0
        if not whole and not (isinstance(f, float) and 0 < f < 1):
            raise SuiteError(f"certified.flips[{i}]={_r(f)} is not allowed: expected a "
                             "number of flipped labels (an integer >= 0) or a fraction of "
                             "the training set in (0, 1)")
    return tuple(flips)


def _parse_evaluation(raw: dict[str, Any]) -> tuple[list[Any], int, InformationSpec,
                                                     SanitySettings, int | None]:
    """metrics, offmanifold, information, checks and batch_size."""
    metrics_raw = raw.get("metrics", list(METRIC_GROUPS))
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise SuiteError(f"metrics={_r(metrics_raw)} is not allowed: expected a non-empty list "
                         f"of {', '.join(METRIC_GROUPS)}")
    for i, m in enumerate(metrics_raw):
        if not isinstance(m, str) or m not in METRIC_GROUPS:
            hint = did_you_mean(str(m), list(METRIC_GROUPS))
            raise SuiteError(f"metrics[{i}]={_r(m)} is not known: expected one of "
                             f"{', '.join(METRIC_GROUPS)}{hint}")
        validate_distinct("metrics", metrics_raw[: i + 1], what="metric groups", error=SuiteError)
    om = _mapping(raw, "offmanifold")
    if not isinstance(om, dict) or any(k != "n_noise" for k in om):
        raise SuiteError(f"offmanifold={_r(om)} is not allowed: expected {{n_noise: int}}")
    with _Ctx("offmanifold"):
        n_noise = validate_n_noise("n_noise", om.get("n_noise", 1000))
    info = _mapping(raw, "information")
    info_keys = ("classes", "n_examples", "n_augment", "shift", "noise")
    if not isinstance(info, dict) or any(k not in info_keys for k in info):
        raise SuiteError(f"information={_r(info)} is not allowed: expected {{classes: [a, b], "
                         "n_examples: int, n_augment: int, shift: int, noise: float}")
    with _Ctx("information"):
        information = InformationSpec(**info)
    chk = raw.get("checks")
    if chk is not None and not isinstance(chk, dict):
        raise SuiteError(f"checks={_r(chk)} is not allowed: expected a mapping like {{n_probe: "
                         "200, enabled: [gradient_norms, ...], steps: 20, transfer: true}")
    with _Ctx("checks"):
        checks = SanitySettings.from_config(chk)
    try:
        batch_size = validate_eval_batch_size("batch_size",
                                           raw.get("batch_size", DEFAULT_BATCH_SIZE))
    except ConfigError as e:
        raise SuiteError(str(e)) from None

    return metrics_raw, n_noise, information, checks, batch_size

def _check_file(where: str, key: str, value: Any) -> None:
    """A file named in the suite must exist before anything runs."""
    if not isinstance(value, str) or not Path(value).is_file():
        raise SuiteError(f"{where}: {key}={value!r} is not allowed: expected the path of an "
                         "existing file (relative to the working directory)")


def _poison(entry: Any, where: str) -> PoisonThreat:
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}={_r(entry)} is not allowed: expected a mapping like "
                         "{strategy: random, rate: 0.2}")
    allowed = ("strategy", "rate", "source", "target", "knowledge", "kind", "noise_matrix",
               "max_per_class")
    refuse_unknown_keys(entry, allowed, entry=where)
    if "rate" not in entry:
        raise SuiteError(f"{where}: rate is missing: expected a fraction of the training "
                         "labels in (0, 1)")
    with _Ctx(where):
        t = PoisonThreat(**entry)
    if t.rate == 0:
        raise SuiteError(f"{where}: rate=0 is not allowed here: the clean cell is always run")
    return t


def _evasion(entry: Any, where: str) -> EvasionSpec:
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}={_r(entry)} is not allowed: expected a mapping like "
                         "{norm: linf, eps: [0.05, 0.1]}")
    allowed = ("norm", "eps", "targeted", "bounds")
    refuse_unknown_keys(entry, allowed, entry=where)
    if "eps" not in entry:
        raise SuiteError(f"{where}: eps is missing: expected a number >= 0 or a list of them")
    eps = entry.get("eps")
    eps_list = eps if isinstance(eps, list) else [eps]
    b = entry.get("bounds")
    with _Ctx(where):
        threats = [EvasionThreat(norm=entry.get("norm", "linf"), eps=e,
                                 bounds=(0.0, 1.0) if b is None else b,
                                 targeted=validate_bool("targeted", entry.get("targeted", False)))
                   for e in eps_list]
    if not threats:
        raise SuiteError(f"{where}: eps=[] is not allowed: expected at least one eps")
    return EvasionSpec(norm=threats[0].norm, eps=tuple(t.eps for t in threats),
                       targeted=threats[0].targeted,
                       bounds=None if b is None else threats[0].bounds)


def parse_suite_expectations(raw: Any, suite: Suite,
                             *, where: str = "expectations") -> tuple[Expectation, ...]:
    """:func:`parse_expectations` with the names a parsed :class:`Suite` declares."""
    return parse_expectations(
        raw,
        defenses=[d.label for d in suite.defenses],
        poisonings=[p.id for p in suite.poisoning],
        threats=[t.id for e in suite.evasion for t in e.threats((0.0, 1.0))],
        attacks=[a.label for a in suite.attacks],
        metrics=measured_metrics(suite.metrics),
        datasets=[d.label for d in suite.datasets],
        models=[m.label for m in suite.models],
        where=where,
    )

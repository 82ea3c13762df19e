"""The suite as data: frozen, validated specs of a suite and of its cells.

:class:`Suite` is the whole grid (datasets x models x defenses x poisoning x seeds, the
threats, attacks, metrics and their settings), :class:`Cell` one trained model in it,
:class:`Spec` a registered name with its parameters. They are built by
:func:`poisonlab.harness.suite.parse_suite` (YAML -> spec) and read by everything after
it: the runner, the evaluation of a cell, the results' provenance (``to_dict``) and the
cell keys (``key``). Nothing here reads a file or runs a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._text import spec_label
from .._validation import (
    validate_scalar,
)
from ..batching import DEFAULT_BATCH_SIZE
from ..errors import ConfigError
from ..metrics import (
    AUGMENT_NOISE,
    AUGMENT_SHIFT,
    MI_CLASSES,
    MI_N_AUGMENT,
    MI_N_EXAMPLES,
    validate_information_settings,
)
from ..sanity import SanitySettings
from ..threat import EvasionThreat, NamedThreat, Norm, PoisonThreat
from .certified import DEFAULT_FLIPS
from .expectations import Expectation

SUITE_VERSION = 1
#: The defense label ``poisonlab evaluate`` gives a model it evaluates as given.
PRETRAINED = "pretrained"
#: Seeds reach numpy, torch and scikit-learn, which takes 32-bit seeds only.
SEED_MAX = 2**32 - 1
#: Noise inputs of the off-manifold metrics per cell (each one is a whole input in memory).
N_NOISE_MAX = 100_000
METRIC_GROUPS: tuple[str, ...] = ("accuracy", "evasion", "poisoning", "offmanifold", "calibration",
                                  "information")


@dataclass(frozen=True)
class Spec:
    """A registered name with its parameters, e.g. ``label_smoothing(eps=0.1)``."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, name: str, params: dict[str, Any]) -> Spec:
        """A Spec from a name and plain (YAML) parameters, frozen and sorted by key."""
        return cls(name, tuple(sorted((k, _freeze(v)) for k, v in params.items())))

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.params}

    @property
    def label(self) -> str:
        return spec_label(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.kwargs}


class _FrozenDict(tuple):  # type: ignore[type-arg]
    """A mapping parameter (e.g. a transfer attack's ``surrogate:``) as sorted pairs."""


def _freeze(v: Any) -> Any:
    """Make a YAML value hashable: lists -> tuples, mappings -> sorted pairs."""
    if isinstance(v, dict):
        return _FrozenDict(sorted((k, _freeze(x)) for k, x in v.items()))
    return tuple(_freeze(x) for x in v) if isinstance(v, list | tuple) else v


def _thaw(v: Any) -> Any:
    if isinstance(v, _FrozenDict):
        return {k: _thaw(x) for k, x in v}
    return [_thaw(x) for x in v] if isinstance(v, tuple) else v


@dataclass(frozen=True)
class EvasionSpec:
    """Evasion threats of one norm over several eps; bounds default to the dataset's.

    Parameters
    ----------
    norm : "linf" | "l2"
        The norm of the perturbation ball.
    eps : list of float >= 0
        The budgets, in input units (a security curve when several); distinct.
    targeted : bool
        Each test point gets a random wrong target class (seeded) instead of any wrong class.
    bounds : [lo, hi], optional
        The attacker's input domain; default the dataset's (must hold its test inputs).
    """

    norm: Norm
    eps: tuple[float, ...]
    targeted: bool = False
    bounds: tuple[float, float] | None = None

    def threats(self, bounds: tuple[float, float]) -> list[EvasionThreat]:
        b = self.bounds or bounds
        return [EvasionThreat(self.norm, e, b, self.targeted) for e in self.eps]

    def to_dict(self) -> dict[str, Any]:
        return {"norm": self.norm.value, "eps": list(self.eps), "targeted": self.targeted,
                "bounds": None if self.bounds is None else list(self.bounds)}


@dataclass(frozen=True)
class TrainSpec:
    """How every model of a suite is trained (Adam over shuffled minibatches).

    Parameters
    ----------
    epochs : int >= 1
        Passes over the training split.
    batch_size : int >= 1
        Training minibatch (changes the numbers; not the evaluation's batch_size).
    lr : float > 0
        Adam's learning rate.
    weight_decay : float >= 0
        Adam's L2 weight decay.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay}


@dataclass(frozen=True)
class InformationSpec:
    """Settings of the mutual information metric (see metrics.mutual_information).

    Parameters
    ----------
    classes : [a, b]
        The two classes whose training examples are measured.
    n_examples : int >= 2
        Training examples per class.
    n_augment : int >= 2
        Augmented copies per example.
    shift : int >= 0
        Largest shift of a copy, in pixels (image inputs).
    noise : float >= 0
        Standard deviation of a copy's noise, as a fraction of the input range.
    """

    classes: tuple[int, int] = MI_CLASSES
    n_examples: int = MI_N_EXAMPLES
    n_augment: int = MI_N_AUGMENT
    #: Augmentation of the copies (metrics.augment): max shift in pixels, noise std as a
    #: fraction of the input range.
    shift: int = AUGMENT_SHIFT
    noise: float = AUGMENT_NOISE

    def __post_init__(self) -> None:
        classes, n_examples, n_augment = validate_information_settings(
            self.classes, self.n_examples, self.n_augment)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "n_examples", n_examples)
        object.__setattr__(self, "n_augment", n_augment)
        object.__setattr__(self, "shift", validate_scalar("shift", self.shift, lo=0,
                                                       integer=True))
        object.__setattr__(self, "noise", validate_scalar("noise", self.noise, lo=0))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"classes": list(self.classes), "n_examples": self.n_examples,
                               "n_augment": self.n_augment}
        # Only when changed: suites with the default augmentation keep their cell keys.
        if (self.shift, self.noise) != (AUGMENT_SHIFT, AUGMENT_NOISE):
            out.update(shift=self.shift, noise=self.noise)
        return out


@dataclass(frozen=True)
class Cell:
    """One trained model: dataset x model x defense x poisoning threat x seed."""

    dataset: Spec
    model: Spec
    defense: Spec
    poisoning: PoisonThreat | None
    seed: int

    @property
    def group(self) -> tuple[str, str, str, str]:
        """The cell's coordinates without the seed (what seeds are aggregated over)."""
        return (self.dataset.label, self.model.label, self.defense.label, self.poison_id)

    @property
    def poison_id(self) -> str:
        return "none" if self.poisoning is None else self.poisoning.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.to_dict(),
            "model": self.model.to_dict(),
            "defense": self.defense.to_dict(),
            "poisoning": None if self.poisoning is None else self.poisoning.to_dict(),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Suite:
    """A validated suite. ``cells()`` expands the grid; ``key(cell)`` identifies a result."""

    name: str
    version: int
    description: str
    datasets: tuple[Spec, ...]
    models: tuple[Spec, ...]
    defenses: tuple[Spec, ...]
    poisoning: tuple[PoisonThreat, ...]
    evasion: tuple[EvasionSpec, ...]
    attacks: tuple[Spec, ...]
    seeds: tuple[int, ...]
    training: TrainSpec = field(default_factory=TrainSpec)
    metrics: tuple[str, ...] = METRIC_GROUPS
    n_noise: int = 1000
    information: InformationSpec = field(default_factory=InformationSpec)
    #: The sanity checks run on every clean-label cell with evasion (docs/checks.md).
    checks: SanitySettings = field(default_factory=SanitySettings)
    source: str = "<memory>"
    #: Per attack: "white-box", "transfer" or "black-box" (what the attacker needs).
    attack_knowledge: tuple[str, ...] = ()
    #: The regression gate's per-metric tolerance overrides (gate.parse_tolerances) and the
    #: claims about directions between cells (expectations.py). Neither changes a number:
    #: they are outside eval_config() and to_dict(), so editing them keeps cell keys and
    #: lets a run resume; see gate_dict().
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict, hash=False)
    expectations: tuple[Expectation, ...] = ()
    #: The named attackers the report compares defenses against (threat_model.threats);
    #: like the expectations, outside the cell keys: they change no number.
    threats: tuple[NamedThreat, ...] = ()
    #: Test inputs per forward pass of the evaluation (attacks, metrics, sanity checks),
    #: and per attack an override (None: this one). Like the tolerances, outside
    #: eval_config(): they change memory and speed, never a number (docs/batching.md).
    batch_size: int | None = DEFAULT_BATCH_SIZE
    attack_batch_sizes: tuple[int | None, ...] = ()
    #: The radii (flips, or fractions of the training set) at which partition-aggregation
    #: cells record their certified accuracy, besides each poisoning's budget.
    certified_flips: tuple[float, ...] = DEFAULT_FLIPS

    def attack_batch_size(self, i: int) -> int | None:
        """The batch size of ``attacks[i]``: its own ``batch_size``, else the suite's."""
        own = self.attack_batch_sizes[i] if i < len(self.attack_batch_sizes) else None
        return self.batch_size if own is None else own

    def batch_dict(self) -> dict[str, Any]:
        """The batch sizes, as a cell records them: ``{"batch_size": n}`` and, when an
        attack overrides it, ``"attack_batch_sizes": {label: n}``."""
        own = {a.label: b for a, b in zip(self.attacks, self.attack_batch_sizes,
                                          strict=False) if b is not None}
        return {"batch_size": self.batch_size, **({"attack_batch_sizes": own} if own else {})}

    def cells(self) -> Iterator[Cell]:
        """Cells in a fixed order; the clean (unpoisoned) cell precedes its poisoned ones."""
        for d in self.datasets:
            for m in self.models:
                for df in self.defenses:
                    for p in (None, *self.poisoning):
                        for s in self.seeds:
                            yield Cell(d, m, df, p, s)

    def eval_config(self) -> dict[str, Any]:
        """Everything besides the cell itself that changes a cell's numbers."""
        return {
            "training": self.training.to_dict(),
            "evasion": [e.to_dict() for e in self.evasion],
            "attacks": [a.to_dict() for a in self.attacks],
            "metrics": list(self.metrics),
            "n_noise": self.n_noise,
            # Only with the group on: a suite without it keeps its cell keys.
            **({"information": self.information.to_dict()}
               if "information" in self.metrics else {}),
            # Only when changed: suites with the default checks keep their cell keys.
            **({"checks": self.checks.to_dict()}
               if "evasion" in self.metrics and self.checks != SanitySettings() else {}),
            **({"certified": {"flips": list(self.certified_flips)}}
               if self.certified_flips != DEFAULT_FLIPS else {}),
        }

    def key(self, cell: Cell) -> str:
        """sha256 of the cell's resolved config, the evaluation config and the seed."""
        blob = json.dumps({"cell": cell.to_dict(), "eval": self.eval_config()},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "description": self.description,
            "datasets": [d.to_dict() for d in self.datasets],
            "models": [m.to_dict() for m in self.models],
            "defenses": [d.to_dict() for d in self.defenses],
            "poisoning": [p.to_dict() for p in self.poisoning],
            "seeds": list(self.seeds), **self.eval_config(),
            "attack_knowledge": {a.label: k for a, k in
                                 zip(self.attacks, self.attack_knowledge, strict=False)},
            # Only when changed: a run folder of a suite with the default batch size
            # resumes as before (the store compares this dict).
            **(self.batch_dict()
               if self.batch_dict() != {"batch_size": DEFAULT_BATCH_SIZE} else {}),
        }

    def gate_dict(self) -> dict[str, Any]:
        """What the regression gate reads besides the numbers: tolerances, expectations."""
        return {"tolerances": self.tolerances,
                "expectations": [e.to_dict() for e in self.expectations],
                **({"threats": [t.to_dict() for t in self.threats]} if self.threats else {})}


def group_threats(threats: Iterable[EvasionSpec | EvasionThreat]) -> list[EvasionSpec]:
    """Evasion threats as EvasionSpec groups: consecutive threats of one norm, targeting
    and bounds share a group (its eps in order); an EvasionSpec is kept as it is."""
    groups: list[EvasionSpec] = []
    for t in threats:
        if isinstance(t, EvasionSpec):
            groups.append(t)
            continue
        if not isinstance(t, EvasionThreat):
            raise ConfigError(f"threat={t!r} is not allowed: expected an EvasionThreat or "
                              "EvasionSpec")
        last = groups[-1] if groups else None
        if (last is not None and last.norm == t.norm and last.targeted == t.targeted
                and last.bounds == t.bounds):
            groups[-1] = dataclasses.replace(last, eps=(*last.eps, t.eps))
        else:
            groups.append(EvasionSpec(norm=t.norm, eps=(t.eps,),  # type: ignore[arg-type]
                                      targeted=t.targeted, bounds=t.bounds))
    return groups

"""Threat models: what the attacker may do, declared once and stored with every number.

``EvasionThreat`` bounds a test-time perturbation, ``PoisonThreat`` a training-label
attack, and ``ThreatModel`` groups the threats of one suite. All three are frozen
dataclasses; closed sets are enums, and the constructors accept the enum or its string.

>>> t = EvasionThreat(norm="linf", eps=0.1, bounds=(0.0, 1.0))
>>> t.norm is Norm.LINF, t.id
(True, 'linf eps=0.1')
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ._validation import (
    coerce_enum,
    validate_bool,
    validate_bounds,
    validate_choice,
    validate_scalar,
)
from .errors import ConfigError


class _Choice(StrEnum):
    """A closed set of names: ``Norm("l3")`` is a one-line ConfigError with a
    did-you-mean (a ValueError, as Enum's own error is), not Enum's bare ValueError."""

    @classmethod
    def _missing_(cls, value: object) -> None:
        validate_choice(_FIELD.get(cls.__name__, cls.__name__), value, [m.value for m in cls])


#: The field each closed set fills, as errors name it.
_FIELD = {"Norm": "norm", "Knowledge": "knowledge", "FlipStrategy": "strategy"}


class Norm(_Choice):
    LINF = "linf"
    L2 = "l2"


class Knowledge(_Choice):
    WHITE_BOX = "white-box"
    TRANSFER = "transfer"
    BLACK_BOX = "black-box"


class FlipStrategy(_Choice):
    RANDOM = "random"
    PAIRWISE = "pairwise"
    NOISE_MATRIX = "noise_matrix"
    MARGIN = "margin"
    ADVERSARIAL = "adversarial"


#: Tolerance on the column sums of a noise matrix.
NOISE_MATRIX_TOL = 1e-6


@dataclass(frozen=True)
class EvasionThreat:
    """A test-time perturbation budget.

    Parameters
    ----------
    norm : "linf" | "l2"
        The norm of the perturbation ball.
    eps : float >= 0
        Radius of the ball, in input units (the same units as ``bounds``).
    bounds : (lo, hi)
        Valid input range; adversarial inputs are clipped into it.
    targeted : bool
        Untargeted attacks seek any wrong class; targeted ones a given class
        (passed to the attack call as ``target=``).
    knowledge : "white-box" | "transfer" | "black-box"
        What the attacker knows of the model.
    """

    norm: Norm | str = Norm.LINF
    eps: float = 0.0
    bounds: tuple[float, float] = (0.0, 1.0)
    targeted: bool = False
    knowledge: Knowledge | str = Knowledge.WHITE_BOX

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", coerce_enum("norm", self.norm, Norm))
        object.__setattr__(self, "eps", validate_scalar("eps", self.eps, lo=0))
        object.__setattr__(self, "bounds", validate_bounds("bounds", self.bounds))
        validate_bool("targeted", self.targeted)
        object.__setattr__(
            self, "knowledge", coerce_enum("knowledge", self.knowledge, Knowledge)
        )

    @property
    def id(self) -> str:
        """A short stable name, e.g. ``'linf eps=0.1'`` or ``'l2 eps=0.5 targeted'``."""
        extra = " targeted" if self.targeted else ""
        if self.knowledge is not Knowledge.WHITE_BOX:
            extra += f" {self.knowledge.value}"
        return f"{self.norm.value} eps={self.eps:g}{extra}"

    def with_eps(self, eps: float) -> EvasionThreat:
        return EvasionThreat(self.norm, eps, self.bounds, self.targeted, self.knowledge)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "evasion",
            "norm": self.norm.value,
            "eps": self.eps,
            "bounds": list(self.bounds),
            "targeted": self.targeted,
            "knowledge": self.knowledge.value,
            "id": self.id,
        }


@dataclass(frozen=True)
class PoisonThreat:
    """A label-flip poisoning budget.

    Parameters
    ----------
    rate : float in [0, 1)
        Fraction of the training labels the attacker flips: exactly
        ``round(rate * n_train)`` labels change, each to a different class.
    strategy : "random" | "pairwise" | "noise_matrix" | "margin" | "adversarial"
        Which labels flip and to what (see :mod:`poisonlab.attacks.label_flip`):
        ``random`` moves each chosen label uniformly to another class; ``pairwise`` flips
        labels of class ``source`` to class ``target`` only; ``noise_matrix`` follows the
        shape of a class-conditional noise matrix; ``margin`` flips the points a surrogate
        is most confident about to its runner-up class; ``adversarial`` picks the flips
        that most increase a surrogate's validation loss (ALFA, Xiao et al. 2012).
    source, target : int, optional
        Class ids, required by ``pairwise`` (and refused by every other strategy).
    knowledge : "white-box" | "transfer" | "black-box"
    kind : "label_flip"
    noise_matrix : K x K nested sequence of float, optional
        Required by ``noise_matrix`` (refused otherwise), in cleanlab's convention:
        ``noise_matrix[i][j] = P(observed label = i | true label = j)``; entries finite and
        non-negative, every column sums to 1 (tolerance 1e-6), and with ``rate > 0`` some
        off-diagonal mass. Stored as a tuple of tuples of float.
    max_per_class : float in (0, 1], optional
        Per-class cap: at most ``floor(max_per_class * n_j)`` labels of each training class
        ``j`` may be flipped (for ``pairwise``: of the source class). ``None``: no cap.

    >>> PoisonThreat(rate=0.2, max_per_class=0.3).id
    'random 0.2 cap=0.3'
    >>> PoisonThreat(rate=0.1, strategy="noise_matrix",
    ...              noise_matrix=[[1, 0.5], [0, 0.5]]).id.startswith("noise_matrix[")
    True
    """

    rate: float = 0.0
    strategy: FlipStrategy | str = FlipStrategy.RANDOM
    source: int | None = None
    target: int | None = None
    knowledge: Knowledge | str = Knowledge.BLACK_BOX
    kind: str = field(default="label_flip")
    noise_matrix: tuple[tuple[float, ...], ...] | None = None
    max_per_class: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "rate", validate_scalar("rate", self.rate, lo=0, hi=1, hi_closed=False)
        )
        strategy = coerce_enum("strategy", self.strategy, FlipStrategy)
        object.__setattr__(self, "strategy", strategy)
        object.__setattr__(
            self, "knowledge", coerce_enum("knowledge", self.knowledge, Knowledge)
        )
        if self.kind != "label_flip":
            raise ConfigError(f"kind={self.kind!r} is not allowed: expected 'label_flip'")
        for name in ("source", "target"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, validate_scalar(name, value, lo=0, integer=True))
        if strategy is FlipStrategy.PAIRWISE:
            if self.source is None or self.target is None:
                raise ConfigError(
                    f"source={self.source!r}, target={self.target!r} are not allowed: "
                    "strategy 'pairwise' needs both class ids"
                )
            if self.source == self.target:
                raise ConfigError(
                    f"target={self.target!r} is not allowed: expected a class other than "
                    f"source={self.source}"
                )
        elif self.source is not None or self.target is not None:
            raise ConfigError(
                f"source={self.source!r}, target={self.target!r} are not allowed: only "
                "strategy 'pairwise' takes class ids"
            )
        if strategy is FlipStrategy.NOISE_MATRIX:
            if self.noise_matrix is None:
                raise ConfigError(
                    "noise_matrix=None is not allowed: strategy 'noise_matrix' needs a K x K "
                    "matrix with noise_matrix[i][j] = P(observed i | true j)"
                )
            matrix = validate_noise_matrix("noise_matrix", self.noise_matrix)
            if self.rate > 0 and all(
                matrix[i][j] == 0 for i in range(len(matrix)) for j in range(len(matrix))
                if i != j
            ):
                raise ConfigError(
                    f"noise_matrix={_short(matrix)} is not allowed with rate={self.rate:g}: "
                    "expected some off-diagonal mass (it is the identity, so no label can flip)"
                )
            object.__setattr__(self, "noise_matrix", matrix)
        elif self.noise_matrix is not None:
            raise ConfigError(
                f"noise_matrix={_short(self.noise_matrix)} is not allowed: only strategy "
                f"'noise_matrix' takes a matrix (strategy is {strategy.value!r})"
            )
        if self.max_per_class is not None:
            object.__setattr__(
                self, "max_per_class",
                validate_scalar("max_per_class", self.max_per_class, lo=0, lo_closed=False, hi=1),
            )

    @property
    def id(self) -> str:
        """A short stable name, e.g. ``'random 0.2'``, ``'pairwise 3->8 0.1'``,
        ``'noise_matrix[a1b2c3d4] 0.2'`` (the first 8 hex digits of the matrix's sha256) or
        ``'random 0.2 cap=0.3'``."""
        if self.strategy is FlipStrategy.PAIRWISE:
            name = f"pairwise {self.source}->{self.target} {self.rate:g}"
        elif self.strategy is FlipStrategy.NOISE_MATRIX:
            name = f"noise_matrix[{self.noise_matrix_digest}] {self.rate:g}"
        else:
            name = f"{self.strategy.value} {self.rate:g}"
        if self.max_per_class is not None:
            name += f" cap={self.max_per_class:g}"
        return name

    @property
    def noise_matrix_digest(self) -> str | None:
        """First 8 hex digits of the sha256 of the matrix's JSON form (``None`` if unused)."""
        if self.noise_matrix is None:
            return None
        blob = json.dumps([list(row) for row in self.noise_matrix])
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rate": self.rate,
            "strategy": self.strategy.value,
            "source": self.source,
            "target": self.target,
            "knowledge": self.knowledge.value,
            "noise_matrix": (None if self.noise_matrix is None
                             else [list(row) for row in self.noise_matrix]),
            "max_per_class": self.max_per_class,
            "id": self.id,
        }


def validate_noise_matrix(name: str, value: Any) -> tuple[tuple[float, ...], ...]:
    """Check a K x K column-stochastic matrix and return it as a tuple of tuples of float.

    ``value[i][j] = P(observed label = i | true label = j)`` (cleanlab's convention): K >= 2,
    every entry finite and >= 0, every column summing to 1 within 1e-6. Accepts nested
    sequences and anything with ``tolist()`` (numpy arrays, tensors).

    >>> validate_noise_matrix("m", [[0.9, 0.2], [0.1, 0.8]])
    ((0.9, 0.2), (0.1, 0.8))
    """
    rows = value.tolist() if hasattr(value, "tolist") else value
    if not isinstance(rows, list | tuple) or not all(isinstance(r, list | tuple) for r in rows):
        raise ConfigError(
            f"{name}={_short(value)} is not allowed: expected a square K x K matrix "
            "(a list of K rows of K numbers)"
        )
    k = len(rows)
    if k < 2:
        raise ConfigError(f"{name} has {k} rows: expected a square K x K matrix with K >= 2")
    for i, r in enumerate(rows):
        if len(r) != k:
            raise ConfigError(
                f"{name} row {i} has {len(r)} entries: expected {k} (a square K x K matrix)"
            )
    matrix = tuple(
        tuple(float(validate_scalar(f"{name}[{i}][{j}]", v, lo=0)) for j, v in enumerate(r))
        for i, r in enumerate(rows)
    )
    for j in range(k):
        total = math.fsum(matrix[i][j] for i in range(k))
        if abs(total - 1.0) > NOISE_MATRIX_TOL:
            raise ConfigError(
                f"{name} column {j} sums to {total:.9g}: expected every column to sum to 1 "
                f"(within {NOISE_MATRIX_TOL:g}), as {name}[i][j] = P(observed i | true j)"
            )
    return matrix


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class NamedThreat:
    """One attacker the report compares defenses against: a poisoning, an evasion threat,
    or both (the combined attacker: poisons the training labels, then perturbs test
    inputs).

    ``poisoning`` and ``evasion`` are threat ids (``PoisonThreat.id`` such as
    ``"random 0.2"``, ``EvasionThreat.id`` such as ``"linf eps=0.1"``) of the threats a
    suite measures; ``attack`` an attack label of the suite (default: the worst case over
    its attacks); ``knowledge`` restricts the attacks to those of one knowledge (the
    strongest of them per defense stands for the threat).

    Parameters
    ----------
    name : str
        How the report's verdict names this attacker.
    poisoning : str, optional
        A poisoning id of the suite (``"random 0.2"``): the attacker flips those labels.
    evasion : str, optional
        An evasion threat id of the suite (``"linf eps=0.1"``): the attacker perturbs test
        inputs; with ``poisoning``, of models trained on the flipped labels.
    attack : str, optional
        The attack label whose robust accuracy stands for the threat (default: the worst
        case over the suite's attacks).
    knowledge : "white-box" | "transfer" | "black-box", optional
        Only attacks of this knowledge count; the strongest per defense stands for it.

    >>> NamedThreat("poison then evade", poisoning="random 0.2", evasion="linf eps=0.1").kind
    'combined'
    """

    name: str
    poisoning: str | None = None
    evasion: str | None = None
    attack: str | None = None
    knowledge: Knowledge | str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"name={self.name!r} is not allowed: expected a non-empty name")
        for f in ("poisoning", "evasion", "attack"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, str) or not v):
                raise ConfigError(f"{f}={v!r} is not allowed: expected a threat id (a string)")
        if self.poisoning is None and self.evasion is None:
            raise ConfigError(f"threat {self.name!r} has neither poisoning nor evasion: "
                              "expected one of them, or both")
        if self.evasion is None and (self.attack is not None or self.knowledge is not None):
            raise ConfigError(f"threat {self.name!r}: attack and knowledge need an evasion "
                              "threat")
        if self.knowledge is not None:
            object.__setattr__(self, "knowledge",
                               coerce_enum("knowledge", self.knowledge, Knowledge))

    @property
    def kind(self) -> str:
        """``"poisoning"``, ``"evasion"`` or ``"combined"``."""
        if self.poisoning is None:
            return "evasion"
        return "poisoning" if self.evasion is None else "combined"

    def to_dict(self) -> dict[str, Any]:
        k = self.knowledge
        return {"name": self.name, "poisoning": self.poisoning, "evasion": self.evasion,
                "attack": self.attack, "knowledge": None if k is None else Knowledge(k).value}


@dataclass(frozen=True)
class ThreatModel:
    """Every threat a suite measures: evasion budgets and poisoning budgets, and the named
    attackers (:class:`NamedThreat`) the report compares defenses against.

    Accepted by :func:`poisonlab.harness.parse_suite` as ``threat_model:`` and by
    ``evaluate_model`` / ``evaluate_pretrained`` (evasion only: a trained model cannot be
    poisoned any more).

    >>> tm = ThreatModel(evasion=[EvasionThreat(eps=0.1)],
    ...                  poisoning=[PoisonThreat(rate=0.2)])
    >>> [t.id for t in tm.evasion], [t.id for t in tm.poisoning]
    (['linf eps=0.1'], ['random 0.2'])
    """

    evasion: tuple[EvasionThreat, ...] = ()
    poisoning: tuple[PoisonThreat, ...] = ()
    threats: tuple[NamedThreat, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "evasion", tuple(self.evasion))
        object.__setattr__(self, "poisoning", tuple(self.poisoning))
        object.__setattr__(self, "threats", tuple(self.threats))
        for i, t in enumerate(self.threats):
            if not isinstance(t, NamedThreat):
                raise ConfigError(f"threats[{i}]={t!r} is not allowed: expected a NamedThreat")
        for name, items, cls in (
            ("evasion", self.evasion, EvasionThreat),
            ("poisoning", self.poisoning, PoisonThreat),
        ):
            for i, t in enumerate(items):
                if not isinstance(t, cls):
                    raise ConfigError(
                        f"{name}[{i}]={t!r} is not allowed: expected a {cls.__name__}"
                    )
            ids = [t.id for t in items]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ConfigError(f"{name} lists {dup[0]!r} twice: expected distinct threats")

    def to_dict(self) -> dict[str, Any]:
        return {
            "evasion": [t.to_dict() for t in self.evasion],
            "poisoning": [t.to_dict() for t in self.poisoning],
            **({"threats": [t.to_dict() for t in self.threats]} if self.threats else {}),
        }

"""Threat models: what the attacker may do, declared once and stored with every number.

``EvasionThreat`` bounds a test-time perturbation, ``PoisonThreat`` a training-label
attack, and ``ThreatModel`` groups the threats of one suite. All three are frozen
dataclasses; closed sets are enums, and the constructors accept the enum or its string.

>>> t = EvasionThreat(norm="linf", eps=0.1, bounds=(0.0, 1.0))
>>> t.norm is Norm.LINF, t.id
(True, 'linf eps=0.1')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ._validation import (
    check_bool,
    check_bounds,
    check_scalar,
    coerce_enum,
)
from .errors import ConfigError


class Norm(StrEnum):
    LINF = "linf"
    L2 = "l2"


class Knowledge(StrEnum):
    WHITE_BOX = "white-box"
    TRANSFER = "transfer"
    BLACK_BOX = "black-box"


class FlipStrategy(StrEnum):
    RANDOM = "random"
    PAIRWISE = "pairwise"


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
        object.__setattr__(self, "eps", check_scalar("eps", self.eps, lo=0))
        object.__setattr__(self, "bounds", check_bounds("bounds", self.bounds))
        check_bool("targeted", self.targeted)
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
    strategy : "random" | "pairwise"
        ``random`` moves each chosen label uniformly to another class; ``pairwise`` flips
        labels of class ``source`` to class ``target`` only.
    source, target : int, optional
        Class ids, required by ``pairwise``.
    knowledge : "white-box" | "transfer" | "black-box"
    """

    rate: float = 0.0
    strategy: FlipStrategy | str = FlipStrategy.RANDOM
    source: int | None = None
    target: int | None = None
    knowledge: Knowledge | str = Knowledge.BLACK_BOX
    kind: str = field(default="label_flip")

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "rate", check_scalar("rate", self.rate, lo=0, hi=1, hi_closed=False)
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
                object.__setattr__(self, name, check_scalar(name, value, lo=0, integer=True))
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

    @property
    def id(self) -> str:
        """A short stable name, e.g. ``'random 0.2'`` or ``'pairwise 3->8 0.1'``."""
        if self.strategy is FlipStrategy.PAIRWISE:
            return f"pairwise {self.source}->{self.target} {self.rate:g}"
        return f"{self.strategy.value} {self.rate:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rate": self.rate,
            "strategy": self.strategy.value,
            "source": self.source,
            "target": self.target,
            "knowledge": self.knowledge.value,
            "id": self.id,
        }


@dataclass(frozen=True)
class ThreatModel:
    """Every threat a suite measures: evasion budgets and poisoning budgets."""

    evasion: tuple[EvasionThreat, ...] = ()
    poisoning: tuple[PoisonThreat, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "evasion", tuple(self.evasion))
        object.__setattr__(self, "poisoning", tuple(self.poisoning))
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
        }

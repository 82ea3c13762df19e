"""Compose defenses of different kinds into one training recipe.

``compose`` runs its members' hooks in order: every filter's ``prepare`` (in the order
given), every label transform, the one loss, the one training mode (adversarial training or
distillation, built on that loss) and the post-hoc step. Two losses, two training modes or
two post-hoc steps are refused: their combination has no single meaning. Partition
aggregation composes with nothing (its certificate assumes plain training per partition).

>>> from poisonlab import get_defense
>>> d = get_defense("compose", defenses=["knn_sanitize", {"name": "label_smoothing", "eps": 0.1}])
>>> d.label
'knn_sanitize(k=10, eta=0.5, action=relabel) + label_smoothing(eps=0.1)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import split_named
from .base import Defense, LossFn

#: Kinds of which a composition may hold at most one.
_SINGLE = ("loss", "training", "posthoc")


def _build(entry: Any, where: str) -> Defense:
    from . import get_defense

    if isinstance(entry, Defense):
        return entry
    named = split_named(entry)
    if named is not None:
        return get_defense(named[0], **named[1])
    raise ConfigError(f"{where}={entry!r} is not allowed: expected a defense name, "
                      "{name: ..., params} or a Defense")


@dataclass(frozen=True)
class Compose(Defense):
    """Several defenses of different kinds as one (see the module docstring).

    Parameters
    ----------
    defenses : sequence of names, ``{name: ..., **params}`` mappings or Defense objects
        At least one; nested compositions are flattened.
    """

    name: ClassVar[str] = "compose"
    summary: ClassVar[str] = "combine defenses of different kinds"
    kind: ClassVar[str] = "compose"
    defenses: Sequence[Any] = ()

    def __post_init__(self) -> None:
        raw = self.defenses
        if isinstance(raw, str | Mapping) or not isinstance(raw, Sequence) or not raw:
            raise ConfigError(f"defenses={raw!r} is not allowed: expected a non-empty list "
                              "of defenses")
        members: list[Defense] = []
        for i, entry in enumerate(raw):
            members.extend(_build(entry, f"defenses[{i}]").members())
        members = [m for m in members if m.name != "none"]  # plain training adds nothing
        agg = [m.label for m in members if m.kind == "aggregation"]
        if agg:
            raise ConfigError(f"defenses={' + '.join(m.label for m in members)} is not "
                              f"allowed: {agg[0]} trains its own base models and its "
                              "certificate holds for no other defense composed with it")
        for kind in _SINGLE:
            same = [m.label for m in members if m.kind == kind]
            if len(same) > 1:
                raise ConfigError(f"defenses={' + '.join(same)} is not allowed: at most one "
                                  f"{kind} defense in a composition")
        object.__setattr__(self, "defenses", tuple(members))

    def members(self) -> tuple[Defense, ...]:
        return tuple(self.defenses)

    def params(self) -> dict[str, Any]:
        return {"defenses": [m.to_dict() for m in self.defenses]}

    @property
    def label(self) -> str:
        return " + ".join(m.label for m in self.defenses) or "none"

    def _one(self, kind: str) -> Defense | None:
        return next((m for m in self.defenses if m.kind == kind), None)

    def prepare(self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for m in self.defenses:
            x, y = m.prepare(x, y, n_classes=n_classes, generator=generator)
        return x, y

    def epoch_labels(self, y: torch.Tensor, *, n_classes: int,
                     generator: torch.Generator) -> torch.Tensor:
        for m in self.defenses:
            y = m.epoch_labels(y, n_classes=n_classes, generator=generator)
        return y

    def transform_labels(self, y: torch.Tensor, *, n_classes: int,
                         generator: torch.Generator) -> torch.Tensor:
        for m in self.defenses:
            y = m.transform_labels(y, n_classes=n_classes, generator=generator)
        return y

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        loss = self._one("loss")
        return (loss or Defense()).loss(logits, y, n_classes=n_classes)

    def objective(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, n_classes: int,
                  generator: torch.Generator, loss_fn: LossFn,
                  bounds: tuple[float, float]) -> torch.Tensor:
        mode = self._one("training") or Defense()
        return mode.objective(model, x, y, n_classes=n_classes, generator=generator,
                              loss_fn=loss_fn, bounds=bounds)

    @property
    def needs_validation(self) -> bool:
        return any(m.needs_validation for m in self.defenses)

    def post_hoc(self, model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor) -> nn.Module:
        for m in self.defenses:
            model = m.post_hoc(model, x_val, y_val)
        return model

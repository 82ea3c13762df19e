"""The defense interface that the training loop calls.

A defense is a frozen dataclass of validated parameters with up to six hooks, each a small
step of :func:`poisonlab.train`, called in this order:

1. ``prepare(x, y, n_classes=, generator=)`` once before training: data filters (label
   sanitisation drops or relabels points) and one-off label transforms. Returns ``(x, y)``.
2. ``epoch_labels(y, n_classes=, generator=)`` at the start of every epoch, on the whole
   training label vector (a label transform redrawn per epoch).
3. ``transform_labels(y, n_classes=, generator=)`` on every batch (DisturbLabel).
4. ``objective(model, x, y, n_classes=, generator=, loss_fn=, bounds=)``: the batch objective given
   the model, by default ``loss_fn(model(x), y)``; adversarial training and distillation
   replace it (they need the model, not only its logits).
5. ``loss(logits, y, n_classes=)``: the per-batch training loss (``loss_fn`` above), mean
   cross-entropy unless overridden (label smoothing, GCE, ...).
6. ``post_hoc(model, x_val, y_val)`` after training, on the validation split only
   (temperature scaling). Returns the model to use, possibly a wrapper.

A defense of kind ``aggregation`` (partition aggregation) replaces the loop instead:
``fit_ensemble(model, x, y, ...)`` trains and returns a new module (an ensemble of base
classifiers, each trained by the same loop on its own partition).

Devices: :func:`poisonlab.train` calls ``prepare`` with the data as given (the datasets
are CPU tensors) and every later hook with tensors on the model's device. ``generator`` is
always a CPU ``torch.Generator``: a hook draws its random numbers on the CPU and moves
them to the data's device (``torch.rand(n, generator=generator).to(y.device)``), which
keeps the draws the same on every device; a CPU generator cannot fill a CUDA tensor.

``kind`` says which hook a defense is about (``filter``, ``labels``, ``loss``,
``training``, ``posthoc``, ``aggregation``); :class:`~poisonlab.defenses.compose.Compose`
combines defenses of different kinds (e.g. label smoothing on top of kNN sanitisation) and
refuses two of a kind that cannot stack (two losses, two training modes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

#: The kinds of defense, by the hook they are about.
KINDS: tuple[str, ...] = ("none", "filter", "labels", "loss", "training", "posthoc", "compose",
                          "aggregation")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _label_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, Defense):
        return v.label
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_label_value(x) for x in v) + "]"
    return str(v)


@dataclasses.dataclass(frozen=True)
class Defense:
    """Plain cross-entropy training; subclasses override the hooks they need.

    Subclasses are frozen dataclasses: their fields are the defense's parameters, validated
    in ``__post_init__`` and recorded in results by :meth:`params`.
    """

    name: ClassVar[str] = "none"
    summary: ClassVar[str] = "plain cross-entropy training"
    kind: ClassVar[str] = "none"

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params()}

    @property
    def label(self) -> str:
        """Human name with parameters, e.g. ``'label_smoothing(eps=0.1)'``."""
        p = ", ".join(f"{k}={_label_value(v)}" for k, v in self.params().items())
        return f"{self.name}({p})" if p else self.name

    def members(self) -> tuple[Defense, ...]:
        """The defenses this one is made of (itself, unless it is a composition)."""
        return (self,)

    # ----------------------------------------------------------------------- hooks

    def prepare(
        self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Once before training: filter or relabel the training set. Identity here."""
        return x, y

    def epoch_labels(
        self, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> torch.Tensor:
        """At the start of each epoch, on all training labels. Identity here."""
        return y

    def transform_labels(
        self, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Per-batch label transform; the identity unless overridden."""
        return y

    def objective(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        n_classes: int,
        generator: torch.Generator,
        loss_fn: LossFn,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        """The batch objective to minimise, given the model: ``loss_fn(model(x), y)``.

        ``bounds`` is the input domain (adversarial training keeps its examples inside it).
        """
        return loss_fn(model(x), y)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        """Mean training loss of one batch; cross-entropy unless overridden."""
        return F.cross_entropy(logits, y)

    def post_hoc(self, model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor) -> nn.Module:
        """After training, fitted on the validation split only. The model itself here."""
        return model

    @property
    def needs_validation(self) -> bool:
        """True if :meth:`post_hoc` needs the validation split."""
        return False

    def fit_ensemble(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     n_classes: int, seed: int, epochs: int, batch_size: int, lr: float,
                     weight_decay: float, progress: bool) -> nn.Module | None:
        """Replace the training loop by training a new model (an ensemble) and return it;
        ``None`` (here) runs the loop on ``model``. Partition aggregation overrides it."""
        return None

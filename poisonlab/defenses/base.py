"""The defense interface that the training loop calls."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Defense:
    """Plain cross-entropy training; subclasses override one hook or both.

    Subclasses are frozen dataclasses: their fields are the defense's parameters, validated
    in ``__post_init__`` and recorded in results by :meth:`params`.
    """

    name: ClassVar[str] = "none"
    summary: ClassVar[str] = "plain cross-entropy training"

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params()}

    @property
    def label(self) -> str:
        """Human name with parameters, e.g. ``'label_smoothing(eps=0.1)'``."""
        p = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in self.params().items())
        return f"{self.name}({p})" if p else self.name

    def transform_labels(
        self, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Per-batch label transform; the identity unless overridden."""
        return y

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        """Mean training loss of one batch; cross-entropy unless overridden."""
        return F.cross_entropy(logits, y)

"""Knowledge distillation as a training mode: a student learns a teacher's softened outputs.

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network". The student
minimises ``alpha * T^2 * CE(softmax(t / T), softmax(s / T)) + (1 - alpha) * loss(s, y)``
with ``t``, ``s`` the teacher's and the student's logits; the ``T^2`` keeps the soft term's
gradients on the scale of the hard one. This is the setting in which Müller, Kornblith &
Hinton 2019 ("When Does Label Smoothing Help?") found that a label-smoothed *teacher*
makes a worse teacher: a suite compares teachers trained with and without label smoothing
by their students' accuracy.

In Python pass a trained teacher. In a suite, declare it (``teacher: {model, defense,
seed}``, the same keys as a transfer attack's surrogate); the harness trains it on the
cell's training labels (poisoned ones included) before training the student.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._torch import eval_mode, model_device
from .._validation import validate_scalar
from ..attacks.transfer import SurrogateSpec
from ..errors import ConfigError
from .base import Defense, LossFn


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """``T^2 * mean CE(softmax(teacher / T), softmax(student / T))`` over the batch.

    >>> z = torch.tensor([[2.0, 0.0]])
    >>> float(distillation_loss(z, z, 1.0)) == float(-(z.softmax(1) * z.log_softmax(1)).sum())
    True
    """
    soft = F.softmax(teacher / temperature, dim=1)
    return -(soft * F.log_softmax(student / temperature, dim=1)).sum(dim=1).mean() * (
        temperature**2)


@dataclass(frozen=True)
class Distillation(Defense):
    """Train the model as a student of ``teacher`` at temperature ``T``.

    Parameters
    ----------
    T : float > 0
        Softening temperature (Hinton et al. used 1 .. 20; 4 is common).
    alpha : float in [0, 1]
        Weight of the soft (teacher) term; ``1 - alpha`` weighs the training loss on the
        labels (which a composed loss defense, e.g. label smoothing, may change).
    teacher : nn.Module, mapping, SurrogateSpec or None
        A trained teacher with the student's inputs and classes, or a declaration the
        harness trains (None: the student's architecture, defense none, another seed).
        The teacher runs on its own device and is never moved: put it on the student's
        device to spare a copy of each batch (the harness trains it there).

    >>> Distillation(T=4.0).params()["teacher"]["defense"]
    'none'
    """

    name: ClassVar[str] = "distillation"
    summary: ClassVar[str] = "train on a teacher's outputs softened at temperature T"
    kind: ClassVar[str] = "training"
    T: float = 4.0
    alpha: float = 1.0
    teacher: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "T", validate_scalar("T", self.T, lo=0, lo_closed=False))
        object.__setattr__(self, "alpha", validate_scalar("alpha", self.alpha, lo=0, hi=1))
        t = self.teacher
        if not isinstance(t, nn.Module | SurrogateSpec):
            t = SurrogateSpec.from_config(t, role="teacher")
        object.__setattr__(self, "teacher", t)

    def params(self) -> dict[str, Any]:
        t = self.teacher
        return {"T": self.T, "alpha": self.alpha,
                "teacher": t.to_dict() if isinstance(t, SurrogateSpec) else type(t).__name__}

    @property
    def needs_teacher(self) -> bool:
        """True while the teacher is a declaration the harness has not trained yet."""
        return isinstance(self.teacher, SurrogateSpec)

    def with_teacher(self, model: nn.Module) -> Distillation:
        return dataclasses.replace(self, teacher=model)

    def objective(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, n_classes: int,
                  generator: torch.Generator, loss_fn: LossFn,
                  bounds: tuple[float, float]) -> torch.Tensor:
        teacher = self.teacher
        if not isinstance(teacher, nn.Module):
            raise ConfigError(
                f"teacher={teacher!r} is not trained: pass teacher=<trained nn.Module> "
                "(a suite's declared teacher is trained by the harness)"
            )
        with eval_mode(teacher), torch.no_grad():
            # A teacher on another device than the student (trained on the CPU, say) runs
            # where it lives; its logits join the student's batch on the batch's device.
            t_logits = teacher(x.to(model_device(teacher))).to(x.device)
        s_logits = model(x)
        loss = self.alpha * distillation_loss(s_logits, t_logits, self.T)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * loss_fn(s_logits, y)
        return loss

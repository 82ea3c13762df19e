"""The evasion-attack template, the norm table, attack losses and AttackResult.

An attack author writes only ``_perturb``; the final ``__call__`` validates the inputs,
draws randomness from a seeded generator, runs the model in eval mode (restoring each
module's mode afterwards), projects the result into the eps-ball and the bounds, refuses
NaN, and computes per-sample success from the model's own predictions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_inputs, check_labels, check_model, check_seed
from ..errors import ConfigError, DataError
from ..models import eval_mode
from ..threat import EvasionThreat, Knowledge, Norm
from ..training import match_dtype, model_device, probe_model

# --------------------------------------------------------------------------- norm table


def _flat_norm(v: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample norm of ``v`` (n, ...) as a tensor of shape (n,)."""
    return torch.linalg.vector_norm(v.flatten(1), ord=p, dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _linf_random(shape: torch.Size, eps: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * eps


def _l2_random(shape: torch.Size, eps: float, gen: torch.Generator) -> torch.Tensor:
    # Uniform in the l2 ball: a Gaussian direction, radius eps * u^(1/d).
    direction = torch.randn(shape, generator=gen)
    direction = direction / _bcast(_flat_norm(direction, 2).clamp_min(1e-12), direction)
    d = math.prod(shape[1:])
    radius = eps * torch.rand(shape[0], generator=gen) ** (1.0 / d)
    return direction * _bcast(radius, direction)


def _l2_project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norms = _flat_norm(delta, 2)
    factor = torch.where(norms > eps, eps / norms.clamp_min(1e-12), torch.ones_like(norms))
    return delta * _bcast(factor, delta)


def _l2_normalize(g: torch.Tensor) -> torch.Tensor:
    return g / _bcast(_flat_norm(g, 2).clamp_min(1e-12), g)


@dataclass(frozen=True)
class NormOps:
    """What an attack needs from a norm: projection, steepest-ascent step, random start."""

    p: float
    project: Callable[[torch.Tensor, float], torch.Tensor]
    normalize: Callable[[torch.Tensor], torch.Tensor]
    random_init: Callable[[torch.Size, float, torch.Generator], torch.Tensor]

    def norm(self, v: torch.Tensor) -> torch.Tensor:
        return _flat_norm(v, self.p)


NORMS: dict[Norm, NormOps] = {
    Norm.LINF: NormOps(math.inf, lambda d, e: d.clamp(-e, e), torch.sign, _linf_random),
    Norm.L2: NormOps(2.0, _l2_project, _l2_normalize, _l2_random),
}


def project(
    x: torch.Tensor, x_adv: torch.Tensor, threat: EvasionThreat, *, clip: bool = True
) -> torch.Tensor:
    """Project ``x_adv`` into the eps-ball around ``x`` and, if ``clip``, into the bounds.

    Clipping into the bounds only moves coordinates towards ``x`` (which lies inside the
    bounds), so the result stays inside the ball.
    """
    delta = NORMS[threat.norm].project(x_adv - x, threat.eps)
    out = x + delta
    return out.clamp(*threat.bounds) if clip else out


# --------------------------------------------------------------------------- losses

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _ce_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def _others_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    mask = F.one_hot(cls, logits.shape[1]).bool()
    return logits.masked_fill(mask, -math.inf).amax(dim=1)


def _margin_loss(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """Carlini-Wagner logit margin (their f6 without the confidence cap)."""
    if target is None:
        return _others_max(logits, y) - logits.gather(1, y[:, None])[:, 0]
    return logits.gather(1, target[:, None])[:, 0] - _others_max(logits, target)


def _dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020, "Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks"), to maximise.

    Untargeted: ``(max_{i != y} z_i - z_y) / (z_(1) - z_(3))``; targeted:
    ``(z_t - z_y) / (z_(1) - (z_(3) + z_(4)) / 2)``, with ``z_(k)`` the k-th largest logit.
    Invariant to shifting and rescaling the logits, so a saturated softmax or a
    temperature cannot hide the gradient. Needs at least 3 classes (4 when targeted).
    """
    need = 3 if target is None else 4
    if logits.shape[1] < need:
        raise ConfigError(
            f"loss='dlr' is not allowed for a model with {logits.shape[1]} classes: the "
            f"{'targeted ' if target is not None else ''}DLR loss needs at least {need}; "
            "use 'margin'"
        )
    z = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        return (_others_max(logits, y) - z_y) / (z[:, 0] - z[:, 2] + 1e-12)
    z_t = logits.gather(1, target[:, None])[:, 0]
    return (z_t - z_y) / (z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + 1e-12)


#: Per-sample attack objectives to maximise: (logits, y, target or None) -> (n,).
LOSSES: dict[str, LossFn] = {"ce": _ce_loss, "margin": _margin_loss, "dlr": _dlr_loss}


def is_success(
    pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """Untargeted: prediction differs from ``y``; targeted: prediction equals ``target``."""
    return pred != y if target is None else pred == target


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class AttackResult:
    """The outcome of one evasion attack under one threat; per-sample vectors throughout.

    Attributes
    ----------
    x_adv : Tensor (n, *input_shape)
        Inside the threat's eps-ball around x and (unless the attack was told
        ``clip=False``) inside its bounds.
    success : bool Tensor (n,)
        Untargeted: ``pred_adv != y``; targeted: ``pred_adv == target``.
    y, pred_clean, pred_adv : int64 Tensor (n,)
    target : int64 Tensor (n,) or None
    threat : EvasionThreat
    attack : str; params : dict; seed : int
    gradients : int
        Number of per-sample input gradients computed (the attack's work).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    y: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    target: torch.Tensor | None
    threat: EvasionThreat
    attack: str
    params: dict[str, Any]
    seed: int
    gradients: int

    @property
    def robust_accuracy(self) -> float:
        from ..metrics import accuracy

        return accuracy(self.pred_adv, self.y)

    @property
    def attack_success_rate(self) -> float:
        from ..metrics import attack_success_rate

        return attack_success_rate(self.pred_clean, self.pred_adv, self.y, target=self.target)


# --------------------------------------------------------------------------- template


def as_generator(seed: int | torch.Generator) -> tuple[torch.Generator, int]:
    """A CPU generator from a seed (recorded) or a generator passed in (recorded as -1)."""
    if isinstance(seed, torch.Generator):
        return seed, -1
    s = check_seed("seed", seed)
    return torch.Generator().manual_seed(s), s


def check_threat(threat: Any) -> EvasionThreat:
    if not isinstance(threat, EvasionThreat):
        raise ConfigError(f"threat={threat!r} is not allowed: expected an EvasionThreat")
    return threat


def _targets(target: Any, y: torch.Tensor) -> Any:
    """A scalar class id broadcast to ``y``'s length; a vector as given (checked later)."""
    if isinstance(target, bool | np.bool_):
        raise ConfigError(f"target={target!r} is not allowed: expected a class id or a vector "
                          "of class ids")
    if isinstance(target, int | np.integer):
        return torch.full_like(y, int(target))
    if isinstance(target, torch.Tensor | np.ndarray) and target.ndim == 0:
        t = torch.as_tensor(target)
        return t.reshape(1).expand(len(y)).clone()  # dtype kept: check_labels judges it
    return target


def prepare_call(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: Any,
    target: Any,
    *,
    gradients: bool = False,
    name: str = "attack",
) -> tuple[torch.Tensor, torch.Tensor, EvasionThreat, torch.Tensor | None]:
    """Validate an attack call's arguments; return tensors on the model's device.

    One probe of the model (:func:`~poisonlab.training.probe_model`) checks its output and,
    with ``gradients`` (white-box attacks), that its output is differentiable in its input.
    """
    threat = check_threat(threat)
    check_model(model)
    x_t, y_t = check_inputs(x, y)
    x_t = match_dtype(model, x_t)
    k = probe_model(model, x_t, input_grad=gradients, what=f"attack {name!r}")
    check_labels(y_t, n_classes=k, of_model=True)
    lo, hi = threat.bounds
    if x_t.numel() and (x_t.min() < lo or x_t.max() > hi):
        raise DataError(
            f"x has values in [{float(x_t.min()):g}, {float(x_t.max()):g}]: expected values "
            f"inside threat bounds [{lo:g}, {hi:g}]"
        )
    t: torch.Tensor | None = None
    if threat.targeted:
        if target is None:
            raise ConfigError("target=None is not allowed: a targeted threat needs target=")
        _, t = check_inputs(x_t, _targets(target, y_t), n_classes=k, name_y="target")
    elif target is not None:
        raise ConfigError("target= is not allowed: the threat is untargeted (targeted=False)")
    device = model_device(model)
    return x_t.to(device), y_t.to(device), threat, (None if t is None else t.to(device))


@dataclass(frozen=True)
class Attack:
    """Base of every evasion attack: settings in fields, model/data/threat/seed at the call.

    Subclasses are frozen dataclasses that validate their fields in ``__post_init__`` and
    implement ``_perturb``. Call: ``attack(model, x, y, threat=..., seed=0, target=None)``.
    """

    name: ClassVar[str] = "attack"
    clips: ClassVar[bool] = True
    #: What the attacker needs: the model's gradients (white-box), a model of their own
    #: (transfer) or only the model's outputs (black-box). Reports name it per attack.
    knowledge: ClassVar[Knowledge] = Knowledge.WHITE_BOX

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def needs_gradients(self) -> bool:
        """Whether the attack differentiates the model (white-box): the call then checks
        once that the model's output has a gradient path back to its input."""
        return self.knowledge is Knowledge.WHITE_BOX

    def check_threat(self, threat: EvasionThreat) -> None:
        """Raise ConfigError if this attack cannot honour ``threat`` (its norm, targeting).

        Called before any work, and by ``poisonlab validate`` for every threat of a suite,
        so that a suite asking for the impossible fails before it runs. Default: any threat.
        """

    def _clip(self) -> bool:
        return self.clips

    def _perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        threat: EvasionThreat,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, int]:
        """Return ``(x_adv, gradients)``; the template projects and checks it."""
        raise NotImplementedError

    def __call__(
        self,
        model: nn.Module,
        x: Any,
        y: Any,
        *,
        threat: EvasionThreat,
        seed: int | torch.Generator = 0,
        target: Any = None,
    ) -> AttackResult:
        x_t, y_t, threat, t = prepare_call(model, x, y, threat, target,
                                           gradients=self.needs_gradients(), name=self.name)
        self.check_threat(threat)
        generator, seed_used = as_generator(seed)
        with eval_mode(model):
            x_adv, grads = self._perturb(
                model, x_t, y_t, threat=threat, target=t, generator=generator
            )
            return finish(model, x_t, y_t, x_adv.detach(), threat, t, self.name,
                          self.params(), seed_used, grads, clip=self._clip())


def finish(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    threat: EvasionThreat,
    target: torch.Tensor | None,
    name: str,
    params: dict[str, Any],
    seed: int,
    gradients: int,
    *,
    clip: bool = True,
    logits_clean: torch.Tensor | None = None,
) -> AttackResult:
    """Project, refuse NaN, predict and build the AttackResult (model already in eval).

    ``logits_clean``, the model's logits on ``x`` if the caller already has them (a
    security curve predicts on the clean inputs once for all its eps).
    """
    x_adv = project(x, x_adv, threat, clip=clip)
    if not torch.isfinite(x_adv).all():
        raise DataError(f"attack {name!r} produced NaN or Inf inputs under {threat.id}")
    with torch.no_grad():
        if logits_clean is None:
            logits_clean = model(x)
        logits_adv = model(x_adv)
    if not (torch.isfinite(logits_clean).all() and torch.isfinite(logits_adv).all()):
        raise DataError(
            f"the model returned NaN or Inf logits under attack {name!r} ({threat.id}): "
            "success flags would be meaningless"
        )
    pred_clean, pred_adv = logits_clean.argmax(dim=1), logits_adv.argmax(dim=1)
    return AttackResult(
        x_adv=x_adv, success=is_success(pred_adv, y, target), y=y, pred_clean=pred_clean,
        pred_adv=pred_adv, target=target, threat=threat, attack=name, params=params,
        seed=seed, gradients=gradients,
    )

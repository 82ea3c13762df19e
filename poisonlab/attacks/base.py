"""The evasion-attack template and AttackResult (norms: geometry.py; losses: losses.py).

An attack author writes only ``_perturb``; the final ``__call__`` validates the inputs,
draws randomness from a seeded generator, runs the model in eval mode (restoring each
module's mode afterwards), projects the result into the eps-ball and the bounds, refuses
NaN, and computes per-sample success from the model's own predictions.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._torch import eval_mode, match_dtype, model_device, probe_model
from .._validation import (
    validate_bool,
    validate_inputs,
    validate_labels,
    validate_model,
    validate_seed,
)
from ..batching import DEFAULT_BATCH_SIZE, Source, iter_slices, validate_batch_size
from ..errors import ConfigError, DataError
from ..threat import EvasionThreat, Knowledge
from .geometry import SampleRNG, project
from .losses import is_success

# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class AttackResult:
    """The outcome of one evasion attack under one threat; per-sample vectors throughout.

    Attributes
    ----------
    x_adv : Tensor (n, *input_shape), or None when the call had ``keep_adv=False``
        Inside the threat's eps-ball around x and (unless the attack was told
        ``clip=False``) inside its bounds; on the device of the inputs (the CPU for a
        torch Dataset).
    success : bool Tensor (n,)
        Untargeted: ``pred_adv != y``; targeted: ``pred_adv == target``.
    y, pred_clean, pred_adv : int64 Tensor (n,)
    target : int64 Tensor (n,) or None
    threat : EvasionThreat
    attack : str; params : dict; seed : int
    gradients : int
        Number of per-sample input gradients computed (the attack's work).
    components : tuple of str
        For an ensemble (``autoattack``): its attacks, in the order they ran; else ().
    found_by : int64 Tensor (n,) or None
        For an ensemble: the index into ``components`` of the attack that fooled each
        point first; -1 where none did (robust points, and points misclassified already
        on the clean input, which an ensemble does not attack).
    """

    x_adv: torch.Tensor | None
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
    components: tuple[str, ...] = ()
    found_by: torch.Tensor | None = None

    def breakdown(self) -> dict[str, int]:
        """Points fooled first by each component of an ensemble (``{}`` for one attack).

        >>> r = AttackResult(None, torch.tensor([True, True, False]), *(torch.zeros(3),) * 3,
        ...                  None, None, "autoattack", {}, 0, 0, ("apgd-ce", "apgd-t"),
        ...                  torch.tensor([0, 1, -1]))
        >>> r.breakdown()
        {'apgd-ce': 1, 'apgd-t': 1}
        """
        if self.found_by is None:
            return {}
        return {c: int((self.found_by == i).sum()) for i, c in enumerate(self.components)}

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
    s = validate_seed("seed", seed)
    return torch.Generator().manual_seed(s), s


def validate_threat(threat: Any) -> EvasionThreat:
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
        return t.reshape(1).expand(len(y)).clone()  # dtype kept: validate_labels judges it
    return target


@dataclass(frozen=True, eq=False)
class Prepared:
    """A validated attack call: the input source, labels and targets, the model's K.

    ``source`` holds the inputs whole (tensors, on the caller's device) or reads a torch
    Dataset one batch at a time; ``y`` and ``target`` are (n,) int64 on the CPU or the
    caller's device. ``batch(ix)`` returns one batch on the model's device.
    """

    source: Source
    y: torch.Tensor
    target: torch.Tensor | None
    threat: EvasionThreat
    n_classes: int
    device: torch.device
    model: nn.Module

    @property
    def n(self) -> int:
        return self.source.n

    def batch(self, ix: torch.Tensor | slice) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(x, y, target) of samples ``ix`` on the model's device, x in its dtype."""
        xb, yb = self.source.take(ix)
        if self.source.lazy:
            validate_labels(yb, n_classes=self.n_classes, of_model=True)
            validate_in_bounds(xb, self.threat)
        tb = None if self.target is None else self.target[ix]
        xb = match_dtype(self.model, xb).to(self.device, non_blocking=True)
        return (xb, yb.to(self.device), None if tb is None else tb.to(self.device))


def validate_in_bounds(x: torch.Tensor, threat: EvasionThreat) -> None:
    lo, hi = threat.bounds
    if x.numel() and (x.min() < lo or x.max() > hi):
        raise DataError(
            f"x has values in [{float(x.min()):g}, {float(x.max()):g}]: expected values "
            f"inside threat bounds [{lo:g}, {hi:g}]"
        )


def prepare_call(
    model: nn.Module,
    x: Any,
    y: Any,
    threat: Any,
    target: Any,
    *,
    gradients: bool = False,
    name: str = "attack",
) -> Prepared:
    """Validate an attack call's arguments once, for every batch that follows.

    One probe of the model (:func:`~poisonlab._torch.probe_model`) checks its output and,
    with ``gradients`` (white-box attacks), that its output is differentiable in its input.
    Tensors are checked whole (finite, labels in range, inside the bounds); a torch Dataset
    is checked batch by batch as it is read.
    """
    threat = validate_threat(threat)
    validate_model(model)
    source = Source.of(x, y)
    first, _ = source.take(slice(0, 1))
    k = probe_model(model, match_dtype(model, first), input_grad=gradients,
                    what=f"attack {name!r}")
    y_t = source.labels()
    validate_labels(y_t, n_classes=k, of_model=True)
    if not source.lazy:
        validate_in_bounds(source.x, threat)
    t: torch.Tensor | None = None
    if threat.targeted:
        if target is None:
            raise ConfigError("target=None is not allowed: a targeted threat needs target=")
        # x as the caller gave it (a zero-stride stand-in for a Dataset): the message
        # names x's real shape.
        x_like = (source.x if not source.lazy
                  else torch.zeros((1, *first.shape[1:])).expand(len(y_t), *first.shape[1:]))
        _, t = validate_inputs(x_like, _targets(target, y_t), n_classes=k, name_y="target")
        t = t.to(y_t.device)
    elif target is not None:
        raise ConfigError("target= is not allowed: the threat is untargeted (targeted=False)")
    return Prepared(source, y_t, t, threat, k, model_device(model), model)


def base_seed(seed: int | torch.Generator) -> tuple[int, int]:
    """(the seed of the per-sample streams, the seed recorded in the result).

    A seed is both; a generator passed in gives one draw from it and is recorded as -1.
    """
    generator, used = as_generator(seed)
    if used >= 0:
        return used, used
    return int(torch.randint(0, 2**62, (1,), generator=generator)), -1


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

    def validate_threat(self, threat: EvasionThreat) -> None:
        """Raise ConfigError if this attack cannot honour ``threat`` (its norm, targeting).

        Called before any work, and by ``poisonlab validate`` for every threat of a suite,
        so that a suite asking for the impossible fails before it runs. Default: any threat.
        """

    def check_threat(self, threat: EvasionThreat) -> None:
        """Deprecated name of :meth:`validate_threat` (issue 20: input checks are
        ``validate_*``); a subclass that overrides ``check_threat`` is still honoured."""
        warnings.warn("Attack.check_threat is deprecated: call validate_threat",
                      DeprecationWarning, stacklevel=2)
        self.validate_threat(threat)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "check_threat" in vars(cls) and "validate_threat" not in vars(cls):
            cls.validate_threat = vars(cls)["check_threat"]  # type: ignore[method-assign]

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
        rng: SampleRNG,
    ) -> tuple[torch.Tensor, int]:
        """Return ``(x_adv, gradients)`` for one batch; the template projects and checks it.

        ``rng`` holds the batch's per-sample random streams: draw from it (never from a
        batch-wide generator) so that results do not depend on the batch size.
        """
        raise NotImplementedError

    def _perturb_detail(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        threat: EvasionThreat,
        target: torch.Tensor | None,
        rng: SampleRNG,
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """``_perturb`` and, for an ensemble, which component fooled each sample first
        (see :attr:`AttackResult.found_by`); single attacks return None there."""
        x_adv, grads = self._perturb(model, x, y, threat=threat, target=target, rng=rng)
        return x_adv, grads, None

    def components(self, *, image: bool, targeted: bool, n_classes: int) -> tuple[str, ...]:
        """The attacks of an ensemble, in order, for image inputs (n, C, H, W) or others,
        a targeted threat or not and a model of ``n_classes`` outputs (``()`` for a single
        attack)."""
        return ()

    def __call__(
        self,
        model: nn.Module,
        x: Any,
        y: Any = None,
        *,
        threat: EvasionThreat,
        seed: int | torch.Generator = 0,
        target: Any = None,
        batch_size: int | None = DEFAULT_BATCH_SIZE,
        keep_adv: bool = True,
    ) -> AttackResult:
        """Attack ``x`` (n, *input_shape) with labels ``y`` (n,) under ``threat``.

        ``x`` may also be a map-style torch Dataset of ``(x_i, y_i)`` items (``y=None``).
        ``batch_size`` samples run at once (None: all): it changes memory and speed, never
        a number (see :mod:`poisonlab.batching`). ``keep_adv=False`` keeps only the
        per-sample outcomes (``x_adv`` is None), for long runs.
        """
        batch_size = validate_batch_size("batch_size", batch_size)
        keep_adv = validate_bool("keep_adv", keep_adv)
        call = prepare_call(model, x, y, threat, target,
                            gradients=self.needs_gradients(), name=self.name)
        self.validate_threat(call.threat)
        root, seed_used = base_seed(seed)
        out = Gathered.empty(call.n, keep_adv)
        found: torch.Tensor | None = None
        with eval_mode(model):
            for sl in iter_slices(call.n, batch_size):
                xb, yb, tb = call.batch(sl)
                x_adv, grads, found_b = self._perturb_detail(
                    model, xb, yb, threat=call.threat, target=tb,
                    rng=SampleRNG(root, torch.arange(sl.start, sl.stop)))
                out.put(sl, finish_batch(model, xb, yb, x_adv.detach(), call.threat, tb,
                                         self.name, clip=self._clip()), grads)
                if found_b is not None:
                    if found is None:
                        found = torch.full((call.n,), -1, dtype=torch.int64)
                    found[sl] = found_b.cpu()
        res = out.result(call, self.name, self.params(), seed_used)
        if found is None:
            return res
        return with_breakdown(res, self, call, call.threat, found)


def with_breakdown(res: AttackResult, attack: Attack, call: Prepared, threat: EvasionThreat,
                   found: torch.Tensor) -> AttackResult:
    """``res`` with an ensemble's ``components`` and per-sample ``found_by``."""
    image = len(call.source.take(slice(0, 1))[0].shape) == 4
    parts = attack.components(image=image, targeted=threat.targeted, n_classes=call.n_classes)
    return dataclasses.replace(res, components=parts, found_by=found.to(res.y.device))


@dataclass(frozen=True, eq=False)
class BatchOutcome:
    """What one batch of an attack leaves: projected x_adv and the two predictions."""

    x_adv: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor


def finish_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    threat: EvasionThreat,
    target: torch.Tensor | None,
    name: str,
    *,
    clip: bool = True,
    pred_clean: torch.Tensor | None = None,
) -> BatchOutcome:
    """Project one batch's x_adv, refuse NaN, predict (model already in eval mode).

    ``pred_clean``, the model's predictions on ``x`` if the caller already has them (a
    security curve predicts on the clean inputs once for all its eps).
    """
    x_adv = project(x, x_adv, threat, clip=clip)
    if not torch.isfinite(x_adv).all():
        raise DataError(f"attack {name!r} produced NaN or Inf inputs under {threat.id}")
    with torch.no_grad():
        logits_adv = model(x_adv)
        finite = bool(torch.isfinite(logits_adv).all())
        if pred_clean is None:
            logits_clean = model(x)
            finite = finite and bool(torch.isfinite(logits_clean).all())
            pred_clean = logits_clean.argmax(dim=1)
    if not finite:
        raise DataError(
            f"the model returned NaN or Inf logits under attack {name!r} ({threat.id}): "
            "success flags would be meaningless"
        )
    return BatchOutcome(x_adv, pred_clean, logits_adv.argmax(dim=1))


@dataclass(eq=False)
class Gathered:
    """Per-sample outcomes gathered batch by batch on the CPU (x_adv only if kept)."""

    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    x_adv: torch.Tensor | None
    keep_adv: bool
    gradients: int = 0

    @staticmethod
    def empty(n: int, keep_adv: bool) -> Gathered:
        return Gathered(torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64),
                        None, keep_adv)

    def put(self, ix: torch.Tensor | slice, out: BatchOutcome, gradients: int = 0) -> None:
        self.pred_clean[ix] = out.pred_clean.cpu()
        self.pred_adv[ix] = out.pred_adv.cpu()
        self.gradients += gradients
        if self.keep_adv:
            if self.x_adv is None:
                self.x_adv = torch.zeros((len(self.pred_adv), *out.x_adv.shape[1:]),
                                         dtype=out.x_adv.dtype)
            self.x_adv[ix] = out.x_adv.cpu()

    def result(self, call: Prepared, name: str, params: dict[str, Any],
               seed: int) -> AttackResult:
        """The AttackResult (its own copies), per-sample vectors on the labels' device."""
        dev = call.y.device
        t = call.target
        pred_adv = self.pred_adv.to(dev, copy=True)
        x_adv = None if self.x_adv is None else self.x_adv.to(
            call.source.x.device if not call.source.lazy else "cpu", copy=True)
        return AttackResult(
            x_adv=x_adv, success=is_success(pred_adv, call.y, t), y=call.y,
            pred_clean=self.pred_clean.to(dev, copy=True), pred_adv=pred_adv, target=t,
            threat=call.threat, attack=name, params=params, seed=seed,
            gradients=self.gradients,
        )

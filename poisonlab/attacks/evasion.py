"""Evasion attacks in plain torch: FGSM / FGM, PGD in linf and l2, and random noise.

The algorithms are pure functions (``fgsm``, ``pgd``) in plain torch; ``FGSM`` and ``PGD``
hold validated settings and run them inside the :class:`~poisonlab.attacks.base.Attack`
template. ``security_curve`` runs one attack over several eps of the same threat and shares
the work: a sample fooled at a smaller eps is fooled at every larger one and is not
attacked again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._torch import child_seeds, eval_mode
from .._validation import validate_bool, validate_choice, validate_scalar, validate_seed
from ..batching import DEFAULT_BATCH_SIZE, iter_slices, validate_batch_size
from ..errors import ConfigError, DataError
from ..threat import EvasionThreat, Knowledge
from .base import (
    Attack,
    AttackResult,
    BatchOutcome,
    Gathered,
    finish_batch,
    prepare_call,
    with_breakdown,
)
from .geometry import NORMS, SampleRNG
from .losses import LOSSES, is_success


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: EvasionThreat,
    loss: str = "ce",
    target: torch.Tensor | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """One step of size eps along the normalised loss gradient (Goodfellow et al. 2015).

    linf: ``x + eps * sign(grad)`` (FGSM); l2: ``x + eps * grad / ||grad||`` (FGM).
    Returns x_adv of the shape of ``x``; clipped to the bounds unless ``clip=False``.
    """
    ops = NORMS[threat.norm]
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(LOSSES[loss](model(x_req), y, target).sum(), x_req)
    x_adv = x + threat.eps * ops.normalize(grad)
    return x_adv.clamp(*threat.bounds) if clip else x_adv


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: EvasionThreat,
    steps: int = 40,
    stepsize: float,
    restarts: int = 1,
    loss: str = "ce",
    random_start: bool = True,
    early_stop: bool = False,
    target: torch.Tensor | None = None,
    rng: SampleRNG,
) -> tuple[torch.Tensor, int]:
    """Projected gradient descent (Madry et al. 2018) in the threat's norm.

    Each run starts at ``x`` (or a uniform random point of the ball) and takes ``steps``
    steps of size ``stepsize`` along the normalised gradient, projecting onto the ball and
    the bounds after each. Across ``restarts`` each sample keeps its strongest result: a
    successful one first, else the one with the highest loss. With ``early_stop`` a sample
    is frozen at the first iterate that fools the model (so it is never lost again), and
    later restarts attack only the samples not yet fooled. Restart ``r`` of sample ``i``
    starts from ``rng``'s stream ``r`` for ``i``, so a sample's attack is the same in any
    batch.

    Returns ``(x_adv, gradients)``, the second the number of per-sample gradients taken.
    """
    ops = NORMS[threat.norm]
    loss_fn = LOSSES[loss]
    lo, hi = threat.bounds
    eps = threat.eps
    n = x.shape[0]
    best = x.clone()
    best_success = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_loss = torch.full((n,), -torch.inf, device=x.device)
    gradients = 0

    def sub(v: torch.Tensor | None, ix: torch.Tensor) -> torch.Tensor | None:
        return None if v is None else v[ix]

    def ascend(xa: torch.Tensor, x0: torch.Tensor, ya: torch.Tensor,
               ta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from ``xa``: (logits at xa, next iterate in the ball and bounds)."""
        xa.requires_grad_(True)
        logits = model(xa)
        (grad,) = torch.autograd.grad(loss_fn(logits, ya, ta).sum(), xa)
        with torch.no_grad():
            step = xa.detach() + stepsize * ops.normalize(grad)
            return logits.detach(), (x0 + ops.project(step - x0, eps)).clamp(lo, hi)

    for r in range(restarts):
        everyone = r == 0 or not early_stop
        todo = (torch.arange(n, device=x.device) if everyone
                else torch.nonzero(~best_success).flatten())
        if todo.numel() == 0:
            break
        x0, y0, t0 = (x, y, target) if everyone else (x[todo], y[todo], sub(target, todo))
        if random_start:
            r_rng = rng if everyone else rng.take(todo)
            delta = ops.random_init(x0.shape[1:], eps, r_rng, r).to(x.device, x.dtype)
            x_cur = (x0 + delta).clamp(lo, hi)
        else:
            x_cur = x0.clone()
        if not early_stop:
            # The plain loop: no bookkeeping per step beyond the step itself.
            for _ in range(steps):
                _, x_cur = ascend(x_cur, x0, y0, t0)
            gradients += steps * int(todo.numel())
            x_adv = x_cur
        else:
            # The samples still attacked are kept compacted (``idx`` into this restart's
            # batch) and shrink only when some of them are fooled: a fooled sample is
            # frozen at the iterate that fooled it and never attacked again.
            x_adv = x_cur.clone()
            idx = torch.arange(x0.shape[0], device=x.device)
            xa, xa0, ya, ta = x_cur, x0, y0, t0
            for _ in range(steps):
                logits, x_next = ascend(xa, xa0, ya, ta)
                gradients += int(idx.numel())
                fooled = is_success(logits.argmax(dim=1), ya, ta)
                if bool(fooled.any()):
                    x_adv[idx[fooled]] = xa.detach()[fooled]
                    keep = ~fooled
                    idx, x_next, xa0, ya, ta = (idx[keep], x_next[keep], xa0[keep], ya[keep],
                                                sub(ta, keep))
                    if idx.numel() == 0:
                        break
                xa = x_next
            else:
                x_adv[idx] = xa
        if restarts == 1:
            # One run: nothing to choose between (the caller predicts on the result).
            return x_adv.detach(), gradients
        with torch.no_grad():
            logits = model(x_adv)
            succ = is_success(logits.argmax(dim=1), y0, t0)
            run_loss = loss_fn(logits, y0, t0)
            prev_s, prev_l = best_success[todo], best_loss[todo]
            better = (succ & ~prev_s) | (~succ & ~prev_s & (run_loss > prev_l))
            idx_b = todo[better]
            best[idx_b] = x_adv[better]
            best_success[idx_b] = succ[better]
            best_loss[idx_b] = run_loss[better]
    return best, gradients


_LOSS_NAMES = tuple(LOSSES)


@dataclass(frozen=True)
class FGSM(Attack):
    """Fast gradient sign method (linf) / fast gradient method (l2).

    Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples".

    Parameters
    ----------
    loss : "ce" | "margin" | "dlr"
        See PGD.
    clip : bool
        Clip to the threat's bounds (default); ``False`` reproduces the paper's setting.

    >>> from poisonlab import EvasionThreat
    >>> res = FGSM()(model, x, y, threat=EvasionThreat(eps=0.1), seed=0)  # doctest: +SKIP
    """

    name: ClassVar[str] = "fgsm"
    loss: str = "ce"
    clip: bool = True

    def __post_init__(self) -> None:
        validate_choice("loss", self.loss, _LOSS_NAMES)
        validate_bool("clip", self.clip)

    def _clip(self) -> bool:
        return self.clip

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        return fgsm(model, x, y, threat=threat, loss=self.loss, target=target,
                    clip=self.clip), int(x.shape[0])


@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient descent with random start and restarts (Madry et al. 2018).

    Parameters
    ----------
    steps : int >= 1
    rel_stepsize : float > 0
        Step size as a fraction of eps (foolbox's convention); ignored if ``abs_stepsize``.
    abs_stepsize : float > 0, optional
        Step size in input units.
    restarts : int >= 1
        Independent random starts; each sample keeps its strongest result.
    loss : "ce" | "margin" | "dlr"
        Cross-entropy; the Carlini-Wagner logit margin (robust to a saturated softmax); or
        Croce & Hein 2020's difference of logits ratio, a margin divided by the spread of
        the top logits. With normalised steps the margin's direction is already
        scale-invariant; DLR's normalisation also makes its *values* comparable across
        samples and models, which is what picks the best restart. "dlr" needs at least
        3 classes (4 when targeted).
    random_start : bool
        Start uniformly inside the ball (needed for restarts > 1).
    early_stop : bool
        Stop attacking a sample at the first iterate that fools the model, keeping that
        point: the same or lower robust accuracy, less work.

    >>> res = PGD(steps=40)(model, x, y, threat=EvasionThreat(eps=0.1), seed=0)  # doctest: +SKIP
    """

    name: ClassVar[str] = "pgd"
    steps: int = 40
    rel_stepsize: float = 0.1
    abs_stepsize: float | None = None
    restarts: int = 1
    loss: str = "ce"
    random_start: bool = True
    early_stop: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", validate_scalar("steps", self.steps, lo=1, integer=True))
        object.__setattr__(
            self, "rel_stepsize",
            validate_scalar("rel_stepsize", self.rel_stepsize, lo=0, lo_closed=False),
        )
        if self.abs_stepsize is not None:
            object.__setattr__(
                self, "abs_stepsize",
                validate_scalar("abs_stepsize", self.abs_stepsize, lo=0, lo_closed=False),
            )
        object.__setattr__(
            self, "restarts", validate_scalar("restarts", self.restarts, lo=1, integer=True)
        )
        validate_choice("loss", self.loss, _LOSS_NAMES)
        validate_bool("random_start", self.random_start)
        validate_bool("early_stop", self.early_stop)
        if self.restarts > 1 and not self.random_start:
            raise ConfigError(
                f"restarts={self.restarts} is not allowed with random_start=False: "
                "every restart would repeat the same deterministic run"
            )

    def stepsize(self, eps: float) -> float:
        return self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        return pgd(
            model, x, y, threat=threat, steps=self.steps, stepsize=self.stepsize(threat.eps),
            restarts=self.restarts, loss=self.loss, random_start=self.random_start,
            early_stop=self.early_stop, target=target, rng=rng,
        )


def random_noise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: EvasionThreat,
    samples: int = 1,
    target: torch.Tensor | None = None,
    rng: SampleRNG,
) -> torch.Tensor:
    """Random points on the surface of the eps-ball, best of ``samples`` draws per sample.

    linf: ``x + eps * s`` with ``s`` uniform random signs (a random corner of the box);
    l2: ``x + eps * u`` with ``u`` uniform on the unit sphere. Clipped to the bounds. A
    sample keeps its first successful draw, else the last one; draw ``s`` of sample ``i``
    comes from ``rng``'s stream ``s`` for ``i``. Returns x_adv like ``x``.
    """
    lo, hi = threat.bounds
    best = x.clone()
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for s in range(samples):
        todo = torch.nonzero(~done).flatten()
        r = rng.take(todo).randn(x.shape[1:], stream=s).to(x.device, x.dtype)
        step = NORMS[threat.norm].normalize(r)  # sign(r) for linf; r / ||r||_2 for l2
        cand = (x[todo] + threat.eps * step).clamp(lo, hi)
        best[todo] = cand
        with torch.no_grad():
            done[todo] = is_success(model(cand).argmax(dim=1), y[todo],
                                    None if target is None else target[todo])
        if bool(done.all()):
            break
    return best


@dataclass(frozen=True)
class Noise(Attack):
    """Random perturbation of the full budget: the baseline every real attack must beat.

    A gradient attack that does not beat random noise of the same eps by a wide margin is
    broken, or the model's gradients are (Carlini et al. 2019, "On Evaluating Adversarial
    Robustness", section 4). Uses no gradients.

    Parameters
    ----------
    samples : int >= 1
        Random draws per sample; a sample counts as fooled if any draw fools it.
    """

    name: ClassVar[str] = "noise"
    knowledge: ClassVar[Knowledge] = Knowledge.BLACK_BOX
    samples: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "samples", validate_scalar("samples", self.samples, lo=1, integer=True)
        )

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        return random_noise(model, x, y, threat=threat, samples=self.samples, target=target,
                            rng=rng), 0


def security_curve(
    attack: Attack,
    model: nn.Module,
    x: Any,
    y: Any = None,
    *,
    threats: Sequence[EvasionThreat],
    seed: int = 0,
    target: Any = None,
    on_result: Callable[[EvasionThreat, AttackResult], None] | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    keep_adv: bool = True,
) -> list[AttackResult]:
    """Run ``attack`` under each threat (same norm and bounds, several eps), sharing work.

    Threats are processed by increasing eps. A sample fooled at a smaller eps keeps that
    adversarial point (it lies inside every larger ball) and is not attacked again, so
    success never decreases with eps and each larger eps costs only the samples still
    standing. Each eps draws from its own child seed of ``seed``, per sample, so the curve
    does not depend on ``batch_size`` (the samples still standing are attacked
    ``batch_size`` at a time; the clean predictions are made once). ``x`` may be a
    map-style torch Dataset of ``(x_i, y_i)`` items (``y=None``); ``keep_adv=False`` keeps
    only the per-sample outcomes.

    ``on_result(threat, result)``, if given, is called as each eps finishes (in increasing
    eps): a progress hook, it cannot change the results.

    Returns one :class:`AttackResult` per threat, in the order given.
    """
    if not isinstance(attack, Attack):
        raise ConfigError(f"attack={attack!r} is not allowed: expected an Attack such as "
                          "PGD(steps=40) (get_attack(name) builds one from a name)")
    if isinstance(threats, EvasionThreat) or not isinstance(threats, Sequence | type(None)):
        raise ConfigError(f"threats={threats!r} is not allowed: expected a list of "
                          "EvasionThreat")
    if not threats:
        raise ConfigError("threats=[] is not allowed: expected at least one EvasionThreat")
    if on_result is not None and not callable(on_result):
        raise ConfigError(f"on_result={on_result!r} is not allowed: expected a callable "
                          "(threat, result) -> None")
    first = threats[0]
    for t in threats:
        if not isinstance(t, EvasionThreat):
            raise ConfigError(f"threats contains {t!r}: expected EvasionThreat")
        if (t.norm, t.bounds, t.targeted) != (first.norm, first.bounds, first.targeted):
            raise ConfigError(
                f"threats mix {first.id} and {t.id}: a security curve needs one norm, "
                "bounds and targeting, varying eps only"
            )
    seed = validate_seed("seed", seed)
    batch_size = validate_batch_size("batch_size", batch_size)
    keep_adv = validate_bool("keep_adv", keep_adv)
    attack.validate_threat(first)
    call = prepare_call(model, x, y, first, target, gradients=attack.needs_gradients(),
                        name=attack.name)
    order = sorted(range(len(threats)), key=lambda i: threats[i].eps)
    seeds = child_seeds(seed, len(threats))
    results: dict[int, AttackResult] = {}
    out = Gathered.empty(call.n, keep_adv)
    with eval_mode(model):
        for sl in iter_slices(call.n, batch_size):
            xb, yb, tb = call.batch(sl)
            with torch.no_grad():
                logits = model(xb)
            if not bool(torch.isfinite(logits).all()):
                raise DataError(f"the model returned NaN or Inf logits for x[{sl.start}:"
                                f"{sl.stop}]: success flags would be meaningless")
            pred = logits.argmax(dim=1)
            out.put(sl, BatchOutcome(xb, pred, pred))
        fooled = torch.zeros(call.n, dtype=torch.bool)
        found_prev: torch.Tensor | None = None
        for i in order:
            threat = threats[i]
            todo = torch.nonzero(~fooled).flatten()
            out.gradients = 0
            found = None if found_prev is None else found_prev.clone()
            for sl in iter_slices(int(todo.numel()), batch_size):
                ix = todo[sl]
                xb, yb, tb = call.batch(ix)
                x_new, grads, found_b = attack._perturb_detail(
                    model, xb, yb, threat=threat, target=tb, rng=SampleRNG(seeds[i], ix))
                out.put(ix, finish_batch(model, xb, yb, x_new.detach(), threat, tb,
                                         attack.name, clip=attack._clip(),
                                         pred_clean=out.pred_clean[ix].to(xb.device)),
                        grads)
                if found_b is not None:
                    if found is None:  # an ensemble; a point fooled at a smaller eps
                        # keeps the component that found it there
                        found = torch.full((call.n,), -1, dtype=torch.int64)
                    found[ix] = found_b.cpu()
            res = out.result(dataclasses.replace(call, threat=threat), attack.name,
                             attack.params(), seeds[i])
            found_prev = found
            if found is not None:
                res = with_breakdown(res, attack, call, threat, found)
            fooled = res.success.cpu()
            results[i] = res
            if on_result is not None:
                on_result(threat, res)
    return [results[i] for i in range(len(threats))]

"""Auto-PGD (APGD-CE, APGD-DLR, APGD-T): step-size-free PGD with momentum.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks" (ICML), Algorithm 1, in the linf and l2 norms.

One run of ``steps`` iterations from a random point of the ball (linf: ``x + eps * t /
||t||_inf`` with ``t`` uniform in [-1, 1]; l2: ``x + eps * t / ||t||_2`` with ``t``
Gaussian, as the reference implementation draws it):

- the first step is ``x1 = P(x0 + eta * s(grad))``, every later one
  ``z = P(xk + eta * s(grad))``, ``x_{k+1} = P(xk + alpha (z - xk) + (1 - alpha)(xk -
  x_{k-1}))`` with momentum ``alpha = 0.75``; ``s`` is the sign (linf) or the unit vector
  (l2), ``P`` the projection onto the ball and the bounds; ``eta`` starts at ``2 eps``;
- checkpoints at ``w_j = ceil(p_j * steps)``, ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j +
  max(p_j - p_{j-1} - 0.03, 0.06)`` (the reference's integer form: first after
  ``max(int(0.22 steps), 1)`` iterations, then each period ``max(int(0.03 steps), 1)``
  shorter, never under ``max(int(0.06 steps), 1)``);
- at a checkpoint a sample's step size is halved and its iterate reset to its best point
  when the loss rose in at most ``rho = 0.75`` of the period's steps (condition 1), or when
  its step size was not reduced at the previous checkpoint and its best loss did not
  improve since (condition 2).

Per sample, state is independent of the other samples of a batch: every sample has its own
step size, best point and checkpoint decisions, and its random start comes from its own
stream (:class:`~poisonlab.attacks.base.SampleRNG`), so the result does not depend on the
batch size. Samples are dropped from the batch once fooled (their adversarial point is
kept): the same outcome as running them on, less work.

Restarts: restart ``r`` attacks the samples that no earlier one fooled, from stream ``r``.
APGD-T (:class:`APGDT`) runs the targeted DLR loss toward each of the ``n_target_classes``
classes ranked highest after the true one on the clean input (runner-up first), each with
``restarts`` restarts, on the samples still robust; success stays untargeted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .._validation import validate_choice, validate_scalar
from ..errors import ConfigError
from ..threat import EvasionThreat, Norm
from .base import Attack
from .geometry import NORMS, SampleRNG, _bcast, _flat_norm
from .losses import LOSSES, is_success

#: The losses APGD maximises (Croce & Hein's "CE" and "DLR"; targeted when a target is set).
APGD_LOSSES = ("ce", "dlr")


def checkpoint_periods(steps: int) -> list[int]:
    """Iterations between checkpoints, as in the reference implementation.

    >>> checkpoint_periods(100)[:6]
    [22, 19, 16, 13, 10, 7]
    """
    first = max(int(0.22 * steps), 1)
    shrink, floor = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    periods, k, done = [], first, 0
    while done < steps:
        periods.append(k)
        done += k
        k = max(k - shrink, floor)
    return periods


def _start(x: torch.Tensor, eps: float, norm: Norm, rng: SampleRNG, stream: int,
           bounds: tuple[float, float]) -> torch.Tensor:
    """The reference's random start: on the surface of the linf box's scaled direction or
    of the l2 sphere, clipped to the bounds."""
    shape = x.shape[1:]
    if norm is Norm.LINF:
        t = (rng.rand(shape, stream=stream) * 2 - 1).to(x.device, x.dtype)
        delta = eps * t / _bcast(t.flatten(1).abs().amax(1).clamp_min(1e-12), t)
    else:
        t = rng.randn(shape, stream=stream).to(x.device, x.dtype)
        delta = eps * t / _bcast(_flat_norm(t, 2).clamp_min(1e-12), t)
    return (x + delta).clamp(*bounds)


def apgd_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_init: torch.Tensor,
    *,
    threat: EvasionThreat,
    steps: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    success_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rho: float = 0.75,
    momentum: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One APGD run (Algorithm 1) from ``x_init`` on a batch.

    ``loss_fn(logits, rows) -> (m,)`` is maximised and ``success_fn(logits, rows) -> (m,)
    bool`` says which samples are fooled, for the ``m`` rows of the batch still attacked
    (``rows`` indexes ``x``; :func:`apgd` builds both).

    Returns ``(x_adv, fooled, best_loss, gradients)``: per sample the first fooling iterate
    where fooled, else the highest-loss iterate.
    """
    ops = NORMS[threat.norm]
    lo, hi = threat.bounds
    eps = threat.eps
    n = x.shape[0]
    dev = x.device
    out = x_init.detach().clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=dev)
    best_loss_out = torch.full((n,), -torch.inf, device=dev)

    def project(v: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (x0 + ops.project(v - x0, eps)).clamp(lo, hi)

    def evaluate(xa: torch.Tensor, rows: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xa = xa.detach().requires_grad_(True)
        logits = model(xa)
        losses = loss_fn(logits, rows)
        (grad,) = torch.autograd.grad(losses.sum(), xa)
        return grad.detach(), losses.detach(), success_fn(logits.detach(), rows)

    x_cur = x_init.detach()
    rows = torch.arange(n, device=dev)
    grad, loss_cur, succ = evaluate(x_cur, rows)
    s = _State.start(x, x_cur, grad, loss_cur, eps, rows)
    gradients = n

    def record(succ: torch.Tensor) -> None:
        if bool(succ.any()):
            hit = s.rows[succ]
            out[hit] = s.x_cur[succ]
            fooled[hit] = True
            best_loss_out[hit] = s.loss_cur[succ]
            s.drop(~succ)

    record(succ)
    periods = iter(checkpoint_periods(steps))
    period, in_period = next(periods), 0
    for i in range(steps):
        if s.rows.numel() == 0:
            break
        with torch.no_grad():
            a = momentum if i > 0 else 1.0
            z = project(s.x_cur + _bcast(s.step, s.x_cur) * ops.normalize(s.grad), s.x0)
            x_next = project(s.x_cur + a * (z - s.x_cur) + (1 - a) * (s.x_cur - s.x_prev),
                             s.x0)
            s.x_prev, s.x_cur = s.x_cur, x_next
        s.grad, s.loss_cur, succ = evaluate(s.x_cur, s.rows)
        gradients += int(s.rows.numel())
        s.keep_best()
        record(succ)  # before a checkpoint may move x_cur back to the best point
        in_period += 1
        if in_period == period and s.rows.numel():
            s.checkpoint(period, rho)
            period, in_period = next(periods, period), 0
    with torch.no_grad():  # the samples never fooled: their highest-loss point
        out[s.rows] = s.x_best
        best_loss_out[s.rows] = s.loss_best
    return out, fooled, best_loss_out, gradients


@dataclass
class _State:
    """What APGD keeps per sample still attacked; ``rows`` maps it back into the batch."""

    rows: torch.Tensor
    x0: torch.Tensor
    x_cur: torch.Tensor
    grad: torch.Tensor
    loss_cur: torch.Tensor
    x_best: torch.Tensor
    grad_best: torch.Tensor
    loss_best: torch.Tensor
    step: torch.Tensor
    x_prev: torch.Tensor
    history: list[torch.Tensor]  # losses of the period so far, the period's start included
    best_at_check: torch.Tensor
    reduced: torch.Tensor

    @classmethod
    def start(cls, x: torch.Tensor, x_cur: torch.Tensor, grad: torch.Tensor,
              loss_cur: torch.Tensor, eps: float, rows: torch.Tensor) -> _State:
        n = x.shape[0]
        return cls(rows=rows, x0=x, x_cur=x_cur, grad=grad, loss_cur=loss_cur,
                   x_best=x_cur.clone(), grad_best=grad.clone(), loss_best=loss_cur.clone(),
                   step=torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype),
                   x_prev=x_cur.clone(), history=[loss_cur],
                   best_at_check=loss_cur.clone(),
                   reduced=torch.ones(n, dtype=torch.bool, device=x.device))

    def drop(self, keep: torch.Tensor) -> None:
        """Keep only the samples ``keep`` (the others are fooled and done)."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            setattr(self, f.name, [h[keep] for h in v] if f.name == "history" else v[keep])

    @torch.no_grad()
    def keep_best(self) -> None:
        """Remember each sample's highest-loss iterate (and its gradient)."""
        better = self.loss_cur > self.loss_best
        self.x_best[better], self.grad_best[better] = self.x_cur[better], self.grad[better]
        self.loss_best = torch.where(better, self.loss_cur, self.loss_best)
        self.history.append(self.loss_cur)

    @torch.no_grad()
    def checkpoint(self, period: int, rho: float) -> None:
        """Halve the step of the samples whose loss rose too rarely over the period (or did
        not improve since the last halving) and send them back to their best point."""
        h = torch.stack(self.history)
        rises = (h[1:] > h[:-1]).sum(0)
        stalled = ~self.reduced & (self.best_at_check >= self.loss_best)
        halve = (rises <= period * rho) | stalled
        self.reduced, self.best_at_check = halve, self.loss_best.clone()
        self.step = torch.where(halve, self.step / 2, self.step)
        self.x_cur = torch.where(_bcast(halve, self.x_cur), self.x_best, self.x_cur)
        self.grad = torch.where(_bcast(halve, self.grad), self.grad_best, self.grad)
        self.history = [self.loss_cur]


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: EvasionThreat,
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    target: torch.Tensor | None = None,
    target_ranks: int = 0,
    rho: float = 0.75,
    momentum: float = 0.75,
    rng: SampleRNG,
) -> tuple[torch.Tensor, int]:
    """APGD on one batch: ``restarts`` runs (and, with ``target_ranks`` k > 0, APGD-T's k
    target classes), each on the samples not fooled yet.

    ``target`` (a targeted threat) makes the loss targeted and success ``pred == target``.
    ``target_ranks`` k > 0 (APGD-T, untargeted threat): for rank r = 2 .. k + 1 the loss is
    the targeted one toward the class ranked r-th on the clean input; success stays
    ``pred != y``. Run ``(t, r)`` draws its start from stream ``t * restarts + r``.

    Returns ``(x_adv, gradients)``.
    """
    loss_fn = LOSSES[loss]
    n = x.shape[0]
    x_adv = x.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    best = torch.full((n,), -torch.inf, device=x.device)
    gradients = 0
    if target_ranks:
        with torch.no_grad():
            ranked = model(x).argsort(dim=1, descending=True)
        goals: list[torch.Tensor | None] = [ranked[:, r] for r in range(1, target_ranks + 1)]
    else:
        goals = [target]
    for t_i, goal in enumerate(goals):
        for r in range(restarts):
            todo = torch.nonzero(~fooled).flatten()
            if todo.numel() == 0:
                return x_adv, gradients
            xt, yt = x[todo], y[todo]
            gt = None if goal is None else goal[todo]
            tt = None if target is None else target[todo]

            def loss_of(logits: torch.Tensor, rows: torch.Tensor, yt: torch.Tensor = yt,
                        gt: torch.Tensor | None = gt) -> torch.Tensor:
                return loss_fn(logits, yt[rows], None if gt is None else gt[rows])

            def success_of(logits: torch.Tensor, rows: torch.Tensor, yt: torch.Tensor = yt,
                           tt: torch.Tensor | None = tt) -> torch.Tensor:
                return is_success(logits.argmax(dim=1), yt[rows],
                                  None if tt is None else tt[rows])

            start = _start(xt, threat.eps, threat.norm, rng.take(todo),
                           t_i * restarts + r, threat.bounds)
            xa, ok, lbest, g = apgd_run(model, xt, yt, start, threat=threat, steps=steps,
                                        loss_fn=loss_of, success_fn=success_of, rho=rho,
                                        momentum=momentum)
            gradients += g
            take = ok | (lbest > best[todo])
            x_adv[todo[take]] = xa[take]
            best[todo[take]] = lbest[take]
            fooled[todo[ok]] = True
    return x_adv, gradients


@dataclass(frozen=True)
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020): PGD without a step size to tune.

    Parameters
    ----------
    steps : int >= 1
        Iterations per run (the paper and AutoAttack: 100).
    restarts : int >= 1
        Runs from independent random starts; each attacks the samples still robust.
    loss : "ce" | "dlr"
        Cross-entropy (APGD-CE) or the difference of logits ratio (APGD-DLR; >= 3 classes).
        Under a targeted threat both are the targeted versions.
    rho : float in (0, 1)
        Condition 1's fraction of loss increases per period (0.75).
    momentum : float in (0, 1]
        The paper's alpha (0.75); 1 is no momentum.

    >>> res = APGD(loss="ce")(model, x, y, threat=EvasionThreat(eps=0.03), seed=0)  # doctest: +SKIP
    """

    name: ClassVar[str] = "apgd"
    steps: int = 100
    restarts: int = 1
    loss: str = "ce"
    rho: float = 0.75
    momentum: float = 0.75

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", validate_scalar("steps", self.steps, lo=1, integer=True))
        object.__setattr__(self, "restarts",
                           validate_scalar("restarts", self.restarts, lo=1, integer=True))
        validate_choice("loss", self.loss, APGD_LOSSES)
        object.__setattr__(self, "rho", validate_scalar("rho", self.rho, lo=0, hi=1,
                                                     lo_closed=False, hi_closed=False))
        object.__setattr__(self, "momentum", validate_scalar("momentum", self.momentum, lo=0,
                                                          hi=1, lo_closed=False))

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        return apgd(model, x, y, threat=threat, steps=self.steps, restarts=self.restarts,
                    loss=self.loss, target=target, rho=self.rho, momentum=self.momentum,
                    target_ranks=0, rng=rng)


@dataclass(frozen=True)
class APGDT(Attack):
    """APGD-T (Croce & Hein 2020): targeted DLR toward each of the top-ranked other classes.

    Untargeted only (it picks its own targets; ``apgd`` takes a targeted threat). For an
    untargeted threat: for each of the ``n_target_classes`` classes ranked highest
    after the first on the clean input (runner-up first; at most K - 1), ``restarts`` APGD
    runs with the targeted DLR loss ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)`` on the
    samples still robust. Success is untargeted (``pred != y``). A model with fewer than 4
    classes gets the targeted cross-entropy instead (DLR-T needs 4 logits).

    Parameters
    ----------
    steps, restarts, rho, momentum
        As :class:`APGD` (AutoAttack's standard version: 100 steps, 1 restart per target).
    n_target_classes : int >= 1
        Target classes tried (9, all of CIFAR-10's other classes).
    """

    name: ClassVar[str] = "apgd-t"
    steps: int = 100
    restarts: int = 1
    n_target_classes: int = 9
    rho: float = 0.75
    momentum: float = 0.75

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", validate_scalar("steps", self.steps, lo=1, integer=True))
        object.__setattr__(self, "restarts",
                           validate_scalar("restarts", self.restarts, lo=1, integer=True))
        object.__setattr__(self, "n_target_classes",
                           validate_scalar("n_target_classes", self.n_target_classes, lo=1,
                                        integer=True))
        object.__setattr__(self, "rho", validate_scalar("rho", self.rho, lo=0, hi=1,
                                                     lo_closed=False, hi_closed=False))
        object.__setattr__(self, "momentum", validate_scalar("momentum", self.momentum, lo=0,
                                                          hi=1, lo_closed=False))

    def validate_threat(self, threat: EvasionThreat) -> None:
        if threat.targeted:
            raise ConfigError("attack 'apgd-t' picks its own target classes: it needs an "
                              "untargeted threat (use 'apgd' for a targeted one)")

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            k = int(model(x[:1]).shape[1])
        loss = "dlr" if k >= 4 else "ce"
        return apgd(model, x, y, threat=threat, steps=self.steps, restarts=self.restarts,
                    loss=loss, target=None, target_ranks=min(self.n_target_classes, k - 1),
                    rho=self.rho, momentum=self.momentum, rng=rng)

"""FAB: the fast adaptive boundary attack, minimal adversarial perturbations (linf, l2).

Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack" (ICML). Each step linearises the classifier at the current iterate,
projects both the iterate and the original point onto the closest linearised decision
boundary *inside the box of the bounds* (:func:`project_linf` / :func:`project_l2`),
and moves to a convex combination of the two projections (biased towards the original
point), overshooting by ``eta``; a step that crosses the boundary is followed by a
backward step towards the original point (``beta``). The targeted variant FAB-T of
AutoAttack attacks, in turn, the top runner-up classes of each point.

The algorithm follows the authors' reference (AutoAttack's ``fab_pt.py`` and
``fab_projections.py``), written for arbitrary box bounds and per-sample randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .._validation import validate_bool, validate_scalar
from ..errors import ConfigError
from ..threat import EvasionThreat, Norm
from .base import Attack
from .geometry import SampleRNG
from .losses import is_success

_BIG = 1e12


def project_linf(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lo: float, hi: float
                 ) -> torch.Tensor:
    """Smallest linf step ``d`` with ``<w, t + d> = b`` and ``t + d`` in ``[lo, hi]^D``.

    Rows are independent problems: ``t``, ``w`` (m, D), ``b`` (m,). Where the box does not
    reach the hyperplane, ``d`` moves to the box corner closest to it. Returns d (m, D).

    >>> t = torch.tensor([[0.5, 0.5]]); w = torch.tensor([[1.0, 1.0]])
    >>> project_linf(t, w, torch.tensor([1.2]), 0.0, 1.0)
    tensor([[0.1000, 0.1000]])
    """
    w, b = w.clone(), b.clone()
    flip = torch.where((w * t).sum(1) - b >= 0, 1.0, -1.0).to(w.dtype)
    w *= flip[:, None]
    b *= flip  # now <w, t> >= b: the step lowers <w, .>
    up = w < 0  # the coordinates that move up (to hi), the others down (to lo)
    live = w != 0
    corner = torch.where(up, hi, lo)
    d = (corner - t) * live  # the full move of each coordinate to its corner
    room = (corner - t).abs()  # how far each coordinate can move
    order = torch.argsort(room, dim=1, stable=True)
    b = b - (w * t).sum(1)  # the change of <w, .> needed (<= 0)
    b_full = (w * d).sum(1)  # the change when every coordinate moves fully
    desc = order.flip((1,))
    w_desc = w.gather(1, desc)
    s = torch.cumsum(w_desc.abs(), dim=1)
    sb = torch.cumsum(-w_desc * d.gather(1, desc), dim=1) + b_full[:, None]
    b_small = sb[:, -1] - s[:, -1] * room.gather(1, order[:, :1])[:, 0]
    small = b - b_small > 0  # reached before any coordinate hits its corner
    mid = (b - b_full > 0) & ~small  # reached after some coordinates hit their corners
    m = int(mid.sum())
    lb = torch.zeros(m, device=t.device, dtype=t.dtype)
    ub = torch.full((m,), w.shape[1] - 1, device=t.device, dtype=t.dtype)
    desc_m, sb_m, s_m, room_m, b_m = desc[mid], sb[mid], s[mid], room[mid], b[mid]
    for _ in range(math.ceil(math.log2(w.shape[1])) if w.shape[1] > 1 else 0):
        k = torch.floor((lb + ub) / 2)
        kk = k.long()[:, None]
        at = desc_m.gather(1, kk)
        b_k = sb_m.gather(1, kk) - s_m.gather(1, kk) * room_m.gather(1, at)
        go = b_m - b_k[:, 0] > 0
        lb = torch.where(go, k, lb)
        ub = torch.where(go, ub, k)
    lb_i = lb.long()
    direction = torch.where(up, 1.0, -1.0).to(t.dtype)
    if bool(small.any()):
        lam = ((b[small] - sb[small, -1]) / (-s[small, -1])).clamp_min(0)[:, None]
        d[small] = direction[small] * lam
    if m:
        rows = torch.arange(m, device=t.device)
        lam = ((b_m - sb_m[rows, lb_i]) / (-s_m[rows, lb_i])).clamp_min(0)[:, None]
        d_m = d[mid]
        d[mid] = torch.where(up[mid], torch.minimum(lam, d_m), torch.maximum(-lam, d_m))
    return d * live


def project_l2(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lo: float, hi: float
               ) -> torch.Tensor:
    """Smallest l2 step ``d`` with ``<w, t + d> = b`` and ``t + d`` in ``[lo, hi]^D``.

    Rows are independent problems: ``t``, ``w`` (m, D), ``b`` (m,). The solution moves
    along ``-w`` until coordinates hit the box, which then stay there (a search over the
    breakpoints). Returns d (m, D).

    >>> t = torch.tensor([[0.5, 0.5]]); w = torch.tensor([[1.0, 0.0]])
    >>> project_l2(t, w, torch.tensor([0.8]), 0.0, 1.0)
    tensor([[0.3000, 0.0000]])
    """
    w = w.clone()
    c = (w * t).sum(1) - b
    neg = c < 0
    w[neg] *= -1
    c = c.abs()  # now the step must lower <w, .> by c
    live = w.abs() > 1e-8
    # the step length along -w at which each coordinate reaches its bound
    r = torch.maximum((t - lo) / w, (t - hi) / w).clamp(-_BIG, _BIG)
    r[~live] = _BIG
    r[r == -_BIG] = _BIG
    rs, ind = torch.sort(r, dim=1, stable=True)
    rs2 = torch.nn.functional.pad(rs[:, 1:], (0, 1))
    rs = rs.masked_fill(rs == _BIG, 0.0)
    rs2 = rs2.masked_fill(rs2 == _BIG, 0.0)
    w2 = (w ** 2).gather(1, ind)
    w2_sum = w2.sum(dim=1, keepdim=True)
    w2_rest = w2_sum - torch.cumsum(w2, dim=1)
    d = -(r * w) * live  # every coordinate moved to its bound
    s = torch.cat(((-w2_sum[:, 0] * rs[:, 0])[:, None],
                   torch.cumsum((rs - rs2) * w2_rest, dim=1) - w2_sum * rs[:, :1]), 1)
    free = s[:, 0] + c < 0  # reached before any coordinate hits its bound
    beyond = (d * w).sum(dim=1) + c > 0  # not reachable inside the box: d stays the corner
    mid = ~free & ~beyond
    m = int(mid.sum())
    lb = torch.zeros(m, device=t.device, dtype=t.dtype)
    ub = torch.full((m,), w.shape[1] - 1, device=t.device, dtype=t.dtype)
    s_m, c_m = s[mid], c[mid]
    for _ in range(math.ceil(math.log2(w.shape[1])) if w.shape[1] > 1 else 0):
        k = torch.floor((lb + ub) / 2)
        go = s_m.gather(1, k.long()[:, None])[:, 0] + c_m > 0
        lb = torch.where(go, k, lb)
        ub = torch.where(go, ub, k)
    lb_i = lb.long()
    if bool(free.any()):
        alpha = c[free] / w2_sum[free, 0]
        d[free] = -alpha[:, None] * w[free]
    if m:
        rows = torch.arange(m, device=t.device)
        rest = w2_rest[mid][rows, lb_i]
        alpha = (s_m[rows, lb_i] + c_m) / rest + rs[mid][rows, lb_i]
        alpha = alpha.masked_fill(rest == 0, 0.0)
        hit = alpha[:, None] > r[mid]
        d[mid] = torch.where(hit, d[mid], -alpha[:, None] * w[mid])
    return d * live


_PROJECT = {Norm.LINF: project_linf, Norm.L2: project_l2}
_NORM_P = {Norm.LINF: math.inf, Norm.L2: 2.0}
_DUAL_P = {Norm.LINF: 1.0, Norm.L2: 2.0}


def _norms(v: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), ord=p, dim=1)


def _boundary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, aim: torch.Tensor | None,
              dual: float, competitor: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The linearised boundary to cross at ``x``: (f (n,), grad f (n, D), gradients).

    Untargeted (``aim`` None): f = z_k - z_y for the class k whose boundary is closest in
    the linearisation (all K gradients). Towards ``aim``: f = z_aim - z_c with c = y, or
    with ``competitor`` the strongest class other than ``aim`` (one gradient).
    """
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        n, k = logits.shape
        rows = torch.arange(n, device=x.device)
        if aim is not None:
            other = y
            if competitor:
                other = logits.detach().scatter(1, aim[:, None], -math.inf).argmax(dim=1)
            f = logits[rows, aim] - logits[rows, other]
            (g,) = torch.autograd.grad(f.sum(), xr)
            return f.detach(), g.flatten(1), n
        grads = [torch.autograd.grad(logits[:, j].sum(), xr, retain_graph=j < k - 1)[0]
                 for j in range(k)]
    z = logits.detach()
    jac = torch.stack(grads, dim=1).flatten(2)  # (n, K, D)
    df = z - z[rows, y][:, None]
    dg = jac - jac[rows, y][:, None]
    dist = df.abs() / (1e-12 + torch.linalg.vector_norm(dg, ord=dual, dim=2))
    dist[rows, y] = math.inf
    j = dist.argmin(dim=1)
    return df[rows, j], dg[rows, j], n * k


def _fab_run(
    model: nn.Module, x0: torch.Tensor, y: torch.Tensor, aim: torch.Tensor | None, *,
    norm: Norm, eps: float, bounds: tuple[float, float], steps: int, alpha_max: float,
    eta: float, beta: float, start: torch.Tensor | None, target: torch.Tensor | None,
    early_stop: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One FAB run: (closest adversarial point found, its norm (inf if none), gradients).

    A point counts as adversarial if it fools the model (untargeted: differs from ``y``;
    with ``target``: predicted as ``target``). With ``early_stop`` a point leaves the run
    once it has one within ``eps``.
    """
    lo, hi = bounds
    p, dual, project = _NORM_P[norm], _DUAL_P[norm], _PROJECT[norm]
    n = x0.shape[0]
    shape = x0.shape[1:]
    best = x0.clone()
    best_norm = torch.full((n,), math.inf, device=x0.device, dtype=x0.dtype)
    idx = torch.arange(n, device=x0.device)
    x1 = x0.clone() if start is None else start
    xa, ya = x0, y
    aa, ta = aim, target
    gradients = 0
    for _ in range(steps):
        if idx.numel() == 0:
            break
        with torch.no_grad():
            f, w, g = _boundary(model, x1, ya, aa, dual, competitor=target is not None)
            gradients += g
            na = x1.shape[0]
            x1f, x0f = x1.flatten(1), xa.flatten(1)
            b = -f + (w * x1f).sum(1)
            d = project(torch.cat((x1f, x0f)), torch.cat((w, w)), torch.cat((b, b)), lo, hi)
            a = _norms(d, p).clamp_min(1e-8)
            a1, a2 = a[:na], a[na:]
            alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
            step = (x1f + eta * d[:na]) * (1 - alpha) + (x0f + eta * d[na:]) * alpha
            x1 = step.clamp(lo, hi).view(na, *shape)
            fooled = is_success(model(x1).argmax(dim=1), ya, ta)
            if bool(fooled.any()):
                dist = _norms(x1 - xa, p)
                better = fooled & (dist < best_norm[idx])
                best[idx[better]] = x1[better]
                best_norm[idx[better]] = dist[better]
                back = xa + (x1 - xa) * beta
                x1 = torch.where(fooled.view(-1, *[1] * len(shape)), back, x1)
            if early_stop:
                keep = best_norm[idx] > eps
                if not bool(keep.all()):
                    idx, x1, xa, ya = idx[keep], x1[keep], xa[keep], ya[keep]
                    aa = None if aa is None else aa[keep]
                    ta = None if ta is None else ta[keep]
    return best, best_norm, gradients


def _random_start(x: torch.Tensor, norm: Norm, radius: float, bounds: tuple[float, float],
                  rng: SampleRNG, stream: int) -> torch.Tensor:
    """A random point at distance radius / 2 (reference restarts), clipped to the bounds."""
    if norm is Norm.LINF:
        t = (2 * rng.rand(x.shape[1:], stream=stream) - 1).to(x.device, x.dtype)
        t = t / t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    else:
        t = rng.randn(x.shape[1:], stream=stream).to(x.device, x.dtype)
        t = t / t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    return (x + 0.5 * radius * t).clamp(*bounds)


def fab(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: EvasionThreat,
    steps: int = 100,
    restarts: int = 1,
    runner_ups: bool = False,
    n_target_classes: int = 9,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    early_stop: bool = True,
    target: torch.Tensor | None = None,
    rng: SampleRNG,
) -> tuple[torch.Tensor, int]:
    """FAB on a batch: the closest adversarial point found where it lies within eps.

    Untargeted threat: plain FAB (the closest linearised boundary among all classes), or
    with ``runner_ups`` FAB-T: targeted FAB towards the 2nd, 3rd, ... largest clean logit
    in turn (``n_target_classes`` of them, at most K - 1), each on the points still robust,
    success meaning misclassification. Targeted threat: FAB towards ``target``. Restart
    ``r > 0`` starts at a random point at distance eps / 2 (``rng`` stream
    ``round * 1009 + r``). A point not fooled within eps is returned as ``x``.

    Returns ``(x_adv, gradients)``.
    """
    norm = Norm(threat.norm)
    eps, bounds = threat.eps, threat.bounds
    with torch.no_grad():
        logits = model(x)
    done = is_success(logits.argmax(dim=1), y, target)
    out = x.clone()
    gradients = 0
    if target is not None:
        rounds: list[torch.Tensor | None] = [target]
    elif runner_ups:
        k = min(n_target_classes, logits.shape[1] - 1)
        ranked = logits.argsort(dim=1, descending=True, stable=True)
        rounds = [ranked[:, j] for j in range(1, k + 1)]
    else:
        rounds = [None]
    for i, aim in enumerate(rounds):
        for r in range(restarts):
            todo = torch.nonzero(~done).flatten()
            if todo.numel() == 0:
                return out, gradients
            x0 = x[todo]
            start = None if r == 0 else _random_start(x0, norm, eps, bounds,
                                                      rng.take(todo), i * 1009 + r)
            best, dist, g = _fab_run(
                model, x0, y[todo], None if aim is None else aim[todo], norm=norm, eps=eps,
                bounds=bounds, steps=steps, alpha_max=alpha_max, eta=eta, beta=beta,
                start=start, target=None if target is None else target[todo],
                early_stop=early_stop)
            gradients += g
            ok = dist <= eps
            out[todo[ok]] = best[ok]
            done[todo[ok]] = True
    return out, gradients


@dataclass(frozen=True)
class FAB(Attack):
    """Fast adaptive boundary attack (FAB) and its targeted variant FAB-T, linf and l2.

    Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
    boundary attack" (ICML); FAB-T is AutoAttack's version (Croce & Hein 2020, "Reliable
    evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks"). A minimum-norm attack: it looks for the closest adversarial point, and
    under a threat a point counts as fooled only if that point lies within eps (else x is
    returned). White-box: gradients of the logit differences. Any input shape; the
    projections honour the threat's bounds. Batch-size invariant (per-sample streams).

    Parameters
    ----------
    steps : int >= 1
        Iterations per run (the reference's 100).
    restarts : int >= 1
        Runs per target; run r > 0 starts at a random point at distance eps / 2.
    runner_ups : bool
        Under an untargeted threat, run FAB-T: targeted FAB towards the top
        ``n_target_classes`` runner-up classes of each point in turn, on the points still
        robust (AutoAttack's standard FAB). Not allowed with a targeted threat, whose
        target is the class to reach.
    n_target_classes : int >= 1
        Runner-up classes FAB-T tries (AutoAttack's 9), capped at K - 1.
    alpha_max, eta, beta : float
        Largest weight of the original point in the step (0.1, in [0, 1]), overshoot
        (1.05, >= 1) and backward step after a success (0.9, in (0, 1]), as the reference.
    early_stop : bool
        Stop a point once an adversarial point within eps is found (the same success, less
        work); False keeps minimising the perturbation like the reference.

    >>> FAB(runner_ups=True).params()["n_target_classes"]
    9
    >>> res = FAB()(model, x, y, threat=EvasionThreat(eps=0.1), seed=0)  # doctest: +SKIP
    """

    name: ClassVar[str] = "fab"
    steps: int = 100
    restarts: int = 1
    runner_ups: bool = False
    n_target_classes: int = 9
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    early_stop: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", validate_scalar("steps", self.steps, lo=1, integer=True))
        object.__setattr__(
            self, "restarts", validate_scalar("restarts", self.restarts, lo=1, integer=True))
        validate_bool("runner_ups", self.runner_ups)
        object.__setattr__(self, "n_target_classes", validate_scalar(
            "n_target_classes", self.n_target_classes, lo=1, integer=True))
        object.__setattr__(self, "alpha_max",
                           validate_scalar("alpha_max", self.alpha_max, lo=0, hi=1))
        object.__setattr__(self, "eta", validate_scalar("eta", self.eta, lo=1))
        object.__setattr__(self, "beta",
                           validate_scalar("beta", self.beta, lo=0, hi=1, lo_closed=False))
        validate_bool("early_stop", self.early_stop)

    def validate_threat(self, threat: EvasionThreat) -> None:
        if threat.targeted and self.runner_ups:
            raise ConfigError(
                f"runner_ups=True is not allowed with threat {threat.id!r}: a targeted "
                "threat names the class to reach (expected runner_ups=False)"
            )

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        return fab(model, x, y, threat=threat, steps=self.steps, restarts=self.restarts,
                   runner_ups=self.runner_ups, n_target_classes=self.n_target_classes,
                   alpha_max=self.alpha_max, eta=self.eta, beta=self.beta,
                   early_stop=self.early_stop, target=target, rng=rng)

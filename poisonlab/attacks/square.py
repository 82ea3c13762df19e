"""Square Attack: gradient-free random search with square-shaped updates, linf and l2.

Andriushchenko, Croce, Flammarion, Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search" (ECCV). The search follows the authors' reference
implementations (``square-attack`` and AutoAttack's ``square.py``): the margin loss on the
logits, the piecewise-halving schedule of the square's size, vertical stripes as the linf
start and a grid of "meta-pixels" as the l2 start and update.

Queries are batched: each iteration evaluates every still-robust point of the batch in one
forward pass, and a point leaves the search as soon as it is fooled. Each point draws its
own squares (position, signs) from its own generator of the call's
:class:`~poisonlab.attacks.base.SampleRNG`, in blocks of ``DRAW_BLOCK`` iterations, so a
point's search is the same whichever other points share its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import validate_choice, validate_scalar
from ..errors import ConfigError
from ..threat import EvasionThreat, Knowledge, Norm
from .base import Attack
from .geometry import SampleRNG
from .losses import is_success

#: Iterations whose random draws a point makes at once (one generator call per point).
DRAW_BLOCK = 128

#: Iterations (of 10000) after which the square's area halves (the reference schedule).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of the pixels the square covers at iteration ``it`` (0-based).

    The reference schedule for 10000 queries, rescaled to ``n_queries``: ``p_init`` halves
    after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000.

    >>> p_schedule(0.8, 0, 10000), p_schedule(0.8, 11, 10000), p_schedule(0.8, 9000, 10000)
    (0.8, 0.4, 0.0015625)
    >>> p_schedule(0.8, 6, 1000)  # 6 of 1000 is 60 of 10000: halved twice
    0.2
    """
    scaled = int(it / n_queries * 10000)
    return p_init / 2 ** sum(scaled > t for t in _HALVINGS)


def _margin_and_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                     loss: str) -> torch.Tensor:
    """The objective to minimise (reference ``margin_and_loss``), shape (n,).

    Untargeted margin ``z_y - max_{i != y} z_i``, targeted ``max_{i != t} z_i - z_t``; "ce"
    minimises ``-CE(y)`` (untargeted) or ``CE(t)`` (targeted) instead.
    """
    cls = y if target is None else target
    z_c = logits.gather(1, cls[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(cls, logits.shape[1]).bool(), -math.inf).amax(1)
    if loss == "ce":
        ce = F.cross_entropy(logits, cls, reduction="none")
        return -ce if target is None else ce
    return z_c - others if target is None else others - z_c


def _side(p: float, h: int, w: int, *, l2: bool) -> int:
    """The square's side for area fraction ``p`` (odd and >= 3 in l2), at most the image."""
    s = max(round(math.sqrt(p * h * w)), 3 if l2 else 1)
    if l2 and s % 2 == 0:
        s += 1
    s = min(s, h, w)
    if l2 and s % 2 == 0:
        s -= 1
    return max(s, 1)


def _eta_rectangles(a: int, b: int) -> torch.Tensor:
    """Concentric rectangles of weight 1 / (k + 1)^2 around the centre, unit l2 norm."""
    delta = torch.zeros(a, b, dtype=torch.float64)
    ca, cb = a // 2, b // 2
    for k in range(max(ca + 1, cb + 1)):
        delta[max(ca - k, 0):min(ca - k + 2 * k + 1, a),
              max(cb - k, 0):min(cb - k + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
    return delta / delta.norm().clamp_min(1e-12)


def meta_pixel(s: int) -> torch.Tensor:
    """The l2 attack's s x s update shape: a positive and a negative half (unit l2 norm).

    >>> bool(abs(meta_pixel(5).norm() - 1) < 1e-6), meta_pixel(5).shape
    (True, torch.Size([5, 5]))
    """
    delta = torch.zeros(s, s, dtype=torch.float64)
    if s // 2:
        delta[:s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2:] = -_eta_rectangles(s - s // 2, s)
    return delta / delta.norm().clamp_min(1e-12)


def _l2_normalize(v: torch.Tensor) -> torch.Tensor:
    return v / (v.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)


def _window(pos_h: torch.Tensor, pos_w: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Bool masks (n, 1, h, w) of the s x s squares with top-left corners (pos_h, pos_w)."""
    rows = torch.arange(h, device=pos_h.device)
    cols = torch.arange(w, device=pos_w.device)
    r = (rows >= pos_h[:, None]) & (rows < pos_h[:, None] + s)
    c = (cols >= pos_w[:, None]) & (cols < pos_w[:, None] + s)
    return (r[:, :, None] & c[:, None, :])[:, None]


def _position(u: torch.Tensor, room: int) -> torch.Tensor:
    """Integer positions uniform in [0, room] from uniforms ``u`` in [0, 1)."""
    return (u * (room + 1)).long().clamp_(0, room)


def _signs(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0)


class _Draws:
    """Per-point uniforms for the iterations, drawn ``DRAW_BLOCK`` iterations at a time.

    Point ``j`` draws only from ``generators[j]``, at the same iterations whatever the
    others do, so its squares never depend on its batch.
    """

    def __init__(self, generators: list[torch.Generator], slots: int, device: torch.device):
        self.gens = generators
        self.slots = slots
        self.device = device
        self.block = torch.zeros(0)

    def at(self, it: int, keep: torch.Tensor | None) -> torch.Tensor:
        """Uniforms (n_active, slots) for iteration ``it`` after dropping rows not ``keep``."""
        if keep is not None:
            kept = keep.cpu().tolist()
            self.gens = [g for g, k in zip(self.gens, kept, strict=True) if k]
            if self.block.numel():
                self.block = self.block[keep]
        if it % DRAW_BLOCK == 0:
            rows = [torch.rand((DRAW_BLOCK, self.slots), generator=g) for g in self.gens]
            self.block = torch.stack(rows).to(self.device)
        return self.block[:, it % DRAW_BLOCK]


def _linf_init(x: torch.Tensor, eps: float, gens: list[torch.Generator]) -> torch.Tensor:
    """Vertical stripes: one random sign per (channel, column), the full budget."""
    c, _, w = x.shape[1:]
    u = torch.stack([torch.rand((c, 1, w), generator=g) for g in gens])
    return x + eps * _signs(u).to(x.device, x.dtype)


def _l2_init(x: torch.Tensor, eps: float, gens: list[torch.Generator]) -> torch.Tensor:
    """A grid of meta-pixels (tiles of side h // 5) with random signs per tile and channel,
    rescaled to norm eps (reference ``square.py``, l2 initialisation)."""
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    start = max((h - 5 * s) // 2, 0)
    tiles = [(a, b) for a in range(start, h, s)[: h // s] for b in range(start, w, s)[: w // s]]
    u = torch.stack([torch.rand((max(len(tiles), 1), c + 1), generator=g) for g in gens])
    shape = meta_pixel(s)
    delta = torch.zeros(n, c, h, w, dtype=torch.float64)
    for k, (a, b) in enumerate(tiles):
        flip = u[:, k, c] < 0.5  # the tile's shape is transposed with probability 1/2
        patch = torch.where(flip.view(-1, 1, 1), shape.T, shape)[:, None]  # (n, 1, s, s)
        patch = patch * _signs(u[:, k, :c]).double().view(n, c, 1, 1)
        hh, ww = min(s, h - a), min(s, w - b)
        delta[:, :, a:a + hh, b:b + ww] += patch[:, :, :hh, :ww]
    return x + eps * _l2_normalize(delta).to(x.device, x.dtype)


def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: EvasionThreat,
    n_queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    loss: str = "margin",
    target: torch.Tensor | None = None,
    rng: SampleRNG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square Attack on a batch of images ``x`` (n, c, h, w) under ``threat``.

    Each run starts from a random vertex of the ball (linf: vertical stripes; l2: a grid of
    meta-pixels) and for ``n_queries - 1`` iterations proposes changing one random square
    of side ``sqrt(p * h * w)`` (``p`` from :func:`p_schedule`), keeping the proposal if it
    lowers the loss or fools the model. A point stops at its first success; later
    ``restarts`` (fresh draws: ``rng`` stream ``r``) attack the points still robust, each
    keeping the run of lowest loss. Points the model already gets wrong (or, targeted,
    already sends to ``target``) are returned as ``x``.

    Returns ``(x_adv, queries)``: x_adv inside the ball and the bounds, and the model
    queries per point (int64 (n,), the clean prediction included).
    """
    if x.dim() != 4:
        raise ConfigError(f"x has shape {tuple(x.shape)}: square expected image batches "
                          "(n, channels, height, width)")
    l2 = Norm(threat.norm) is Norm.L2
    lo, hi = threat.bounds
    eps = threat.eps
    n = x.shape[0]
    dev = x.device
    with torch.no_grad():
        logits = model(x)
    queries = torch.ones(n, dtype=torch.int64, device=dev)
    done = is_success(logits.argmax(dim=1), y, target)
    best = x.clone()
    best_loss = _margin_and_loss(logits, y, target, loss)
    if eps == 0:
        return best, queries
    for r in range(restarts):
        todo = torch.nonzero(~done).flatten()
        if todo.numel() == 0:
            break
        adv, run_loss, fooled, used = _one_run(
            model, x[todo], y[todo], None if target is None else target[todo],
            eps=eps, bounds=(lo, hi), l2=l2, n_queries=n_queries, p_init=p_init, loss=loss,
            gens=rng.take(todo).generators(stream=r))
        queries[todo] += used
        better = fooled | (run_loss < best_loss[todo]) if r else torch.ones_like(fooled)
        best[todo[better]] = adv[better]
        best_loss[todo[better]] = run_loss[better]
        done[todo] = fooled
    return best, queries


def _one_run(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *,
    eps: float, bounds: tuple[float, float], l2: bool, n_queries: int, p_init: float,
    loss: str, gens: list[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One run on points not yet fooled: (x_best, its loss, fooled, queries) per point."""
    lo, hi = bounds
    n, c, h, w = x.shape
    dev = x.device
    init = _l2_init if l2 else _linf_init
    x_best = init(x, eps, gens).clamp(lo, hi)
    with torch.no_grad():
        logits = model(x_best)
    loss_min = _margin_and_loss(logits, y, target, loss)
    fooled = is_success(logits.argmax(dim=1), y, target)
    used = torch.ones(n, dtype=torch.int64, device=dev)
    draws = _Draws(gens, (5 if l2 else 2) + c, dev)
    # The points still searched, compacted: ``idx`` into this run's points.
    idx = torch.nonzero(~fooled).flatten()
    keep: torch.Tensor | None = ~fooled
    xa, xb, ya = x[idx], x_best[idx], y[idx]
    ta = None if target is None else target[idx]
    la = loss_min[idx]
    shapes: dict[int, torch.Tensor] = {}
    for it in range(n_queries - 1):
        if idx.numel() == 0:
            break
        u = draws.at(it, keep)
        keep = None
        p = p_schedule(p_init, it, n_queries)
        s = _side(p, h, w, l2=l2)
        vh, vw = _position(u[:, 0], h - s), _position(u[:, 1], w - s)
        if not l2:
            win = _window(vh, vw, s, h, w)
            vertex = (xa + eps * _signs(u[:, 2:2 + c]).to(xa.dtype).view(-1, c, 1, 1))
            x_new = torch.where(win, vertex.clamp(lo, hi), xb)
        else:
            if s not in shapes:
                shapes[s] = meta_pixel(s).to(dev, x.dtype)
            x_new = _l2_proposal(xa, xb, u, s, shapes[s], eps, c, h, w).clamp(lo, hi)
        with torch.no_grad():
            logits = model(x_new)
        new_loss = _margin_and_loss(logits, ya, ta, loss)
        hit = is_success(logits.argmax(dim=1), ya, ta)
        accept = hit | (new_loss < la)
        xb = torch.where(accept.view(-1, 1, 1, 1), x_new, xb)
        la = torch.where(accept, new_loss, la)
        used[idx] += 1
        if bool(hit.any()):
            x_best[idx] = xb
            loss_min[idx] = la
            fooled[idx[hit]] = True
            keep = ~hit
            idx, xa, xb, ya, la = idx[keep], xa[keep], xb[keep], ya[keep], la[keep]
            ta = None if ta is None else ta[keep]
    x_best[idx] = xb
    loss_min[idx] = la
    return x_best, loss_min, fooled, used


def _l2_proposal(xa: torch.Tensor, xb: torch.Tensor, u: torch.Tensor, s: int,
                 shape: torch.Tensor, eps: float, c: int, h: int, w: int) -> torch.Tensor:
    """The l2 update (reference ``square.py``): a new meta-pixel in square 1 carrying the
    mass of squares 1 and 2 and what is left of the budget, square 2 emptied."""
    na = xa.shape[0]
    dev = xa.device
    delta = xb - xa
    vh, vw = _position(u[:, 0], h - s), _position(u[:, 1], w - s)
    vh2, vw2 = _position(u[:, 2], h - s), _position(u[:, 3], w - s)
    ar_s = torch.arange(s, device=dev)
    n_ix = torch.arange(na, device=dev).view(-1, 1, 1, 1)
    c_ix = torch.arange(c, device=dev).view(1, -1, 1, 1)
    r_ix = (vh[:, None] + ar_s).view(na, 1, s, 1)
    k_ix = (vw[:, None] + ar_s).view(na, 1, 1, s)
    old = delta[n_ix, c_ix, r_ix, k_ix]  # (na, c, s, s): square 1
    norm_old = old.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
    win2 = _window(vh2, vw2, s, h, w)
    union = _window(vh, vw, s, h, w) | win2
    norm_image = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    norm_windows = (delta * union).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    flip = (u[:, 4] < 0.5).view(-1, 1, 1, 1)
    meta = torch.where(flip, shape.T, shape).expand(na, 1, s, s)
    new = meta * _signs(u[:, 5:5 + c]).to(xa.dtype).view(na, c, 1, 1) + old / (1e-12 + norm_old)
    budget = ((eps ** 2 - norm_image ** 2).clamp_min(0) / c + norm_windows ** 2).sqrt()
    new = new / (1e-12 + new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()) * budget
    delta = delta.masked_fill(win2, 0.0)
    delta[n_ix, c_ix, r_ix, k_ix] = new
    return xa + eps * _l2_normalize(delta)


@dataclass(frozen=True)
class Square(Attack):
    """Square Attack: random square-shaped updates of the full budget, no gradients.

    Andriushchenko, Croce, Flammarion, Hein 2020, "Square Attack: a query-efficient
    black-box adversarial attack via random search" (ECCV); the black-box member of
    AutoAttack. Gradient-free, so it is not fooled by gradients that mislead (masked,
    obfuscated or saturated): a defense whose robust accuracy under Square is lower than
    under PGD is masking its gradients. linf and l2, untargeted and targeted, on image
    batches (n, channels, height, width); flat inputs are refused (a square needs two
    spatial dimensions). Batch-size invariant: each point draws from its own stream.

    Parameters
    ----------
    n_queries : int >= 1
        Model queries per point and run, the initialisation included (plus one clean
        prediction per call). The square-size schedule is rescaled to it.
    p_init : float in (0, 1)
        Fraction of the pixels the first square covers (AutoAttack's 0.8); it halves along
        the schedule (:func:`p_schedule`).
    restarts : int >= 1
        Independent runs (fresh draws) on the points still robust.
    loss : "margin" | "ce"
        Objective on the logits: the margin ``z_y - max_{i != y} z_i`` (targeted:
        ``max_{i != t} z_i - z_t``), as in the paper; or the cross-entropy.

    Differences from the reference: squares are drawn per point (the reference draws one
    position for the whole batch), uniformly over all ``h - s + 1`` positions.

    >>> Square(n_queries=1000).params()["n_queries"]
    1000
    >>> res = Square()(model, x, y, threat=EvasionThreat(eps=0.1), seed=0)  # doctest: +SKIP
    """

    name: ClassVar[str] = "square"
    knowledge: ClassVar[Knowledge] = Knowledge.BLACK_BOX
    n_queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "n_queries", validate_scalar("n_queries", self.n_queries, lo=1, integer=True))
        object.__setattr__(
            self, "p_init",
            validate_scalar("p_init", self.p_init, lo=0, hi=1, lo_closed=False, hi_closed=False))
        object.__setattr__(
            self, "restarts", validate_scalar("restarts", self.restarts, lo=1, integer=True))
        validate_choice("loss", self.loss, ("margin", "ce"))

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        x_adv, _ = square(model, x, y, threat=threat, n_queries=self.n_queries,
                          p_init=self.p_init, restarts=self.restarts, loss=self.loss,
                          target=target, rng=rng)
        return x_adv, 0  # gradient-free: model queries only

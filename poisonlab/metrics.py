"""Every metric of the design (section 4), as pure functions.

Classification and calibration metrics take predictions or probabilities (numpy arrays or
tensors) and return Python floats. Off-manifold metrics take a model and draw their noise
inputs from a seeded generator. ``aggregate`` turns per-seed values into mean, std, n.

Definitions
-----------
clean_accuracy / robust_accuracy
    ``mean(argmax f(x) == y)`` on clean / adversarial inputs.
attack_success_rate (evasion)
    Untargeted: among points classified correctly when clean, the fraction whose x_adv is
    misclassified. Targeted: among points with ``y != target``, the fraction predicted as
    target.
poisoning_success_rate (indiscriminate)
    Among test points the clean-trained model classifies correctly, the fraction the
    poisoned-trained model misclassifies. Pairwise: the fraction of clean test points of
    class source that the poisoned model predicts as target.
ece
    Expected calibration error with equal-width confidence bins (Guo et al. 2017).
offmanifold_confidence, alpha_star, offmanifold_auroc
    Confidence away from the data (Hendrycks & Gimpel 2017; Hein et al. 2019).

>>> ece(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]))
0.35
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import check_scalar, check_seed
from .errors import DataError
from .models import eval_mode
from .training import model_device

#: Multipliers of the ``alpha * x`` rays (design section 4).
RAY_ALPHAS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 100.0)
#: Geometric grid of alpha for ``alpha_star``: 1 .. 1e4, 8 points per decade.
ALPHA_GRID: np.ndarray = np.geomspace(1.0, 1e4, 33)
#: The max-softmax level that counts as "fully confident" for ``alpha_star``.
ALPHA_STAR_LEVEL = 0.999

#: Direction of every metric: True if higher is better for the defender.
HIGHER_IS_BETTER: dict[str, bool] = {
    "clean_accuracy": True,
    "robust_accuracy": True,
    "attack_success_rate": False,
    "accuracy_drop": False,
    "poisoning_success_rate": False,
    "offmanifold_confidence": False,
    "gaussian_confidence": False,
    "ray_confidence": False,
    "alpha_star": True,
    "offmanifold_auroc": True,
    "ece": False,
    "nll": False,
    "brier": False,
    "n_flipped": False,
}


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def accuracy(pred: Any, y: Any) -> float:
    """Fraction of ``pred == y``; NaN for empty input."""
    p, t = _np(pred), _np(y)
    if p.shape != t.shape:
        raise DataError(f"pred has shape {p.shape}: expected {t.shape} to match y")
    return float(np.mean(p == t)) if t.size else math.nan


def attack_success_rate(
    pred_clean: Any, pred_adv: Any, y: Any, *, target: Any = None
) -> float:
    """Evasion success rate (design section 4); NaN when no point qualifies."""
    pc, pa, t = _np(pred_clean), _np(pred_adv), _np(y)
    if target is None:
        eligible = pc == t
        return float(np.mean(pa[eligible] != t[eligible])) if eligible.any() else math.nan
    tg = np.broadcast_to(_np(target), t.shape)
    eligible = t != tg
    return float(np.mean(pa[eligible] == tg[eligible])) if eligible.any() else math.nan


def poisoning_success_rate(
    pred_clean_model: Any,
    pred_poisoned_model: Any,
    y: Any,
    *,
    source: int | None = None,
    target: int | None = None,
) -> float:
    """Poisoning success rate: indiscriminate, or pairwise when source/target are given."""
    pc, pp, t = _np(pred_clean_model), _np(pred_poisoned_model), _np(y)
    if source is not None and target is not None:
        of_source = t == source
        return float(np.mean(pp[of_source] == target)) if of_source.any() else math.nan
    eligible = pc == t
    return float(np.mean(pp[eligible] != t[eligible])) if eligible.any() else math.nan


def _check_probs(probs: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _np(probs).astype(np.float64), _np(y).astype(np.int64)
    if p.ndim != 2 or t.ndim != 1 or p.shape[0] != t.shape[0]:
        raise DataError(f"probs has shape {p.shape}, y {t.shape}: expected (n, K) and (n,)")
    if t.size and (t.min() < 0 or t.max() >= p.shape[1]):
        raise DataError(f"y has labels outside [0, {p.shape[1] - 1}]")
    return p, t


def ece(probs: Any, y: Any, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017).

    ``sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`` over ``n_bins`` equal-width bins of the
    max-softmax confidence; bin b holds confidences in ``(b/n_bins, (b+1)/n_bins]``.
    """
    p, t = _check_probs(probs, y)
    n_bins = check_scalar("n_bins", n_bins, lo=1, integer=True)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    correct = (pred == t).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return float(total / len(t)) if len(t) else math.nan


def nll(probs: Any, y: Any) -> float:
    """Mean negative log-likelihood of the true class (probabilities floored at 1e-12)."""
    p, t = _check_probs(probs, y)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(t)), t], 1e-12, None))))


def brier(probs: Any, y: Any) -> float:
    """Multi-class Brier score: mean over samples of ``sum_k (p_k - onehot_k)^2``."""
    p, t = _check_probs(probs, y)
    onehot = np.eye(p.shape[1])[t]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def auroc(pos_scores: Any, neg_scores: Any) -> float:
    """Area under the ROC curve of scores separating positives from negatives.

    The Mann-Whitney statistic, ties counted as one half.
    """
    pos, neg = _np(pos_scores).astype(np.float64), _np(neg_scores).astype(np.float64)
    if not len(pos) or not len(neg):
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Softmax probabilities of ``model`` on ``x`` (n, K), in eval mode, without grad."""
    device = model_device(model)
    out = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out.append(torch.softmax(model(x[i : i + batch_size].to(device)), dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0)


def max_softmax(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Max-softmax confidence of ``model`` on each input of ``x``, shape (n,)."""
    return predict_proba(model, x).max(dim=1).values


def uniform_noise(
    n: int, input_shape: Sequence[int], bounds: tuple[float, float], seed: int
) -> torch.Tensor:
    """``n`` inputs uniform inside ``bounds`` (float32), from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand((n, *input_shape), generator=g)


def gaussian_noise(n: int, x_train: torch.Tensor, seed: int) -> torch.Tensor:
    """``n`` Gaussian inputs with the per-feature mean and std of ``x_train`` (unclipped)."""
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    mean, std = x_train.mean(dim=0), x_train.std(dim=0)
    return mean + std * torch.randn((n, *x_train.shape[1:]), generator=g)


def offmanifold_confidence(model: nn.Module, noise: torch.Tensor) -> float:
    """Mean max-softmax on off-manifold ``noise`` inputs (lower is humbler)."""
    return float(max_softmax(model, noise).mean())


def ray_confidence(
    model: nn.Module, x: torch.Tensor, alphas: Sequence[float] = RAY_ALPHAS
) -> dict[float, float]:
    """Mean max-softmax on ``alpha * x`` for each alpha (extrapolation along rays)."""
    return {float(a): float(max_softmax(model, a * x).mean()) for a in alphas}


def alpha_star(
    model: nn.Module,
    u: torch.Tensor,
    grid: np.ndarray = ALPHA_GRID,
    level: float = ALPHA_STAR_LEVEL,
) -> float:
    """Median over inputs ``u`` of the smallest grid alpha with max-softmax(alpha * u) >= level.

    An input that never reaches ``level`` on the grid counts as the grid's last value
    (capped). Higher means the model stays humble longer along the ray.
    """
    first = np.full(u.shape[0], float(grid[-1]))
    reached = np.zeros(u.shape[0], dtype=bool)
    for a in grid:
        conf = max_softmax(model, float(a) * u).numpy()
        new = (conf >= level) & ~reached
        first[new] = float(a)
        reached |= new
        if reached.all():
            break
    return float(np.median(first))


def offmanifold_auroc(model: nn.Module, x_clean: torch.Tensor, noise: torch.Tensor) -> float:
    """AUROC of max-softmax separating clean inputs (positive) from noise (negative)."""
    return auroc(max_softmax(model, x_clean), max_softmax(model, noise))


def aggregate(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (ddof=1; 0 for n=1) and n of finite values.

    NaN values (a metric undefined for that seed) are left out of mean, std and n.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(np.mean(v)), "std": std, "n": len(v)}

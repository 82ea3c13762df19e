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
temperature, mean_entropy, reliability
    The validation temperature of the model as deployed, the mean Shannon entropy of its
    test outputs, and the per-bin data of a reliability diagram (Guo et al. 2017).
mutual_information, logit_norm, weight_norm
    How much the logits remember about which training example they saw (Müller, Kornblith
    & Hinton 2019), and the scale of the logits and of the weights. Descriptive: their
    direction is ``None`` in :data:`HIGHER_IS_BETTER`.

Devices
-------
A model may live on any device and the data on another (or be numpy arrays): functions
that take a model move the inputs to the model's device batch by batch and bring the
predictions back to the CPU; metrics are Python floats. Random inputs (uniform and
Gaussian noise, augmentations) are drawn from CPU generators and then moved, so the draws
are the same on every device.

Batches
-------
Every function that runs a model takes ``batch_size`` (default
:data:`~poisonlab.batching.DEFAULT_BATCH_SIZE`, 256; None: all at once): that many inputs
go through the model at a time and only the per-input results are kept, so memory grows
with the batch size, not with the number of inputs. Random inputs are drawn whole before
any batching, so no number depends on it beyond float rounding (docs/batching.md).

>>> ece(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]))
0.35
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import (
    as_array,
    as_tensor,
    check_bounds,
    check_finite_array,
    check_inputs,
    check_int_sequence,
    check_label_array,
    check_model,
    check_scalar,
    check_seed,
    check_x,
)
from .batching import DEFAULT_BATCH_SIZE, check_batch_size, iter_slices
from .defenses.posthoc import fit_temperature
from .errors import ConfigError, DataError
from .models import eval_mode
from .training import check_logits, forward, model_device, output_width

#: Multipliers of the ``alpha * x`` rays (design section 4).
RAY_ALPHAS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 100.0)
#: Geometric grid of alpha for ``alpha_star``: 1 .. 1e4, 8 points per decade.
ALPHA_GRID: np.ndarray = np.geomspace(1.0, 1e4, 33)
#: The max-softmax level that counts as "fully confident" for ``alpha_star``.
ALPHA_STAR_LEVEL = 0.999

#: Default class pair, examples and augmentations of :func:`mutual_information`.
MI_CLASSES: tuple[int, int] = (0, 1)
MI_N_EXAMPLES = 200
MI_N_AUGMENT = 32
#: Largest translation (pixels per axis) and noise std (fraction of ``hi - lo``) of
#: :func:`augment`.
AUGMENT_SHIFT = 1
AUGMENT_NOISE = 0.05
#: Smallest flat input length :func:`augment` treats as a square image (8 x 8).
_MIN_FLAT_IMAGE = 64

#: Direction of every metric: True if higher is better for the defender, False if lower
#: is, None if the metric is descriptive (no better or worse; never gated or given a
#: verdict).
HIGHER_IS_BETTER: dict[str, bool | None] = {
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
    "teacher_accuracy": True,
    "temperature": None,
    "mean_entropy": None,
    "mutual_information": None,
    "logit_norm": None,
    "weight_norm": None,
    # an ensemble's (autoattack's) breakdown: the fraction of the test points that each
    # component fooled first (attack "<label>: <component>")
    "fooled_first_by": None,
}


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _pair(name_a: str, a: Any, name_b: str, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two class-id vectors of the same length (numpy, int64)."""
    pa, pb = as_array(name_a, a), as_array(name_b, b)
    if pa.shape != pb.shape:
        raise DataError(f"{name_a} has shape {pa.shape}: expected {pb.shape} to match {name_b}")
    return check_label_array(name_a, pa), check_label_array(name_b, pb)


def accuracy(pred: Any, y: Any) -> float:
    """Fraction of ``pred == y`` over integer class-id vectors; NaN for empty input."""
    p, t = _pair("pred", pred, "y", y)
    return float(np.mean(p == t)) if t.size else math.nan


def attack_success_rate(
    pred_clean: Any, pred_adv: Any, y: Any, *, target: Any = None
) -> float:
    """Evasion success rate (design section 4); NaN when no point qualifies."""
    pc, t = _pair("pred_clean", pred_clean, "y", y)
    pa, _ = _pair("pred_adv", pred_adv, "y", y)
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
    pc, t = _pair("pred_clean_model", pred_clean_model, "y", y)
    pp, _ = _pair("pred_poisoned_model", pred_poisoned_model, "y", y)
    if source is not None and target is not None:
        of_source = t == source
        return float(np.mean(pp[of_source] == target)) if of_source.any() else math.nan
    eligible = pc == t
    return float(np.mean(pp[eligible] != t[eligible])) if eligible.any() else math.nan


#: Slack on probabilities: entries in [-PROB_TOL, 1 + PROB_TOL], rows summing to 1 within
#: ROW_SUM_TOL (float16 or float32 softmax rounding; logits or scores are far off).
PROB_TOL = 1e-6
ROW_SUM_TOL = 1e-2


def _check_probs(probs: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_array("probs", probs), check_label_array("y", y)
    if p.ndim != 2 or p.shape[0] != t.shape[0] or p.shape[1] == 0:
        raise DataError(f"probs has shape {p.shape}, y {t.shape}: expected (n, K) and (n,)")
    p = check_finite_array("probs", p)
    if p.size and (p.min() < -PROB_TOL or p.max() > 1 + PROB_TOL
                   or np.abs(p.sum(axis=1) - 1).max() > ROW_SUM_TOL):
        raise DataError(f"probs has values in [{p.min():g}, {p.max():g}] and row sums in "
                        f"[{p.sum(axis=1).min():g}, {p.sum(axis=1).max():g}]: expected "
                        "probabilities (rows in [0, 1] summing to 1; softmax the logits)")
    if t.size and (t.min() < 0 or t.max() >= p.shape[1]):
        raise DataError(f"y has labels outside [0, {p.shape[1] - 1}]: got labels in "
                        f"[{t.min()}, {t.max()}]")
    return p, t


def _bins(p: np.ndarray, t: np.ndarray, n_bins: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin count, accuracy and mean confidence (NaN where empty) of max-softmax bins.

    Bin b holds confidences in ``(b/n_bins, (b+1)/n_bins]`` (a confidence of 0 joins bin 0).
    The one binning code path of :func:`ece` and :func:`reliability`.
    """
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    correct = (pred == t).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.zeros(n_bins, dtype=np.int64)
    acc = np.full(n_bins, math.nan)
    mean_conf = np.full(n_bins, math.nan)
    for b in range(n_bins):
        m = bins == b
        if m.any():
            count[b] = m.sum()
            acc[b] = correct[m].mean()
            mean_conf[b] = conf[m].mean()
    return count, acc, mean_conf


def ece(probs: Any, y: Any, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017).

    ``sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`` over ``n_bins`` equal-width bins of the
    max-softmax confidence; bin b holds confidences in ``(b/n_bins, (b+1)/n_bins]`` (the
    bins of :func:`reliability`).
    """
    p, t = _check_probs(probs, y)
    n_bins = check_scalar("n_bins", n_bins, lo=1, integer=True)
    count, acc, conf = _bins(p, t, n_bins)
    total = 0.0
    for b in range(n_bins):
        if count[b]:
            total += count[b] * abs(acc[b] - conf[b])
    return float(total / len(t)) if len(t) else math.nan


def reliability(probs: Any, y: Any, n_bins: int = 15) -> dict[str, list[Any]]:
    """The data of a reliability diagram: per confidence bin, count, accuracy, confidence.

    Guo et al. 2017, "On Calibration of Modern Neural Networks" (figure 1). The bins are
    those of :func:`ece`: ``n_bins`` equal-width bins of the max-softmax confidence, bin b
    holding confidences in ``(b/n_bins, (b+1)/n_bins]``; so
    ``ece = sum_b count_b / n * |accuracy_b - confidence_b|``.

    Parameters
    ----------
    probs : array or Tensor, shape (n, K)
        Class probabilities (rows sum to one).
    y : array or Tensor, shape (n,)
        Class ids in ``0 .. K - 1``.
    n_bins : int >= 1

    Returns
    -------
    dict, JSON-ready, with three lists of length ``n_bins``:
        ``"count"`` (int, points in the bin), ``"accuracy"`` (fraction of them classified
        correctly) and ``"confidence"`` (their mean max-softmax); ``None`` in the last two
        for an empty bin.

    Raises
    ------
    DataError
        Shapes that do not fit, labels outside ``0 .. K - 1``.
    ConfigError
        ``n_bins`` not an integer >= 1.

    >>> reliability(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]), n_bins=2)
    {'count': [0, 2], 'accuracy': [None, 0.5], 'confidence': [None, 0.75]}
    """
    p, t = _check_probs(probs, y)
    n_bins = check_scalar("n_bins", n_bins, lo=1, integer=True)
    count, acc, conf = _bins(p, t, n_bins)

    def listed(v: np.ndarray) -> list[float | None]:
        return [None if c == 0 else float(x) for c, x in zip(count, v, strict=True)]

    return {"count": [int(c) for c in count], "accuracy": listed(acc),
            "confidence": listed(conf)}


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
    pos = check_finite_array("pos_scores", pos_scores, ndim=1)
    neg = check_finite_array("neg_scores", neg_scores, ndim=1)
    if not len(pos) or not len(neg):
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _param_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first floating-point parameter (None: it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def as_model_input(model: nn.Module, x: Any) -> torch.Tensor:
    """``x`` (a tensor or numpy array, on any device) as a tensor ``model`` can take.

    Moved to the model's device (:func:`~poisonlab.training.model_device`) and, when ``x``
    is floating point and the model has floating-point parameters of another dtype (float64
    inputs from numpy, a float32 model), cast to their dtype. A tensor that needs neither
    is returned as it is.

    >>> as_model_input(nn.Linear(2, 1), np.zeros((3, 2))).dtype
    torch.float32
    """
    check_model(model)
    x = as_tensor("x", x)
    if x.is_complex():
        raise DataError(f"x has dtype {x.dtype}: expected real numbers")
    dtype = _param_dtype(model)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    return x.to(model_device(model))


def _batched(model: nn.Module, x: Any, batch_size: int | None,
             fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` of each batch of ``x``, gathered on the CPU: (n, *fn's per-sample shape).

    ``x`` (a tensor or numpy array, on any device; a memory-mapped array is read batch by
    batch) is checked once; ``fn`` gets ``batch_size`` rows of it at a time (None: all),
    with ``model`` in eval mode and without grad, and returns one row per input. The
    result is filled batch by batch, so no more than one batch of activations is alive
    at once, whatever ``n``.
    """
    check_model(model)
    batch_size = check_batch_size("batch_size", batch_size)
    x = as_tensor("x", x)
    if x.dim() < 2:
        raise DataError(f"x has shape {tuple(x.shape)}: expected (n, *input_shape)")
    out: torch.Tensor | None = None
    with eval_mode(model), torch.no_grad():
        for sl in iter_slices(x.shape[0], batch_size):
            rows = fn(x[sl]).cpu()
            if out is None:
                out = torch.empty((x.shape[0], *rows.shape[1:]), dtype=rows.dtype)
            out[sl] = rows
    return torch.empty(0) if out is None else out


def _logits(model: nn.Module, xb: Any) -> torch.Tensor:
    """Checked logits (m, K) of ``model`` on one batch ``xb`` (moved and cast for it)."""
    xb = as_model_input(model, xb)
    return check_logits(forward(model, xb), xb.shape[0])


def _confidence(model: nn.Module, xb: Any) -> torch.Tensor:
    """Max-softmax (m,) of ``model`` on one batch ``xb``."""
    return torch.softmax(_logits(model, xb), dim=1).max(dim=1).values


def predict_logits(model: nn.Module, x: Any,
                   batch_size: int | None = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (n, K), in eval mode, without grad; on the CPU.

    ``x`` may live on any device (or be a numpy array, memory-mapped or not): each batch
    of ``batch_size`` inputs (None: all at once) is moved to the model's device (see
    :func:`as_model_input`) and its logits come back to the CPU. ``batch_size`` changes
    memory and speed, never a number beyond float rounding (docs/batching.md).

    >>> predict_logits(nn.Identity(), torch.eye(3), batch_size=2).shape
    torch.Size([3, 3])
    """
    return _batched(model, x, batch_size, lambda xb: _logits(model, xb))


def predict_proba(model: nn.Module, x: Any,
                  batch_size: int | None = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Softmax probabilities of ``model`` on ``x`` (n, K), in eval mode, without grad.

    On the CPU, whatever the devices of ``model`` and ``x`` (see :func:`predict_logits`).
    """
    return _batched(model, x, batch_size,
                    lambda xb: torch.softmax(_logits(model, xb), dim=1))


def max_softmax(model: nn.Module, x: Any, *,
                batch_size: int | None = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Max-softmax confidence of ``model`` on each input of ``x``, shape (n,), on the CPU.

    Computed ``batch_size`` inputs at a time (None: all at once); only the (n,) result is
    kept, never the (n, K) probabilities.
    """
    return _batched(model, x, batch_size, lambda xb: _confidence(model, xb))


def uniform_noise(
    n: int, input_shape: Sequence[int], bounds: tuple[float, float], seed: int, *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` inputs uniform inside ``bounds`` (float32), from a generator seeded by ``seed``.

    Drawn on the CPU (a CPU generator) and then moved to ``device`` (default: the CPU), so
    the noise is the same on every device.

    >>> bool((uniform_noise(3, (2,), (0.0, 1.0), 0, device="cpu") >= 0).all())
    True
    """
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    n = check_scalar("n", n, lo=0, integer=True)
    shape = check_int_sequence("input_shape", input_shape)
    lo, hi = check_bounds("bounds", bounds)
    out = lo + (hi - lo) * torch.rand((n, *shape), generator=g)
    return out if device is None else out.to(device)


def gaussian_noise(n: int, x_train: Any, seed: int, *,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` Gaussian inputs with the per-feature mean and std of ``x_train`` (unclipped).

    The draws come from a CPU generator seeded by ``seed``; the statistics of ``x_train``
    (a tensor on any device, or a numpy array) are taken on the CPU, so the noise is the
    same whatever device ``x_train`` lives on. Returned on ``device`` (default: the device
    of ``x_train``).
    """
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    n = check_scalar("n", n, lo=0, integer=True)
    x_t = check_x(x_train, "x_train")
    target = x_t.device if device is None else torch.device(device)
    x_cpu = x_t.detach().cpu()
    mean = x_cpu.mean(dim=0)
    # Fewer than 2 inputs (a test-only dataset has no training split): NaN noise, quietly.
    std = x_cpu.std(dim=0) if x_cpu.shape[0] > 1 else torch.full_like(mean, math.nan)
    return (mean + std * torch.randn((n, *x_cpu.shape[1:]), generator=g)).to(target)


def offmanifold_confidence(model: nn.Module, noise: torch.Tensor, *,
                           batch_size: int | None = DEFAULT_BATCH_SIZE) -> float:
    """Mean max-softmax on off-manifold ``noise`` inputs (lower is humbler)."""
    return float(max_softmax(model, noise, batch_size=batch_size).mean())


def ray_confidence(
    model: nn.Module, x: torch.Tensor, alphas: Sequence[float] = RAY_ALPHAS, *,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> dict[float, float]:
    """Mean max-softmax on ``alpha * x`` for each alpha (extrapolation along rays).

    Each batch of ``x`` is scaled by every alpha in turn: no scaled copy of the whole of
    ``x`` is made.
    """
    alphas = [float(a) for a in alphas]

    def per_alpha(xb: torch.Tensor) -> torch.Tensor:  # (m, len(alphas))
        return torch.stack([_confidence(model, a * xb) for a in alphas], dim=1)

    conf = _batched(model, x, batch_size, per_alpha)
    return {a: float(conf[:, j].contiguous().mean()) for j, a in enumerate(alphas)}


def alpha_star(
    model: nn.Module,
    u: torch.Tensor,
    grid: np.ndarray = ALPHA_GRID,
    level: float = ALPHA_STAR_LEVEL,
    *,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> float:
    """Median over inputs ``u`` of the smallest grid alpha with max-softmax(alpha * u) >= level.

    An input that never reaches ``level`` on the grid counts as the grid's last value
    (capped). Higher means the model stays humble longer along the ray. Each batch of
    ``batch_size`` inputs walks the grid until all of them reached ``level``; an input's
    alpha depends only on that input.

    >>> u = torch.tensor([[10.0, 0.0], [10.0, 0.0], [0.0, 0.0]])  # the last: never sure
    >>> alpha_star(nn.Identity(), u, batch_size=2)
    1.0
    """
    grid = [float(a) for a in np.asarray(grid, dtype=np.float64).reshape(-1)]

    def first_alpha(ub: torch.Tensor) -> torch.Tensor:  # (m,) float64
        first = torch.full((ub.shape[0],), grid[-1], dtype=torch.float64)
        reached = torch.zeros(ub.shape[0], dtype=torch.bool)
        for a in grid:
            new = (_confidence(model, a * ub).cpu() >= level) & ~reached
            first[new] = a
            reached |= new
            if bool(reached.all()):
                break
        return first

    first = _batched(model, u, batch_size, first_alpha)
    return float(np.median(first.numpy())) if first.numel() else math.nan


def offmanifold_auroc(model: nn.Module, x_clean: torch.Tensor, noise: torch.Tensor, *,
                      batch_size: int | None = DEFAULT_BATCH_SIZE) -> float:
    """AUROC of max-softmax separating clean inputs (positive) from noise (negative)."""
    return auroc(max_softmax(model, x_clean, batch_size=batch_size),
                 max_softmax(model, noise, batch_size=batch_size))


# --------------------------------------------------------------------------- confidence scale


def mean_entropy(probs: Any) -> float:
    """Mean Shannon entropy, in nats, of the rows of ``probs``.

    ``mean_i -sum_k p_ik log p_ik`` (``0 log 0 = 0``), in ``[0, log K]``: 0 for one-hot
    outputs, ``log K`` for uniform ones. On the clean test split it shows how far a defense
    (label smoothing, the confidence penalty of Pereyra et al. 2017) pushes the outputs
    away from one-hot. Descriptive: higher is neither better nor worse.

    Parameters
    ----------
    probs : array or Tensor, shape (n, K)
        Class probabilities (rows sum to one).

    Returns
    -------
    float; NaN for no rows.

    Raises
    ------
    DataError
        ``probs`` is not 2-D, or holds NaN, Inf or negative values.

    >>> round(mean_entropy(np.array([[0.5, 0.5], [1.0, 0.0]])), 4)  # (log 2 + 0) / 2
    0.3466
    """
    p = _np(probs).astype(np.float64)
    if p.ndim != 2:
        raise DataError(f"probs has shape {p.shape}: expected (n, K)")
    if not np.isfinite(p).all() or (p < 0).any():
        raise DataError("probs holds NaN, Inf or negative values: expected probabilities")
    if not len(p):
        return math.nan
    plogp = p * np.log(np.where(p > 0, p, 1.0))
    return float(np.mean(-plogp.sum(axis=1)))


def logit_norm(model: nn.Module, x: torch.Tensor, *,
               batch_size: int | None = DEFAULT_BATCH_SIZE) -> float:
    """Mean L2 norm of the logit vectors of ``model`` on ``x``.

    ``mean_i ||f(x_i)||_2`` over the rows of ``x`` (the clean test split in a suite), in
    logit units. ``f`` is the model as deployed: for a temperature-scaled model, the
    logits already divided by the temperature. Label smoothing bounds the logit gaps it
    asks for, so it tends to shrink this (Müller, Kornblith & Hinton 2019). Descriptive.

    Parameters
    ----------
    model : nn.Module returning logits (n, K)
    x : Tensor, shape (n, *input_shape)
    batch_size : int >= 1 or None
        Inputs per forward pass (None: all at once); only the (n,) row norms are kept.

    Returns
    -------
    float; NaN for no inputs.

    >>> logit_norm(nn.Identity(), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    3.0
    """
    norms = _batched(model, x, batch_size,
                     lambda xb: _logits(model, xb).to(torch.float64).norm(dim=1))
    return float(norms.mean()) if norms.numel() else math.nan


def weight_norm(model: nn.Module) -> float:
    """L2 norm of every weight of ``model``: parameters with ``ndim >= 2``.

    ``sqrt(sum_W ||W||_F^2)`` over the parameters with two or more dimensions (the
    weight matrices of linear layers and the kernels of convolutions); biases and the
    scales of normalisation layers (1-D) are left out: they do not multiply the input, so
    they set no slope. Large weights let a ReLU network's logits grow steeply away from
    the data (extreme extrapolation, Hein et al. 2019); label smoothing penalises large
    logits and so, indirectly, large weights (Müller et al. 2019). The norm of the model
    as trained: a temperature-scaling wrapper adds no parameter. Descriptive.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    float; NaN for a model without a parameter of two or more dimensions.

    >>> layer = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
    >>> weight_norm(layer)
    5.0
    """
    weights = [p for p in model.parameters() if p.dim() >= 2]
    if not weights:
        return math.nan
    total = sum(float(p.detach().to("cpu", torch.float64).pow(2).sum()) for p in weights)
    return math.sqrt(total)


def temperature(model: nn.Module, x_val: torch.Tensor, y_val: Any, *,
                batch_size: int | None = DEFAULT_BATCH_SIZE) -> float:
    """The temperature ``T*`` that minimises the NLL of ``softmax(f(x) / T)`` on validation.

    Guo et al. 2017, "On Calibration of Modern Neural Networks": ``T*`` is fitted by
    :func:`~poisonlab.defenses.posthoc.fit_temperature` (golden-section search on
    ``log T`` in ``[0.05, 20]``, float64; 1 when no temperature lowers the NLL) on the
    validation split, never on train or test. ``f`` is the model as deployed, so after
    the ``temperature_scaling`` defense ``T*`` is about 1. ``T* > 1``: the model is
    over-confident (its logits need softening); ``T* < 1``: under-confident. A value at
    20 or 0.05 is the end of the search interval. Descriptive.

    Parameters
    ----------
    model : nn.Module returning logits (n, K)
    x_val : Tensor (m, *input_shape); y_val : Tensor (m,) of class ids
    batch_size : int >= 1 or None
        Inputs per forward pass (None: all at once).

    Returns
    -------
    float; NaN for an empty validation split.

    >>> x = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    >>> temperature(nn.Identity(), x, torch.tensor([0, 1, 1, 0])) > 1
    True
    """
    if not len(check_label_array("y_val", y_val)):
        return math.nan
    logits = predict_logits(model, x_val, batch_size)
    y = check_label_array("y_val", y_val, n_classes=logits.shape[1])
    if logits.dim() != 2 or logits.shape[0] != len(y):
        raise DataError(f"y_val has shape {y.shape}: expected ({logits.shape[0]},) to match "
                        "x_val")
    return float(fit_temperature(logits, torch.from_numpy(y)))


# --------------------------------------------------------------------------- information


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int] | None:
    """(C, H, W) for image-like per-sample shapes, None otherwise."""
    if len(shape) == 3 and shape[1] >= 2 and shape[2] >= 2:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    if len(shape) == 1 and shape[0] >= _MIN_FLAT_IMAGE:
        side = math.isqrt(int(shape[0]))
        if side * side == shape[0]:
            return (1, side, side)
    return None


def augment(x: torch.Tensor, generator: torch.Generator, bounds: tuple[float, float], *,
            shift: int = AUGMENT_SHIFT, noise: float = AUGMENT_NOISE) -> torch.Tensor:
    """A random augmentation of each input of ``x``: a small translation and Gaussian noise.

    Our choice for :func:`mutual_information` (Müller et al. 2019 used the standard image
    augmentations of their datasets). Image-like inputs, per-sample shape (C, H, W) or a
    flat vector whose length is a perfect square >= 64 (read as one H x H channel), are
    shifted by a uniform random integer in ``[-shift, shift]`` pixels along each axis, the
    uncovered border filled with the low bound. Every input then gets Gaussian noise of
    std ``noise * (hi - lo)`` and is clipped to ``bounds``. Other inputs (tabular, 2-D
    points) get the noise only. Pure: ``x`` is not modified; all randomness comes from
    ``generator`` (the shifts first, then the noise).

    Parameters
    ----------
    x : Tensor, shape (n, *input_shape), float
    generator : torch.Generator
        A CPU generator: the shifts and the noise are drawn on the CPU and moved to the
        device of ``x``, so they are the same on every device.
    bounds : (lo, hi)
    shift : int >= 0
    noise : float >= 0

    Returns
    -------
    Tensor, the shape, dtype and device of ``x``, inside ``bounds``.

    >>> g = torch.Generator().manual_seed(0)
    >>> augment(torch.zeros(5, 1, 8, 8), g, (0.0, 1.0)).shape
    torch.Size([5, 1, 8, 8])
    """
    lo, hi = check_bounds("bounds", bounds)
    shift = check_scalar("shift", shift, lo=0, integer=True)
    noise = check_scalar("noise", noise, lo=0)
    n = x.shape[0]
    out = x.clone()
    img = _image_shape(tuple(x.shape[1:]))
    if img is not None and shift > 0 and n:
        c, h, w = img
        flat = x.reshape(n, c, h, w)
        padded = torch.nn.functional.pad(flat, (shift, shift, shift, shift), value=lo)
        # drawn on the CPU generator, then moved: the same shifts on every device
        offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator).to(x.device)
        moved = torch.empty_like(flat)
        for dy in range(2 * shift + 1):
            for dx in range(2 * shift + 1):
                m = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
                if m.any():
                    moved[m] = padded[m, :, dy : dy + h, dx : dx + w]
        out = moved.reshape(x.shape)
    if noise > 0:
        out = out + noise * (hi - lo) * torch.randn(x.shape, generator=generator,
                                                    dtype=x.dtype).to(x.device)
    return out.clamp(lo, hi)


def check_information_settings(classes: Any, n_examples: Any, n_augment: Any
                               ) -> tuple[tuple[int, int], int, int]:
    """Validate the settings of :func:`mutual_information` (shared with the suite parser).

    ``classes``: two different class ids >= 0; ``n_examples``: int >= 4; ``n_augment``:
    int >= 2. Raises :class:`ConfigError` naming the field.
    """
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) != 2:
        raise ConfigError(f"classes={classes!r} is not allowed: expected two class ids [a, b]")
    a = check_scalar("classes[0]", classes[0], lo=0, integer=True)
    b = check_scalar("classes[1]", classes[1], lo=0, integer=True)
    if a == b:
        raise ConfigError(f"classes={list(classes)!r} is not allowed: expected two different "
                          "class ids")
    return ((a, b), check_scalar("n_examples", n_examples, lo=4, integer=True),
            check_scalar("n_augment", n_augment, lo=2, integer=True))


def gaussian_mi(samples: Any) -> float:
    """Gaussian estimate of ``I(X; Y)`` from ``L`` samples of a scalar ``Y`` per value of ``X``.

    Müller, Kornblith & Hinton 2019, section 5 (see :func:`mutual_information`). With
    ``y_xl`` the samples (row x, column l), ``mu_x`` the row means and ``sigma^2`` the
    pooled within-row variance ``sum (y_xl - mu_x)^2 / (N (L - 1))``, ``p(y | x)`` is
    ``N(mu_x, sigma^2)`` and ``p(y)`` the uniform mixture of the N rows::

        I = 1/(N L) sum_x sum_l [ -(y_xl - mu_x)^2 / (2 sigma^2)
                                  - log( 1/N sum_x' exp(-(y_xl - mu_x')^2 / (2 sigma^2)) ) ]

    computed in float64 with a log-sum-exp. Each term is at most ``log N``; the mean is
    clipped to ``[0, log N]`` (sampling can push a near-zero estimate a hair below 0). The
    pooled variance is floored at ``1e-12`` times the mean square of ``y`` (1 when every
    ``y`` is 0), which gives the limits of a zero variance: 0 when all rows have one mean,
    ``log N`` when all means differ.

    Parameters
    ----------
    samples : array or Tensor, shape (N, L), N >= 2, L >= 2, finite

    Returns
    -------
    float in ``[0, log N]``, in nats.

    Raises
    ------
    DataError
        Not an (N, L) array with N >= 2, L >= 2, or not finite.

    >>> round(gaussian_mi(np.array([[0.0, 0.1], [5.0, 5.1]])), 4)  # log 2
    0.6931
    """
    s = _np(samples).astype(np.float64)
    if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] < 2:
        raise DataError(f"samples has shape {s.shape}: expected (N, L) with N >= 2, L >= 2")
    if not np.isfinite(s).all():
        raise DataError("samples holds NaN or Inf: expected finite values")
    n, reps = s.shape
    mu = s.mean(axis=1)
    sigma2 = float(((s - mu[:, None]) ** 2).sum()) / (n * (reps - 1))
    scale = float(np.mean(s**2))
    # floor: no spread within rows (all rows one constant when scale is 0)
    sigma2 = max(sigma2, 1e-12 * scale) if scale > 0 else 1.0
    flat = s.reshape(-1)
    own = -((flat - np.repeat(mu, reps)) ** 2) / (2 * sigma2)
    # log sum_x' exp(cross), in place on one (N L, N) array: the row maximum is taken out
    # first, so every exponent is <= 0 and the sum >= 1.
    cross = np.subtract.outer(flat, mu)
    np.square(cross, out=cross)
    cross *= -1.0 / (2 * sigma2)
    top = cross.max(axis=1)
    cross -= top[:, None]
    np.exp(cross, out=cross)
    terms = own - (top + np.log(cross.sum(axis=1)) - math.log(n))
    return float(np.clip(terms.mean(), 0.0, math.log(n)))


def mutual_information(
    model: nn.Module,
    x: Any,
    y: Any,
    *,
    classes: Sequence[int] = MI_CLASSES,
    n_examples: int = MI_N_EXAMPLES,
    n_augment: int = MI_N_AUGMENT,
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    shift: int = AUGMENT_SHIFT,
    noise: float = AUGMENT_NOISE,
) -> float:
    """How much a logit gap remembers of which training example it came from, in nats.

    Müller, Kornblith & Hinton 2019, "When Does Label Smoothing Help?" (NeurIPS), section 5
    and figure 6: label smoothing "erases" information about the individual examples,
    which is why a label-smoothed teacher distils worse. X is the index of one of N
    training examples of classes a and b; Y is the logit difference ``z_a - z_b`` of the
    model on a random augmentation (:func:`augment`) of that example, seen L times. The
    Gaussian estimate is :func:`gaussian_mi` of the (N, L) table of Y. It lies in
    ``[0, log N]``: 0 when the logit gap forgets which example it saw (the augmentations
    of every example land on one distribution), ``log N`` when every example keeps its own
    well separated gap. Descriptive: neither direction is better for the defender.

    The examples are up to ``n_examples // 2`` of class b and the rest of class a (up to
    what each class has), drawn without replacement by a generator seeded from ``seed``;
    the augmentations use a second generator from the same seed.

    Parameters
    ----------
    model : nn.Module returning logits (n, K), on any device
    x : Tensor (n, *input_shape); y : Tensor (n,) of class ids
        The training split and its (clean) labels, which pick the examples of each class;
        on any device (or numpy arrays). The augmentations are drawn on the CPU, so the
        result does not depend on the devices beyond floating-point rounding.
    classes : two different class ids in ``0 .. K - 1``, default (0, 1)
    n_examples : int >= 4, default 200
        N (at most), split evenly between the two classes.
    n_augment : int >= 2, default 32
        L, augmentations per example.
    bounds : (lo, hi), optional
        The input domain for :func:`augment`; default: the range of ``x``.
    seed : int >= 0
    batch_size : int >= 1 or None
        Augmented copies per forward pass (None: all at once). The augmentations are
        drawn for all N x L copies first, so they do not depend on it.
    shift, noise
        The augmentation (:func:`augment`): largest translation in pixels, noise std as a
        fraction of ``hi - lo``. The default shift of 1 pixel is, on 8 x 8 digits, about
        the 4 pixels of the paper's 32 x 32 crops; ``shift=0`` keeps only the noise.

    Returns
    -------
    float in ``[0, log N]``, with N the examples used.

    Raises
    ------
    ConfigError
        ``classes`` not two different ids in range; bad ``n_examples``, ``n_augment``,
        ``seed``, ``bounds``.
    DataError
        Malformed ``x``/``y``; a class with fewer than 2 examples in ``y``.

    >>> class Constant(nn.Module):
    ...     def forward(self, x):
    ...         return torch.zeros(x.shape[0], 2)
    >>> x, y = torch.rand(20, 3), torch.arange(20) % 2
    >>> mutual_information(Constant(), x, y, n_examples=10, n_augment=4)
    0.0
    """
    (a, b), n_examples, n_augment = check_information_settings(classes, n_examples, n_augment)
    seed = check_seed("seed", seed)
    batch_size = check_batch_size("batch_size", batch_size)
    x_t, y_t = check_inputs(x, y)
    k = output_width(model, as_model_input(model, x_t[:1]))
    for i, c in enumerate((a, b)):
        if c >= k:
            raise ConfigError(f"classes[{i}]={c} is not allowed: expected a class id in "
                              f"[0, {k - 1}] for a model with {k} outputs")
    if bounds is None:
        lo, hi = float(x_t.min()), float(x_t.max())
        bounds = (lo, hi if hi > lo else lo + 1.0)
    bounds = check_bounds("bounds", bounds)
    s_pick, s_aug = (int(s.generate_state(1)[0] >> 1)
                     for s in np.random.SeedSequence(seed).spawn(2))
    rng = np.random.default_rng(s_pick)
    labels = _np(y_t)
    picked = []
    for c, want in ((a, n_examples - n_examples // 2), (b, n_examples // 2)):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise DataError(f"y has {len(idx)} example(s) of class {c}: expected at least 2 "
                            "for mutual_information")
        picked.append(np.sort(rng.choice(idx, size=min(want, len(idx)), replace=False)))
    chosen = torch.from_numpy(np.concatenate(picked))
    # augmented on the device of x (the draws are made on the CPU and moved)
    reps = x_t[chosen.to(x_t.device)].repeat_interleave(n_augment, dim=0)
    views = augment(reps, torch.Generator().manual_seed(s_aug), bounds, shift=shift,
                    noise=noise)
    logits = predict_logits(model, views, batch_size).to(torch.float64)
    gap = (logits[:, a] - logits[:, b]).reshape(len(chosen), n_augment)
    return gaussian_mi(gap)


def aggregate(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (ddof=1; 0 for n=1) and n of finite values.

    NaN values (a metric undefined for that seed) are left out of mean, std and n.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(np.mean(v)), "std": std, "n": len(v)}

"""Scores of predictions: accuracy, success rates, calibration (ECE, reliability, NLL,
Brier), AUROC, and the aggregation of per-seed values. Pure functions of arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validation import (
    as_array,
    validate_finite_array,
    validate_label_array,
    validate_scalar,
)
from ..errors import DataError


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _pair(name_a: str, a: Any, name_b: str, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two class-id vectors of the same length (numpy, int64)."""
    pa, pb = as_array(name_a, a), as_array(name_b, b)
    if pa.shape != pb.shape:
        raise DataError(f"{name_a} has shape {pa.shape}: expected {pb.shape} to match {name_b}")
    return validate_label_array(name_a, pa), validate_label_array(name_b, pb)


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
    p, t = as_array("probs", probs), validate_label_array("y", y)
    if p.ndim != 2 or p.shape[0] != t.shape[0] or p.shape[1] == 0:
        raise DataError(f"probs has shape {p.shape}, y {t.shape}: expected (n, K) and (n,)")
    p = validate_finite_array("probs", p)
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
    n_bins = validate_scalar("n_bins", n_bins, lo=1, integer=True)
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
    n_bins = validate_scalar("n_bins", n_bins, lo=1, integer=True)
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
    pos = validate_finite_array("pos_scores", pos_scores, ndim=1)
    neg = validate_finite_array("neg_scores", neg_scores, ndim=1)
    if not len(pos) or not len(neg):
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def aggregate(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (ddof=1; 0 for n=1) and n of finite values.

    NaN values (a metric undefined for that seed) are left out of mean, std and n.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(np.mean(v)), "std": std, "n": len(v)}

"""Data-filter defenses: find the training labels that look wrong, then fix or drop them.

Both run once, in the ``prepare`` hook of :func:`poisonlab.train`, before any training step.
The algorithms are pure functions (:func:`knn_sanitize`, :func:`confident_learning_issues`);
the classes hold validated settings and apply them.

knn_sanitize
    Label sanitisation by k nearest neighbours (Paudice, Muñoz-González and Lupu 2018,
    "Label Sanitization against Label Flipping Poisoning Attacks", ECML PKDD workshops).
    A point whose neighbours agree, by at least a fraction ``eta`` of the ``k`` votes, on a
    label other than its own is relabelled to it (the paper's choice) or dropped.
    No randomness. Cost: one pass of exact Euclidean distances in chunks, O(n^2 d); on
    5000 flattened MNIST images (d = 784) about 0.8 s on one CPU core.
confident_learning
    Confident learning (Northcutt, Jiang and Chuang 2021, "Confident Learning: Estimating
    Uncertainty in Dataset Labels", JAIR 70) through the ``cleanlab`` package: out-of-sample
    class probabilities from K-fold cross-validation of a cheap model trained by
    :func:`poisonlab.train`, then ``cleanlab.filter.find_label_issues``; the issues are
    dropped. Random only through the fold split and the models' seeds, all drawn from the
    generator ``prepare`` receives. Cost: ``cv`` trainings of the model; with the default
    softmax regression about 0.6 s on digits (1167 points) and 3 s on the MNIST subset
    (3250 points), on one CPU core.

>>> from poisonlab import get_defense
>>> get_defense("knn_sanitize", k=5).label
'knn_sanitize(k=5, eta=0.5, action=relabel)'
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .._torch import eval_mode
from .._validation import validate_choice, validate_inputs, validate_scalar, validate_seed
from ..errors import ConfigError, DataError
from ..models import build_model, models
from ..training import train
from .base import Defense

logger = logging.getLogger(__name__)

#: What :class:`KNNSanitize` does with a point whose neighbours outvote its label.
KNN_ACTIONS: tuple[str, ...] = ("relabel", "drop")

#: ``filter_by`` methods of ``cleanlab.filter.find_label_issues`` (cleanlab 2.6 - 2.9):
#:
#: - ``prune_by_noise_rate``: for every off-diagonal cell (given i, true j) of the confident
#:   joint, the points labelled i with the largest margin ``p_j - p_i`` (the default);
#: - ``prune_by_class``: in each class, the points with the lowest probability of their
#:   given label, as many as the confident joint estimates are mislabelled there;
#: - ``both``: flagged by both of the above;
#: - ``confident_learning``: the points counted off the diagonal of the confident joint;
#: - ``predicted_neq_given``: argmax of the probabilities differs from the given label;
#: - ``low_normalized_margin`` / ``low_self_confidence``: the estimated number of issues,
#:   taken in order of the lowest normalised margin / probability of the given label.
CL_FILTERS: tuple[str, ...] = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
)

_CHUNK_ELEMENTS = 2**22  # distances held at once by knn_sanitize: 16 MiB of float32


# --------------------------------------------------------------------------- kNN sanitisation


class Sanitized(NamedTuple):
    """What :func:`knn_sanitize` found: unpack as ``y_new, changed = knn_sanitize(...)``.

    Attributes
    ----------
    y : int64 Tensor (n,)
        The labels after relabelling: the neighbours' majority where ``changed``, the input
        label elsewhere.
    changed : bool Tensor (n,)
        The points whose neighbours outvote their label (relabelled, or dropped by
        :class:`KNNSanitize` with ``action="drop"``).
    """

    y: torch.Tensor
    changed: torch.Tensor


def knn_sanitize(x: Any, y: Any, *, k: int = 10, eta: float = 0.5, n_classes: int) -> Sanitized:
    """kNN label sanitisation (Paudice et al. 2018): relabel points their neighbours outvote.

    For each training point, take its ``k`` nearest other training points (Euclidean
    distance on the flattened inputs, the point itself excluded, its duplicates included)
    and count their labels. If the most common label ``c`` holds a fraction ``>= eta`` of the
    ``k`` votes and the point's own label got fewer votes than ``c``, the point is relabelled
    ``c``. All points vote with their input labels (one simultaneous pass: a relabelled
    point does not vote with its new label).

    Deterministic, no randomness: neighbours at equal distance are taken in order of
    their index (lowest first), and a tie for the most votes goes to the lowest class id,
    except that a point whose own label is among the tied labels keeps it.

    Parameters
    ----------
    x : Tensor or array (n, *input_shape)
        Distances in the precision of ``x`` (float32 or float64), on its device, in
        chunks of about ``2**22`` of them.
    y : int Tensor or array (n,), class ids in ``0 .. n_classes - 1``
    k : int in [1, n - 1]
        Neighbours per point (the paper's default is 10).
    eta : float in (0, 1]
        Agreement threshold: the fraction of the ``k`` votes the majority label needs
        (the paper used 0.5).
    n_classes : int >= 2

    Returns
    -------
    Sanitized
        ``(y, changed)``: new labels (n,) int64 and the bool mask (n,) of changed points,
        both on the device of ``x``.

    Raises
    ------
    ConfigError
        ``k``, ``eta`` or ``n_classes`` out of range.
    DataError
        Malformed inputs, labels outside ``0 .. n_classes - 1``, or ``k >= n``.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1], [5.2]])
    >>> y = torch.tensor([0, 0, 1, 0, 1, 1, 1])
    >>> y_new, changed = knn_sanitize(x, y, k=2, eta=1.0, n_classes=2)
    >>> y_new.tolist(), changed.nonzero().flatten().tolist()
    ([0, 0, 0, 0, 1, 1, 1], [2])
    """
    k = validate_scalar("k", k, lo=1, integer=True)
    eta = validate_scalar("eta", eta, lo=0, hi=1, lo_closed=False)
    n_classes = validate_scalar("n_classes", n_classes, lo=2, integer=True)
    x_t, y_t = validate_inputs(x, y, n_classes=n_classes)
    n = x_t.shape[0]
    if k >= n:
        raise DataError(
            f"k={k} is not allowed with {n} training points: expected k <= {n - 1} "
            "(each point votes with its k nearest other points)"
        )
    flat = x_t.reshape(n, -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    y_dev = y_t.to(flat.device)
    votes = _neighbour_votes(flat, y_dev, k=k, n_classes=n_classes)
    top_votes, top = votes.max(dim=1)  # first maximum: ties go to the lowest class id
    own_votes = votes.gather(1, y_dev[:, None]).squeeze(1)
    changed = (top_votes.double() / k >= eta) & (own_votes < top_votes)
    return Sanitized(torch.where(changed, top, y_dev), changed)


def _neighbour_votes(flat: torch.Tensor, y: torch.Tensor, *, k: int,
                     n_classes: int) -> torch.Tensor:
    """Label counts (n, K) over each point's k nearest other points, in chunks of rows.

    The k-th smallest distance ``r`` bounds the neighbourhood: every point closer than
    ``r`` is in it, and the remaining places go to the points at exactly ``r`` in order of
    their index, so the result does not depend on how ``topk`` orders ties.
    """
    n = flat.shape[0]
    onehot = F.one_hot(y, n_classes).to(flat.dtype)
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = []
    for start in range(0, n, rows):
        block = flat[start : start + rows]
        m = block.shape[0]
        dist = torch.cdist(block, flat)
        own = torch.arange(m, device=flat.device)
        dist[own, own + start] = float("inf")  # a point is not its own neighbour
        kth = dist.topk(k, dim=1, largest=False).values[:, -1:]
        closer = dist < kth
        at_kth = dist == kth
        room = k - closer.sum(dim=1, keepdim=True)
        chosen = closer | (at_kth & (at_kth.cumsum(dim=1) <= room))
        out.append(chosen.float() @ onehot)
    return torch.cat(out).round().long()


@dataclass(frozen=True)
class KNNSanitize(Defense):
    """kNN label sanitisation (Paudice et al. 2018) as a data filter.

    Before training, every point whose ``k`` nearest neighbours agree (a fraction
    ``>= eta`` of the votes) on another label is relabelled to that label, or dropped.
    See :func:`knn_sanitize` for the rule, its tie-breaking and its cost.

    Paper: A. Paudice, L. Muñoz-González, E. C. Lupu, "Label Sanitization against Label
    Flipping Poisoning Attacks", ECML PKDD 2018 workshops (Nemesis), LNCS 11329.

    Parameters
    ----------
    k : int >= 1
        Neighbours per point; must be below the number of training points (paper: 10).
    eta : float in (0, 1]
        Agreement threshold (paper: 0.5).
    action : "relabel" | "drop"
        Relabel the outvoted points (the paper's choice) or remove them.

    Raises
    ------
    ConfigError
        A parameter out of range (at construction).
    DataError
        From ``prepare``: ``k`` not below the number of training points.

    Examples
    --------
    >>> d = KNNSanitize(k=2, eta=1.0, action="drop")
    >>> x = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1]])
    >>> _, y = d.prepare(x, torch.tensor([0, 1, 0, 1, 1]), n_classes=2,
    ...                  generator=torch.Generator())
    >>> y.tolist()
    [0, 0, 1, 1]
    """

    name: ClassVar[str] = "knn_sanitize"
    summary: ClassVar[str] = ("relabel or drop points whose k nearest neighbours disagree "
                              "with their label (Paudice et al. 2018)")
    kind: ClassVar[str] = "filter"
    k: int = 10
    eta: float = 0.5
    action: str = "relabel"

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", validate_scalar("k", self.k, lo=1, integer=True))
        object.__setattr__(self, "eta", validate_scalar("eta", self.eta, lo=0, hi=1,
                                                     lo_closed=False))
        object.__setattr__(self, "action", validate_choice("action", self.action, KNN_ACTIONS))

    def prepare(
        self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y_new, changed = knn_sanitize(x, y, k=self.k, eta=self.eta, n_classes=n_classes)
        logger.info("%s: %d of %d labels outvoted (%s)", self.label, int(changed.sum()),
                    len(changed), self.action)
        if self.action == "drop":
            keep = ~changed
            return x[keep.to(x.device)], y[keep.to(y.device)]
        return x, y_new.to(y.device)


# --------------------------------------------------------------------------- confident learning


class LabelIssues(NamedTuple):
    """What :func:`confident_learning_issues` found.

    Attributes
    ----------
    issues : bool Tensor (n,)
        The points cleanlab flags as label issues.
    pred_probs : float64 Tensor (n, K)
        The out-of-sample class probabilities they were found from (each point scored by
        the model of the fold that held it out).
    """

    issues: torch.Tensor
    pred_probs: torch.Tensor


def confident_learning_issues(
    x: Any,
    y: Any,
    *,
    n_classes: int,
    cv: int = 5,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
    model: str = "logistic",
    epochs: int = 20,
    lr: float = 1e-2,
    weight_decay: float = 1e-2,
    seed: int | torch.Generator = 0,
) -> LabelIssues:
    """Find label issues by confident learning (Northcutt et al. 2021) with cleanlab.

    1. Split the points into ``cv`` stratified folds (a uniformly random order within each
       class, dealt round-robin to the folds).
    2. For each fold, build the registered ``model`` and train it on the other folds with
       :func:`poisonlab.train` (Adam, ``epochs``, ``lr``, ``weight_decay``, batch 64); its
       softmax on the held-out fold gives those points' out-of-sample probabilities.
    3. ``cleanlab.filter.find_label_issues(y, pred_probs, filter_by=filter_by,
       frac_noise=frac_noise, n_jobs=1)`` flags the issues.

    The fold split and each model's initialisation and shuffle seeds are drawn from
    ``seed``; the global RNGs are left alone (cleanlab's ``find_label_issues`` uses none).

    Parameters
    ----------
    x : Tensor or array (n, *input_shape)
        Models train on the device of ``x``.
    y : int Tensor or array (n,), class ids in ``0 .. n_classes - 1``
    n_classes : int >= 2
    cv : int >= 2
        Folds; at most n.
    filter_by : str
        One of :data:`CL_FILTERS` (cleanlab's options, documented there).
    frac_noise : float in (0, 1]
        Flag only about this fraction of the estimated issues (cleanlab applies it with
        ``prune_by_noise_rate``, ``prune_by_class`` and ``both`` and ignores it otherwise).
    model : str
        A registered model name, built with default settings (``"logistic"``: softmax
        regression on the flattened inputs).
    epochs : int >= 1; lr : float > 0; weight_decay : float >= 0
        Training of each fold's model. The defaults suit softmax regression on inputs in
        [0, 1] (digits, MNIST); the L2 penalty keeps it from fitting the noisy labels.
        ``epochs`` counts passes in batches of 64: on a small set raise it so that each
        model takes a few hundred steps, or its probabilities stay near uniform and
        cleanlab flags about half the points (60 points, 20 epochs: 29 flagged).
    seed : int >= 0 or torch.Generator

    Returns
    -------
    LabelIssues
        ``(issues, pred_probs)`` on the CPU.

    Raises
    ------
    ConfigError
        A parameter out of range, an unknown model name, or cleanlab missing.
    DataError
        Malformed inputs, or fewer points than folds.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.cat([torch.randn(20, 2, generator=g) - 3, torch.randn(20, 2, generator=g) + 3])
    >>> y = torch.tensor([0] * 20 + [1] * 20); y[3] = 1  # one flipped label
    >>> found = confident_learning_issues(x, y, n_classes=2, epochs=30, seed=0)
    >>> found.issues.nonzero().flatten().tolist()
    [3]
    """
    settings = _cl_settings(cv=cv, filter_by=filter_by, frac_noise=frac_noise, model=model,
                            epochs=epochs, lr=lr, weight_decay=weight_decay)
    n_classes = validate_scalar("n_classes", n_classes, lo=2, integer=True)
    x_t, y_t = validate_inputs(x, y, n_classes=n_classes)
    generator = (seed if isinstance(seed, torch.Generator)
                 else torch.Generator().manual_seed(validate_seed("seed", seed)))
    filter_mod = _import_cleanlab_filter()
    n, cv = x_t.shape[0], settings["cv"]
    if n < cv:
        raise DataError(f"cv={cv} is not allowed with {n} training points: expected cv <= {n}")
    probs = _cross_val_probs(x_t, y_t, n_classes=n_classes, generator=generator, **settings)
    # cleanlab copes with classes no point carries (their thresholds are set out of reach)
    mask = filter_mod.find_label_issues(
        y_t.cpu().numpy(), probs.numpy(), filter_by=settings["filter_by"],
        frac_noise=settings["frac_noise"], n_jobs=1,
    )
    return LabelIssues(torch.from_numpy(np.asarray(mask, dtype=bool)), probs)


def _cl_settings(**params: Any) -> dict[str, Any]:
    """Validate the confident-learning settings (shared by the function and the class)."""
    models.get(params["model"])  # unknown names raise UnknownNameError with did-you-mean
    return {
        "cv": validate_scalar("cv", params["cv"], lo=2, integer=True),
        "filter_by": validate_choice("filter_by", params["filter_by"], CL_FILTERS),
        "frac_noise": validate_scalar("frac_noise", params["frac_noise"], lo=0, hi=1,
                                   lo_closed=False),
        "model": params["model"],
        "epochs": validate_scalar("epochs", params["epochs"], lo=1, integer=True),
        "lr": validate_scalar("lr", params["lr"], lo=0, lo_closed=False),
        "weight_decay": validate_scalar("weight_decay", params["weight_decay"], lo=0),
    }


def _import_cleanlab_filter() -> Any:
    try:
        import cleanlab.filter
    except ImportError:
        raise ConfigError(
            "defense 'confident_learning' needs the cleanlab package: pip install "
            "'cleanlab>=2.6'"
        ) from None
    return cleanlab.filter


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _folds(y: torch.Tensor, cv: int, generator: torch.Generator) -> torch.Tensor:
    """Fold id (n,) per point: a random order, stably sorted by class, dealt round-robin.

    Every fold gets ``floor`` or ``ceil`` of ``n_j / cv`` points of each class j.
    """
    perm = torch.randperm(len(y), generator=generator)
    order = perm[torch.sort(y.cpu()[perm], stable=True).indices]
    fold = torch.empty(len(y), dtype=torch.long)
    fold[order] = torch.arange(len(y)) % cv
    return fold


def _cross_val_probs(x: torch.Tensor, y: torch.Tensor, *, n_classes: int,
                     generator: torch.Generator, cv: int, model: str, epochs: int, lr: float,
                     weight_decay: float, **_: Any) -> torch.Tensor:
    """Out-of-sample softmax probabilities (n, K), float64 on the CPU, by ``cv`` folds."""
    fold = _folds(y, cv, generator)  # on the CPU, from the CPU generator
    probs = torch.zeros(len(y), n_classes, dtype=torch.float64)
    for f in range(cv):
        held = fold == f
        net = build_model(model, tuple(x.shape[1:]), n_classes, seed=_draw_seed(generator))
        net = net.to(x.device)
        dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), x.dtype)
        xf = x.to(dtype)  # float64 inputs (numpy) for a float32 model
        train(net, xf[~held.to(x.device)], y[~held.to(y.device)], epochs=epochs, lr=lr,
              weight_decay=weight_decay, seed=_draw_seed(generator))
        with eval_mode(net), torch.no_grad():
            logits = torch.cat([net(xb) for xb in xf[held.to(x.device)].split(1024)])
        probs[held] = torch.softmax(logits.double(), dim=1).cpu()
    return probs


@dataclass(frozen=True)
class ConfidentLearning(Defense):
    """Drop the label issues that confident learning finds (cleanlab), before training.

    Out-of-sample probabilities come from ``cv``-fold cross-validation of a cheap model
    trained by :func:`poisonlab.train`; ``cleanlab.filter.find_label_issues`` flags the
    issues; they are removed from the training set. The folds and the models' seeds are
    drawn from the generator ``prepare`` receives (so from ``train``'s ``seed``). See
    :func:`confident_learning_issues`.

    Paper: C. Northcutt, L. Jiang, I. Chuang, "Confident Learning: Estimating Uncertainty in
    Dataset Labels", Journal of Artificial Intelligence Research 70, 2021. Needs the
    ``cleanlab`` package (a core dependency).

    Parameters
    ----------
    cv : int >= 2
        Cross-validation folds (at most the number of training points).
    filter_by : str
        cleanlab's method, one of :data:`CL_FILTERS`; default ``"prune_by_noise_rate"``.
    frac_noise : float in (0, 1]
        Drop only about this fraction of the estimated issues (cleanlab uses it with the
        ``prune_by_*`` and ``both`` methods only).
    model : str
        Registered model for the cross-validation (``"logistic"``, ``"mlp"``...).
    epochs : int >= 1; lr : float > 0; weight_decay : float >= 0
        Training of each fold's model (defaults chosen for softmax regression).

    Raises
    ------
    ConfigError
        A parameter out of range or an unknown model (at construction); cleanlab missing.
    DataError
        From ``prepare``: fewer training points than folds.

    Examples
    --------
    >>> d = ConfidentLearning(cv=3, filter_by="both")
    >>> d.kind, d.params()["filter_by"]
    ('filter', 'both')
    """

    name: ClassVar[str] = "confident_learning"
    summary: ClassVar[str] = ("drop label issues found by cleanlab's confident learning "
                              "(Northcutt et al. 2021)")
    kind: ClassVar[str] = "filter"
    cv: int = 5
    filter_by: str = "prune_by_noise_rate"
    frac_noise: float = 1.0
    model: str = "logistic"
    epochs: int = 20
    lr: float = 1e-2
    weight_decay: float = 1e-2

    def __post_init__(self) -> None:
        for key, value in _cl_settings(**self.params()).items():
            object.__setattr__(self, key, value)
        if importlib.util.find_spec("cleanlab") is None:  # fail at configuration time
            _import_cleanlab_filter()

    def prepare(
        self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        found = confident_learning_issues(x, y, n_classes=n_classes, seed=generator,
                                          **self.params())
        keep = ~found.issues
        logger.info("%s: dropped %d of %d points as label issues", self.label,
                    int(found.issues.sum()), len(keep))
        return x[keep.to(x.device)], y[keep.to(y.device)]

"""Certificates against label flips for partition-aggregation ensembles.

For a test input the ``k`` base classifiers of Deep Partition Aggregation (Levine & Feizi,
ICLR 2021) vote; ``n_c`` votes go to class ``c`` and the prediction is the plurality
class, ties to the smaller index. A flipped training label lies in one partition and
changes at most that partition's vote, so the prediction ``c`` survives any

    r = floor((n_c - max_{c' != c} (n_{c'} + [c' < c])) / 2)

flipped labels (Theorem 1 of the paper). Finite Aggregation (Wang, Levine & Feizi, ICML
2022) spreads each hash bucket over ``d`` of the ``k d`` base classifiers; a poisoned
bucket can move each of its ``d`` votes, and the certificate is, for each other class
``c'``, the number of buckets the attacker can corrupt, taken greedily by how much each
can close the gap ``n_c - n_{c'} - [c' < c]`` (2 for a vote for ``c``, 1 for a vote for a
third class, 0 for a vote for ``c'``), before the gap goes negative; the minimum over
``c'`` (their Theorem 2). With ``d = 1`` the two agree.

The radius counts training points whose label the attacker flips (with the hash rule and
no fitted feature map, also points inserted or deleted). It certifies the
prediction, right or wrong: :meth:`Certificate.certified_accuracy` counts the points
predicted correctly with radius at least ``r``.

>>> import poisonlab as pl
>>> ds = pl.load_dataset("digits", seed=0)
>>> d = pl.get_defense("dpa", k=10, features="pca", epochs=50, lr=0.01)
>>> m = pl.train(pl.build_model("logistic", ds.input_shape, ds.n_classes), ds.x_train,
...              ds.y_train, defense=d, seed=0)
>>> c = pl.certify(m, ds.x_test)
>>> c.votes.sum(1).unique().tolist(), bool((c.radius >= 0).all())
([10], True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._torch import eval_mode, match_dtype, model_device
from ._validation import validate_labels, validate_scalar, validate_x
from .batching import DEFAULT_BATCH_SIZE, iter_slices, validate_batch_size
from .defenses.partition import PartitionEnsemble, bucket_members
from .errors import ConfigError, DataError


def dpa_radius(votes: torch.Tensor) -> torch.Tensor:
    """DPA's certified radius (Levine & Feizi 2021, Theorem 1) from vote counts (n, K).

    Returns (n,) int64: ``floor((n_c - max_{c' != c}(n_{c'} + [c' < c])) / 2)`` for the
    plurality class ``c`` (ties to the smaller index), never below 0.

    >>> dpa_radius(torch.tensor([[7, 3, 0], [4, 4, 2], [4, 5, 1]])).tolist()
    [2, 0, 0]
    """
    votes = votes.to(torch.int64)
    pred = votes.argmax(1)
    k = votes.shape[1]
    rival = votes + (torch.arange(k, device=votes.device)[None, :] < pred[:, None])
    rival = rival.scatter(1, pred[:, None], torch.iinfo(torch.int64).min)
    n_c = votes.gather(1, pred[:, None])[:, 0]
    return ((n_c - rival.max(1).values) // 2).clamp_min(0)


def fa_radius(base_predictions: torch.Tensor, n_classes: int,
              members: torch.Tensor) -> torch.Tensor:
    """Finite Aggregation's certified radius (Wang et al. 2022, Theorem 2).

    Parameters
    ----------
    base_predictions : (n, B) int64, each base classifier's class
    n_classes : int
    members : (H, d) int64, the base classifiers each of the H buckets trains
        (:func:`~poisonlab.defenses.partition.bucket_members`)

    Returns (n,) int64. With ``d = 1`` it equals :func:`dpa_radius` of the votes.

    >>> bp = torch.tensor([[0, 0, 0, 1]])
    >>> members = torch.tensor([[0], [1], [2], [3]])
    >>> fa_radius(bp, 2, members).tolist(), dpa_radius(torch.tensor([[3, 1]])).tolist()
    ([1], [1])
    """
    n = base_predictions.shape[0]
    dev = base_predictions.device
    votes = torch.nn.functional.one_hot(base_predictions, n_classes).sum(1)
    pred = votes.argmax(1)
    n_c = votes.gather(1, pred[:, None])[:, 0]
    for_pred = (base_predictions == pred[:, None]).to(torch.int64)[:, members]  # (n, H, d)
    best = torch.full((n,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
    for c in range(n_classes):
        gap = n_c - votes[:, c] - (c < pred).to(torch.int64)
        for_c = (base_predictions == c).to(torch.int64)[:, members]
        # What corrupting each bucket can take off the gap, largest first.
        delta = (1 + for_pred - for_c).sum(-1).sort(1, descending=True).values
        reach = delta.cumsum(1) <= gap[:, None]
        r = reach.sum(1)
        best = torch.where(pred == c, best, torch.minimum(best, r))
    return best


@dataclass(frozen=True)
class Certificate:
    """Per-point certificates of a partition-aggregation ensemble (:func:`certify`).

    Attributes
    ----------
    prediction : (n,) int64, the plurality vote (ties to the smaller class)
    votes : (n, K) int64, votes per class (each row sums to ``k d``)
    radius : (n,) int64, flipped training labels the prediction is certified against
    base_predictions : (n, k d) int64, each base classifier's class
    k, d : the ensemble's partitions and spread; n_train : its training-set size
    threat : what the radius counts (``"label flips"``, or ``"label flips, insertions
        and deletions"`` for hash partitions of raw inputs, with no fitted feature map)
    """

    prediction: torch.Tensor
    votes: torch.Tensor
    radius: torch.Tensor
    base_predictions: torch.Tensor
    k: int
    d: int
    n_train: int
    threat: str

    def flips(self, r: float) -> int:
        """``r`` as a number of flips: an int as is; a float in (0, 1) a fraction of the
        training set, ``round(r * n_train)`` (the label-flip attack's count)."""
        if isinstance(r, bool):
            raise ConfigError(f"r={r!r} is not allowed: expected a number of flips or a "
                              "fraction of the training set")
        if isinstance(r, float) and 0 < r < 1:
            return round(r * self.n_train)
        return int(validate_scalar("r", r, lo=0, integer=True))

    def certified_accuracy(self, r: float, y: Any) -> float:
        """Fraction of the points predicted correctly with radius >= ``r`` (see
        :meth:`flips`)."""
        yt = validate_labels(y, n_classes=self.votes.shape[1])
        if yt.shape[0] != self.prediction.shape[0]:
            raise DataError(f"y has {yt.shape[0]} labels: expected {self.prediction.shape[0]}"
                            " (one per certified point)")
        ok = (self.prediction == yt) & (self.radius >= self.flips(r))
        return float(ok.to(torch.float64).mean())

    def curve(self, y: Any, radii: Any = None) -> dict[int, float]:
        """Certified accuracy at each radius (default 0 .. the largest radius)."""
        rs = range(int(self.radius.max()) + 1) if radii is None else radii
        return {self.flips(r): self.certified_accuracy(r, y) for r in rs}

    def median_radius(self, y: Any) -> int:
        """The largest ``r`` at which at least half the points are certified correct
        (DPA's "median certified robustness"); -1 if under half are correct."""
        yt = validate_labels(y, n_classes=self.votes.shape[1])
        per_point = torch.where(self.prediction == yt, self.radius, -1)
        srt = per_point.sort(descending=True).values
        return int(srt[(len(srt) - 1) // 2])


def certify(model: nn.Module, x: Any, *,
            batch_size: int | None = DEFAULT_BATCH_SIZE) -> Certificate:
    """The certificate of each input under a partition-aggregation ensemble.

    Parameters
    ----------
    model : the module :func:`poisonlab.train` returns under defense ``dpa``
    x : Tensor (n, *input_shape)
    batch_size : int or None
        Inputs per forward pass (memory bounded by it; the numbers do not depend on it).

    Returns
    -------
    Certificate (CPU tensors).

    Raises
    ------
    ConfigError
        ``model`` is not a partition-aggregation ensemble.
    """
    if not isinstance(model, PartitionEnsemble):
        raise ConfigError(f"model {type(model).__name__} is not allowed: certify needs the "
                          "ensemble train returns under defense dpa (partition_aggregation)")
    xt = validate_x(x)
    bs = validate_batch_size("batch_size", batch_size)
    members = bucket_members(model.k * model.d, model.shifts.cpu()).to(model_device(model))
    preds, radii = [], []
    with torch.no_grad(), eval_mode(model):
        for s in iter_slices(xt.shape[0], bs):
            xb = match_dtype(model, xt[s]).to(model_device(model))
            bp = model.base_predictions(xb)
            radii.append(fa_radius(bp, model.n_classes, members).cpu()
                         if model.d > 1 else None)
            preds.append(bp.cpu())
    bp = torch.cat(preds)
    votes = torch.nn.functional.one_hot(bp, model.n_classes).sum(1)
    radius = torch.cat(radii) if model.d > 1 else dpa_radius(votes)
    wide = model.rule == "hash" and not model.features_fitted
    return Certificate(prediction=votes.argmax(1), votes=votes, radius=radius,
                       base_predictions=bp, k=model.k, d=model.d, n_train=model.n_train,
                       threat="label flips, insertions and deletions" if wide
                       else "label flips")


__all__ = ["Certificate", "certify", "dpa_radius", "fa_radius"]

"""Partition aggregation: certified robustness to label flips (DPA, SS-DPA, Finite
Aggregation).

Deep Partition Aggregation (Levine & Feizi, ICLR 2021, "Deep Partition Aggregation:
Provable Defenses against General Poisoning Attacks"): split the training set into ``k``
partitions by a rule that looks at the input alone (never its label), train one base
classifier per partition, predict by plurality vote with ties to the smaller class. A
flipped training label lies in one partition, so it changes at most one vote, and the
vote counts certify how many flips the prediction survives
(:func:`poisonlab.certify`). SS-DPA trains the base classifiers on features learned
without labels (:mod:`poisonlab.defenses.features`).

Finite Aggregation (Wang, Levine & Feizi, ICML 2022, "Improved Certified Defenses against
Data Poisoning with (Deterministic) Finite Aggregation"): the inputs are hashed into
``k * d`` buckets, and bucket ``h`` is used by the ``d`` base classifiers
``(h + s_j) mod (k d)`` for ``d`` fixed shifts ``s_j``; ``k d`` base classifiers, each on
about ``1/k`` of the data, vote. ``d = 1`` is DPA.

The partition rule:

- ``rule="hash"`` (default, the papers'): the bucket of an input is the SHA-256 of its
  float32 bytes modulo ``k d``. An input's bucket depends on that input alone, so the
  certificate also covers inserting and deleting training points (DPA's threat model),
  when no label-free feature map is fitted on the (then poisoned) inputs.
- ``rule="index"``: training point ``i`` goes to bucket ``i mod (k d)``; balanced, but the
  buckets move when points are inserted or deleted, so it certifies label flips only.

>>> import poisonlab as pl
>>> d = pl.get_defense("dpa", k=5, features=None, base="logistic")
>>> x = torch.rand(20, 4, generator=torch.Generator().manual_seed(0))
>>> tuple(d.partition(x).shape), bool((d.partition(x) < 5).all())
((20,), True)
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._torch import child_seeds, model_device
from .._validation import validate_choice, validate_scalar, validate_x
from ..batching import iter_slices
from ..errors import ConfigError, DataError
from ..models import build_model
from ..registry import split_named
from ._stacked import fit_stacked
from .base import Defense
from .features import FEATURES, fit_features

#: Partition rules (see the module docstring).
RULES: tuple[str, ...] = ("hash", "index")
#: The seed of Finite Aggregation's shifts: a constant, so the partition is a function of
#: the inputs and (k, d) alone.
_SHIFT_SEED = 2022


def input_hash(x: torch.Tensor) -> np.ndarray:
    """SHA-256 of each input's float32 bytes, as unsigned 64-bit integers: (n,)."""
    rows = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).contiguous().numpy()
    return np.array([int.from_bytes(hashlib.sha256(r.tobytes()).digest()[:8], "little")
                     for r in rows], dtype=np.uint64)


def fa_shifts(k: int, d: int) -> torch.Tensor:
    """Finite Aggregation's ``d`` distinct shifts in ``0 .. k d - 1`` (a fixed draw); for
    ``d = 1`` the shift 0 (DPA)."""
    if d == 1:
        return torch.zeros(1, dtype=torch.int64)
    rng = np.random.default_rng(_SHIFT_SEED)
    return torch.as_tensor(np.sort(rng.choice(k * d, size=d, replace=False)),
                           dtype=torch.int64)


def buckets(x: torch.Tensor, n_buckets: int, rule: str = "hash") -> torch.Tensor:
    """The bucket of each input, in ``0 .. n_buckets - 1``: (n,) int64 (see ``rule``)."""
    if rule == "index":
        return torch.arange(x.shape[0]) % n_buckets
    return torch.as_tensor((input_hash(x) % np.uint64(n_buckets)).astype(np.int64))


def bucket_members(n_buckets: int, shifts: torch.Tensor) -> torch.Tensor:
    """For each bucket ``h``, the base classifiers that train on it: (k d, d)."""
    return (torch.arange(n_buckets)[:, None] + shifts[None, :]) % n_buckets


class PartitionEnsemble(nn.Module):
    """The ensemble a partition-aggregation defense trains: a label-free feature map, then
    ``k d`` base classifiers that vote.

    ``forward(x)``: ``(n, *input_shape) -> (n, K)`` vote counts (floats), so every metric
    and attack runs on it; ``argmax`` is the plurality vote with ties to the smaller class.
    The gradient is that of the summed base softmaxes (a straight-through estimate: the
    vote counts themselves are piecewise constant), so gradient attacks see a useful
    direction instead of a zero gradient. :func:`poisonlab.certify` gives the certificate.
    """

    def __init__(self, features: nn.Module, bases: list[nn.Module], *, n_classes: int,
                 k: int, d: int, shifts: torch.Tensor, rule: str, n_train: int,
                 features_fitted: bool) -> None:
        super().__init__()
        self.features = features
        self.bases = nn.ModuleList(bases)
        self.n_classes, self.k, self.d, self.rule = n_classes, k, d, rule
        self.n_train, self.features_fitted = n_train, features_fitted
        self.register_buffer("shifts", shifts)

    def base_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every base classifier's logits: (k d, n, K)."""
        z = self.features(x)
        return torch.stack([b(z) for b in self.bases])

    def base_predictions(self, x: torch.Tensor) -> torch.Tensor:
        """Each base classifier's predicted class: (n, k d) int64."""
        return self.base_logits(x).argmax(-1).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base_logits(x)
        votes = torch.nn.functional.one_hot(logits.argmax(-1), self.n_classes).sum(0)
        soft = logits.softmax(-1).sum(0)
        return votes.to(soft.dtype) + (soft - soft.detach())


@dataclass(frozen=True)
class PartitionAggregation(Defense):
    """Deep Partition Aggregation / Finite Aggregation (see the module docstring).

    Parameters
    ----------
    k : int >= 2
        Partitions (DPA) or the inverse sensitivity (FA): each base classifier sees about
        ``1/k`` of the training set. More partitions: larger certified radii, each base
        classifier weaker.
    d : int >= 1
        Finite Aggregation's spread: ``k d`` base classifiers, each training point used by
        ``d`` of them. 1 is DPA.
    features : "pca" | "patch_kmeans" | "package.module:factory" | None
        The label-free feature map fitted on the unlabeled training inputs (SS-DPA);
        ``None`` trains the base classifiers on the raw inputs.
    n_components : int, optional
        Dimension of ``pca`` / centroids of ``patch_kmeans`` (defaults 30 and 64).
    patch : int
        Patch side of ``patch_kmeans``.
    base : str | {name: ..., **params} | None
        The base classifier: any model name (``logistic``, ``mlp``, ``module:factory``),
        with its parameters in a mapping (``{"name": "mlp", "hidden": [64]}``), built on
        the feature shape; ``None`` copies the model given to ``train`` (raw inputs only).
    rule : "hash" | "index"
        The partition rule.
    epochs, lr, weight_decay : optional
        The base classifiers' training (Adam, ``train``'s batch size): each sees about
        ``1/k`` of the data, so it takes more epochs than one model on all of it. ``None``
        takes ``train``'s value. The defaults (100, 0.01, 0.01) were tuned on mnist5k
        (docs/certified.md).

    >>> PartitionAggregation(k=50, d=4).label
    'partition_aggregation(k=50, d=4, features=pca, n_components=None, patch=6, \
base=logistic, rule=hash, epochs=100, lr=0.01, weight_decay=0.01)'
    """

    name: ClassVar[str] = "partition_aggregation"
    summary: ClassVar[str] = ("partition aggregation (DPA / SS-DPA / Finite Aggregation): "
                              "certified robustness to label flips")
    kind: ClassVar[str] = "aggregation"
    k: int = 50
    d: int = 1
    features: str | None = "pca"
    n_components: int | None = None
    patch: int = 6
    base: str | dict[str, Any] | None = "logistic"
    rule: str = "hash"
    epochs: int | None = 100
    lr: float | None = 0.01
    weight_decay: float | None = 0.01

    def __post_init__(self) -> None:
        validate_scalar("k", self.k, lo=2, integer=True)
        validate_scalar("d", self.d, lo=1, integer=True)
        validate_choice("rule", self.rule, RULES)
        validate_scalar("patch", self.patch, lo=2, integer=True)
        if self.n_components is not None:
            validate_scalar("n_components", self.n_components, lo=1, integer=True)
        for field, lo, integer in (("epochs", 1, True), ("lr", 0, False),
                                   ("weight_decay", 0, False)):
            v = getattr(self, field)
            if v is not None:
                validate_scalar(field, v, lo=lo, integer=integer,
                                lo_closed=field != "lr")
        if self.features is not None and (
                not isinstance(self.features, str)
                or (self.features not in FEATURES and ":" not in self.features)):
            raise ConfigError(f"features={self.features!r} is not allowed: expected one of "
                              f"{', '.join(FEATURES)}, null, or 'package.module:factory'")
        if self.base is not None and split_named(self.base) is None:
            raise ConfigError(f"base={self.base!r} is not allowed: expected a model name, "
                              "{name: ..., param: value} or null (copies of the model given "
                              "to train)")
        if self.base is None and self.features is not None:
            raise ConfigError(f"base=null is not allowed with features={self.features}: the "
                              "model given to train takes raw inputs (name a base model, "
                              "e.g. base=logistic)")

    @property
    def n_bases(self) -> int:
        """Base classifiers: ``k d``."""
        return self.k * self.d

    def partition(self, x: Any) -> torch.Tensor:
        """The base classifier(s) each training input goes to, from ``x`` alone.

        Returns (n,) int64 partition ids in ``0 .. k - 1`` for DPA (``d = 1``); (n, d) for
        Finite Aggregation: the ``d`` base classifiers (of ``k d``) that train on it.
        """
        xt = validate_x(x)
        b = buckets(xt, self.n_bases, self.rule)
        members = bucket_members(self.n_bases, fa_shifts(self.k, self.d))[b]
        return members[:, 0] if self.d == 1 else members

    def fit_ensemble(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     n_classes: int, seed: int, epochs: int, batch_size: int, lr: float,
                     weight_decay: float, progress: bool) -> nn.Module:
        """Train the ensemble on ``(x, y)`` (called by :func:`poisonlab.train`).

        ``model`` gives the device and dtype (and, with ``base=None``, the base
        architecture). Seeds: the feature map, and per base classifier its initialisation
        and its shuffle, are children of ``seed``.
        """
        device = model_device(model)
        groups = self._groups(x)
        seeds = child_seeds(seed, 1 + 2 * self.n_bases)
        with torch.no_grad():
            xd = x.to(device)
            enc = (fit_features(self.features, xd, n_components=self.n_components,
                                patch=self.patch, seed=seeds[0], batch_size=batch_size)
                   if self.features is not None else nn.Identity())
            # The training features, a batch at a time (patch features of a whole image
            # set at once would not fit in memory).
            z = (torch.cat([enc(xd[s]) for s in iter_slices(len(xd), batch_size)])
                 if self.features is not None else xd)
        if self.base is None:
            bases = [copy.deepcopy(model) for _ in range(self.n_bases)]
        else:
            name, params = split_named(self.base) or (str(self.base), {})  # checked above
            bases = [build_model(name, tuple(z.shape[1:]), n_classes, seed=seeds[1 + i],
                                 **params).to(device=device, dtype=z.dtype)
                     for i in range(self.n_bases)]
        fit_stacked(bases, z.detach(), y.to(device), [g.to(device) for g in groups],
                    seeds[1 + self.n_bases:],
                    epochs=epochs if self.epochs is None else self.epochs,
                    batch_size=batch_size, lr=lr if self.lr is None else self.lr,
                    weight_decay=weight_decay if self.weight_decay is None
                    else self.weight_decay, progress=progress)
        return PartitionEnsemble(
            enc, bases, n_classes=n_classes, k=self.k, d=self.d,
            shifts=fa_shifts(self.k, self.d).to(device), rule=self.rule,
            n_train=int(x.shape[0]), features_fitted=self.features is not None).eval()

    def _groups(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The training indices of each base classifier; refuses an empty one."""
        parts = self.partition(x).reshape(x.shape[0], -1)
        groups = [(parts == j).any(1).nonzero()[:, 0] for j in range(self.n_bases)]
        empty = [j for j, g in enumerate(groups) if len(g) == 0]
        if empty:
            raise DataError(
                f"k={self.k} (d={self.d}) is not allowed for {x.shape[0]} training points: "
                f"{len(empty)} of the {self.n_bases} partitions got no training point "
                f"(first: {empty[0]}); lower k")
        return groups

"""Label-side defenses: label transforms (DisturbLabel and static label noise) and losses.

Label transforms (``kind = "labels"``): :class:`FlipAugment`. Losses (``kind = "loss"``):
:class:`LabelSmoothing`, :class:`ConfidencePenalty` and three losses that are robust to
label noise, :class:`GCE`, :class:`SCE` and :class:`Bootstrap`.

The maths lives in small pure functions (``smoothed_targets``, ``soft_cross_entropy``,
``entropy``, ``disturb_labels``, ``generalized_cross_entropy``, ``reverse_cross_entropy``,
``bootstrap_targets``); the classes only hold validated parameters and call them. The
per-sample functions return a vector of shape (n,); the classes' ``loss`` takes its mean.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .._validation import validate_choice, validate_scalar
from ..errors import ConfigError
from .base import Defense, _label_value

#: FlipAugment.mode: which classes a redrawn label may take.
FLIP_MODES: tuple[str, ...] = ("any", "other")
#: FlipAugment.resample: when the flips are drawn.
RESAMPLE: tuple[str, ...] = ("batch", "epoch", "once")
#: Bootstrap.mode: what the model's prediction contributes to the target.
BOOTSTRAP_MODES: tuple[str, ...] = ("soft", "hard")
#: Bootstrap's default beta per mode: Reed et al. 2015's values (their MNIST experiments).
BOOTSTRAP_BETA: dict[str, float] = {"soft": 0.95, "hard": 0.8}


# --------------------------------------------------------------------------- pure functions


def smoothed_targets(y: torch.Tensor, n_classes: int, eps: float) -> torch.Tensor:
    """Label-smoothed targets ``(1 - eps) * onehot(y) + eps / K`` (Szegedy et al. 2016).

    Returns a float tensor of shape (n, K) whose rows sum to 1; the true class gets
    ``1 - eps + eps / K``.

    >>> smoothed_targets(torch.tensor([0]), 4, 0.2)
    tensor([[0.8500, 0.0500, 0.0500, 0.0500]])
    """
    onehot = F.one_hot(y, n_classes).to(torch.float32)
    return (1.0 - eps) * onehot + eps / n_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k * log softmax(logits)_k``."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row, shape (n,)."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def disturb_labels(
    y: torch.Tensor,
    n_classes: int,
    alpha: float,
    generator: torch.Generator,
    *,
    mode: str = "any",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Redraw each label with probability ``alpha`` (DisturbLabel, Xie et al. 2016).

    Parameters
    ----------
    y : Tensor (n,) of int64 class ids in ``0 .. K - 1``; never modified
    n_classes : int, K
    alpha : float in [0, 1]
        Probability that a label is redrawn.
    generator : torch.Generator (CPU)
        The only source of randomness: one ``rand(n)`` then one ``randint(n)`` draw, made
        on the CPU and moved to ``y``'s device, so the labels are the same on every device.
    mode : "any" | "other"
        ``"any"`` (DisturbLabel): a redrawn label is uniform over all K classes, so it
        keeps its class with probability 1/K and the expected fraction of labels that
        change is ``alpha * (K - 1) / K``. ``"other"``: a redrawn label is uniform over
        the K - 1 other classes, so exactly the redrawn labels change (expected fraction
        ``alpha``); needs K >= 2.

    Returns
    -------
    (y_new, redrawn) : Tensor (n,) int64, Tensor (n,) bool, both on ``y``'s device
        ``redrawn`` marks the labels that were redrawn (changed or not, for ``"any"``).

    Raises
    ------
    ConfigError
        Unknown ``mode``, or ``mode="other"`` with fewer than two classes.

    >>> y = torch.zeros(8, dtype=torch.int64)
    >>> y_new, redrawn = disturb_labels(y, 3, 0.5, torch.Generator().manual_seed(0),
    ...                                 mode="other")
    >>> bool(((y_new != y) == redrawn).all())
    True
    """
    validate_choice("mode", mode, FLIP_MODES)
    n = y.shape[0]
    redrawn = (torch.rand(n, generator=generator) < alpha).to(y.device)
    if mode == "any":
        fresh = torch.randint(0, n_classes, (n,), generator=generator).to(y.device)
    else:
        if n_classes < 2:
            raise ConfigError(
                f"mode='other' is not allowed with n_classes={n_classes}: expected at least "
                "2 classes (a label needs another class to move to)"
            )
        shift = torch.randint(1, n_classes, (n,), generator=generator).to(y.device)
        fresh = (y + shift) % n_classes
    return torch.where(redrawn, fresh, y), redrawn


def generalized_cross_entropy(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Generalized cross-entropy ``L_q = (1 - p_y^q) / q`` per sample (Zhang & Sabuncu 2018).

    Computed as ``-expm1(q * log p_y) / q`` from ``log_softmax``: no ``0 ** q``, and no
    cancellation in ``1 - p_y^q`` for small q. Bounded by ``1 / q``. Its gradient with
    respect to the logits is ``p_y^q * (p - onehot(y))``: cross-entropy's gradient weighted
    by ``p_y^q``, which down-weights the points the model finds implausible (the
    likely-mislabelled ones). ``q -> 0`` gives cross-entropy, ``q = 1`` gives ``1 - p_y``,
    half the mean absolute error ``|onehot(y) - p|_1``.

    Parameters
    ----------
    logits : Tensor (n, K); y : Tensor (n,) of class ids
    q : float in (0, 1]

    Returns
    -------
    Tensor (n,)

    >>> generalized_cross_entropy(torch.zeros(1, 4), torch.tensor([2]), q=1.0)
    tensor([0.7500])
    """
    logp_y = F.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    return -torch.expm1(q * logp_y) / q


def reverse_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, log_zero: float = -4.0
) -> torch.Tensor:
    """Reverse cross-entropy ``-sum_k p_k log q_k`` per sample (Wang et al. 2019).

    ``p = softmax(logits)`` is the model's distribution and ``q = onehot(y)`` the label's,
    with ``log 0`` taken as ``log_zero`` (the paper's A), so the sum is
    ``-A * sum_{k != y} p_k = -A * (1 - p_y)``, a bounded loss (at most ``-A``). The sum
    over the other classes is taken directly (no cancellation in ``1 - p_y``).

    Parameters
    ----------
    logits : Tensor (n, K); y : Tensor (n,) of class ids
    log_zero : float < 0
        A, the value of ``log 0`` (Wang et al. 2019: A = -4).

    Returns
    -------
    Tensor (n,)

    >>> reverse_cross_entropy(torch.zeros(1, 4), torch.tensor([0]))
    tensor([3.])
    """
    p = torch.softmax(logits, dim=1)
    others = 1.0 - F.one_hot(y, logits.shape[1]).to(p.dtype)
    return -log_zero * (p * others).sum(dim=1)


def bootstrap_targets(
    logits: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    beta: float,
    mode: str,
) -> torch.Tensor:
    """Bootstrapped targets ``beta * onehot(y) + (1 - beta) * z`` (Reed et al. 2015).

    ``z`` is the model's own prediction: ``softmax(logits)`` for ``"soft"``,
    ``onehot(argmax logits)`` for ``"hard"``. The soft targets keep the gradient through
    ``softmax(logits)``, as in the paper, where the soft objective equals cross-entropy plus
    minimum-entropy regularisation: ``beta * CE + (1 - beta) * H(p)``. Detached, the soft
    targets would give exactly ``beta`` times cross-entropy's gradient (no regularisation
    at all). The hard targets carry no gradient (argmax is piecewise constant).

    Parameters
    ----------
    logits : Tensor (n, K); y : Tensor (n,) of class ids; n_classes : int, K
    beta : float in [0, 1]
        Weight of the given label; ``beta = 1`` is plain cross-entropy.
    mode : "soft" | "hard"

    Returns
    -------
    Tensor (n, K), rows summing to 1

    >>> bootstrap_targets(torch.zeros(1, 2), torch.tensor([0]), 2, beta=0.8, mode="soft")
    tensor([[0.9000, 0.1000]])
    """
    validate_choice("mode", mode, BOOTSTRAP_MODES)
    onehot = F.one_hot(y, n_classes).to(logits.dtype)
    if mode == "soft":
        z = torch.softmax(logits, dim=1)
    else:
        z = F.one_hot(logits.detach().argmax(dim=1), n_classes).to(logits.dtype)
    return beta * onehot + (1.0 - beta) * z


# --------------------------------------------------------------------------- defenses


def _label_omitting_defaults(d: Defense, names: tuple[str, ...]) -> str:
    """``d.label`` without the parameters ``names`` where they have their default value.

    For parameters added after a defense's first release, so that its existing labels
    (``flip_augment(alpha=0.1)``) keep reading the same; :meth:`Defense.params` still
    records every parameter.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(d)}
    shown = {k: v for k, v in d.params().items() if k not in names or v != defaults[k]}
    p = ", ".join(f"{k}={_label_value(v)}" for k, v in shown.items())
    return f"{d.name}({p})" if p else d.name


@dataclass(frozen=True)
class NoDefense(Defense):
    """Plain cross-entropy training (the baseline every defense is compared with)."""

    name: ClassVar[str] = "none"
    summary: ClassVar[str] = "plain cross-entropy training (the baseline)"


@dataclass(frozen=True)
class FlipAugment(Defense):
    """Flip-augmented training: random label noise added on purpose, as a regulariser.

    DisturbLabel (Xie et al. 2016, "DisturbLabel: Regularizing CNN on the Loss Layer"):
    with the defaults, each batch, each label is redrawn uniformly over all K classes with
    probability ``alpha`` (see :func:`disturb_labels`). The inputs ``x`` are never changed.

    Parameters
    ----------
    alpha : float in [0, 1]
        Probability that a label is redrawn.
    mode : "any" | "other"
        ``"any"`` (default, DisturbLabel): uniform over all K classes, so about
        ``alpha * (K - 1) / K`` of the labels change. ``"other"``: a redrawn label always
        moves to one of the K - 1 other classes, so about ``alpha`` of them change.
    resample : "batch" | "epoch" | "once"
        When the labels are drawn. ``"batch"`` (default, DisturbLabel): fresh draws for
        every batch (``transform_labels``). ``"epoch"``: one draw for the whole training
        label vector at the start of every epoch (``epoch_labels``). ``"once"``: one draw
        before training (``prepare``), kept for all epochs: static label noise, the
        contrast to DisturbLabel's fresh noise.

    Raises
    ------
    ConfigError
        ``alpha`` outside [0, 1], unknown ``mode`` or ``resample``.

    >>> d = FlipAugment(alpha=0.5, mode="other")
    >>> y = torch.zeros(1000, dtype=torch.int64)
    >>> y_new = d.transform_labels(y, n_classes=10, generator=torch.Generator().manual_seed(0))
    >>> 400 < int((y_new != y).sum()) < 600
    True
    """

    name: ClassVar[str] = "flip_augment"
    summary: ClassVar[str] = "DisturbLabel: redraw labels uniformly with prob. alpha per batch"
    kind: ClassVar[str] = "labels"
    alpha: float = 0.1
    mode: str = "any"
    resample: str = "batch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", validate_scalar("alpha", self.alpha, lo=0, hi=1))
        validate_choice("mode", self.mode, FLIP_MODES)
        validate_choice("resample", self.resample, RESAMPLE)

    @property
    def label(self) -> str:
        """``flip_augment(alpha=0.1)``; ``mode`` and ``resample`` shown when not the default."""
        return _label_omitting_defaults(self, ("mode", "resample"))

    def _draw(self, y: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
        return disturb_labels(y, n_classes, self.alpha, generator, mode=self.mode)[0]

    def prepare(
        self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resample != "once":
            return x, y
        return x, self._draw(y, n_classes, generator)

    def epoch_labels(
        self, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> torch.Tensor:
        if self.resample != "epoch":
            return y
        return self._draw(y, n_classes, generator)

    def transform_labels(
        self, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> torch.Tensor:
        if self.resample != "batch":
            return y
        return self._draw(y, n_classes, generator)


@dataclass(frozen=True)
class LabelSmoothing(Defense):
    """Label smoothing (Szegedy et al. 2016): train on ``(1 - eps) * onehot + eps / K``.

    Parameters
    ----------
    eps : float in [0, 1]

    >>> LabelSmoothing(eps=0.1).loss(torch.zeros(1, 4), torch.tensor([0]), n_classes=4)
    tensor(1.3863)
    """

    name: ClassVar[str] = "label_smoothing"
    summary: ClassVar[str] = "train on (1 - eps) * onehot + eps / K targets"
    kind: ClassVar[str] = "loss"
    eps: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", validate_scalar("eps", self.eps, lo=0, hi=1))

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        return soft_cross_entropy(logits, smoothed_targets(y, n_classes, self.eps))


@dataclass(frozen=True)
class ConfidencePenalty(Defense):
    """Confidence penalty (Pereyra et al. 2017): penalise low-entropy output distributions.

    Pereyra et al. 2017, "Regularizing Neural Networks by Penalizing Confident Output
    Distributions". Without a threshold the loss is ``CE - beta * mean(H(p))``. With a
    threshold Gamma only entropies below Gamma are penalised (the paper's hinge):
    ``CE + beta * mean(max(0, Gamma - H(p)))``. Where ``H < Gamma`` both forms have the same
    gradient; the paper prints the hinged form with a minus sign before beta, which would
    reward low entropy, so the sign here is the one that agrees with the unhinged form.
    ``Gamma = 0`` never penalises (``H >= 0``), so it is plain cross-entropy;
    ``Gamma >= log K`` always penalises, so it is the unhinged loss plus ``beta * Gamma``.

    Parameters
    ----------
    beta : float >= 0
        Weight of the entropy term (Pereyra et al. used 0.1 .. 2.0 across tasks).
    threshold : float >= 0 or None
        Gamma, in nats; ``None`` (default) for no hinge.

    >>> logits, y = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
    >>> float(ConfidencePenalty(beta=1.0, threshold=0.0).loss(logits, y, n_classes=3)
    ...       == F.cross_entropy(logits, y))
    1.0
    """

    name: ClassVar[str] = "confidence_penalty"
    summary: ClassVar[str] = "minimise CE - beta * H(softmax) (Pereyra et al. 2017)"
    kind: ClassVar[str] = "loss"
    beta: float = 1.0
    threshold: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", validate_scalar("beta", self.beta, lo=0))
        if self.threshold is not None:
            object.__setattr__(
                self, "threshold", validate_scalar("threshold", self.threshold, lo=0)
            )

    @property
    def label(self) -> str:
        """``confidence_penalty(beta=1)``; ``threshold`` shown when set."""
        return _label_omitting_defaults(self, ("threshold",))

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        ce = F.cross_entropy(logits, y)
        if self.threshold is None:
            return ce - self.beta * entropy(logits).mean()
        return ce + self.beta * (self.threshold - entropy(logits)).clamp(min=0).mean()


@dataclass(frozen=True)
class GCE(Defense):
    """Generalized cross-entropy ``L_q = (1 - p_y^q) / q`` (Zhang & Sabuncu 2018).

    Zhang & Sabuncu 2018, "Generalized Cross Entropy Loss for Training Deep Neural Networks
    with Noisy Labels": a Box-Cox family between cross-entropy (``q -> 0``) and the mean
    absolute error (``q = 1``: ``1 - p_y``, half the MAE), robust to label noise as q grows.
    See :func:`generalized_cross_entropy`.

    Parameters
    ----------
    q : float in (0, 1]
        Default 0.7 (the paper's value). ``q = 0`` is refused: the limit is plain
        cross-entropy, which is the defense ``"none"``; any ``q > 0`` is computed stably.

    Raises
    ------
    ConfigError
        ``q`` outside (0, 1].

    >>> GCE(q=1.0).loss(torch.zeros(2, 4), torch.tensor([0, 1]), n_classes=4)
    tensor(0.7500)
    """

    name: ClassVar[str] = "gce"
    summary: ClassVar[str] = "generalized cross-entropy (1 - p_y^q) / q (Zhang & Sabuncu 2018)"
    kind: ClassVar[str] = "loss"
    q: float = 0.7

    def __post_init__(self) -> None:
        object.__setattr__(self, "q", validate_scalar("q", self.q, lo=0, hi=1, lo_closed=False))

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        return generalized_cross_entropy(logits, y, self.q).mean()


@dataclass(frozen=True)
class SCE(Defense):
    """Symmetric cross-entropy ``alpha * CE + beta * RCE`` (Wang et al. 2019).

    Wang et al. 2019, "Symmetric Cross Entropy for Robust Learning with Noisy Labels". RCE is
    the reverse cross-entropy ``-sum_k p_k log q_k`` with ``log 0 = A`` (``log_zero``), which
    equals ``-A * (1 - p_y)``: see :func:`reverse_cross_entropy`. The defaults are
    ``alpha = 0.1, beta = 1`` (the paper's CIFAR-10 setting; for MNIST it reports
    ``alpha = 0.01``) and A = -4 as in the paper. The authors' code clips the one-hot label at
    1e-4 instead, i.e. ``A = ln 1e-4 = -9.21``: pass ``log_zero=`` for that.

    Parameters
    ----------
    alpha : float >= 0
        Weight of cross-entropy (default 0.1).
    beta : float >= 0
        Weight of reverse cross-entropy (default 1.0). ``alpha`` and ``beta`` are not
        both 0.
    log_zero : float < 0
        A, the value taken for ``log 0`` (default -4).

    Raises
    ------
    ConfigError
        A parameter outside its range, or ``alpha = beta = 0``.

    >>> SCE(alpha=0.0, beta=1.0).loss(torch.zeros(1, 4), torch.tensor([0]), n_classes=4)
    tensor(3.)
    """

    name: ClassVar[str] = "sce"
    summary: ClassVar[str] = "symmetric cross-entropy alpha CE + beta RCE (Wang et al. 2019)"
    kind: ClassVar[str] = "loss"
    alpha: float = 0.1
    beta: float = 1.0
    log_zero: float = -4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", validate_scalar("alpha", self.alpha, lo=0))
        object.__setattr__(self, "beta", validate_scalar("beta", self.beta, lo=0))
        object.__setattr__(
            self, "log_zero", validate_scalar("log_zero", self.log_zero, hi=0, hi_closed=False)
        )
        if self.alpha == 0 and self.beta == 0:
            raise ConfigError(
                "alpha=0 and beta=0 is not allowed: expected alpha > 0 or beta > 0 (the loss "
                "would be 0)"
            )

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        rce = reverse_cross_entropy(logits, y, self.log_zero).mean()
        return self.alpha * F.cross_entropy(logits, y) + self.beta * rce


@dataclass(frozen=True)
class Bootstrap(Defense):
    """Bootstrapping: train on targets mixed with the model's own predictions.

    Reed et al. 2015, "Training Deep Neural Networks on Noisy Labels with Bootstrapping":
    cross-entropy against ``beta * onehot(y) + (1 - beta) * z`` with ``z = softmax(logits)``
    (``"soft"``, equivalent to ``beta * CE + (1 - beta) * H(p)``: minimum-entropy
    regularisation) or ``z = onehot(argmax logits)`` (``"hard"``: the model's predicted
    class gets weight ``1 - beta``; where it is the given label, plain cross-entropy). See
    :func:`bootstrap_targets`.

    Parameters
    ----------
    beta : float in [0, 1] or None
        Weight of the given label; ``None`` (default) means the paper's value for the
        mode, 0.95 for ``"soft"`` and 0.8 for ``"hard"``. :meth:`params` records the value
        in effect.
    mode : "soft" | "hard"
        Default ``"soft"``.

    Raises
    ------
    ConfigError
        ``beta`` outside [0, 1] or unknown ``mode``.

    >>> Bootstrap(mode="hard").params()
    {'beta': 0.8, 'mode': 'hard'}
    """

    name: ClassVar[str] = "bootstrap"
    summary: ClassVar[str] = "targets mixed with the model's own predictions (Reed et al. 2015)"
    kind: ClassVar[str] = "loss"
    beta: float | None = None
    mode: str = "soft"

    def __post_init__(self) -> None:
        validate_choice("mode", self.mode, BOOTSTRAP_MODES)
        if self.beta is not None:
            object.__setattr__(self, "beta", validate_scalar("beta", self.beta, lo=0, hi=1))

    @property
    def effective_beta(self) -> float:
        """``beta``, or the paper's value for the mode when ``beta`` is None."""
        return BOOTSTRAP_BETA[self.mode] if self.beta is None else float(self.beta)

    def params(self) -> dict[str, Any]:
        return {"beta": self.effective_beta, "mode": self.mode}

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        targets = bootstrap_targets(logits, y, n_classes, self.effective_beta, self.mode)
        return soft_cross_entropy(logits, targets)


__all__ = [
    "BOOTSTRAP_BETA",
    "GCE",
    "SCE",
    "Bootstrap",
    "ConfidencePenalty",
    "FlipAugment",
    "LabelSmoothing",
    "NoDefense",
    "bootstrap_targets",
    "disturb_labels",
    "entropy",
    "generalized_cross_entropy",
    "reverse_cross_entropy",
    "smoothed_targets",
    "soft_cross_entropy",
]

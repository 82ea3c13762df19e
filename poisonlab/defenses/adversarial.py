"""Adversarial training: FGSM training, PGD training (Madry et al.) and TRADES.

Each defense replaces the batch ``objective`` of :func:`poisonlab.train`. It first crafts
adversarial examples for the batch with one of our evasion attacks (the pure
:func:`~poisonlab.attacks.evasion.fgsm` and :func:`~poisonlab.attacks.evasion.pgd`, or
:func:`trades_examples`), then returns the training loss on them. Crafting runs

- with the model in eval mode (:func:`~poisonlab.models.eval_mode`, which restores each
  module's mode afterwards), so Dropout is off and BatchNorm statistics are not updated by
  the attack's forward passes;
- with gradients taken w.r.t. the input only (``torch.autograd.grad``), so no parameter
  gradient is accumulated;
- inside the budget: the examples lie in the eps-ball around the batch and in the input
  ``bounds`` that :func:`~poisonlab.train` passes (the ball is an
  :class:`~poisonlab.threat.EvasionThreat` built from ``eps``, ``norm`` and those bounds);
- drawing randomness (PGD's random start, TRADES' initial noise) only from the training
  loop's ``generator`` (a CPU ``torch.Generator``; draws are moved to the data's device).

The loss is then computed with the model back in train mode. The parts of each objective
that the papers call "the training loss" use ``loss_fn``, the composed loss (label
smoothing etc. when composed with a loss defense); the inner attacks maximise plain
cross-entropy (TRADES: the KL divergence), whatever ``loss_fn`` is.

A term whose weight is 0 is not computed: FGSM training with ``alpha=1`` and TRADES with
``beta=0`` run no attack and draw nothing from the generator, so they train exactly like
plain training (the same weights from the same seed).

>>> from poisonlab import load_dataset, build_model, train, get_defense
>>> ds = load_dataset("digits", seed=0)
>>> m = build_model("mlp", ds.input_shape, ds.n_classes, seed=0)
>>> m = train(m, ds.x_train, ds.y_train, defense=get_defense("pgd_at", eps=0.1, steps=2),
...           epochs=1, seed=0, bounds=ds.bounds)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._torch import eval_mode, model_device
from .._validation import coerce_enum, validate_scalar
from ..attacks.evasion import fgsm, pgd
from ..attacks.geometry import NORMS, SampleRNG, project
from ..threat import EvasionThreat, Norm
from .base import Defense, LossFn

#: Standard deviation of TRADES' initial perturbation (Zhang et al.'s reference code).
TRADES_INIT_STD = 0.001


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(softmax(logits_p) || softmax(logits_q))`` in nats, shape (n,).

    Gradients flow into both arguments.

    >>> float(kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3))[0])
    0.0
    """
    logp = F.log_softmax(logits_p, dim=1)
    logq = F.log_softmax(logits_q, dim=1)
    return (logp.exp() * (logp - logq)).sum(dim=1)


def _batch_rng(generator: torch.Generator, n: int) -> SampleRNG:
    """Per-sample streams for one training batch, seeded by one draw from ``generator``."""
    return SampleRNG(int(torch.randint(0, 2**62, (1,), generator=generator)), torch.arange(n))


def trades_examples(
    model: nn.Module,
    x: torch.Tensor,
    *,
    threat: EvasionThreat,
    steps: int,
    stepsize: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """TRADES' inner maximisation: ``x' = argmax_{x' in ball(x)} KL(f(x) || f(x'))``.

    Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and
    Accuracy". Projected gradient ascent on the KL divergence between the model's output
    distributions at ``x`` and ``x'``, starting from ``x + 0.001 * N(0, I)`` (the paper's
    initialisation: at ``x' = x`` the KL and its gradient are 0). Each of ``steps`` steps
    moves ``stepsize`` along the threat norm's normalised gradient (the sign in linf) and
    projects onto the eps-ball and the bounds; the start is projected likewise. No labels
    are used.

    Runs the model as it is (the caller puts it in eval mode) and takes gradients w.r.t.
    the input only. Cost: 1 forward pass for ``f(x)`` plus ``steps`` forward and backward
    passes.

    Parameters
    ----------
    model : nn.Module returning logits (n, K)
    x : Tensor (n, *input_shape)
    threat : EvasionThreat
        The ball (norm, eps) and the bounds.
    steps : int >= 0; stepsize : float > 0, in input units
    generator : torch.Generator
        A CPU generator; the initial noise is drawn from it and moved to ``x.device``.

    Returns
    -------
    Tensor of the shape of ``x``, detached, inside the eps-ball around ``x`` and the bounds.
    """
    ops = NORMS[Norm(threat.norm)]
    with torch.no_grad():
        logits_clean = model(x)
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    x_adv = project(x, x + TRADES_INIT_STD * noise, threat)
    for _ in range(steps):
        xa = x_adv.detach().requires_grad_(True)
        kl = kl_divergence(logits_clean, model(xa)).sum()
        (grad,) = torch.autograd.grad(kl, xa)
        with torch.no_grad():
            x_adv = project(x, xa + stepsize * ops.normalize(grad), threat)
    return x_adv.detach()


@dataclass(frozen=True)
class AdversarialTraining(Defense):
    """Shared parameters and the threat of the adversarial-training defenses.

    Parameters
    ----------
    eps : float > 0
        Radius of the training ball, in input units (the units of the ``bounds``).
    norm : "linf" | "l2"
        Stored as its string.
    """

    kind: ClassVar[str] = "training"
    eps: float = 0.1
    norm: str = "linf"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", validate_scalar("eps", self.eps, lo=0, lo_closed=False))
        object.__setattr__(self, "norm", coerce_enum("norm", self.norm, Norm).value)

    def threat(self, bounds: tuple[float, float]) -> EvasionThreat:
        """The training budget as an untargeted white-box threat inside ``bounds``."""
        return EvasionThreat(norm=self.norm, eps=self.eps, bounds=bounds)

    def craft(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        """The adversarial examples this defense trains on, for the batch ``(x, y)``.

        Crafted with the model in eval mode (each module's mode is restored after) and
        without touching parameter gradients. Returns a detached tensor of the shape of
        ``x`` inside the eps-ball around ``x`` and inside ``bounds``, on the model's device
        (``x`` and ``y`` are moved there; in training they already are).
        """
        device = model_device(model)
        x, y = x.to(device), y.to(device)
        with eval_mode(model):
            return self._craft(model, x, y, threat=self.threat(bounds), generator=generator)

    def _craft(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        threat: EvasionThreat,
        generator: torch.Generator,
    ) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class FGSMTraining(AdversarialTraining):
    """FGSM adversarial training (Goodfellow et al. 2015).

    Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples",
    section 5. Per batch, minimises

    ``alpha * L(f(x), y) + (1 - alpha) * L(f(x_fgsm), y)``, with
    ``x_fgsm = clip(x + eps * sign(grad_x CE(f(x), y)))`` in linf (FGM in l2:
    ``x + eps * g / ||g||_2``),

    where ``L`` is the training loss (``loss_fn``) and ``clip`` keeps the bounds. The
    paper used ``alpha = 0.5``. ``x_fgsm`` is crafted by :func:`~poisonlab.attacks.evasion.fgsm`
    with the model in eval mode and treated as a constant (no gradient through it).

    Cost per batch: 1 forward and 1 backward pass (to the input) to craft, then 2 forward
    passes (clean and adversarial) and 1 backward pass for the update; with ``alpha=1``
    plain training's 1 forward + 1 backward (no attack), with ``alpha=0`` 1 + 1 to craft
    and 1 + 1 to update. No randomness.

    Parameters
    ----------
    eps : float > 0
        Radius of the ball in input units (default 0.1: linf on [0, 1] data).
    norm : "linf" | "l2"
    alpha : float in [0, 1]
        Weight of the clean loss (default 0.5, the paper's). 1 is plain training exactly.

    Raises
    ------
    ConfigError
        A parameter out of range.

    >>> FGSMTraining(eps=0.1).label
    'fgsm_at(eps=0.1, norm=linf, alpha=0.5)'
    """

    name: ClassVar[str] = "fgsm_at"
    summary: ClassVar[str] = (
        "alpha * loss(x) + (1 - alpha) * loss(FGSM(x)) (Goodfellow et al. 2015)"
    )
    alpha: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "alpha", validate_scalar("alpha", self.alpha, lo=0, hi=1))

    def _craft(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        threat: EvasionThreat,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return fgsm(model, x, y, threat=threat, loss="ce").detach()

    def objective(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        n_classes: int,
        generator: torch.Generator,
        loss_fn: LossFn,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        if self.alpha == 1.0:
            return loss_fn(model(x), y)
        x_adv = self.craft(model, x, y, generator=generator, bounds=bounds)
        adv = loss_fn(model(x_adv), y)
        if self.alpha == 0.0:
            return adv
        return self.alpha * loss_fn(model(x), y) + (1.0 - self.alpha) * adv


def _check_inner_steps(d: PGDTraining | TRADES) -> None:
    """Validate (and normalise) the inner attack's ``steps`` and ``rel_stepsize`` in place."""
    object.__setattr__(d, "steps", validate_scalar("steps", d.steps, lo=1, integer=True))
    object.__setattr__(d, "rel_stepsize",
                       validate_scalar("rel_stepsize", d.rel_stepsize, lo=0, lo_closed=False))


@dataclass(frozen=True)
class PGDTraining(AdversarialTraining):
    """PGD adversarial training (Madry et al. 2018).

    Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant
    to Adversarial Attacks". Approximates the saddle-point problem
    ``min_theta E max_{x' in ball(x)} L(f(x'), y)`` by minimising, per batch,

    ``L(f(x_pgd), y)``, with ``x_pgd`` = PGD on the cross-entropy from a uniform random point
    of the ball, ``steps`` steps of size ``rel_stepsize * eps``, projected onto the ball and
    the bounds after each,

    where ``L`` is the training loss (``loss_fn``). ``x_pgd`` is crafted by
    :func:`~poisonlab.attacks.evasion.pgd` (one restart, random start) with the model in eval
    mode; the clean loss is not part of the objective.

    Defaults: ``steps=10, rel_stepsize=0.25`` give a total path of ``2.5 * eps``, i.e. the
    step size ``2.5 * eps / steps`` of the Madry lab's robustness library (Engstrom et al.
    2019), enough to cross the ball from a random start and then move along its boundary.
    The paper's CIFAR-10 setting (7 steps of 2/255 at eps 8/255) is ``rel_stepsize=0.25``
    with ``steps=7`` (1.75 eps), its MNIST one (40 steps of 0.01 at eps 0.3) ``steps=40,
    rel_stepsize=1/30`` (1.33 eps). Ten steps keep training about 12x plain training's cost.

    Cost per batch: ``steps`` forward and backward passes (to the input) to craft (one
    restart: :func:`~poisonlab.attacks.evasion.pgd` has nothing to score), then 1 forward
    and 1 backward pass for the update. Randomness: one uniform draw
    per input coordinate (linf; l2 also one per sample) from the generator per batch.

    Parameters
    ----------
    eps : float > 0
        Radius of the ball in input units (default 0.1: linf on [0, 1] data).
    norm : "linf" | "l2"
    steps : int >= 1
        PGD iterations (default 10).
    rel_stepsize : float > 0
        Step size as a fraction of eps (default 0.25).

    Raises
    ------
    ConfigError
        A parameter out of range.

    >>> PGDTraining(eps=0.1).label
    'pgd_at(eps=0.1, norm=linf, steps=10, rel_stepsize=0.25)'
    """

    name: ClassVar[str] = "pgd_at"
    summary: ClassVar[str] = "minimise the loss on PGD examples (Madry et al. 2018)"
    steps: int = 10
    rel_stepsize: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_inner_steps(self)

    def _craft(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        threat: EvasionThreat,
        generator: torch.Generator,
    ) -> torch.Tensor:
        x_adv, _ = pgd(model, x, y, threat=threat, steps=self.steps,
                       stepsize=self.rel_stepsize * self.eps, restarts=1, loss="ce",
                       random_start=True, rng=_batch_rng(generator, x.shape[0]))
        return x_adv.detach()

    def objective(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        n_classes: int,
        generator: torch.Generator,
        loss_fn: LossFn,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        x_adv = self.craft(model, x, y, generator=generator, bounds=bounds)
        return loss_fn(model(x_adv), y)


@dataclass(frozen=True)
class TRADES(AdversarialTraining):
    """TRADES (Zhang et al. 2019): clean training loss plus beta times a robustness KL.

    Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019, "Theoretically Principled Trade-off
    between Robustness and Accuracy". Per batch, minimises

    ``L(f(x), y) + beta * mean_i KL(softmax f(x_i) || softmax f(x'_i))``, with
    ``x' = argmax_{x' in ball(x)} KL(softmax f(x) || softmax f(x'))``

    found by :func:`trades_examples` (PGD on the KL from ``x + 0.001 * N(0, I)``, with the
    model in eval mode), where ``L`` is the training loss (``loss_fn``; the paper's
    cross-entropy). As in the paper's reference code, the KL term's gradient flows through
    both ``f(x)`` and ``f(x')``; ``x'`` itself is a constant. In l2 the inner steps are
    normalised-gradient steps projected onto the ball, as in our PGD.

    Defaults: ``beta=6.0`` is the paper's CIFAR-10 value (``1.0``, its MNIST value and the
    reference code's default, is also common; larger favours robustness over clean
    accuracy). ``steps=10, rel_stepsize=0.25`` are close to the paper's CIFAR-10 setting
    (10 steps of 0.007 at eps 0.031, ``rel_stepsize`` 0.23); its MNIST one is 40 steps of
    0.01 at eps 0.3.

    Cost per batch: 1 forward pass for ``f(x)`` and ``steps`` forward and backward passes
    (to the input) to craft, then 2 forward passes (clean and adversarial) and 1 backward
    pass for the update. With ``beta=0`` plain training's 1 forward + 1 backward (no
    attack, no draws). Randomness: one Gaussian draw per input coordinate per batch.

    Parameters
    ----------
    eps : float > 0
        Radius of the ball in input units (default 0.1: linf on [0, 1] data).
    norm : "linf" | "l2"
    beta : float >= 0
        Weight of the KL term (default 6.0). 0 is plain training exactly.
    steps : int >= 1
        Inner iterations (default 10).
    rel_stepsize : float > 0
        Inner step size as a fraction of eps (default 0.25).

    Raises
    ------
    ConfigError
        A parameter out of range.

    >>> TRADES(eps=0.1).label
    'trades(eps=0.1, norm=linf, beta=6, steps=10, rel_stepsize=0.25)'
    """

    name: ClassVar[str] = "trades"
    summary: ClassVar[str] = "CE(f(x), y) + beta * KL(f(x) || f(x')) (Zhang et al. 2019)"
    beta: float = 6.0
    steps: int = 10
    rel_stepsize: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "beta", validate_scalar("beta", self.beta, lo=0))
        _check_inner_steps(self)

    def _craft(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        threat: EvasionThreat,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return trades_examples(model, x, threat=threat, steps=self.steps,
                               stepsize=self.rel_stepsize * self.eps, generator=generator)

    def objective(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        n_classes: int,
        generator: torch.Generator,
        loss_fn: LossFn,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        if self.beta == 0.0:
            return loss_fn(model(x), y)
        x_adv = self.craft(model, x, y, generator=generator, bounds=bounds)
        logits = model(x)
        robust = kl_divergence(logits, model(x_adv)).mean()
        return loss_fn(logits, y) + self.beta * robust


__all__ = [
    "TRADES",
    "AdversarialTraining",
    "FGSMTraining",
    "PGDTraining",
    "kl_divergence",
    "trades_examples",
]

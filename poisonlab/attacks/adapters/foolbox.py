"""foolbox evasion attacks inside poisonlab's attack template.

Rauber, Zimmermann, Bethge, Brendel 2020, "Foolbox Native: Fast adversarial attacks to
benchmark the robustness of machine learning models in PyTorch, TensorFlow, and JAX" (JOSS).

``FoolboxAttack(name, settings)`` runs any foolbox attack with a distance (fixed-epsilon and
minimization attacks); the registry builds it from ``"foolbox:<Class>"``. foolbox works on
torch tensors directly, so the data never leaves the model's device.

Mapping from the threat: ``eps`` -> ``epsilons``; ``bounds`` -> ``PyTorchModel(bounds=)``;
``targeted`` -> ``TargetedMisclassification(target)`` (else ``Misclassification(y)``);
``norm`` must match the class's distance (``LinfPGD`` for linf, ``L2PGD`` for l2), and a
class that takes a ``distance`` gets the threat's.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import foolbox
import foolbox.attacks as fa
import torch
from foolbox.attacks.base import AttackWithDistance
from foolbox.attacks.gradient_descent_base import BaseGradientDescent
from foolbox.criteria import Misclassification, TargetedMisclassification
from foolbox.distances import LpDistance, l2, linf
from torch import nn

from ..._torch import model_device
from ...errors import AttackError, ConfigError, PoisonlabError, first_line
from ...threat import EvasionThreat, Knowledge, Norm
from . import LibraryAttack, library_boundary

_DISTANCE: dict[Norm, LpDistance] = {Norm.LINF: linf, Norm.L2: l2}
_NORM_NAME: dict[float, str] = {float("inf"): "linf", 2.0: "l2", 1.0: "l1", 0.0: "l0"}
_PREFIXES: tuple[tuple[str, str], ...] = (("Linf", "L2"), ("LInf", "L2"), ("Linfinity", "L2"))


@functools.cache
def foolbox_attack_names() -> tuple[str, ...]:
    """foolbox's attack classes (and aliases such as ``LinfPGD``) that have a distance."""
    names = []
    for name in dir(fa):
        obj = getattr(fa, name)
        if (inspect.isclass(obj) and issubclass(obj, AttackWithDistance)
                and not inspect.isabstract(obj) and obj.__module__.startswith("foolbox.attacks")
                and name != "Repeated"):
            names.append(name)
    return tuple(sorted(names))


def _foolbox_class(name: str) -> type:
    cls: type = getattr(fa, name)
    return cls


def build_foolbox_attack(
    name: str, settings: Mapping[str, Any], norm: Norm = Norm.LINF
) -> AttackWithDistance:
    """Construct the foolbox class ``name`` (a class with a ``distance`` gets ``norm``'s)."""
    cls = _foolbox_class(name)
    kwargs = dict(settings)
    if "distance" in inspect.signature(cls).parameters:
        kwargs["distance"] = _DISTANCE[norm]
    try:
        instance: AttackWithDistance = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"foolbox:{name} refused its settings: {e}") from None
    except ImportError as e:  # e.g. the Brendel-Bethge attacks need numba
        raise ConfigError(f"foolbox:{name} needs a package that is not installed: {e}") from None
    return instance


#: foolbox's PGD classes get poisonlab's PGD step size (0.1 * eps; foolbox's default is
#: 0.01 / 0.3 = 0.033 * eps for linf, 0.025 for l2): with the same ``steps`` (40 by default
#: in both) ``foolbox:LinfPGD`` and ``pgd`` are then the same attack.
PGD_DEFAULTS: Mapping[str, Any] = {"rel_stepsize": 0.1}
_PGD_CLASSES: frozenset[str] = frozenset({
    "L1PGD", "L2PGD", "LinfPGD", "PGD", "L1ProjectedGradientDescentAttack",
    "L2ProjectedGradientDescentAttack", "LinfProjectedGradientDescentAttack",
})


def foolbox_defaults(name: str) -> Mapping[str, Any]:
    """Our defaults that replace foolbox's for the class ``name`` (``{}`` for most)."""
    return PGD_DEFAULTS if name in _PGD_CLASSES else {}


#: Classes that take a TargetedMisclassification without error but ignore the target
#: (DeepFool always moves towards the nearest other class).
_UNTARGETED_ONLY: frozenset[str] = frozenset({"L2DeepFoolAttack", "LinfDeepFoolAttack"})


#: Name parts of foolbox's classes that query only the model's outputs (decision-based
#: and noise attacks): reported as black-box knowledge.
_GRADIENT_FREE_PARTS: tuple[str, ...] = (
    "Noise", "ContrastReduction", "Blur", "Binarization", "DatasetAttack", "Inversion",
    "Pointwise", "SaltAndPepper", "GenAttack", "BoundaryAttack", "HopSkipJump",
)


def _untargeted_only(name: str, threat: EvasionThreat) -> ConfigError:
    return ConfigError(
        f"threat={threat.id!r} is not allowed for foolbox:{name}: the class has no targeted "
        "mode (expected an untargeted threat)"
    )


def _counterpart(name: str) -> str | None:
    for a, b in _PREFIXES:
        for old, new in ((a, b), (b, a)):
            if name.startswith(old):
                other = new + name[len(old):]
                if other in foolbox_attack_names():
                    return other
    return None


def validate_foolbox_threat(name: str, instance: AttackWithDistance, threat: EvasionThreat) -> None:
    """Refuse a class whose norm (its ``distance``) is not the threat's."""
    try:
        distance = instance.distance
    except AttributeError as e:  # foolbox 3.3's PointwiseAttack never sets its distance
        raise ConfigError(
            f"foolbox:{name} cannot run under {threat.id}: the class has no distance to "
            f"match the threat's norm (foolbox: {first_line(e)})") from None
    p = float(distance.p) if isinstance(distance, LpDistance) else None
    norm = Norm(threat.norm)
    wanted = float(_DISTANCE[norm].p)
    if p != wanted:
        other = _counterpart(name)
        hint = f" (did you mean 'foolbox:{other}'?)" if other else ""
        got = _NORM_NAME.get(p, str(distance)) if p is not None else str(distance)
        raise ConfigError(
            f"threat={threat.id!r} is not allowed for foolbox:{name}: the class attacks in "
            f"the {got} norm, the threat in {norm.value}{hint}"
        )


def foolbox_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: EvasionThreat,
    attack: str,
    settings: Mapping[str, Any],
    seed: int,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Run the foolbox attack class ``attack`` on ``model`` under ``threat``.

    Parameters
    ----------
    model : nn.Module returning logits, already in eval mode
    x : Tensor (n, *input_shape) on the model's device, inside the threat's bounds
    y : int64 Tensor (n,)
    threat : EvasionThreat
        Supplies ``epsilons``, ``bounds``, the criterion and (for classes that take one)
        the distance; its norm must match the class's.
    attack : str
        A name in ``foolbox.attacks`` (see :func:`foolbox_attack_names`).
    settings : mapping
        The class's constructor parameters (already checked).
    seed : int
        Seeds the global torch / numpy / Python generators for the call (restored after).
    target : int64 Tensor (n,), optional
        Target classes of a targeted threat.

    Returns
    -------
    (x_adv, gradients) : Tensor like ``x`` (foolbox's clipped output), int
        ``steps * n`` for gradient-descent classes (FGSM: ``n``), else 0 (unknown).

    Raises
    ------
    ConfigError
        Norm mismatch, a targeted threat for an untargeted class, or settings foolbox
        refuses.
    """
    instance = build_foolbox_attack(attack, settings, Norm(threat.norm))
    validate_foolbox_threat(attack, instance, threat)
    if threat.targeted and attack in _UNTARGETED_ONLY:
        raise _untargeted_only(attack, threat)
    if threat.eps == 0:  # the ball is the point x
        return x.clone(), 0
    device = model_device(model)
    with library_boundary(model, seed, device):
        fmodel = foolbox.PyTorchModel(model, bounds=threat.bounds, device=device)
        criterion = Misclassification(y) if target is None else TargetedMisclassification(target)
        try:
            _, clipped, _ = instance(fmodel, x, criterion, epsilons=threat.eps)
        except ValueError as e:
            if target is not None and "criterion" in str(e):
                raise _untargeted_only(attack, threat) from e
            raise ConfigError(
                f"foolbox:{attack} failed under {threat.id}: {first_line(e)}") from e
        except ImportError as e:
            raise ConfigError(
                f"foolbox:{attack} needs a package that is not installed: {e}") from None
        except PoisonlabError:
            raise
        except Exception as e:
            raise AttackError(f"foolbox:{attack} failed under {threat.id}: "
                              f"{type(e).__name__}: {first_line(e)}") from e
    steps = getattr(instance, "steps", 0) if isinstance(instance, BaseGradientDescent) else 0
    return clipped.detach(), int(steps) * int(x.shape[0])


@dataclass(frozen=True)
class FoolboxAttack(LibraryAttack):
    """Any foolbox attack with a distance, by class name, as a poisonlab attack.

    Rauber et al. 2017/2020 (foolbox, foolbox Native). The threat supplies epsilons, bounds,
    targeting and the distance; the class's own norm must match the threat's
    (``foolbox:L2PGD`` under an linf threat is a ConfigError). foolbox's defaults are kept,
    except that its PGD classes take poisonlab's PGD step size (``rel_stepsize=0.1``, see
    :data:`PGD_DEFAULTS`); ``steps``, ``rel_stepsize``, ``abs_stepsize`` and
    ``random_start`` are the same names in both. A failure inside foolbox is an
    :class:`~poisonlab.errors.AttackError` of one line.
    ``AttackResult.params`` records the effective constructor parameters and foolbox's
    version.

    Parameters
    ----------
    attack : str
        A name in ``foolbox.attacks``, e.g. ``"LinfPGD"``, ``"L2PGD"``, ``"FGSM"``,
        ``"L2CarliniWagnerAttack"``, ``"LinfDeepFoolAttack"``.
    settings : mapping
        Its constructor parameters, e.g. ``{"steps": 40, "rel_stepsize": 0.1}``. Unknown ones
        raise ConfigError, as do eps, epsilons, bounds, norm, distance and targeted.

    Randomness: foolbox draws from the global torch generator; the call seeds it (and the
    numpy and Python ones) from ``seed`` and restores it afterwards (see
    :func:`~poisonlab.attacks.adapters.seeded_global_rngs`).

    >>> from poisonlab.attacks.adapters.foolbox import FoolboxAttack
    >>> pgd = FoolboxAttack("LinfPGD", {"steps": 40, "rel_stepsize": 0.1})
    >>> pgd.name, pgd.params()["random_start"]
    ('foolbox:LinfPGD', True)
    >>> res = pgd(model, x, y, threat=EvasionThreat(eps=0.1), seed=0)  # doctest: +SKIP
    """

    library: ClassVar[str] = "foolbox"

    def __post_init__(self) -> None:
        super().__post_init__()
        build_foolbox_attack(self.attack, self.passed())  # foolbox needs no model to build

    def defaults(self) -> Mapping[str, Any]:
        return foolbox_defaults(self.attack)

    def passed(self) -> dict[str, Any]:
        """What the foolbox class is built with: the settings over our defaults."""
        ours = {k: v for k, v in self.defaults().items()
                if not (k == "rel_stepsize" and "abs_stepsize" in self.settings)}
        return {**ours, **self.settings}

    @classmethod
    def available(cls) -> list[str]:
        return list(foolbox_attack_names())

    @classmethod
    def library_class(cls, name: str) -> type:
        return _foolbox_class(name)

    @classmethod
    def library_version(cls) -> str:
        return str(foolbox.__version__)

    @property  # type: ignore[misc]
    def knowledge(self) -> Knowledge:  # type: ignore[override]
        """Black-box for foolbox's decision- and noise-based classes, else white-box."""
        gradient_free = any(part in self.attack for part in _GRADIENT_FREE_PARTS)
        return Knowledge.BLACK_BOX if gradient_free else Knowledge.WHITE_BOX

    def validate_threat(self, threat: EvasionThreat) -> None:
        instance = build_foolbox_attack(self.attack, self.passed(), Norm(threat.norm))
        validate_foolbox_threat(self.attack, instance, threat)
        if threat.targeted and self.attack in _UNTARGETED_ONLY:
            raise _untargeted_only(self.attack, threat)

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        return foolbox_attack(model, x, y, threat=threat, attack=self.attack,
                              settings=self.passed(), seed=rng.batch_seed(stream=0),
                              target=target)

"""Attacks: evasion (test-time perturbations) and label-flip poisoning.

``attacks`` is the registry of evasion attacks by name (``"fgsm"``, ``"pgd"``);
``get_attack(name, **params)`` builds one with validated settings. Prefixed names run a
library's attack through an adapter that is imported only then, e.g.
``get_attack("foolbox:LinfPGD", steps=40)`` or ``"art:ProjectedGradientDescent"``.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .apgd import APGD, APGDT, apgd
from .autoattack import AutoAttack
from .base import Attack, AttackResult
from .evasion import FGSM, PGD, Noise, fgsm, pgd, random_noise, security_curve
from .geometry import NORMS, project
from .label_flip import FlipResult, LabelFlip, flip_labels

attacks: Registry[type[Attack]] = Registry("attack")
attacks.add("fgsm", FGSM, help="one signed-gradient step of size eps (Goodfellow et al. 2015)")
attacks.add("pgd", PGD, help="projected gradient descent with restarts (Madry et al. 2018)")
attacks.add("apgd", APGD, help="auto-PGD: step-size halving at checkpoints, momentum 0.75, "
            "losses ce and dlr (Croce & Hein 2020)")
attacks.add("apgd-t", APGDT, help="targeted APGD with the DLR loss toward the top-ranked "
            "other classes, untargeted success (Croce & Hein 2020)")
attacks.add("autoattack", AutoAttack, help="APGD-CE, APGD-T, FAB-T and Square, each on the "
            "points still robust, worst case per point (Croce & Hein 2020); version "
            "standard or fast")
attacks.add("fab", "poisonlab.attacks.fab:FAB",
            help="fast adaptive boundary: minimal perturbations; runner_ups=True is FAB-T "
                 "(Croce & Hein 2020)")
attacks.add("noise", Noise, help="random sign / direction of the full budget: the baseline "
            "every attack must beat (Carlini et al. 2019)")
attacks.add("transfer", "poisonlab.attacks.transfer:Transfer",
            help="a white-box attack crafted on a surrogate model, evaluated on the target "
                 "(Papernot et al. 2016)")
attacks.add("square", "poisonlab.attacks.adapters.art:Square",
            help="gradient-free random search, for models whose gradients mislead "
                 "(Andriushchenko et al. 2020; via ART)")
attacks.add_namespace("art", "poisonlab.attacks.adapters.art:ARTAttack", member="Attack",
                      listed=True, help="any ART evasion attack by class name (e.g. "
                           "art:ProjectedGradientDescent); eps/norm/targeting from the threat")
attacks.add_namespace("foolbox", "poisonlab.attacks.adapters.foolbox:FoolboxAttack",
                      member="Attack", listed=True,
                      help="any foolbox attack by class name (e.g. foolbox:LinfPGD); "
                           "its norm must match the threat's")


def get_attack(name: str, **params: Any) -> Attack:
    """Build the registered evasion attack ``name`` with validated settings."""
    built: Attack = attacks.build(name, **params)
    return built


__all__ = [
    "APGD",
    "APGDT",
    "FGSM",
    "NORMS",
    "PGD",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "FlipResult",
    "LabelFlip",
    "Noise",
    "apgd",
    "attacks",
    "fgsm",
    "flip_labels",
    "get_attack",
    "pgd",
    "project",
    "random_noise",
    "security_curve",
]

"""Attacks: evasion (test-time perturbations) and label-flip poisoning.

``attacks`` is the registry of evasion attacks by name (``"fgsm"``, ``"pgd"``);
``get_attack(name, **params)`` builds one with validated settings. Prefixed names run a
library's attack through an adapter that is imported only then, e.g.
``get_attack("foolbox:LinfPGD", steps=40)`` or ``"art:ProjectedGradientDescent"``.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import NORMS, Attack, AttackResult, project
from .evasion import FGSM, PGD, Noise, fgsm, pgd, random_noise, security_curve
from .label_flip import FlipResult, LabelFlip, flip_labels

attacks: Registry[type[Attack]] = Registry("attack")
attacks.add("fgsm", FGSM, help="one signed-gradient step of size eps (Goodfellow et al. 2015)")
attacks.add("pgd", PGD, help="projected gradient descent with restarts (Madry et al. 2018)")
attacks.add("noise", Noise, help="random sign / direction of the full budget: the baseline "
            "every attack must beat (Carlini et al. 2019)")
attacks.add("transfer", "poisonlab.attacks.transfer:Transfer",
            help="a white-box attack crafted on a surrogate model, evaluated on the target "
                 "(Papernot et al. 2016)")
attacks.add("square", "poisonlab.attacks.adapters.art:Square",
            help="gradient-free random search, for models whose gradients mislead "
                 "(Andriushchenko et al. 2020; via ART)")
attacks.add_namespace("art", "poisonlab.attacks.adapters.art:ARTAttack", member="Attack",
                      help="any ART evasion attack by class name (e.g. "
                           "art:ProjectedGradientDescent); eps/norm/targeting from the threat")
attacks.add_namespace("foolbox", "poisonlab.attacks.adapters.foolbox:FoolboxAttack",
                      member="Attack",
                      help="any foolbox attack by class name (e.g. foolbox:LinfPGD); "
                           "its norm must match the threat's")


def get_attack(name: str, **params: Any) -> Attack:
    """Build the registered evasion attack ``name`` with validated settings."""
    built: Attack = attacks.build(name, **params)
    return built


__all__ = [
    "FGSM",
    "NORMS",
    "PGD",
    "Attack",
    "AttackResult",
    "FlipResult",
    "LabelFlip",
    "Noise",
    "attacks",
    "fgsm",
    "flip_labels",
    "get_attack",
    "pgd",
    "project",
    "random_noise",
    "security_curve",
]

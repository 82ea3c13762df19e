"""Attacks: evasion (test-time perturbations) and label-flip poisoning.

``attacks`` is the registry of evasion attacks by name (``"fgsm"``, ``"pgd"``);
``get_attack(name, **params)`` builds one with validated settings.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import NORMS, Attack, AttackResult, project
from .evasion import FGSM, PGD, fgsm, pgd, security_curve
from .label_flip import FlipResult, LabelFlip, flip_labels

attacks: Registry[type[Attack]] = Registry("attack")
attacks.add("fgsm", FGSM, help="one signed-gradient step of size eps (Goodfellow et al. 2015)")
attacks.add("pgd", PGD, help="projected gradient descent with restarts (Madry et al. 2018)")


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
    "attacks",
    "fgsm",
    "flip_labels",
    "get_attack",
    "pgd",
    "project",
    "security_curve",
]

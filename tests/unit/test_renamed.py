"""Names that issue 20 changed keep working: "check" names the gate, input validation is
``validate_*``, sanity checks live in :mod:`poisonlab.sanity`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest

import poisonlab.checks as old_checks
import poisonlab.sanity as sanity
from poisonlab import EvasionThreat, get_attack
from poisonlab.attacks.base import Attack
from poisonlab.errors import ConfigError
from poisonlab.harness.gate import CheckResult, GateResult


def test_old_sanity_names_are_the_new_objects() -> None:
    assert sanity.CheckOutcome is sanity.SanityOutcome
    assert sanity.CheckSettings is sanity.SanitySettings
    assert sanity.CheckFailure is sanity.SanityFailure
    assert sanity.run_checks is sanity.run_sanity
    assert old_checks.run_checks is sanity.run_sanity
    assert old_checks.SanitySettings is sanity.SanitySettings
    assert CheckResult is GateResult


def test_check_threat_warns_and_validates() -> None:
    fgsm = get_attack("fgsm")
    l2 = EvasionThreat(norm="l2", eps=0.5)
    with pytest.warns(DeprecationWarning, match="validate_threat"):
        fgsm.check_threat(l2)  # fgsm takes l2: no error
    apgdt = get_attack("apgd-t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ConfigError):
            apgdt.check_threat(EvasionThreat(norm="linf", eps=0.1, targeted=True))


def test_a_subclass_overriding_check_threat_is_still_honoured() -> None:
    @dataclass(frozen=True)
    class OnlyL2(Attack):
        def check_threat(self, threat: EvasionThreat) -> None:
            if threat.norm.value != "l2":
                raise ConfigError(f"threat.norm is {threat.norm.value!r}: OnlyL2 takes 'l2'")

    with pytest.raises(ConfigError, match="OnlyL2 takes 'l2'"):
        OnlyL2().validate_threat(EvasionThreat(norm="linf", eps=0.1))
    OnlyL2().validate_threat(EvasionThreat(norm="l2", eps=0.1))

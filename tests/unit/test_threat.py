"""Threat models: validation, enum coercion, stable ids, ThreatModel duplicates."""

from __future__ import annotations

import dataclasses

import pytest

from poisonlab import (
    ConfigError,
    EvasionThreat,
    FlipStrategy,
    Knowledge,
    Norm,
    PoisonThreat,
    ThreatModel,
)

# --------------------------------------------------------------------------- EvasionThreat


@pytest.mark.parametrize("eps", [-0.1, -1e-9, -5])
def test_evasion_negative_eps_is_rejected_naming_field_and_value(eps: float) -> None:
    with pytest.raises(ConfigError, match=rf"eps={eps!r} is not allowed"):
        EvasionThreat(norm="linf", eps=eps)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), "0.1", None, True])
def test_evasion_non_finite_or_non_numeric_eps_is_rejected(eps: object) -> None:
    with pytest.raises(ConfigError, match=r"eps="):
        EvasionThreat(norm="linf", eps=eps)  # type: ignore[arg-type]


def test_evasion_huge_integer_eps_raises_config_error() -> None:
    # An int too large for a float must be refused as bad input, not crash with OverflowError.
    with pytest.raises(ConfigError, match=r"eps="):
        EvasionThreat(norm="linf", eps=10**400)


def test_evasion_unknown_norm_suggests_the_closest_one() -> None:
    with pytest.raises(ConfigError, match=r"norm='lnf' is not allowed.*did you mean 'linf'"):
        EvasionThreat(norm="lnf", eps=0.1)


def test_evasion_unknown_norm_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"norm='l1'.*expected one of linf, l2"):
        EvasionThreat(norm="l1", eps=0.1)


def test_evasion_unknown_knowledge_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"knowledge='whitebox'.*did you mean 'white-box'"):
        EvasionThreat(eps=0.1, knowledge="whitebox")


@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.5, 0.5), (0.0,), "01", (0.0, float("nan"))])
def test_evasion_bad_bounds_are_rejected(bounds: object) -> None:
    with pytest.raises(ConfigError, match=r"bounds"):
        EvasionThreat(eps=0.1, bounds=bounds)  # type: ignore[arg-type]


@pytest.mark.parametrize("targeted", ["yes", 1, None])
def test_evasion_targeted_must_be_a_bool(targeted: object) -> None:
    with pytest.raises(ConfigError, match=rf"targeted={targeted!r} is not allowed"):
        EvasionThreat(eps=0.1, targeted=targeted)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("norm", "expected"), [("linf", Norm.LINF), ("l2", Norm.L2), (Norm.L2, Norm.L2)]
)
def test_evasion_norm_is_coerced_to_the_enum(norm: object, expected: Norm) -> None:
    assert EvasionThreat(norm=norm, eps=0.1).norm is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("knowledge", list(Knowledge))
def test_evasion_knowledge_string_is_coerced_to_the_enum(knowledge: Knowledge) -> None:
    assert EvasionThreat(eps=0.1, knowledge=knowledge.value).knowledge is knowledge


def test_evasion_string_and_enum_spellings_are_equal_and_hash_alike() -> None:
    a = EvasionThreat(norm="l2", eps=0.5, knowledge="transfer")
    b = EvasionThreat(norm=Norm.L2, eps=0.5, knowledge=Knowledge.TRANSFER)
    assert a == b
    assert hash(a) == hash(b)


def test_evasion_bounds_list_becomes_a_float_tuple() -> None:
    t = EvasionThreat(eps=1, bounds=[0, 255])  # type: ignore[arg-type]
    assert t.bounds == (0.0, 255.0)
    assert isinstance(t.bounds, tuple)
    assert isinstance(t.eps, float)


@pytest.mark.parametrize(
    ("threat", "expected"),
    [
        (EvasionThreat(norm="linf", eps=0.1), "linf eps=0.1"),
        (EvasionThreat(norm="l2", eps=0.5, targeted=True), "l2 eps=0.5 targeted"),
        (EvasionThreat(norm="linf", eps=0.03, knowledge="transfer"), "linf eps=0.03 transfer"),
        (
            EvasionThreat(norm="l2", eps=2, targeted=True, knowledge="black-box"),
            "l2 eps=2 targeted black-box",
        ),
    ],
)
def test_evasion_id(threat: EvasionThreat, expected: str) -> None:
    assert threat.id == expected


def test_evasion_threat_is_frozen() -> None:
    t = EvasionThreat(eps=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.eps = 0.2  # type: ignore[misc]


def test_evasion_with_eps_changes_only_eps() -> None:
    t = EvasionThreat(norm="l2", eps=0.5, bounds=(-1.0, 1.0), targeted=True, knowledge="transfer")
    u = t.with_eps(1.5)
    assert u == dataclasses.replace(t, eps=1.5)
    assert u.eps == 1.5


def test_evasion_to_dict_uses_plain_values() -> None:
    d = EvasionThreat(norm="l2", eps=0.5, targeted=True).to_dict()
    assert d == {
        "kind": "evasion", "norm": "l2", "eps": 0.5, "bounds": [0.0, 1.0], "targeted": True,
        "knowledge": "white-box", "id": "l2 eps=0.5 targeted",
    }


# --------------------------------------------------------------------------- PoisonThreat


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, -1e-12])
def test_poison_rate_outside_half_open_unit_interval_is_rejected(rate: float) -> None:
    with pytest.raises(ConfigError, match=rf"rate={rate!r} is not allowed.*\[0, 1\)"):
        PoisonThreat(rate=rate)


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.999])
def test_poison_rate_inside_interval_is_accepted(rate: float) -> None:
    assert PoisonThreat(rate=rate).rate == rate


@pytest.mark.parametrize(("source", "target"), [(None, None), (3, None), (None, 8)])
def test_pairwise_without_source_and_target_is_rejected(
    source: int | None, target: int | None
) -> None:
    with pytest.raises(ConfigError, match=r"strategy 'pairwise' needs both class ids"):
        PoisonThreat(rate=0.1, strategy="pairwise", source=source, target=target)


def test_pairwise_source_equal_to_target_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"target=3 is not allowed.*source=3"):
        PoisonThreat(rate=0.1, strategy="pairwise", source=3, target=3)


def test_random_strategy_refuses_class_ids() -> None:
    with pytest.raises(ConfigError, match=r"source=1.*only strategy 'pairwise'"):
        PoisonThreat(rate=0.1, strategy="random", source=1)


@pytest.mark.parametrize("source", [-1, 1.5, "3"])
def test_pairwise_class_ids_must_be_non_negative_integers(source: object) -> None:
    with pytest.raises(ConfigError, match=r"source="):
        PoisonThreat(rate=0.1, strategy="pairwise", source=source, target=0)  # type: ignore[arg-type]


def test_unknown_strategy_suggests_the_closest_one() -> None:
    with pytest.raises(ConfigError, match=r"strategy='pairwse'.*did you mean 'pairwise'"):
        PoisonThreat(rate=0.1, strategy="pairwse", source=0, target=1)


def test_poison_kind_other_than_label_flip_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"kind='backdoor' is not allowed"):
        PoisonThreat(rate=0.1, kind="backdoor")


def test_poison_strategy_and_knowledge_are_coerced_to_enums() -> None:
    t = PoisonThreat(rate=0.1, strategy="pairwise", source=3, target=8, knowledge="white-box")
    assert t.strategy is FlipStrategy.PAIRWISE
    assert t.knowledge is Knowledge.WHITE_BOX
    assert t == PoisonThreat(
        rate=0.1, strategy=FlipStrategy.PAIRWISE, source=3, target=8,
        knowledge=Knowledge.WHITE_BOX,
    )


def test_poison_float_class_ids_become_ints() -> None:
    t = PoisonThreat(rate=0.1, strategy="pairwise", source=3.0, target=8.0)  # type: ignore[arg-type]
    assert (t.source, t.target) == (3, 8)
    assert isinstance(t.source, int)


@pytest.mark.parametrize(
    ("threat", "expected"),
    [
        (PoisonThreat(rate=0.2), "random 0.2"),
        (PoisonThreat(rate=0.1, strategy="pairwise", source=3, target=8), "pairwise 3->8 0.1"),
        (PoisonThreat(rate=0.0), "random 0"),
    ],
)
def test_poison_id(threat: PoisonThreat, expected: str) -> None:
    assert threat.id == expected


# --------------------------------------------------------------------------- ThreatModel


def test_threat_model_rejects_duplicate_evasion_threats() -> None:
    with pytest.raises(ConfigError, match=r"evasion lists 'linf eps=0.1' twice"):
        ThreatModel(evasion=(EvasionThreat(eps=0.1), EvasionThreat(norm=Norm.LINF, eps=0.1)))


def test_threat_model_rejects_duplicate_poison_threats() -> None:
    with pytest.raises(ConfigError, match=r"poisoning lists 'random 0.2' twice"):
        ThreatModel(poisoning=[PoisonThreat(rate=0.2), PoisonThreat(rate=0.2)])  # type: ignore[arg-type]


def test_threat_model_rejects_the_wrong_threat_type() -> None:
    with pytest.raises(ConfigError, match=r"evasion\[0\]=.* expected a EvasionThreat"):
        ThreatModel(evasion=(PoisonThreat(rate=0.2),))  # type: ignore[arg-type]


def test_threat_model_keeps_distinct_threats_in_order_as_tuples() -> None:
    ev = [EvasionThreat(eps=0.1), EvasionThreat(eps=0.2), EvasionThreat(norm="l2", eps=0.1)]
    tm = ThreatModel(evasion=ev, poisoning=[PoisonThreat(rate=0.1)])  # type: ignore[arg-type]
    assert tm.evasion == tuple(ev)
    assert isinstance(tm.poisoning, tuple)
    assert [t["id"] for t in tm.to_dict()["evasion"]] == [
        "linf eps=0.1", "linf eps=0.2", "l2 eps=0.1",
    ]


# --------------------------------------------------------------------------- error types


@pytest.mark.parametrize(
    "make",
    [
        lambda: EvasionThreat(eps=-1),
        lambda: EvasionThreat(norm="l3"),
        lambda: PoisonThreat(rate=2),
        lambda: PoisonThreat(rate=0.1, strategy="pairwise"),
    ],
)
def test_threat_errors_are_config_errors_and_value_errors(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"(is|are) not allowed") as info:
        make()
    assert isinstance(info.value, ValueError)

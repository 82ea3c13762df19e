"""docs/suite-reference.md is generated from the spec and kept current (issue 21)."""

from __future__ import annotations

import re

import yaml

from poisonlab.attacks import attacks
from poisonlab.defenses import defenses
from poisonlab.harness import reference
from poisonlab.harness.suite import _TOP_KEYS, parse_suite


def test_the_reference_is_current() -> None:
    assert reference.PATH.read_text(encoding="utf-8") == reference.suite_reference(), (
        "docs/suite-reference.md is stale: python -m poisonlab.harness.reference --write")


def test_every_key_the_parser_accepts_is_described_and_no_other() -> None:
    assert sorted(k for k, *_ in reference.TOP_LEVEL) == sorted(_TOP_KEYS)


def test_the_example_is_a_valid_suite() -> None:
    suite = parse_suite(yaml.safe_load(reference.EXAMPLE))
    assert [t.kind for t in suite.threats] == ["poisoning", "evasion", "combined"]


def test_every_attack_and_defense_has_a_section_with_its_parameters() -> None:
    text = reference.suite_reference()
    for name in attacks.names() + defenses.names():
        assert f"### `{name}`" in text
    pgd = text.split("### `pgd`")[1].split("### ")[0]
    assert re.search(r"\| `steps` \| `40` \| int >= 1 \|", pgd)
    assert "| `restarts` | `1` | int >= 1 | Independent random starts" in pgd

"""Hypothesis properties: a malformed suite is refused with one line, never a crash.

Valid suites (the TINY test suite and benchmarks/suites/quickstart.yaml) are mutated at a
random path: a key deleted, a value replaced by any YAML value (null, bools, huge or
negative integers, NaN and infinities, strings, lists, mappings with odd keys), a list
entry repeated, a list emptied. Random text and bytes are parsed as suite files too.
Whatever comes in, parse_suite / load_suite either return a Suite that expands, serialises
and keys its cells, or raise a PoisonlabError whose message is one non-empty line; and
``poisonlab validate`` exits with 0 or 2 and at most one line on stderr.

Runs are derandomized (a fixed example sequence every time) and kept small.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from poisonlab.cli import main
from poisonlab.errors import PoisonlabError
from poisonlab.harness import Suite, load_suite, parse_suite

from ..integration.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = yaml.safe_load((ROOT / "benchmarks" / "suites" / "quickstart.yaml").read_text())
BASES = [TINY, QUICKSTART]

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Path_ = tuple[str | int, ...]

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 10, 2**31, 2**32, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, -0.1, math.nan, math.inf, -math.inf, 1e-300]),
    st.text(max_size=12),
    st.dates(), st.binary(max_size=4),  # what YAML's 2024-01-01 and !!binary load as
    st.sampled_from(["", " ", "none", "pgd", "mlp", "digits", "linf", "random", "ece",
                     "foolbox:LinfPGD", "art:Nope", "os:system", "a:b:c", "ece of none below "
                     "none", "label_smoothing", "1", ".nan", "\n"]),
)
KEYS = st.one_of(st.text(max_size=8), st.integers(-2, 2), st.booleans(), st.none(),
                 st.sampled_from(
    ["name", "eps", "rate", "strategy", "steps", "seed", "model", "defense", "hidden"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=10,
)


def paths(v: Any, at: Path_ = ()) -> Iterator[Path_]:
    """Every path into a nested dict/list value (the root excluded)."""
    if isinstance(v, dict):
        for k, x in v.items():
            yield (*at, k)
            yield from paths(x, (*at, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield (*at, i)
            yield from paths(x, (*at, i))


def _parent(doc: Any, path: Path_) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


@st.composite
def mutated_suites(draw: st.DrawFn) -> dict[str, Any]:
    """A valid suite with one to three random mutations."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        all_paths = list(paths(doc))
        if not all_paths:
            break
        path = draw(st.sampled_from(all_paths))
        parent, last = _parent(doc, path), path[-1]
        op = draw(st.sampled_from(["delete", "replace", "replace", "duplicate", "empty"]))
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(VALUES)
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif op == "empty" and isinstance(parent[last], list | dict):
            parent[last] = type(parent[last])()
        else:
            parent[last] = draw(VALUES)
    return doc


def assert_one_line(e: PoisonlabError) -> None:
    msg = str(e)
    assert msg.strip(), f"empty message from {type(e).__name__}"
    assert "\n" not in msg.strip(), msg


def assert_usable(suite: Suite) -> None:
    cells = list(suite.cells())
    suite.to_dict()
    suite.gate_dict()
    for cell in cells:
        suite.key(cell)


def check_parse(doc: Any) -> None:
    try:
        suite = parse_suite(doc)
    except PoisonlabError as e:
        event(f"refused: {type(e).__name__}")
        assert_one_line(e)
    else:
        event("accepted")
        assert_usable(suite)


@SETTINGS
@given(doc=mutated_suites())
@example(doc={**TINY, "version": True})
@example(doc={**TINY, "metrics": ["accuracy", "accuracy"]})
@example(doc={**TINY, "defenses": [{"name": "label_smoothing", "eps": {1: 2, "a": 3}}]})
@example(doc={**TINY, "models": [{"name": "mlp", "hidden": 16}]})
@example(doc={**TINY, "threat_model": {"evasion": [{"norm": "linf", "eps": [0.1],
                                                    "bounds": []}]}})
# Shrunk examples of crashes hypothesis found (tests/bad_inputs/cases_suite.py has them too)
@example(doc={**TINY, "training": {0: None}})
@example(doc={**TINY, "datasets": [{"name": "blobs", "n_samples": {"": None, 0: None}}]})
@example(doc={**TINY, "datasets": [{"name": "blobs", "n_samples": b""}]})
def test_mutated_suites_parse_or_fail_with_one_line(doc: dict[str, Any]) -> None:
    check_parse(doc)


@SETTINGS
@given(doc=st.one_of(VALUES, st.dictionaries(st.sampled_from([*TINY, "x", "include"]),
                                              VALUES, max_size=6)))
@example(doc=None)
@example(doc=[])
def test_random_values_parse_or_fail_with_one_line(doc: Any) -> None:
    check_parse(doc)


def _write_and_load(tmp: Path, content: str | bytes) -> None:
    path = tmp / "suite.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    try:
        suite = load_suite(path)
    except PoisonlabError as e:
        assert_one_line(e)
    else:
        assert_usable(suite)


YAML_BITS = st.sampled_from([
    "name: x\n", "version: 1\n", "datasets: [blobs]\n", "models: [mlp]\n", "seeds: [0]\n",
    "defenses: [none]\n", "seeds: [0, *a]\n", "x: &a [1, 2]\n", "include: suite.yaml\n",
    "include: nope.yaml\n", "- a\n", "? [a]\n: 1\n", "a: !!binary aGk=\n", "a: 2024-01-01\n",
    "\t", "---\n", "{", "]", "  - x\n", "metrics: [accuracy]\n", "seeds: !!set {0}\n",
    "name: &n x\n", "<<: {name: y}\n", "eps: .nan\n", "rate: .inf\n", ": :\n", "'\n",
])


@settings(SETTINGS, max_examples=150,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.lists(YAML_BITS, max_size=8).map("".join), st.text(max_size=60),
                      st.binary(max_size=60)))
def test_random_files_load_or_fail_with_one_line(text: str | bytes, tmp_path: Path) -> None:
    _write_and_load(tmp_path, text)


@settings(SETTINGS, max_examples=150,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=mutated_suites())
def test_mutated_suite_files_load_or_fail_with_one_line(doc: dict[str, Any],
                                                         tmp_path: Path) -> None:
    _write_and_load(tmp_path, yaml.safe_dump(doc, sort_keys=False))


@settings(SETTINGS, max_examples=60,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=mutated_suites())
def test_validate_exits_0_or_2_with_at_most_one_line(doc: dict[str, Any],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(["validate", str(path)])
        except SystemExit as e:
            code = e.code
    assert code in (0, 2), (code, err.getvalue())
    assert err.getvalue().count("\n") <= 1, err.getvalue()
    if code == 2:
        assert err.getvalue().startswith("poisonlab: error: "), err.getvalue()

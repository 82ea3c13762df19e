"""Hypothesis properties: flip budgets, ECE range, norm projections, validate_scalar's errors.

Runs are derandomized (a fixed example sequence every time) and kept small.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from poisonlab import ConfigError, Norm, flip_labels
from poisonlab._validation import validate_scalar
from poisonlab.attacks import NORMS
from poisonlab.metrics import ece

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


# --------------------------------------------------------------------------- label flips


@st.composite
def labels_and_classes(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    k = draw(st.integers(min_value=2, max_value=12))
    n = draw(st.integers(min_value=1, max_value=300))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(min_value=0, max_value=k - 1)))
    return y, k


RATES = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)


@SETTINGS
@given(data=labels_and_classes(), rate=RATES, seed=st.integers(min_value=0, max_value=2**32))
def test_random_flip_changes_exactly_round_rate_n_labels(
    data: tuple[np.ndarray, int], rate: float, seed: int
) -> None:
    y, k = data
    res = flip_labels(y, rate=rate, n_classes=k, rng=seed)
    y_t = torch.from_numpy(y)
    changed = res.y_poisoned != y_t
    assert int(changed.sum()) == round(rate * len(y))
    assert torch.equal(res.flipped, changed)


@SETTINGS
@given(data=labels_and_classes(), rate=RATES, seed=st.integers(min_value=0, max_value=2**32))
def test_random_flips_always_land_on_another_valid_class(
    data: tuple[np.ndarray, int], rate: float, seed: int
) -> None:
    y, k = data
    res = flip_labels(y, rate=rate, n_classes=k, rng=seed)
    y_t = torch.from_numpy(y)
    assert bool((res.y_poisoned[res.flipped] != y_t[res.flipped]).all())
    assert int(res.y_poisoned.min()) >= 0
    assert int(res.y_poisoned.max()) < k


@SETTINGS
@given(
    data=labels_and_classes(),
    frac=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_pairwise_flips_move_only_source_to_target(
    data: tuple[np.ndarray, int], frac: float, seed: int
) -> None:
    y, k = data
    source, target = int(y[0]), (int(y[0]) + 1) % k
    n, n_source = len(y), int((y == source).sum())
    rate = min(frac * n_source / n, 0.999)
    if round(rate * n) > n_source:  # the rounding crossed the class size: that raises
        rate = (n_source - 0.5) / n if n_source else 0.0
    res = flip_labels(y, rate=rate, n_classes=k, strategy="pairwise", source=source,
                      target=target, rng=seed)
    y_t = torch.from_numpy(y)
    assert res.n_flipped == round(rate * n)
    assert bool((y_t[res.flipped] == source).all())
    assert bool((res.y_poisoned[res.flipped] == target).all())


# --------------------------------------------------------------------------- ECE


@st.composite
def probs_and_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    k = draw(st.integers(min_value=2, max_value=8))
    n = draw(st.integers(min_value=1, max_value=60))
    raw = draw(hnp.arrays(np.float64, (n, k),
                          elements=st.floats(min_value=0.0, max_value=1.0)))
    raw = raw + 1e-9
    probs = raw / raw.sum(axis=1, keepdims=True)
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(min_value=0, max_value=k - 1)))
    return probs, y


@SETTINGS
@given(data=probs_and_labels(), n_bins=st.integers(min_value=1, max_value=30))
def test_ece_lies_in_the_unit_interval(data: tuple[np.ndarray, np.ndarray], n_bins: int) -> None:
    probs, y = data
    value = ece(probs, y, n_bins=n_bins)
    assert 0.0 <= value <= 1.0


@SETTINGS
@given(data=probs_and_labels())
def test_ece_with_one_bin_is_the_confidence_accuracy_gap(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    probs, y = data
    gap = abs(float(np.mean(probs.argmax(1) == y)) - float(np.mean(probs.max(1))))
    assert ece(probs, y, n_bins=1) == pytest.approx(gap, abs=1e-12)


@SETTINGS
@given(
    y=hnp.arrays(np.int64, st.integers(min_value=1, max_value=80),
                 elements=st.integers(min_value=0, max_value=5)),
    n_bins=st.integers(min_value=1, max_value=30),
)
def test_ece_is_zero_for_correct_one_hot_predictions(y: np.ndarray, n_bins: int) -> None:
    probs = np.eye(6)[y]
    assert ece(probs, y, n_bins=n_bins) == 0.0


# --------------------------------------------------------------------------- projections

DELTAS = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6),
    elements=st.floats(min_value=-1e3, max_value=1e3, width=32),
)
EPS = st.floats(min_value=0.0, max_value=50.0)


def _norm(v: torch.Tensor, norm: Norm) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1).double(), ord=NORMS[norm].p, dim=1)


@SETTINGS
@given(delta=DELTAS, eps=EPS, norm=st.sampled_from(list(Norm)))
def test_projection_keeps_any_delta_in_the_ball(delta: np.ndarray, eps: float, norm: Norm) -> None:
    d = torch.from_numpy(delta)
    out = NORMS[norm].project(d, eps)
    assert out.shape == d.shape
    assert torch.isfinite(out).all()
    assert bool((_norm(out, norm) <= eps * (1 + 1e-5) + 1e-6).all())


@SETTINGS
@given(delta=DELTAS, eps=EPS, norm=st.sampled_from(list(Norm)))
def test_projection_leaves_points_inside_the_ball_unchanged(
    delta: np.ndarray, eps: float, norm: Norm
) -> None:
    d = torch.from_numpy(delta)
    inside = _norm(d, norm) <= eps * (1 - 1e-4)  # clear of float32 rounding at the sphere
    out = NORMS[norm].project(d, eps)
    assert torch.equal(out[inside], d[inside])


@SETTINGS
@given(delta=DELTAS, eps=EPS, norm=st.sampled_from(list(Norm)))
def test_projection_is_idempotent(delta: np.ndarray, eps: float, norm: Norm) -> None:
    once = NORMS[norm].project(torch.from_numpy(delta), eps)
    twice = NORMS[norm].project(once, eps)
    torch.testing.assert_close(twice, once, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- validate_scalar

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.integers(min_value=-(10**400), max_value=-(10**300)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.int64, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
)
BOUND = st.none() | st.floats(min_value=-1e6, max_value=1e6)


@SETTINGS
@given(value=ANY_VALUE, lo=BOUND, hi=BOUND, lo_closed=st.booleans(), hi_closed=st.booleans(),
       integer=st.booleans())
@example(value=10**400, lo=0.0, hi=None, lo_closed=True, hi_closed=True, integer=False)
@example(value=10**400, lo=None, hi=None, lo_closed=True, hi_closed=True, integer=True)
def test_check_scalar_raises_nothing_but_config_error(
    value: object, lo: float | None, hi: float | None, lo_closed: bool, hi_closed: bool,
    integer: bool,
) -> None:
    try:
        out = validate_scalar("x", value, lo=lo, hi=hi, lo_closed=lo_closed, hi_closed=hi_closed,
                           integer=integer)
    except ConfigError as err:
        assert str(err).startswith(f"x={value!r} is not allowed")
        return
    # accepted: a finite number of the requested kind inside the interval
    assert isinstance(out, int if integer else float)
    assert math.isfinite(out)
    if lo is not None:
        assert out >= lo if lo_closed else out > lo
    if hi is not None:
        assert out <= hi if hi_closed else out < hi

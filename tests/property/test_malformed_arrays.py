"""Hypothesis: malformed arrays get a one-line PoisonlabError or a valid result, never a crash.

Shapes (empty, wrong rank), dtypes (bool, int, float16/32/64, object, strings), NaN/Inf,
labels out of range, float or negative, lengths that differ, numpy vs torch vs lists, fed
to flip_labels, FGSM/PGD, the metrics, as_dataset and train. Runs are derandomized.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poisonlab import FGSM, PGD, EvasionThreat, build_model, flip_labels, metrics, train
from poisonlab.data import as_dataset
from poisonlab.errors import PoisonlabError

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)

DTYPES = st.sampled_from(["bool", "int8", "int64", "uint8", "float16", "float32", "float64",
                          "object", "str"])
SPECIALS = st.sampled_from([None, "nan", "inf", "-inf"])
CONTAINERS = st.sampled_from(["numpy", "torch", "list"])
K = 3


@st.composite
def arrays(draw: st.DrawFn, *, ndim: tuple[int, ...] = (0, 1, 2, 3), lo: float = -2.0,
           hi: float = 4.0, valid: tuple[int, ...] | None = None) -> Any:
    """A small array of random shape, dtype, container, maybe holding NaN or Inf.

    With ``valid``, half the draws have that shape (so that valid calls occur too).
    """
    if valid is not None and draw(st.booleans()):
        shape = valid
    else:
        rank = draw(st.sampled_from(ndim))
        shape = tuple(draw(st.integers(0, 6)) for _ in range(rank))
    values = np.random.default_rng(draw(st.integers(0, 2**16))).uniform(lo, hi, size=shape)
    special = draw(st.one_of(st.just(None), SPECIALS))
    if special is not None and values.size:
        values.flat[0] = float(special)
    dtype = draw(DTYPES)
    if dtype == "object":
        arr: Any = values.astype(object)
    elif dtype == "str":
        arr = values.astype(str)
    elif dtype in ("bool", "int8", "int64", "uint8"):
        with np.errstate(invalid="ignore"):
            arr = np.nan_to_num(values).round().astype(dtype)
    else:
        arr = values.astype(dtype)
    container = draw(CONTAINERS)
    if container == "list":
        return arr.tolist()
    if container == "torch" and dtype not in ("object", "str"):
        return torch.from_numpy(np.ascontiguousarray(arr))
    return arr


def outcome(call: Callable[[], Any]) -> Any:
    """The call's result, or None when it raised a one-line PoisonlabError."""
    try:
        return call()
    except PoisonlabError as e:
        assert str(e).strip() and "\n" not in str(e).strip(), str(e)
        return None


def _labels_ok(y: Any, k: int) -> bool:
    return bool(((y >= 0) & (y < k)).all())


@SETTINGS
@given(y=arrays(ndim=(0, 1, 2), lo=-0.4, hi=3.4, valid=(20,)),
       rate=st.sampled_from([0.0, 0.2, 0.5]),
       strategy=st.sampled_from(["random", "noise_matrix"]))
def test_flip_labels_refuses_or_flips(y: Any, rate: float, strategy: str) -> None:
    kw: dict[str, Any] = {}
    if strategy == "noise_matrix":
        kw["noise_matrix"] = [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]
    out = outcome(lambda: flip_labels(y, rate=rate, n_classes=K, strategy=strategy, **kw))
    if out is not None:
        assert _labels_ok(out.y_poisoned, K)
        assert int(out.flipped.sum()) == round(rate * len(out.y_poisoned))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model("mlp", (4,), K, hidden=[8], seed=0)


@SETTINGS
@given(x=arrays(ndim=(1, 2, 3), lo=-0.2, hi=1.2, valid=(6, 4)),
       y=arrays(ndim=(1, 2), lo=-0.4, hi=2.4, valid=(6,)),
       pgd=st.booleans(), norm=st.sampled_from(["linf", "l2"]))
def test_attacks_refuse_or_stay_in_the_ball(model: torch.nn.Module, x: Any, y: Any, pgd: bool,
                                            norm: str) -> None:
    threat = EvasionThreat(norm=norm, eps=0.1, bounds=(-0.2, 1.2))
    attack = PGD(steps=2) if pgd else FGSM()
    res = outcome(lambda: attack(model, x, y, threat=threat, seed=0))
    if res is not None:
        x_t = torch.as_tensor(np.asarray(x, dtype=np.float64)).float()
        delta = (res.x_adv - x_t).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert bool((size <= 0.1 + 1e-5).all())
        assert bool((res.x_adv >= -0.2).all()) and bool((res.x_adv <= 1.2).all())


@SETTINGS
@given(probs=arrays(ndim=(0, 1, 2, 3), lo=0, hi=1, valid=(6, 3)),
       y=arrays(ndim=(0, 1, 2), lo=-0.4, hi=2.4, valid=(6,)),
       metric=st.sampled_from(["ece", "nll", "brier", "accuracy", "auroc"]))
def test_metrics_refuse_or_return_a_number(probs: Any, y: Any, metric: str) -> None:
    fn = getattr(metrics, metric)
    if metric in ("ece", "nll", "brier") and isinstance(probs, np.ndarray) and probs.ndim == 2 \
            and probs.dtype.kind == "f" and probs.size:
        with np.errstate(invalid="ignore", divide="ignore"):
            probs = probs / probs.sum(axis=1, keepdims=True)  # mostly real probabilities
    value = outcome(lambda: fn(probs, y))
    if value is not None:
        assert isinstance(value, float)


@SETTINGS
@given(x_train=arrays(ndim=(1, 2, 3), lo=0, hi=1, valid=(30, 2)),
       y_train=arrays(ndim=(1, 2), lo=-0.4, hi=2.4, valid=(30,)),
       x_test=arrays(ndim=(2,), lo=0, hi=1, valid=(6, 2)),
       y_test=arrays(ndim=(1,), lo=0, hi=2.4, valid=(6,)))
def test_as_dataset_refuses_or_builds(x_train: Any, y_train: Any, x_test: Any,
                                      y_test: Any) -> None:
    ds = outcome(lambda: as_dataset({"x_train": x_train, "y_train": y_train, "x_test": x_test,
                                     "y_test": y_test}, name="h"))
    if ds is not None:
        assert _labels_ok(ds.y_train, ds.n_classes) and _labels_ok(ds.y_test, ds.n_classes)
        assert bool(torch.isfinite(ds.x_train).all())


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(x=arrays(ndim=(1, 2, 3), lo=0, hi=1, valid=(8, 4)),
       y=arrays(ndim=(1, 2), lo=-0.4, hi=2.4, valid=(8,)))
def test_train_refuses_or_trains(x: Any, y: Any) -> None:
    net = build_model("mlp", (4,), K, hidden=[4], seed=0)
    out = outcome(lambda: train(net, x, y, epochs=1, batch_size=4))
    if out is not None:
        assert not out.training

"""The metrics of issue 5: temperature, mean entropy, reliability data, logit and weight
norms, mutual information (Müller, Kornblith & Hinton 2019), the teacher's accuracy, and
how they reach suite records and evaluate_model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab import ConfigError, DataError, Dataset, SuiteError, build_model, train
from poisonlab.defenses.posthoc import TemperatureScaled
from poisonlab.harness.evaluate import evaluate_cell
from poisonlab.harness.pretrained import evaluate_model, evaluate_model_details
from poisonlab.harness.spec import METRIC_GROUPS, InformationSpec
from poisonlab.harness.suite import parse_suite
from poisonlab.metrics import (
    AUGMENT_NOISE,
    HIGHER_IS_BETTER,
    MI_CLASSES,
    MI_N_AUGMENT,
    MI_N_EXAMPLES,
    augment,
    ece,
    gaussian_mi,
    logit_norm,
    mean_entropy,
    mutual_information,
    predict_proba,
    reliability,
    temperature,
    weight_norm,
)

# --------------------------------------------------------------------------- directions

DESCRIPTIVE = ("temperature", "mean_entropy", "mutual_information", "logit_norm",
               "weight_norm")


def test_descriptive_metrics_have_no_direction() -> None:
    for name in DESCRIPTIVE:
        assert name in HIGHER_IS_BETTER
        assert HIGHER_IS_BETTER[name] is None
    assert HIGHER_IS_BETTER["fooled_first_by"] is None  # an ensemble's breakdown
    assert HIGHER_IS_BETTER["teacher_accuracy"] is True
    assert HIGHER_IS_BETTER["ece"] is False


# --------------------------------------------------------------------------- mean entropy


def test_mean_entropy_by_hand() -> None:
    probs = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    third = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    assert mean_entropy(probs) == pytest.approx((math.log(2) + 0.0 + third) / 3, rel=1e-12)


def test_mean_entropy_spans_zero_to_log_k() -> None:
    assert mean_entropy(np.eye(4)) == 0.0
    assert mean_entropy(torch.full((3, 4), 0.25)) == pytest.approx(math.log(4))


def test_mean_entropy_of_nothing_is_nan_and_bad_input_raises() -> None:
    assert math.isnan(mean_entropy(np.zeros((0, 3))))
    with pytest.raises(DataError, match=r"probs has shape \(3,\): expected \(n, K\)"):
        mean_entropy(np.ones(3) / 3)
    with pytest.raises(DataError, match="NaN, Inf or negative"):
        mean_entropy(np.array([[np.nan, 1.0]]))
    with pytest.raises(DataError, match="NaN, Inf or negative"):
        mean_entropy(np.array([[-0.5, 1.5]]))


# --------------------------------------------------------------------------- reliability

PROBS = np.array([
    [0.90, 0.05, 0.05],  # conf 0.90, correct   -> bin (0.5, 1]
    [0.70, 0.20, 0.10],  # conf 0.70, wrong     -> bin (0.5, 1]
    [0.40, 0.35, 0.25],  # conf 0.40, correct   -> bin (0, 0.5]
    [0.30, 0.25, 0.45],  # conf 0.45, wrong     -> bin (0, 0.5]
])
LABELS = np.array([0, 1, 0, 1])


def test_reliability_by_hand() -> None:
    r = reliability(PROBS, LABELS, n_bins=2)
    assert r["count"] == [2, 2]
    assert r["accuracy"] == [0.5, 0.5]
    assert r["confidence"] == pytest.approx([0.425, 0.8])


def test_reliability_marks_empty_bins_with_none_and_is_json_ready() -> None:
    import json

    r = reliability(PROBS, LABELS)  # 15 bins
    assert set(r) == {"count", "accuracy", "confidence"}
    assert all(len(v) == 15 for v in r.values())
    assert sum(r["count"]) == 4
    for c, a, f in zip(r["count"], r["accuracy"], r["confidence"], strict=True):
        assert (c == 0) == (a is None) == (f is None)
    assert json.loads(json.dumps(r)) == r
    assert all(type(c) is int for c in r["count"])


def test_ece_is_the_weighted_gap_of_the_reliability_bins() -> None:
    rng = np.random.default_rng(0)
    logits = 3 * rng.normal(size=(500, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 5, size=500)
    for n_bins in (1, 2, 15):
        r = reliability(probs, y, n_bins=n_bins)
        gap = sum(c * abs(a - f) for c, a, f in
                  zip(r["count"], r["accuracy"], r["confidence"], strict=True) if c)
        assert ece(probs, y, n_bins=n_bins) == pytest.approx(gap / 500, rel=1e-12)


def test_reliability_rejects_bad_input() -> None:
    with pytest.raises(DataError, match=r"y has labels outside \[0, 2\]"):
        reliability(PROBS, np.array([0, 1, 0, 3]))
    with pytest.raises(ConfigError, match=r"n_bins=0 is not allowed"):
        reliability(PROBS, LABELS, n_bins=0)


# --------------------------------------------------------------------------- norms


def test_logit_norm_by_hand_and_as_deployed() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
    assert logit_norm(nn.Identity(), x) == pytest.approx((5 + 1 + 10) / 3)
    assert logit_norm(TemperatureScaled(nn.Identity(), 2.0), x) == pytest.approx(16 / 6)
    assert math.isnan(logit_norm(nn.Identity(), torch.zeros(0, 2)))


def test_weight_norm_counts_weights_only() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 2.0]]))   # squares sum to 9
        net[2].weight.copy_(torch.tensor([[4.0, 0.0]]))               # 16
        net[0].bias.fill_(100.0)
        net[1].weight.fill_(100.0)
        net[2].bias.fill_(100.0)
    assert weight_norm(net) == pytest.approx(5.0)
    # a temperature-scaling wrapper adds a buffer, not a parameter
    assert weight_norm(TemperatureScaled(net, 3.0)) == weight_norm(net)
    assert math.isnan(weight_norm(nn.Identity()))


def test_weight_norm_includes_convolution_kernels() -> None:
    conv = nn.Conv2d(1, 1, 2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)   # 4 ones
    assert weight_norm(conv) == pytest.approx(2.0)


# --------------------------------------------------------------------------- temperature


def _overconfident_data(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with a gap of 6 whose argmax is right only 75% of the time."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    pred = torch.where(torch.rand(n, generator=g) < 0.75, y, 1 - y)
    logits = torch.zeros(n, 2)
    logits[torch.arange(n), pred] = 6.0
    return logits, y


def test_temperature_above_one_for_an_overconfident_model() -> None:
    logits, y = _overconfident_data()
    t = temperature(nn.Identity(), logits, y)
    # The NLL-optimal sigmoid(6 / T) is the fraction f of right answers (about 0.75):
    # T = 6 / log(f / (1 - f)).
    f = float((logits.argmax(dim=1) == y).double().mean())
    assert 0.7 < f < 0.8
    assert t == pytest.approx(6 / math.log(f / (1 - f)), rel=1e-4)
    assert t > 1


def test_temperature_is_about_one_after_temperature_scaling() -> None:
    logits, y = _overconfident_data()
    deployed = TemperatureScaled(nn.Identity(), temperature(nn.Identity(), logits, y))
    assert temperature(deployed, logits, y) == pytest.approx(1.0, abs=1e-3)


def test_temperature_of_an_empty_split_is_nan_and_shapes_must_match() -> None:
    assert math.isnan(temperature(nn.Identity(), torch.zeros(0, 2), torch.zeros(0).long()))
    with pytest.raises(DataError, match=r"y_val has shape \(3,\): expected \(2,\)"):
        temperature(nn.Identity(), torch.zeros(2, 2), torch.zeros(3).long())


# --------------------------------------------------------------------------- augment


def test_augment_translates_image_inputs_by_at_most_one_pixel() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 8, 8, generator=g)
    out = augment(x, torch.Generator().manual_seed(1), (0.0, 1.0), noise=0.0)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=0.0)
    seen = set()
    for i in range(len(x)):
        shifts = [(dy, dx) for dy in range(3) for dx in range(3)
                  if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert shifts, f"input {i} is not a shift by at most one pixel"
        seen.update(shifts)
    assert len(seen) == 9  # every shift in [-1, 1]^2 occurs


def test_augment_reads_a_flat_square_vector_as_an_image() -> None:
    x = torch.rand(50, 64, generator=torch.Generator().manual_seed(0))
    out = augment(x, torch.Generator().manual_seed(0), (0.0, 1.0), noise=0.0)
    as_image = augment(x.reshape(50, 1, 8, 8), torch.Generator().manual_seed(0), (0.0, 1.0),
                       noise=0.0)
    assert torch.equal(out, as_image.reshape(50, 64))
    assert not torch.equal(out, x)


@pytest.mark.parametrize("shape", [(2,), (10,), (63,), (65,), (3, 5)])
def test_augment_adds_only_noise_to_other_inputs(shape: tuple[int, ...]) -> None:
    x = 0.5 + 0.1 * torch.rand((4000, *shape), generator=torch.Generator().manual_seed(0))
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), (0.0, 1.0), noise=0.0), x)
    out = augment(x, torch.Generator().manual_seed(0), (-1.0, 3.0))
    assert float((out - x).std()) == pytest.approx(AUGMENT_NOISE * 4.0, rel=0.05)


def test_augment_is_seeded_pure_and_inside_the_bounds() -> None:
    x = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    state = torch.random.get_rng_state()
    a = augment(x, torch.Generator().manual_seed(3), (0.0, 1.0))
    b = augment(x, torch.Generator().manual_seed(3), (0.0, 1.0))
    c = augment(x, torch.Generator().manual_seed(4), (0.0, 1.0))
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(x, before)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    with pytest.raises(ConfigError, match=r"bounds=\(1.0, 0.0\) is not allowed"):
        augment(x, torch.Generator(), (1.0, 0.0))


# --------------------------------------------------------------------------- gaussian_mi


def test_gaussian_mi_by_hand() -> None:
    # Two rows, means 0 and 1, within-row deviations +-0.5: pooled variance
    # (4 * 0.25) / (2 * (2 - 1)) = 0.5, so 2 sigma^2 = 1.
    s = np.array([[-0.5, 0.5], [0.5, 1.5]])
    mu = np.array([0.0, 1.0])
    terms = []
    for x in range(2):
        for v in s[x]:
            own = -((v - mu[x]) ** 2)
            mix = np.log(np.mean(np.exp(-((v - mu) ** 2))))
            terms.append(own - mix)
    assert gaussian_mi(s) == pytest.approx(float(np.mean(terms)), rel=1e-12)


def test_gaussian_mi_limits() -> None:
    rng = np.random.default_rng(0)
    same_mean = rng.normal(size=(50, 8))                   # every row one distribution
    assert gaussian_mi(same_mean) < 0.1
    assert gaussian_mi(np.full((50, 8), 3.0)) == 0.0       # no variance, one mean
    separated = np.arange(50.0)[:, None] * 100 + rng.normal(size=(50, 8))
    assert gaussian_mi(separated) == pytest.approx(math.log(50), abs=1e-6)
    exact = np.repeat(np.arange(50.0)[:, None], 8, axis=1)  # no variance, distinct means
    assert gaussian_mi(exact) == pytest.approx(math.log(50))


def test_gaussian_mi_stays_in_range_on_random_tables() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n, reps = int(rng.integers(2, 30)), int(rng.integers(2, 10))
        s = rng.normal(size=(n, 1)) * rng.uniform(0, 3) + rng.normal(size=(n, reps))
        assert 0.0 <= gaussian_mi(s) <= math.log(n) + 1e-12


def test_gaussian_mi_rejects_bad_tables() -> None:
    with pytest.raises(DataError, match=r"samples has shape \(1, 4\)"):
        gaussian_mi(np.zeros((1, 4)))
    with pytest.raises(DataError, match=r"samples has shape \(4, 1\)"):
        gaussian_mi(np.zeros((4, 1)))
    with pytest.raises(DataError, match="NaN or Inf"):
        gaussian_mi(np.array([[0.0, np.inf], [1.0, 2.0]]))


# --------------------------------------------------------------------------- mutual information


class Constant(nn.Module):
    """Logits that ignore the input."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.arange(float(k)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


class NearestExample(nn.Module):
    """Logit gap = the index of the nearest stored example, plus a small input-dependent term.

    Far apart examples in 99 dimensions (not a square: noise only, no translation): the
    augmentation noise never changes the nearest one, so every example keeps its own,
    well separated gap.
    """

    def __init__(self, examples: torch.Tensor) -> None:
        super().__init__()
        self.examples = examples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.cdist(x, self.examples).argmin(dim=1).float()
        gap = 10.0 * idx + 0.01 * x.sum(dim=1)
        return torch.stack([gap, torch.zeros_like(gap)], dim=1)


def _two_class_data(n: int = 120, d: int = 99, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.arange(n) % 2


def test_mutual_information_is_zero_for_logits_that_ignore_the_input() -> None:
    x, y = _two_class_data()
    assert mutual_information(Constant(2), x, y, n_examples=40, n_augment=8, seed=0) == 0.0


def test_mutual_information_is_log_n_for_well_separated_examples() -> None:
    x, y = _two_class_data()
    mi = mutual_information(NearestExample(x), x, y, n_examples=60, n_augment=8,
                            bounds=(0.0, 1.0), seed=0)
    assert mi == pytest.approx(math.log(60), abs=1e-3)
    # fewer examples of a class than asked for: N is what there is
    mi = mutual_information(NearestExample(x), x, y, n_examples=1000, n_augment=4,
                            bounds=(0.0, 1.0), seed=0)
    assert mi == pytest.approx(math.log(120), abs=1e-3)


def test_mutual_information_of_a_trained_model_is_in_range_and_seeded(
        digits: Dataset, digits_mlp: nn.Module) -> None:
    kw: dict[str, Any] = {"n_examples": 40, "n_augment": 8, "bounds": digits.bounds}
    a = mutual_information(digits_mlp, digits.x_train, digits.y_train, seed=0, **kw)
    b = mutual_information(digits_mlp, digits.x_train, digits.y_train, seed=0, **kw)
    c = mutual_information(digits_mlp, digits.x_train, digits.y_train, seed=1, **kw)
    assert a == b
    assert a != c
    assert 0.0 < a < math.log(40)
    other = mutual_information(digits_mlp, digits.x_train, digits.y_train, seed=0,
                               classes=(3, 8), **kw)
    assert 0.0 <= other <= math.log(40)


def test_mutual_information_leaves_the_global_rng_alone() -> None:
    x, y = _two_class_data()
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    mutual_information(Constant(2), x, y, n_examples=10, n_augment=4, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])


def test_mutual_information_needs_two_examples_per_class() -> None:
    x, _ = _two_class_data(n=10)
    y = torch.tensor([0] * 9 + [1])
    with pytest.raises(DataError, match=r"y has 1 example\(s\) of class 1: expected at least 2"):
        mutual_information(Constant(2), x, y, n_examples=10, n_augment=4)
    with pytest.raises(DataError, match=r"y has 0 example\(s\) of class 2"):
        mutual_information(Constant(3), x, y, classes=(0, 2), n_examples=10, n_augment=4)


@pytest.mark.parametrize(("kw", "match"), [
    ({"classes": (0, 3)}, r"classes\[1\]=3 is not allowed: expected a class id in \[0, 2\]"),
    ({"classes": (1, 1)}, r"classes=\[1, 1\] is not allowed: expected two different"),
    ({"classes": (-1, 0)}, r"classes\[0\]=-1 is not allowed"),
    ({"classes": (0, 1, 2)}, r"classes=\(0, 1, 2\) is not allowed: expected two class ids"),
    ({"classes": "01"}, r"classes='01' is not allowed"),
    ({"n_examples": 3}, r"n_examples=3 is not allowed"),
    ({"n_augment": 1}, r"n_augment=1 is not allowed"),
    ({"seed": -1}, r"seed=-1 is not allowed"),
])
def test_mutual_information_rejects_bad_settings(kw: dict[str, Any], match: str) -> None:
    x, y = _two_class_data()
    with pytest.raises(ConfigError, match=match):
        mutual_information(Constant(3), x, y, **kw)


# --------------------------------------------------------------------------- suites

BASE: dict[str, Any] = {
    "name": "info", "datasets": ["digits"], "models": [{"name": "mlp", "hidden": [16]}],
    "defenses": ["none"], "training": {"epochs": 1, "batch_size": 128}, "seeds": [0],
}


def test_information_is_a_default_metric_group_with_default_settings() -> None:
    suite = parse_suite(dict(BASE))
    assert "information" in METRIC_GROUPS
    assert suite.metrics == METRIC_GROUPS
    assert suite.information == InformationSpec()
    assert suite.to_dict()["information"] == {
        "classes": list(MI_CLASSES), "n_examples": MI_N_EXAMPLES, "n_augment": MI_N_AUGMENT}


def test_information_settings_reach_the_config_only_with_the_group() -> None:
    on = parse_suite({**BASE, "metrics": ["accuracy", "information"],
                      "information": {"classes": [3, 8], "n_examples": 50, "n_augment": 4}})
    assert on.information == InformationSpec(classes=(3, 8), n_examples=50, n_augment=4)
    assert on.to_dict()["information"] == {"classes": [3, 8], "n_examples": 50,
                                           "n_augment": 4}
    off = parse_suite({**BASE, "metrics": ["accuracy"], "information": {"n_examples": 50}})
    plain = parse_suite({**BASE, "metrics": ["accuracy"]})
    assert "information" not in off.to_dict()
    cell = next(iter(off.cells()))
    assert off.key(cell) == plain.key(cell)  # settings of a group not run change no key


@pytest.mark.parametrize(("block", "match"), [
    ({"n_exmples": 5}, r"information=\{'n_exmples': 5\} is not allowed: expected "
                       r"\{classes: \[a, b\], n_examples: int, n_augment: int, shift: int, "
                       r"noise: float\}"),
    ([1, 2], r"information=\[1, 2\] is not allowed"),
    ({"classes": [2, 2]}, r"information: classes=\[2, 2\] is not allowed: expected two "
                          r"different class ids"),
    ({"classes": [0]}, r"information: classes=\[0\] is not allowed: expected two class ids"),
    ({"n_augment": 1}, r"information: n_augment=1 is not allowed: expected a value in "
                       r"\[2, inf\)"),
    ({"n_examples": 2.5}, r"information: n_examples=2.5 is not allowed: expected an integer"),
    ({"shift": -1}, r"information: shift=-1 is not allowed"),
    ({"noise": "big"}, r"information: noise='big' is not allowed"),
])
def test_suite_information_block_errors_name_the_field(block: Any, match: str) -> None:
    with pytest.raises(SuiteError, match=match):
        parse_suite({**BASE, "information": block})


# --------------------------------------------------------------------------- harness records


def _metric(record: dict[str, Any], name: str) -> dict[str, Any]:
    (m,) = [m for m in record["metrics"] if m["metric"] == name]
    return m


def test_a_cell_records_every_new_metric_and_the_reliability_data() -> None:
    suite = parse_suite({**BASE, "metrics": ["accuracy", "calibration", "information"],
                         "information": {"n_examples": 20, "n_augment": 4}})
    rec = evaluate_cell(suite, next(iter(suite.cells())))
    assert rec["status"] == "ok", rec["error"]
    for name in (*DESCRIPTIVE, "ece", "clean_accuracy"):
        m = _metric(rec, name)
        assert m["higher_is_better"] is HIGHER_IS_BETTER[name]
        assert m["threat"] is None and m["attack"] is None
        assert math.isfinite(m["value"])
    assert 0.0 <= _metric(rec, "mutual_information")["value"] <= math.log(20)
    assert "seeds" in rec and "information" in rec["seeds"]
    r = rec["reliability"]
    assert sum(r["count"]) == rec["dataset_summary"]["n_test"]
    assert "teacher_accuracy" not in {m["metric"] for m in rec["metrics"]}


def test_a_cell_without_calibration_has_no_reliability_data() -> None:
    suite = parse_suite({**BASE, "metrics": ["accuracy"]})
    rec = evaluate_cell(suite, next(iter(suite.cells())))
    assert rec["reliability"] is None
    assert [m["metric"] for m in rec["metrics"]] == ["clean_accuracy"]


def test_a_distilled_cell_records_its_teachers_accuracy(monkeypatch: pytest.MonkeyPatch,
                                                        digits: Dataset) -> None:
    import importlib

    evaluate = importlib.import_module("poisonlab.harness.measure")
    trained: list[nn.Module] = []
    original = evaluate._auxiliary

    def spy(*args: Any, **kwargs: Any) -> nn.Module:
        trained.append(original(*args, **kwargs))
        return trained[-1]

    monkeypatch.setattr(evaluate, "_auxiliary", spy)
    suite = parse_suite({**BASE, "metrics": ["accuracy"], "defenses": [
        {"name": "distillation", "T": 4.0, "teacher": {"defense": "none"}},
        "none",
    ], "training": {"epochs": 3, "batch_size": 64, "lr": 0.01}})
    student, plain = [evaluate_cell(suite, c) for c in suite.cells()]
    (teacher_model,) = trained
    teacher = _metric(student, "teacher_accuracy")
    assert teacher["higher_is_better"] is True
    expected = float((predict_proba(teacher_model, digits.x_test).argmax(dim=1)
                      == digits.y_test).double().mean())
    assert teacher["value"] == pytest.approx(expected, abs=1e-12)
    assert teacher["value"] > 0.5  # a trained model, not the student
    assert "teacher_accuracy" not in {m["metric"] for m in plain["metrics"]}


def test_evaluate_model_details_carry_the_reliability_data(digits: Dataset) -> None:
    net = train(build_model("mlp", digits.input_shape, digits.n_classes, seed=0, hidden=[16]),
                digits.x_train, digits.y_train, epochs=1, seed=0)
    info = {"classes": [1, 7], "n_examples": 20, "n_augment": 4}
    details = evaluate_model_details(net, digits, seed=0, information=info)
    assert set(details) == {"metrics", "reliability", "checks"}
    assert details["checks"] == []  # no evasion threats: nothing to check
    assert details["metrics"] == evaluate_model(net, digits, seed=0, information=info)
    names = {m["metric"] for m in details["metrics"]}
    assert names >= {"temperature", "mean_entropy", "mutual_information", "logit_norm",
                     "weight_norm", "ece"}
    assert sum(details["reliability"]["count"]) == len(digits.y_test)
    no_cal = evaluate_model_details(net, digits, metrics=["accuracy"])
    assert no_cal["reliability"] is None
    with pytest.raises(ConfigError, match=r"information: classes\[1\]=10 is not allowed"):
        evaluate_model(net, digits, information={"classes": [0, 10]})
    with pytest.raises(ConfigError, match=r"information got unknown key 'n'"):
        evaluate_model(net, digits, information={"n": 3})


def test_mutual_information_without_examples_of_a_class_is_null_not_a_failure() -> None:
    from poisonlab.errors import EvaluationWarning

    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 3, generator=g)
    y = torch.tensor([0, 2] * 15)  # no example of class 1
    ds = Dataset(x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y, n_classes=3,
                 input_shape=(3,), bounds=(0.0, 1.0), name="no-class-1", seed=0)
    with pytest.warns(EvaluationWarning, match="mutual_information is undefined: y has 0"):
        recs = evaluate_model(nn.Linear(3, 3), ds, metrics=["information"])
    assert math.isnan(_metric({"metrics": recs}, "mutual_information")["value"])
    assert math.isfinite(_metric({"metrics": recs}, "weight_norm")["value"])


def test_predict_logits_are_what_predict_proba_softmaxes() -> None:
    from poisonlab.metrics import predict_logits

    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5)).train()
    x = torch.rand(10, 3, generator=torch.Generator().manual_seed(0))
    logits = predict_logits(model, x, batch_size=3)
    assert model.training  # the mode is restored
    assert torch.equal(logits, predict_logits(model, x))  # eval mode: dropout off
    assert torch.equal(torch.softmax(logits, dim=1), predict_proba(model, x))


def test_augmentation_settings_reach_the_estimate_and_the_cell_key() -> None:
    """shift/noise change the estimate; the default settings leave suite keys unchanged."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(80, 1, 8, 8, generator=g)
    y = torch.arange(80) % 2
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    torch.nn.init.normal_(model[1].weight, generator=g)
    shifted = mutual_information(model, x, y, seed=1, n_augment=8)
    noise_only = mutual_information(model, x, y, seed=1, n_augment=8, shift=0)
    assert noise_only != shifted
    assert noise_only == mutual_information(model, x, y, seed=1, n_augment=8, shift=0)
    default = parse_suite({**BASE, "metrics": ["information"]})
    explicit = parse_suite({**BASE, "metrics": ["information"],
                            "information": {"shift": 1, "noise": 0.05}})
    changed = parse_suite({**BASE, "metrics": ["information"], "information": {"shift": 0}})
    cell = next(default.cells())
    assert default.key(cell) == explicit.key(cell) != changed.key(cell)
    assert changed.to_dict()["information"]["shift"] == 0

"""Device correctness: a model on CUDA, data on the CPU or on CUDA, the same random draws.

The rules under test: random numbers are drawn on CPU generators and then moved, so the
draws are identical on every device (noise inputs, augmentations, relabelled labels, label
flips, probe subsets); functions that take a model move their inputs to the model's
device and accept CPU tensors, CUDA tensors and numpy arrays (float64 included); results
that come from floating point on the GPU are close to the CPU's, not equal.

The first section runs everywhere (the device-neutral pieces, on the CPU); the tests
marked ``needs_cuda`` run only where ``torch.cuda.is_available()``. Small seeded digits
models keep the whole file fast.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab import (
    FGSM,
    PGD,
    ConfigError,
    DataError,
    Dataset,
    EvasionThreat,
    LabelFlip,
    PoisonThreat,
    build_model,
    get_attack,
    get_defense,
    security_curve,
    train,
)
from poisonlab.attacks.transfer import Transfer
from poisonlab.defenses.filters import confident_learning_issues
from poisonlab.defenses.losses import FlipAugment, disturb_labels
from poisonlab.defenses.posthoc import TemperatureScaled
from poisonlab.metrics import (
    ALPHA_GRID,
    alpha_star,
    as_model_input,
    augment,
    ece,
    gaussian_noise,
    logit_norm,
    mutual_information,
    offmanifold_auroc,
    offmanifold_confidence,
    predict_logits,
    predict_proba,
    ray_confidence,
    reliability,
    temperature,
    uniform_noise,
    weight_norm,
)
from poisonlab.models import init_parameters
from poisonlab.sanity import Probes, SanitySettings, Status, SuiteAttack, run_sanity
from poisonlab.training import model_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CPU = torch.device("cpu")
CUDA = torch.device("cuda")
DEVICES = ("cpu", "cuda")

N_TRAIN = 400  # a slice of the digits training split keeps each training well under 1 s


def _mlp(ds: Dataset, seed: int = 0) -> nn.Module:
    return build_model("mlp", ds.input_shape, ds.n_classes, seed=seed, hidden=[32])


def _on(model: nn.Module, device: torch.device | str) -> nn.Module:
    """A copy of ``model`` on ``device`` (the original stays where it is)."""
    return copy.deepcopy(model).to(device)


@pytest.fixture(scope="module")
def small(digits: Dataset) -> nn.Module:
    """A small MLP trained on the CPU (read-only: tests copy it before moving it)."""
    return train(_mlp(digits), digits.x_train, digits.y_train, epochs=3, seed=0)


@pytest.fixture(scope="module")
def other(digits: Dataset) -> nn.Module:
    """A second small MLP from another seed, trained on the CPU: a surrogate or teacher."""
    return train(_mlp(digits, seed=1), digits.x_train, digits.y_train, epochs=3, seed=1)


# --------------------------------------------------------------------------- CPU (everywhere)


def test_uniform_noise_on_a_requested_device_is_the_cpu_draw() -> None:
    plain = uniform_noise(50, (1, 8, 8), (0.0, 1.0), 3)
    placed = uniform_noise(50, (1, 8, 8), (0.0, 1.0), 3, device=torch.device("cpu"))
    assert plain.device == CPU and placed.device == CPU
    assert torch.equal(plain, placed)


def test_gaussian_noise_takes_numpy_and_a_device(digits: Dataset) -> None:
    ref = gaussian_noise(20, digits.x_train, 1)
    from_np = gaussian_noise(20, digits.x_train.numpy(), 1, device=torch.device("cpu"))
    assert from_np.device == CPU and torch.equal(ref, from_np)
    wide = gaussian_noise(20, digits.x_train.double().numpy(), 1)
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide.float(), ref, atol=1e-5, rtol=0)


def test_as_model_input_moves_and_casts_only_when_needed(small: nn.Module,
                                                         digits: Dataset) -> None:
    x = digits.x_test[:5]
    assert as_model_input(small, x) is x  # float32 on the model's device: untouched
    cast = as_model_input(small, x.double().numpy())
    assert cast.dtype == torch.float32 and cast.device == model_device(small)
    assert torch.equal(cast, x)
    assert as_model_input(nn.Identity(), x.double()).dtype == torch.float64  # no parameters
    with pytest.raises(DataError, match="x is a list"):
        as_model_input(small, [[0.0]])


def test_model_metrics_accept_float64_numpy_data(small: nn.Module, digits: Dataset) -> None:
    x, x64 = digits.x_test[:200], digits.x_test[:200].double().numpy()
    assert torch.equal(predict_proba(small, x), predict_proba(small, x64))
    assert predict_logits(small, x64).device == CPU
    u = uniform_noise(100, digits.input_shape, digits.bounds, 0)
    u64 = u.double().numpy()
    assert offmanifold_confidence(small, u64) == offmanifold_confidence(small, u)
    assert alpha_star(small, u64) == alpha_star(small, u)
    assert ray_confidence(small, x64) == ray_confidence(small, x)
    assert offmanifold_auroc(small, x64, u64) == offmanifold_auroc(small, x, u)
    assert logit_norm(small, x64) == logit_norm(small, x)
    assert temperature(small, digits.x_val.double().numpy(), digits.y_val.numpy()) == \
        temperature(small, digits.x_val, digits.y_val)


def test_mutual_information_accepts_numpy(small: nn.Module, digits: Dataset) -> None:
    kw: dict[str, Any] = {"n_examples": 20, "n_augment": 4, "bounds": digits.bounds, "seed": 0}
    ref = mutual_information(small, digits.x_train, digits.y_train, **kw)
    same = mutual_information(small, digits.x_train.numpy(), digits.y_train.numpy(), **kw)
    assert same == ref  # float32 numpy: the very same computation
    wide = mutual_information(small, digits.x_train.double().numpy(),
                              digits.y_train.numpy(), **kw)
    assert 0.0 <= wide <= math.log(20)  # float64 noise draws differ from float32 ones


def test_augment_keeps_the_device_and_dtype_of_x() -> None:
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)
        out = augment(x, torch.Generator().manual_seed(1), (0.0, 1.0))
        assert out.device == x.device and out.dtype == dtype and out.shape == x.shape


def test_disturb_labels_returns_both_vectors_on_the_labels_device() -> None:
    y = torch.arange(30) % 4
    for mode in ("any", "other"):
        y_new, redrawn = disturb_labels(y, 4, 0.5, torch.Generator().manual_seed(0), mode=mode)
        assert y_new.device == y.device and redrawn.device == y.device


def test_temperature_scaled_keeps_its_buffer_with_the_model() -> None:
    assert TemperatureScaled(nn.Linear(2, 2), 2.0).temperature.device == CPU
    assert TemperatureScaled(nn.Identity(), 2.0).temperature.device == CPU


def test_run_checks_accepts_float64_numpy(small: nn.Module, digits: Dataset) -> None:
    groups = [[EvasionThreat(eps=0.1, bounds=digits.bounds)]]
    settings = {"enabled": ["gradient_norms"], "n_probe": 40}
    ref = run_sanity(small, digits.x_test, digits.y_test, groups=groups, settings=settings)
    got = run_sanity(small, digits.x_test.double().numpy(), digits.y_test.numpy(),
                     groups=groups, settings=settings)
    assert [o.to_dict() for o in got] == [o.to_dict() for o in ref]


def test_label_flip_module_surrogate_accepts_float64_numpy(digits: Dataset) -> None:
    x, y = digits.x_train[:200], digits.y_train[:200]
    sur = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    attack = LabelFlip(PoisonThreat(rate=0.1, strategy="margin"), surrogate=sur, epochs=2)
    ref = attack(x, y, n_classes=10, seed=0)
    got = attack(x.double().numpy(), y.numpy(), n_classes=10, seed=0)
    assert got.n_flipped == 20 and got.y_poisoned.device == CPU
    assert torch.equal(got.y_poisoned, ref.y_poisoned)
    assert model_device(sur) == CPU  # the caller's module is left alone


def test_confident_learning_accepts_float64_numpy(digits: Dataset) -> None:
    x, y = digits.x_train[:150], digits.y_train[:150]
    kw: dict[str, Any] = {"n_classes": 10, "cv": 2, "epochs": 2, "seed": 0}
    ref = confident_learning_issues(x, y, **kw)
    got = confident_learning_issues(x.double().numpy(), y.numpy(), **kw)
    assert torch.equal(got.issues, ref.issues)


def test_building_from_a_factory_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    build_model("torch.nn:Linear", (4,), 3, seed=1, in_features=4, out_features=3)
    assert torch.equal(state, torch.get_rng_state())
    a = build_model("torch.nn:Linear", (4,), 3, seed=1, in_features=4, out_features=3)
    b = build_model("torch.nn:Linear", (4,), 3, seed=1, in_features=4, out_features=3)
    assert torch.equal(a.weight, b.weight)


def test_pretrained_refuses_an_unknown_device(tmp_path: Any) -> None:
    from poisonlab.harness.pretrained import evaluate_pretrained

    with pytest.raises(ConfigError, match="device='tpu' is not allowed"):
        evaluate_pretrained("mlp", tmp_path / "w.pt", "digits", tmp_path / "out",
                            device="tpu")


# --------------------------------------------------------------------------- CUDA: metrics


def _close(a: float, b: float, tol: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


@needs_cuda
@pytest.mark.parametrize("data_device", DEVICES)
def test_metrics_on_a_cuda_model(small: nn.Module, digits: Dataset, data_device: str) -> None:
    gpu = _on(small, CUDA)
    dev = torch.device(data_device)
    x_cpu = digits.x_test[:300]
    x = x_cpu.to(dev)

    probs = predict_proba(gpu, x)
    assert probs.device == CPU  # predictions always come back to the CPU
    torch.testing.assert_close(probs, predict_proba(small, x_cpu), atol=1e-5, rtol=1e-4)

    # random draws: identical, only moved
    u_cpu = uniform_noise(200, digits.input_shape, digits.bounds, 7)
    u = uniform_noise(200, digits.input_shape, digits.bounds, 7, device=dev)
    assert u.device.type == data_device and torch.equal(u.cpu(), u_cpu)
    g_cpu = gaussian_noise(100, digits.x_train, 3)
    g = gaussian_noise(100, digits.x_train.to(dev), 3)
    assert g.device.type == data_device and torch.equal(g.cpu(), g_cpu)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    aug = augment(x, gen_a, digits.bounds)
    assert aug.device.type == data_device
    torch.testing.assert_close(aug.cpu(), augment(x_cpu, gen_b, digits.bounds),
                               atol=1e-6, rtol=0)

    # floating point on the GPU: close to the CPU's numbers
    assert _close(offmanifold_confidence(gpu, u), offmanifold_confidence(small, u_cpu), 1e-4)
    rays_cpu = ray_confidence(small, x_cpu)
    for a, v in ray_confidence(gpu, x).items():
        assert _close(v, rays_cpu[a], 1e-4)
    star, star_cpu = alpha_star(gpu, u), alpha_star(small, u_cpu)
    step = ALPHA_GRID[1] / ALPHA_GRID[0]
    assert star_cpu / step * (1 - 1e-9) <= star <= star_cpu * step * (1 + 1e-9)
    assert _close(offmanifold_auroc(gpu, x, u), offmanifold_auroc(small, x_cpu, u_cpu), 5e-3)
    t_gpu = temperature(gpu, digits.x_val.to(dev), digits.y_val.to(dev))
    assert t_gpu == pytest.approx(temperature(small, digits.x_val, digits.y_val), rel=1e-3)
    assert logit_norm(gpu, x) == pytest.approx(logit_norm(small, x_cpu), rel=1e-4)
    assert weight_norm(gpu) == pytest.approx(weight_norm(small), rel=1e-6)
    kw: dict[str, Any] = {"n_examples": 40, "n_augment": 8, "bounds": digits.bounds, "seed": 0}
    mi = mutual_information(gpu, digits.x_train.to(dev), digits.y_train.to(dev), **kw)
    assert mi == pytest.approx(mutual_information(small, digits.x_train, digits.y_train, **kw),
                               abs=1e-3)
    # calibration metrics take CUDA tensors too (and compute on the CPU)
    y_cpu = digits.y_test[:300]
    assert ece(probs.to(dev), y_cpu.to(dev)) == ece(probs, y_cpu)
    assert reliability(probs.to(dev), y_cpu.to(dev)) == reliability(probs, y_cpu)


@needs_cuda
def test_init_parameters_gives_the_same_weights_on_cuda(digits: Dataset) -> None:
    cpu = _mlp(digits)
    gpu = _on(cpu, CUDA)
    init_parameters(cpu, torch.Generator().manual_seed(5))
    init_parameters(gpu, torch.Generator().manual_seed(5))
    assert model_device(gpu).type == "cuda"
    for a, b in zip(cpu.parameters(), gpu.parameters(), strict=True):
        assert torch.equal(a, b.cpu())


@needs_cuda
def test_building_from_a_factory_leaves_the_cuda_rng_alone() -> None:
    torch.cuda.init()
    state = torch.cuda.get_rng_state()
    build_model("torch.nn:Linear", (4,), 3, seed=1, in_features=4, out_features=3)
    assert torch.equal(state, torch.cuda.get_rng_state())


# --------------------------------------------------------------------------- CUDA: defenses


@needs_cuda
@pytest.mark.parametrize("mode", ["any", "other"])
@pytest.mark.parametrize("resample", ["batch", "epoch", "once"])
def test_flip_augment_relabels_the_same_labels_on_cuda(digits: Dataset, mode: str,
                                                       resample: str) -> None:
    d = FlipAugment(alpha=0.3, mode=mode, resample=resample)
    x, y = digits.x_train, digits.y_train

    def relabel(device: torch.device) -> torch.Tensor:
        g = torch.Generator().manual_seed(11)
        xd, yd = x.to(device), y.to(device)
        if resample == "once":
            return d.prepare(xd, yd, n_classes=10, generator=g)[1]
        if resample == "epoch":
            return d.epoch_labels(yd, n_classes=10, generator=g)
        return d.transform_labels(yd, n_classes=10, generator=g)

    on_gpu = relabel(CUDA)
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), relabel(CPU))
    y_new, redrawn = disturb_labels(y.to(CUDA), 10, 0.3, torch.Generator().manual_seed(2),
                                    mode=mode)
    ref_new, ref_redrawn = disturb_labels(y, 10, 0.3, torch.Generator().manual_seed(2),
                                          mode=mode)
    assert redrawn.device.type == "cuda"
    assert torch.equal(y_new.cpu(), ref_new) and torch.equal(redrawn.cpu(), ref_redrawn)


DEFENSES: list[tuple[str, dict[str, Any], str]] = [
    ("none", {}, "cpu"),
    ("flip_augment", {"alpha": 0.2}, "cpu"),
    ("flip_augment", {"alpha": 0.2, "mode": "other", "resample": "epoch"}, "cpu"),
    ("flip_augment", {"alpha": 0.2, "resample": "once"}, "cuda"),
    ("label_smoothing", {"eps": 0.1}, "cpu"),
    ("confidence_penalty", {"beta": 1.0}, "cpu"),
    ("gce", {}, "cpu"),
    ("sce", {}, "cpu"),
    ("bootstrap", {"mode": "soft"}, "cpu"),
    ("bootstrap", {"mode": "hard"}, "cpu"),
    ("knn_sanitize", {"k": 5}, "cpu"),
    ("knn_sanitize", {"k": 5, "action": "drop"}, "cuda"),
    ("confident_learning", {"cv": 2, "epochs": 3}, "cpu"),
    ("confident_learning", {"cv": 2, "epochs": 3}, "cuda"),
    ("fgsm_at", {"eps": 0.1}, "cpu"),
    ("pgd_at", {"eps": 0.1, "steps": 2}, "cpu"),
    ("trades", {"eps": 0.1, "steps": 2}, "cpu"),
    ("temperature_scaling", {}, "cpu"),
    ("distillation", {"T": 4.0, "alpha": 0.5}, "cpu"),
    ("compose", {"defenses": ["knn_sanitize", {"name": "label_smoothing", "eps": 0.1},
                              "temperature_scaling"]}, "cuda"),
]


@needs_cuda
@pytest.mark.parametrize(("name", "params", "data_device"), DEFENSES,
                         ids=[f"{n}-{i}-{d}" for i, (n, _, d) in enumerate(DEFENSES)])
def test_each_defense_trains_a_cuda_model(digits: Dataset, other: nn.Module, name: str,
                                          params: dict[str, Any], data_device: str) -> None:
    if name == "distillation":
        params = {**params, "teacher": other}  # a teacher that lives on the CPU
    defense = get_defense(name, **params)
    x, y = digits.x_train[:N_TRAIN], digits.y_train[:N_TRAIN]
    dev = torch.device(data_device)
    kw: dict[str, Any] = {"epochs": 3, "seed": 0, "bounds": digits.bounds}

    cpu = train(_mlp(digits), x, y, defense=defense, x_val=digits.x_val, y_val=digits.y_val,
                **kw)
    gpu = train(_mlp(digits).to(CUDA), x.to(dev), y.to(dev), defense=defense,
                x_val=digits.x_val.to(dev), y_val=digits.y_val.to(dev), **kw)
    assert model_device(gpu).type == "cuda"
    if name == "distillation":
        assert model_device(other) == CPU  # the teacher was not moved
    for m in (cpu, gpu):
        if isinstance(m, TemperatureScaled):
            assert m.temperature.device == model_device(m)
    if isinstance(cpu, TemperatureScaled):
        assert isinstance(gpu, TemperatureScaled)
        assert float(gpu.temperature) == pytest.approx(float(cpu.temperature), rel=0.05)
    acc_cpu = float((predict_proba(cpu, digits.x_test).argmax(1) == digits.y_test).float().mean())
    acc_gpu = float((predict_proba(gpu, digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert abs(acc_cpu - acc_gpu) <= 0.08, (acc_cpu, acc_gpu)


@needs_cuda
def test_adversarial_crafting_moves_cpu_inputs_to_the_model(digits: Dataset,
                                                           small: nn.Module) -> None:
    gpu = _on(small, CUDA)
    for name in ("fgsm_at", "pgd_at", "trades"):
        d = get_defense(name, eps=0.1, **({} if name == "fgsm_at" else {"steps": 2}))
        x_adv = d.craft(gpu, digits.x_test[:16], digits.y_test[:16],
                        generator=torch.Generator().manual_seed(0), bounds=digits.bounds)
        assert x_adv.device.type == "cuda"
        assert float((x_adv.cpu() - digits.x_test[:16]).abs().max()) <= 0.1 + 1e-6


# --------------------------------------------------------------------------- CUDA: attacks


@needs_cuda
@pytest.mark.parametrize("surrogate_device", DEVICES)
@pytest.mark.parametrize("data_device", DEVICES)
def test_transfer_on_a_cuda_target(small: nn.Module, other: nn.Module, digits: Dataset,
                                   surrogate_device: str, data_device: str) -> None:
    sur = other if surrogate_device == "cpu" else _on(other, CUDA)
    threat = EvasionThreat(eps=0.1, bounds=digits.bounds)
    x, y = digits.x_test[:100], digits.y_test[:100]
    ref = Transfer(PGD(steps=10), surrogate=other)(small, x, y, threat=threat, seed=0)
    got = Transfer(PGD(steps=10), surrogate=sur)(
        _on(small, CUDA), x.to(data_device), y.to(data_device), threat=threat, seed=0)
    assert got.x_adv.device.type == "cuda" and got.success.device.type == "cuda"
    assert model_device(sur).type == surrogate_device  # the surrogate was not moved
    assert float((got.x_adv.cpu() - x).abs().max()) <= 0.1 + 1e-6
    assert abs(got.attack_success_rate - ref.attack_success_rate) <= 0.1


STRATEGIES: list[dict[str, Any]] = [
    {"strategy": "random"},
    {"strategy": "random", "max_per_class": 0.3},
    {"strategy": "pairwise", "source": 3, "target": 8},
    {"strategy": "noise_matrix",
     "noise_matrix": [[0.9 if i == j else 0.1 / 9 for j in range(10)] for i in range(10)]},
    {"strategy": "margin"},
    {"strategy": "adversarial"},
]


@needs_cuda
@pytest.mark.parametrize("spec", STRATEGIES, ids=[s["strategy"] for s in STRATEGIES])
def test_label_flips_take_cuda_tensors_and_flip_the_same_labels(digits: Dataset,
                                                                spec: dict[str, Any]) -> None:
    x, y = digits.x_train[:300], digits.y_train[:300]
    xv, yv = digits.x_val, digits.y_val
    attack = LabelFlip(PoisonThreat(rate=0.05, **spec), batch_size=8)
    ref = attack(x, y, n_classes=10, seed=3, x_val=xv, y_val=yv)
    got = attack(x.to(CUDA), y.to(CUDA), n_classes=10, seed=3, x_val=xv.to(CUDA),
                 y_val=yv.to(CUDA))
    assert got.y_poisoned.device.type == "cuda" and got.flipped.device.type == "cuda"
    assert torch.equal(got.y_poisoned.cpu(), ref.y_poisoned)  # computed on the CPU
    assert torch.equal(got.flip_counts, ref.flip_counts)


@needs_cuda
@pytest.mark.parametrize("strategy", ["margin", "adversarial"])
def test_label_flips_with_a_cuda_module_surrogate(digits: Dataset, strategy: str) -> None:
    x, y = digits.x_train[:200], digits.y_train[:200]
    sur = build_model("logistic", digits.input_shape, 10, seed=0).to(CUDA)
    attack = LabelFlip(PoisonThreat(rate=0.05, strategy=strategy), surrogate=sur, epochs=2,
                       refit_epochs=1, batch_size=5, cg_steps=5)
    for data in (CPU, CUDA):
        got = attack(x.to(data), y.to(data), n_classes=10, seed=0)
        assert got.n_flipped == 10 and got.y_poisoned.device == y.to(data).device
    assert model_device(sur).type == "cuda"


ADAPTERS: list[tuple[str, dict[str, Any]]] = [
    ("foolbox:LinfPGD", {"steps": 10, "rel_stepsize": 0.2}),
    ("foolbox:FGSM", {}),
    ("art:ProjectedGradientDescent", {"max_iter": 10, "eps_step": 0.02}),
    ("art:FastGradientMethod", {}),
    ("square", {"max_iter": 50}),
]


@needs_cuda
@pytest.mark.parametrize(("name", "params"), ADAPTERS, ids=[a for a, _ in ADAPTERS])
def test_library_adapters_attack_a_cuda_model(small: nn.Module, digits: Dataset, name: str,
                                              params: dict[str, Any]) -> None:
    threat = EvasionThreat(eps=0.1, bounds=digits.bounds)
    x, y = digits.x_test[:100], digits.y_test[:100]
    attack = get_attack(name, **params)
    ref = attack(small, x, y, threat=threat, seed=0)
    torch.cuda.init()
    cuda_rng, cpu_rng = torch.cuda.get_rng_state(), torch.get_rng_state()
    got = attack(_on(small, CUDA), x, y, threat=threat, seed=0)
    assert torch.equal(cuda_rng, torch.cuda.get_rng_state())  # global RNGs restored
    assert torch.equal(cpu_rng, torch.get_rng_state())
    assert got.x_adv.device.type == "cuda"
    assert float((got.x_adv.cpu() - x).abs().max()) <= 0.1 + 1e-6
    assert abs(got.attack_success_rate - ref.attack_success_rate) <= 0.15


# --------------------------------------------------------------------------- CUDA: checks


@needs_cuda
@pytest.mark.parametrize("data_device", DEVICES)
def test_run_checks_on_a_cuda_model(small: nn.Module, other: nn.Module, digits: Dataset,
                                    data_device: str) -> None:
    threats = [EvasionThreat(eps=e, bounds=digits.bounds) for e in (0.05, 0.1, 0.2)]
    settings = SanitySettings(n_probe=60, steps=5)
    x_cpu, y_cpu = digits.x_test[:200], digits.y_test[:200]
    x, y = x_cpu.to(data_device), y_cpu.to(data_device)
    gpu = _on(small, CUDA)

    def suite_runs(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> list[SuiteAttack]:
        out = []
        for label, attack in (("fgsm", FGSM()),
                              ("transfer", Transfer(PGD(steps=5), surrogate=other))):
            for r in security_curve(attack, model, xs, ys, threats=threats, seed=1):
                out.append(SuiteAttack(label, attack.knowledge, r))
        return out

    def checks(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> list[Any]:
        return run_sanity(model, xs, ys, groups=[threats], settings=settings, seed=4,
                          suite_results=suite_runs(model, xs, ys), surrogate=lambda: other)

    ref, got = checks(small, x_cpu, y_cpu), checks(gpu, x, y)
    assert [o.check for o in got] == [o.check for o in ref]
    for o_gpu, o_cpu in zip(got, ref, strict=True):
        assert not o_gpu.message.startswith("could not run"), o_gpu.message
        assert (o_gpu.status is Status.SKIPPED) == (o_cpu.status is Status.SKIPPED)
    # the probe points are drawn on the CPU: the same points wherever the model runs
    same_pred = torch.equal(predict_proba(gpu, x).argmax(1), predict_proba(small, x_cpu).argmax(1))
    if same_pred:
        p_gpu = Probes(gpu, x, y, groups=[threats], settings=settings, seed=4)
        p_cpu = Probes(small, x_cpu, y_cpu, groups=[threats], settings=settings, seed=4)
        assert torch.equal(p_gpu.idx, p_cpu.idx)
        assert p_gpu.x.device.type == data_device
        np.testing.assert_allclose(p_gpu.grad_norms(), p_cpu.grad_norms(), rtol=1e-2,
                                   atol=1e-5)


# --------------------------------------------------------------------------- CUDA: pretrained


@needs_cuda
def test_evaluate_pretrained_on_cuda(tmp_path: Any, digits: Dataset) -> None:
    from poisonlab.harness.pretrained import evaluate_pretrained

    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
    train(model, digits.x_train, digits.y_train, epochs=2, seed=0)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    kw: dict[str, Any] = {"eps": [0.1], "attacks": ["fgsm"], "n_noise": 50, "report": False}
    docs = {d: evaluate_pretrained("mlp", tmp_path / "w.pt", "digits", tmp_path / d,
                                   device=d, **kw) for d in DEVICES}
    cell_cpu, cell_gpu = docs["cpu"]["cells"][0], docs["cuda"]["cells"][0]
    assert cell_gpu["device"] == "cuda" and cell_cpu["device"] == "cpu"
    step = ALPHA_GRID[1] / ALPHA_GRID[0]
    for a, b in zip(cell_cpu["metrics"], cell_gpu["metrics"], strict=True):
        assert (a["metric"], a["threat"], a["attack"]) == (b["metric"], b["threat"],
                                                           b["attack"])
        if a["metric"] == "alpha_star":  # a grid value: at most one grid step apart
            assert a["value"] / step * (1 - 1e-9) <= b["value"] <= a["value"] * step * 1.0001
        else:
            assert _close(a["value"], b["value"], 0.05 + 1e-3 * abs(a["value"])), (a, b)

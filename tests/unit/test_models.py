"""Model architectures: shapes, seeded initialisation, RNG hygiene, eval_mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonlab import ConfigError, UnknownNameError, build_model, eval_mode

IMAGE = (1, 8, 8)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("logistic", IMAGE),
        ("logistic", (2,)),
        ("mlp", IMAGE),
        ("mlp", (2,)),
        ("cnn", IMAGE),
        ("cnn", (3, 12, 16)),
    ],
)
@pytest.mark.parametrize("k", [2, 10])
def test_output_shape_is_batch_by_classes(name: str, shape: tuple[int, ...], k: int) -> None:
    model = build_model(name, shape, k, seed=0)
    x = torch.rand((5, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (5, k)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
def test_same_seed_gives_identical_weights(name: str) -> None:
    a = build_model(name, IMAGE, 10, seed=3).state_dict()
    b = build_model(name, IMAGE, 10, seed=3).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
def test_different_seeds_give_different_weights(name: str) -> None:
    a = build_model(name, IMAGE, 10, seed=0).state_dict()
    b = build_model(name, IMAGE, 10, seed=1).state_dict()
    for key in a:
        assert not torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
def test_building_does_not_touch_the_global_rng(name: str) -> None:
    state = torch.random.get_rng_state()
    build_model(name, IMAGE, 10, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())


def test_global_seed_does_not_influence_initialisation() -> None:
    torch.manual_seed(123)
    a = build_model("mlp", IMAGE, 10, seed=0).state_dict()
    torch.manual_seed(456)
    b = build_model("mlp", IMAGE, 10, seed=0).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
def test_initialisation_follows_torch_default_bounds(name: str) -> None:
    # Kaiming-uniform(a=sqrt 5) weights and biases both lie in +-1/sqrt(fan_in).
    model = build_model(name, IMAGE, 10, seed=0)
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            bound = 1 / module.weight[0].numel() ** 0.5
            assert float(module.weight.detach().abs().max()) <= bound + 1e-7
            assert float(module.bias.detach().abs().max()) <= bound + 1e-7
            assert float(module.weight.detach().std()) > 0.3 * bound


def test_built_model_is_on_cpu_in_eval_mode() -> None:
    model = build_model("mlp", IMAGE, 10, seed=0)
    assert not any(m.training for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_mlp_hidden_widths() -> None:
    model = build_model("mlp", (2,), 3, seed=0, hidden=(7, 5, 4))
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [7, 5, 4, 3]


@pytest.mark.parametrize("shape", [(2,), (64,), (1, 64)])
def test_cnn_on_a_non_image_input_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=r"model 'cnn' got input_shape=.*expected an image shape"):
        build_model("cnn", shape, 10, seed=0)


def test_cnn_on_a_too_small_image_raises() -> None:
    with pytest.raises(ConfigError, match=r"H, W >= 4"):
        build_model("cnn", (1, 3, 8), 10, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"hiden": (4,)}, r"model 'mlp' got unknown parameter 'hiden'.*did you mean 'hidden'"),
        ({"hidden": (0,)}, r"hidden=0 is not allowed"),
    ],
)
def test_bad_architecture_parameters_raise(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_model("mlp", IMAGE, 10, seed=0, **kwargs)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("mlp", IMAGE, 1), r"n_classes=1 is not allowed"),
        (("mlp", (), 10), r"input_shape=\(\) is not allowed"),
        (("mlp", (0, 8), 10), r"input_shape=0 is not allowed"),
    ],
)
def test_bad_shapes_raise(args: tuple[object, ...], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_model(*args, seed=0)  # type: ignore[arg-type]


def test_bad_seed_raises() -> None:
    with pytest.raises(ConfigError, match=r"seed=-1 is not allowed"):
        build_model("mlp", IMAGE, 10, seed=-1)


def test_unknown_architecture_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match=r"model='mpl'.*did you mean 'mlp'"):
        build_model("mpl", IMAGE, 10)


def _mixed_mode_model() -> nn.Module:
    inner = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), inner)
    model.train()
    model[1].eval()
    model[2][1].eval()
    return model


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_mode_sets_eval_inside_and_restores_each_submodule_after() -> None:
    model = _mixed_mode_model()
    before = _modes(model)
    assert len(set(before)) == 2  # really mixed
    with eval_mode(model) as m:
        assert m is model
        assert not any(_modes(model))
    assert _modes(model) == before


def test_eval_mode_restores_modes_when_the_block_raises() -> None:
    model = _mixed_mode_model()
    before = _modes(model)
    with pytest.raises(KeyError, match="boom"), eval_mode(model):
        raise KeyError("boom")
    assert _modes(model) == before


def test_train_mode_warns_only_where_the_mode_could_matter():
    import warnings

    from poisonlab import FGSM, EvasionThreat, train
    from poisonlab.errors import EvaluationWarning

    x = torch.rand(12, 4)
    y = torch.arange(12) % 3
    threat = EvasionThreat(eps=0.1)
    dropout = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    with pytest.warns(EvaluationWarning, match="train mode with Dropout"):
        res = FGSM()(dropout, x, y, threat=threat)
    assert dropout.training and all(m.training for m in dropout.modules())  # restored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # no mode-dependent layer: its mode changes nothing, no warning
        FGSM()(nn.Sequential(nn.Linear(4, 3)).train(), x, y, threat=threat)
        # in eval mode: no warning, and the same adversarial inputs as in train mode
        again = FGSM()(dropout.eval(), x, y, threat=threat)
        # train() wants train mode: no warning
        train(dropout.train(), x, y, epochs=1)
    assert torch.equal(res.x_adv, again.x_adv)

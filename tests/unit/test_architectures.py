"""ResNet-18, PreAct-ResNet-18 and WideResNet: the RobustBench state_dict layout, seeded
initialisation, any channel count and input size, normalisation inside the model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab import ConfigError, build_model
from poisonlab.models import load_weights, models

# ----------------------------------------------------------------------------------------
# An independent reference: RobustBench's definitions transcribed in plain torch, their
# names and their forward passes (robustbench/model_zoo/architectures/resnet.py and
# wide_resnet.py), the fixed avg_pool2d(4) / avg_pool2d(8) included (32x32 inputs only).


class RefBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride,
                          bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class RefPreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride,
                          bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(x) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out += shortcut
        return out


class RefResNet(nn.Module):
    """RobustBench ``ResNet`` (with ``RefBasicBlock``) and ``PreActResNet`` in one: the
    pre-activation variant has no stem BatchNorm (``bn_before_fc=False``)."""

    def __init__(self, block: Any, num_blocks: list[int], num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.preact = block is RefPreActBlock
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if not self.preact:
            self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: Any, planes: int, num_blocks: int, stride: int
                    ) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x) if self.preact else F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class RefWideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int,
                 dropRate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class RefNetworkBlock(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            RefWideBasicBlock(in_planes if i == 0 else out_planes, out_planes,
                              stride if i == 0 else 1) for i in range(nb_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class RefWideResNet(nn.Module):
    def __init__(self, depth: int = 28, num_classes: int = 10, widen_factor: int = 10,
                 sub_block1: bool = False) -> None:
        super().__init__()
        n_channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, n_channels[0], kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.block1 = RefNetworkBlock(n, n_channels[0], n_channels[1], 1)
        if sub_block1:
            self.sub_block1 = RefNetworkBlock(n, n_channels[0], n_channels[1], 1)
        self.block2 = RefNetworkBlock(n, n_channels[1], n_channels[2], 2)
        self.block3 = RefNetworkBlock(n, n_channels[2], n_channels[3], 2)
        self.bn1 = nn.BatchNorm2d(n_channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(n_channels[3], num_classes)
        self.nChannels = n_channels[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.nChannels))


# ----------------------------------------------------------------------------------------

CIFAR = (3, 32, 32)
SMALL = (3, 8, 8)
TINY_WRN = {"depth": 10, "widen_factor": 2}
# (name, params, reference factory): full RobustBench sizes, built on the meta device.
LAYOUTS = [
    ("resnet18", {}, lambda: RefResNet(RefBasicBlock, [2, 2, 2, 2])),
    ("preact_resnet18", {}, lambda: RefResNet(RefPreActBlock, [2, 2, 2, 2])),
    ("wide_resnet", {}, lambda: RefWideResNet(28, 10, 10)),
    ("wide_resnet", {"depth": 34}, lambda: RefWideResNet(34, 10, 10)),
    ("wide_resnet", {"depth": 34, "sub_block1": True},
     lambda: RefWideResNet(34, 10, 10, sub_block1=True)),
    ("wide_resnet", {"depth": 16, "widen_factor": 4}, lambda: RefWideResNet(16, 10, 4)),
]
# (name, params): small enough to build for real and run in a unit test.
CHEAP = [("preact_resnet18", {}), ("resnet18", {}), ("wide_resnet", TINY_WRN)]


def meta_build(name: str, shape: tuple[int, ...] = CIFAR, k: int = 10,
               **params: Any) -> nn.Module:
    with torch.device("meta"):
        return models.get(name)(input_shape=shape, n_classes=k, **params)


def layout(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(v.shape) for key, v in model.state_dict().items()}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "params", "reference"), LAYOUTS)
def test_state_dict_layout_is_robustbench(name: str, params: dict[str, Any],
                                          reference: Any) -> None:
    with torch.device("meta"):
        ref = reference()
    assert layout(meta_build(name, **params)) == layout(ref)


@pytest.mark.parametrize(("name", "params", "count"), [
    ("resnet18", {}, 11_173_962),
    ("preact_resnet18", {}, 11_171_146),
    ("wide_resnet", {}, 36_479_194),
    ("wide_resnet", {"depth": 34}, 46_160_474),
])
def test_parameter_counts_for_cifar10(name: str, params: dict[str, Any], count: int) -> None:
    assert n_params(meta_build(name, **params)) == count


def test_wide_resnet_defaults_are_wrn_28_10() -> None:
    assert layout(meta_build("wide_resnet")) == layout(
        meta_build("wide_resnet", depth=28, widen_factor=10))


def randomise_(model: nn.Module, seed: int) -> nn.Module:
    """Draw every parameter and BatchNorm statistic, so that a miswired layer shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g)
                                    * math.sqrt(2 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                module.bias.copy_(0.2 * torch.randn(c, generator=g))
                module.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                module.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model.eval()


@pytest.mark.parametrize(("name", "params", "reference"), [
    ("resnet18", {}, lambda: RefResNet(RefBasicBlock, [2, 2, 2, 2])),
    ("preact_resnet18", {}, lambda: RefResNet(RefPreActBlock, [2, 2, 2, 2])),
    ("wide_resnet", TINY_WRN, lambda: RefWideResNet(10, 10, 2)),
    ("wide_resnet", {"depth": 16, "widen_factor": 1, "sub_block1": True},
     lambda: RefWideResNet(16, 10, 1, sub_block1=True)),
])
def test_reference_weights_load_strict_and_give_the_same_logits(
        name: str, params: dict[str, Any], reference: Any, tmp_path: Path) -> None:
    with torch.device("meta"):
        ref = reference()
    ref = randomise_(ref.to_empty(device="cpu"), seed=0)
    path = tmp_path / "ref.pt"
    torch.save(ref.state_dict(), path)
    ours = build_model(name, CIFAR, 10, seed=1, weights=path, **params)  # strict=True
    x = torch.rand((2, *CIFAR), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (2, 10)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "params"), CHEAP)
def test_same_seed_same_weights_other_seed_other_weights(name: str,
                                                         params: dict[str, Any]) -> None:
    a = build_model(name, SMALL, 10, seed=3, **params).state_dict()
    b = build_model(name, SMALL, 10, seed=3, **params).state_dict()
    c = build_model(name, SMALL, 10, seed=4, **params).state_dict()
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    drawn = [key for key in a if key.endswith("weight") and a[key].dim() > 1]
    assert drawn and all(not torch.equal(a[key], c[key]) for key in drawn)


@pytest.mark.parametrize(("name", "params"), CHEAP)
def test_batchnorm_starts_at_identity(name: str, params: dict[str, Any]) -> None:
    model = build_model(name, SMALL, 10, seed=0, **params)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
        assert int(bn.num_batches_tracked) == 0
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize(("name", "params"), CHEAP)
@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 28, 28)])
def test_forward_gives_logits_for_any_channels_and_size(name: str, params: dict[str, Any],
                                                        shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 4, seed=0, **params)
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 4) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "params"), CHEAP)
def test_gradients_flow_to_the_input(name: str, params: dict[str, Any]) -> None:
    model = build_model(name, SMALL, 4, seed=0, mean=[0.5] * 3, std=[0.25] * 3, **params)
    x = torch.rand((2, *SMALL), generator=torch.Generator().manual_seed(0), requires_grad=True)
    model(x).logsumexp(1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize(("name", "params"), CHEAP)
def test_mean_std_normalise_inside_without_changing_the_state_dict(
        name: str, params: dict[str, Any]) -> None:
    mean, std = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
    plain = build_model(name, SMALL, 4, seed=0, **params)
    normed = build_model(name, SMALL, 4, seed=0, mean=mean, std=std, **params)
    assert layout(plain) == layout(normed)
    for key, v in plain.state_dict().items():
        assert torch.equal(v, normed.state_dict()[key]), key
    x = torch.rand((2, *SMALL), generator=torch.Generator().manual_seed(0))
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normed(x), plain((x - m) / s))
    # The constants travel with the module (buffers), not with the weights file.
    assert torch.equal(normed.normalize.std.flatten(), torch.tensor(std))


def test_mean_alone_and_std_alone() -> None:
    x = torch.rand((2, *SMALL), generator=torch.Generator().manual_seed(0))
    plain = build_model("wide_resnet", SMALL, 4, seed=0, **TINY_WRN)
    shifted = build_model("wide_resnet", SMALL, 4, seed=0, mean=[0.5] * 3, **TINY_WRN)
    scaled = build_model("wide_resnet", SMALL, 4, seed=0, std=[2.0] * 3, **TINY_WRN)
    with torch.no_grad():
        torch.testing.assert_close(shifted(x), plain(x - 0.5))
        torch.testing.assert_close(scaled(x), plain(x / 2))


def test_weights_round_trip_into_a_normalised_model(tmp_path: Path) -> None:
    src = build_model("preact_resnet18", SMALL, 4, seed=5)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = load_weights(build_model("preact_resnet18", SMALL, 4, seed=6, mean=[0.0] * 3,
                                   std=[1.0] * 3), path)
    x = torch.rand((2, *SMALL), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_dropout_acts_in_training_only() -> None:
    model = build_model("wide_resnet", SMALL, 4, seed=0, drop_rate=0.5, **TINY_WRN)
    x = torch.rand((4, *SMALL), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        with torch.random.fork_rng():
            torch.manual_seed(0)  # test code: dropout draws from the global RNG
            a, b = model(x), model(x)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18", "wide_resnet"])
@pytest.mark.parametrize("shape", [(64,), (1, 28), (1, 3, 8, 8)])
def test_non_image_input_shape_raises(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=rf"model '{name}' got input_shape=.*expected an "
                                          r"image shape \(C, H, W\)"):
        build_model(name, shape, 10)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"depth": 30}, r"depth=30 is not allowed: expected 10, 16, 22, 28"),
    ({"depth": 4}, r"depth=4 is not allowed: expected a value in \[10, inf\)"),
    ({"depth": 28.5}, r"depth=28.5 is not allowed: expected an integer"),
    ({"widen_factor": 0}, r"widen_factor=0 is not allowed"),
    ({"drop_rate": 1.0}, r"drop_rate=1.0 is not allowed: expected a value in \[0, 1\)"),
    ({"sub_block1": 1}, r"sub_block1=1 is not allowed: expected true or false"),
    ({"mean": [0.5, 0.5]}, r"mean=\[0.5, 0.5\] is not allowed: expected 3 numbers, one per "
                           r"channel of input_shape=\(3, 8, 8\)"),
    ({"std": [0.5, 0.0, 0.5]}, r"std\[1\]=0.0 is not allowed: expected a value in \(0, inf\)"),
    ({"std": "0.5"}, r"std='0.5' is not allowed: expected a list of 3 numbers"),
    ({"mean": [0.5, float("nan"), 0.5]}, r"mean\[1\]=nan is not allowed"),
    ({"width": 2}, r"unknown parameter 'width'"),
])
def test_bad_wide_resnet_parameters_raise(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_model("wide_resnet", SMALL, 10, **kwargs)


def test_resnets_refuse_wide_resnet_parameters() -> None:
    with pytest.raises(ConfigError, match=r"model 'resnet18' got unknown parameter 'depth'"):
        build_model("resnet18", SMALL, 10, depth=34)
    with pytest.raises(ConfigError, match=r"mean=\[0.5\] is not allowed: expected 3 numbers"):
        build_model("preact_resnet18", SMALL, 10, mean=[0.5])


def test_building_does_not_touch_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    build_model("wide_resnet", SMALL, 10, seed=0, **TINY_WRN)
    assert torch.equal(state, torch.random.get_rng_state())


def test_listed_with_their_parameters() -> None:
    assert {"resnet18", "preact_resnet18", "wide_resnet"} <= set(models.names())
    assert "mean, std" in models.help("resnet18")
    assert "mean, std" in models.help("preact_resnet18")
    assert all(p in models.help("wide_resnet") for p in ("depth", "widen_factor", "mean"))


def suite_with(model: dict[str, Any]) -> dict[str, Any]:
    return {"name": "s", "version": 1, "datasets": [{"name": "blobs", "n_samples": 60}],
            "models": [model], "defenses": ["none"], "seeds": [0]}


def test_suite_validation_builds_with_per_channel_settings() -> None:
    from poisonlab.harness.suite import parse_suite

    entry = {"name": "wide_resnet", "depth": 10, "widen_factor": 1, "mean": [0.49, 0.48, 0.45],
             "std": [0.25, 0.24, 0.26]}
    assert parse_suite(suite_with(entry)).models[0].kwargs == {
        k: v for k, v in entry.items() if k != "name"}
    with pytest.raises(ConfigError, match=r"std\[0\]=-0.25 is not allowed"):
        parse_suite(suite_with({"name": "resnet18", "std": [-0.25, 0.25, 0.25]}))
    with pytest.raises(ConfigError, match=r"depth=12 is not allowed"):
        parse_suite(suite_with({"name": "wide_resnet", "depth": 12}))

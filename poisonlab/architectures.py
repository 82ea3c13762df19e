"""Residual networks for image inputs, with the RobustBench ``state_dict`` layout.

``resnet18`` (He et al. 2016), ``preact_resnet18`` (He et al. 2016, identity mappings) and
``wide_resnet`` (Zagoruyko & Komodakis 2016) as defined in the RobustBench model zoo
(``robustbench/model_zoo/architectures/resnet.py``: ``ResNet(BasicBlock, [2, 2, 2, 2])`` and
``PreActResNet18``; ``wide_resnet.py``: ``WideResNet``). They have CIFAR stems (a 3x3 first
convolution with stride 1, no max-pool), and every parameter and buffer is named and shaped
as there, so a published checkpoint loads with ``weights=`` (``strict=True``) once its
``state_dict`` is saved on its own (without the ``"module."`` prefix DataParallel adds).

Two departures, neither visible in the ``state_dict``: the first convolution takes the
input's C channels (RobustBench: 3), and the global average pooling adapts to the input size
(RobustBench pools a fixed 4x4 or 8x8 window, the same thing on 32x32 inputs), so 1x28x28
or 3x8x8 inputs work too.

Normalisation belongs to the model: ``mean`` and ``std`` (one number per input channel) put
``(x - mean) / std`` in front, held in non-persistent buffers, so the ``state_dict`` stays
that of the bare network. RobustBench's wrapper classes (e.g. ``Wong2020FastNet``) keep them
as persistent ``mu`` and ``sigma`` buffers: drop those two keys from such a ``state_dict``
and pass their values as ``mean`` and ``std``.

Built through :func:`~poisonlab.models.build_model`: on the meta device, then initialised
from the seed (convolutions and linear layers as PyTorch's defaults; BatchNorm weight 1,
bias 0, running mean 0 and variance 1), in eval mode.

>>> from poisonlab.models import build_model
>>> m = build_model("wide_resnet", (3, 8, 8), 10, depth=10, widen_factor=1, seed=0)
>>> m(torch.zeros(2, 3, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import validate_bool, validate_scalar
from .errors import ConfigError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, the constants held in non-persistent buffers.

    Parameters
    ----------
    mean, std : sequence of float
        One number per channel; ``std`` > 0 (checked by the builders).

    Shapes: (n, C, H, W) -> (n, C, H, W).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self._values = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        self.register_buffer("mean", torch.empty(1, len(mean), 1, 1), persistent=False)
        self.register_buffer("std", torch.empty(1, len(std), 1, 1), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """Refill the constants, e.g. after ``to_empty`` (see
        :func:`~poisonlab.models.init_parameters`); a no-op on the meta device."""
        with torch.no_grad():
            for buf, values in zip((self.mean, self.std), self._values, strict=True):
                if buf.device.type != "meta":
                    buf.copy_(torch.tensor(values, dtype=buf.dtype).view(buf.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={list(self._values[0])}, std={list(self._values[1])}"


def _conv3x3(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _pool(out: torch.Tensor) -> torch.Tensor:
    """Global average pooling to (n, channels), whatever the spatial size."""
    return F.adaptive_avg_pool2d(out, 1).flatten(1)


class BasicBlock(nn.Module):
    """ResNet's two-convolution block, post-activation (RobustBench ``resnet.BasicBlock``).

    Keys: ``conv1``, ``bn1``, ``conv2``, ``bn2``, and ``shortcut.0`` (1x1 conv) with
    ``shortcut.1`` (BatchNorm) where the stride or the width changes.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(_conv1x1(in_planes, planes, stride),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """The pre-activation block (RobustBench ``resnet.PreActBlock``): BN-ReLU-conv twice.

    Keys: ``bn1``, ``conv1``, ``bn2``, ``conv2``, and ``shortcut.0`` (1x1 conv, applied to
    the block's input as in RobustBench) where the stride or the width changes.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(_conv1x1(in_planes, planes, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


def _stage(block: type[BasicBlock | PreActBlock], in_planes: int, planes: int, n: int,
           stride: int) -> nn.Sequential:
    """``n`` blocks; the first one changes the width and applies the stride."""
    return nn.Sequential(*(block(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                           for i in range(n)))


class ResNet(nn.Module):
    """ResNet-18 (``BasicBlock``) or PreAct-ResNet-18 (``PreActBlock``), CIFAR stem.

    Paper: He, Zhang, Ren & Sun, "Deep residual learning for image recognition" (CVPR
    2016) and "Identity mappings in deep residual networks" (ECCV 2016). Keys as in
    RobustBench: ``conv1``, ``bn1`` (post-activation only), ``layer1`` .. ``layer4`` (two
    blocks each, widths 64, 128, 256, 512, strides 1, 2, 2, 2) and ``linear``.

    Shapes: (n, C, H, W) -> logits (n, n_classes).
    """

    def __init__(self, block: type[BasicBlock | PreActBlock], *, in_channels: int,
                 n_classes: int, normalize: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.conv1 = _conv3x3(in_channels, 64, 1)
        self.bn1 = nn.BatchNorm2d(64) if block is BasicBlock else None
        self.layer1 = _stage(block, 64, 64, 2, 1)
        self.layer2 = _stage(block, 64, 128, 2, 2)
        self.layer3 = _stage(block, 128, 256, 2, 2)
        self.layer4 = _stage(block, 256, 512, 2, 2)
        self.linear = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        if self.bn1 is not None:
            out = F.relu(self.bn1(out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(_pool(out))


class WideBlock(nn.Module):
    """The wide pre-activation block (RobustBench ``wide_resnet.BasicBlock``).

    Keys: ``bn1``, ``conv1``, ``bn2``, ``conv2``, and ``convShortcut`` (1x1 conv on the
    pre-activated input) where the width changes.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = _conv3x3(out_planes, out_planes, 1)
        self.drop_rate = drop_rate
        self.convShortcut = (None if in_planes == out_planes
                             else _conv1x1(in_planes, out_planes, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class NetworkBlock(nn.Module):
    """``n`` wide blocks under the key ``layer`` (RobustBench ``wide_resnet.NetworkBlock``)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int,
                 drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*(
            WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                      drop_rate) for i in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: three stages of (depth - 4) / 6 wide blocks (RobustBench ``WideResNet``).

    Paper: Zagoruyko & Komodakis, "Wide residual networks" (BMVC 2016). Keys: ``conv1``,
    ``block1`` .. ``block3`` (widths 16k, 32k, 64k, strides 1, 2, 2), ``sub_block1`` when
    asked for, ``bn1`` and ``fc``.

    Shapes: (n, C, H, W) -> logits (n, n_classes).
    """

    def __init__(self, *, in_channels: int, n_classes: int, depth: int, widen_factor: int,
                 drop_rate: float, sub_block1: bool, normalize: nn.Module) -> None:
        super().__init__()
        n = (depth - 4) // 6
        w1, w2, w3 = 16 * widen_factor, 32 * widen_factor, 64 * widen_factor
        self.normalize = normalize
        self.conv1 = _conv3x3(in_channels, 16, 1)
        self.block1 = NetworkBlock(n, 16, w1, 1, drop_rate)
        if sub_block1:  # held by some checkpoints, never used by forward
            self.sub_block1 = NetworkBlock(n, 16, w1, 1, drop_rate)
        self.block2 = NetworkBlock(n, w1, w2, 2, drop_rate)
        self.block3 = NetworkBlock(n, w2, w3, 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(w3)
        self.fc = nn.Linear(w3, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        return self.fc(_pool(F.relu(self.bn1(out))))


def _image_channels(name: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 3:
        raise ConfigError(f"model {name!r} got input_shape={input_shape}: expected an image "
                          "shape (C, H, W)")
    return input_shape[0]


def _per_channel(name: str, value: Any, shape: tuple[int, ...], *, positive: bool
                 ) -> tuple[float, ...]:
    c = shape[0]
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ConfigError(f"{name}={value!r} is not allowed: expected a list of {c} numbers, "
                          f"one per channel of input_shape={shape}")
    if len(value) != c:
        raise ConfigError(f"{name}={list(value)!r} is not allowed: expected {c} numbers, one "
                          f"per channel of input_shape={shape}")
    lo = 0.0 if positive else None
    return tuple(float(validate_scalar(f"{name}[{i}]", v, lo=lo, lo_closed=not positive))
                 for i, v in enumerate(value))


def input_normalization(shape: tuple[int, ...], mean: Any, std: Any) -> nn.Module:
    """A :class:`Normalize` for the given constants (the missing one: 0 or 1), or Identity;
    one number per channel of ``shape`` (a ConfigError naming the field otherwise)."""
    if mean is None and std is None:
        return nn.Identity()
    c = shape[0]
    m = (0.0,) * c if mean is None else _per_channel("mean", mean, shape, positive=False)
    s = (1.0,) * c if std is None else _per_channel("std", std, shape, positive=True)
    return Normalize(m, s)


def resnet18(*, input_shape: tuple[int, ...], n_classes: int,
              mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> nn.Module:
    c = _image_channels("resnet18", input_shape)
    return ResNet(BasicBlock, in_channels=c, n_classes=n_classes,
                  normalize=input_normalization(input_shape, mean, std))


def preact_resnet18(*, input_shape: tuple[int, ...], n_classes: int,
                     mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None) -> nn.Module:
    c = _image_channels("preact_resnet18", input_shape)
    return ResNet(PreActBlock, in_channels=c, n_classes=n_classes,
                  normalize=input_normalization(input_shape, mean, std))


def wide_resnet(*, input_shape: tuple[int, ...], n_classes: int, depth: int = 28,
                 widen_factor: int = 10, drop_rate: float = 0.0, sub_block1: bool = False,
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> nn.Module:
    """WRN-``depth``-``widen_factor``.

    Parameters
    ----------
    depth : int >= 10 with (depth - 4) divisible by 6
        10, 16, 22, 28 (default), 34, 40, 70, ...: (depth - 4) / 6 blocks per stage.
    widen_factor : int >= 1
        Stage widths 16k, 32k, 64k (default k = 10).
    drop_rate : float in [0, 1)
        Dropout between each block's two convolutions, in training only (default 0).
    sub_block1 : bool
        Add the unused ``sub_block1`` that some checkpoints carry (RobustBench
        ``WideResNet(sub_block1=True)``, e.g. Carmon et al. 2019, Zhang et al. 2019).
    mean, std : sequence of C floats, optional
        Normalisation in front of the network (non-persistent buffers).
    """
    c = _image_channels("wide_resnet", input_shape)
    d = int(validate_scalar("depth", depth, lo=10, integer=True))
    if (d - 4) % 6:
        raise ConfigError(f"depth={depth!r} is not allowed: expected 10, 16, 22, 28, 34, ... "
                          "(depth - 4 divisible by 6)")
    k = int(validate_scalar("widen_factor", widen_factor, lo=1, integer=True))
    p = float(validate_scalar("drop_rate", drop_rate, lo=0, hi=1, hi_closed=False))
    return WideResNet(in_channels=c, n_classes=n_classes, depth=d, widen_factor=k,
                      drop_rate=p, sub_block1=validate_bool("sub_block1", sub_block1),
                      normalize=input_normalization(input_shape, mean, std))

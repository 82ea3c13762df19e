"""torchvision and timm classifiers by name: ``"torchvision:resnet50"``, ``"timm:<model>"``.

The model registry resolves the two namespaces through :class:`TorchvisionModels` and
:class:`TimmModels`; neither library is imported until one of its names is asked for, and
neither is a dependency of the default environment (the ``vision`` extra installs both).

What each builder passes, so that a name gives the same architecture as in the library but
with your number of classes and never a download:

- torchvision: ``torchvision.models.get_model(name, weights=None, num_classes=n_classes,
  **params)``. Its classifiers take 3-channel images; other ``input_shape[0]`` values are a
  :class:`~poisonlab.errors.ConfigError`. Vision transformers need ``image_size`` when the
  inputs are not 224x224 (``--model-param image_size=32``).
- timm: ``timm.create_model(name, pretrained=False, num_classes=n_classes,
  in_chans=input_shape[0], **params)``; pass ``img_size`` for a ViT on other sizes.

Initialisation is each library's own, seeded by ``build_model(..., seed=)``: the same seed
gives the same weights. Published weights come in through ``weights=`` (a ``state_dict``
file, e.g. torchvision's ``ResNet50_Weights.IMAGENET1K_V2`` saved once where a network is
reachable). Normalisation belongs to the model: ``mean`` and ``std`` (one number per
channel; ``--model-param 'mean=[0.485, 0.456, 0.406]'``) put ``(x - mean) / std`` in front
without changing the ``state_dict``'s keys, so data bounds and eps stay in input space.

The wheels of torchvision (and timm, which needs it) are compiled against one torch
release: next to another build, ``import torchvision`` fails with
``operator torchvision::nms does not exist``. That, and a missing library, is a one-line
:class:`~poisonlab.errors.ConfigError` naming the fix (a venv with ``torch==2.14.1
torchvision==0.29.1``; ``make test-vision`` builds one).

>>> TorchvisionModels().describe("resnet50")  # doctest: +SKIP
'torchvision resnet50 (weights=None; pass a state_dict with weights=)'
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .architectures import input_normalization
from .errors import ConfigError, first_line

#: What to install, in one line, where torchvision or timm cannot be imported.
VISION_FIX = ("install the vision extra in a venv whose torch matches torchvision, e.g. "
              "pip install torch==2.14.1 torchvision==0.29.1 'poisonlab[vision]' "
              "(make test-vision builds .venv-vision)")


def import_vision(module: str) -> ModuleType:
    """Import ``torchvision`` or ``timm`` for a model of its namespace, or a ConfigError.

    ``ImportError`` (not installed) and the ``RuntimeError`` of a torchvision built for
    another torch (``operator torchvision::nms does not exist``) both become one line:
    ``models torchvision:<model> need torchvision, which cannot be imported next to torch
    2.13.0 (operator torchvision::nms does not exist): install ...``.
    """
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or RuntimeError from torchvision's compiled ops
        why = ("is not installed" if isinstance(e, ModuleNotFoundError)
               else f"cannot be imported next to torch {torch.__version__} ({first_line(e)})")
        raise ConfigError(f"models {module}:<model> need {module}, which {why}: "
                          f"{VISION_FIX}") from None


def _normalize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return ((args[0] - module.input_mean) / module.input_std, *args[1:])


def with_normalization(model: nn.Module, input_shape: Sequence[int], mean: Any,
                       std: Any) -> nn.Module:
    """``model`` fed ``(x - mean) / std``: non-persistent buffers ``input_mean`` and
    ``input_std`` (so the ``state_dict`` keys stay the library's and a published checkpoint
    loads strictly; the buffers follow ``.to(device)``) applied by a forward pre-hook, not a
    submodule (an ``nn.Sequential`` would run it as its last layer). Without ``mean`` and
    ``std``, ``model`` as it is."""
    norm = input_normalization(tuple(input_shape), mean, std)
    if isinstance(norm, nn.Identity):
        return model
    for key in ("input_mean", "input_std"):
        if hasattr(model, key):
            raise ConfigError(f"mean/std cannot be added: the model already has an attribute "
                              f"{key!r}; normalise inside your own factory instead")
    model.register_buffer("input_mean", norm.mean.clone(), persistent=False)
    model.register_buffer("input_std", norm.std.clone(), persistent=False)
    model.register_forward_pre_hook(_normalize_input)
    return model


def _channels(name: str, input_shape: Sequence[int]) -> int:
    if len(input_shape) != 3:
        raise ConfigError(f"model={name!r} takes images: expected input_shape (channels, "
                          f"height, width), got {tuple(input_shape)}")
    return int(input_shape[0])


class TorchvisionModels:
    """The ``torchvision:<model>`` namespace: torchvision's classification models."""

    def _lib(self) -> Any:
        return import_vision("torchvision").models

    def available(self) -> Sequence[str]:
        """Classification models of ``torchvision.models`` (detection etc. left out)."""
        lib = self._lib()
        return sorted(lib.list_models(module=lib))

    def from_name(self, member: str, /, *, input_shape: Sequence[int], n_classes: int,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  **params: Any) -> nn.Module:
        """``get_model(member, weights=None, num_classes=n_classes, **params)``, behind
        ``(x - mean) / std`` when given (:func:`with_normalization`)."""
        name = f"torchvision:{member}"
        if _channels(name, input_shape) != 3:
            raise ConfigError(f"model={name!r} takes 3-channel images: got input_shape "
                              f"{tuple(input_shape)} (timm models take in_chans)")
        for key in ("weights", "num_classes"):
            if key in params:
                raise ConfigError(f"model {name!r} got parameter {key!r}: it is set by "
                                  "poisonlab (weights=None, num_classes from the data); load "
                                  "published weights with weights=<state_dict file>")
        try:
            model = self._lib().get_model(member, weights=None, num_classes=n_classes,
                                          **params)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model {name!r} cannot be built with {params or 'defaults'}: "
                              f"{first_line(e)}") from None
        return with_normalization(model, input_shape, mean, std)

    def describe(self, member: str) -> str:
        return f"torchvision {member} (weights=None; pass a state_dict with weights=)"


class TimmModels:
    """The ``timm:<model>`` namespace: every architecture of ``timm.list_models()``."""

    def _lib(self) -> Any:
        return import_vision("timm")

    def available(self) -> Sequence[str]:
        return list(self._lib().list_models())

    def from_name(self, member: str, /, *, input_shape: Sequence[int], n_classes: int,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  **params: Any) -> nn.Module:
        """``create_model(member, pretrained=False, num_classes=, in_chans=, **params)``,
        behind ``(x - mean) / std`` when given (:func:`with_normalization`)."""
        name = f"timm:{member}"
        in_chans = _channels(name, input_shape)
        for key in ("pretrained", "num_classes", "in_chans"):
            if key in params:
                raise ConfigError(f"model {name!r} got parameter {key!r}: it is set by "
                                  "poisonlab (pretrained=False, num_classes and in_chans from "
                                  "the data); load published weights with weights=<file>")
        try:
            model = self._lib().create_model(member, pretrained=False, num_classes=n_classes,
                                             in_chans=in_chans, **params)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model {name!r} cannot be built with {params or 'defaults'}: "
                              f"{first_line(e)}") from None
        return with_normalization(model, input_shape, mean, std)

    def describe(self, member: str) -> str:
        return f"timm {member} (pretrained=False; pass a state_dict with weights=)"


#: The namespace objects the model registry resolves (lazily, by these names).
torchvision_models = TorchvisionModels()
timm_models = TimmModels()

"""Model architectures: every model is an ``nn.Module`` mapping inputs to logits.

Models are built on the meta device and initialised from a private ``torch.Generator``
seeded by ``seed``, so building a model never reads or advances the global RNG and the same
seed always gives the same weights. Initialisation follows PyTorch's defaults
(Kaiming-uniform weights with ``a = sqrt(5)``, uniform biases in ``+-1/sqrt(fan_in)``).

Built-ins: ``logistic`` (multinomial logistic regression), ``mlp`` (two ReLU hidden
layers) and ``cnn`` (two conv blocks and a dense head, for image inputs ``(C, H, W)``);
``resnet18``, ``preact_resnet18`` and ``wide_resnet`` (``depth``, ``widen_factor``) with
RobustBench's ``state_dict`` layout, in :mod:`poisonlab.architectures`.

Your own model: any ``"package.module:factory"`` name. The factory is called as
``factory(input_shape=..., n_classes=..., **params)``; a factory that takes neither keyword
is called with ``**params`` only. It must return an ``nn.Module`` mapping inputs to logits
of shape (n, n_classes). Its layers keep PyTorch's default initialisation, drawn with
``seed`` inside :func:`torch.random.fork_rng` (the global RNG is left as it was); build
them on the CPU (the default): the model is moved to the CPU after, and to its device by
whoever uses it.
``weights=`` names a ``state_dict`` file (``torch.save(model.state_dict(), path)``), loaded
with ``torch.load(path, weights_only=True)``; it works for the built-ins too. In a suite
(``models: [{name: "mypkg.models:make_net", weights: net.pt}]``) the weights are the
initialisation that training starts from; ``poisonlab evaluate`` evaluates them as given.

>>> m = build_model("mlp", (1, 8, 8), 10, seed=0)
>>> m(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import inspect
import math
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._torch import eval_mode  # noqa: F401  (re-exported: poisonlab.models.eval_mode)
from ._validation import validate_int_sequence, validate_params, validate_scalar, validate_seed
from .errors import ConfigError, PoisonlabError, first_line
from .registry import Registry

models: Registry[Callable[..., nn.Module]] = Registry("model")


def build_model(
    name: str,
    input_shape: Sequence[int],
    n_classes: int,
    *,
    seed: int = 0,
    weights: str | Path | None = None,
    **params: Any,
) -> nn.Module:
    """Build a registered architecture (or your own) with seeded initialisation.

    Parameters
    ----------
    name : str
        ``"logistic"``, ``"mlp"``, ``"cnn"``, any registered name, or
        ``"package.module:factory"`` (see the module docstring).
    input_shape : sequence of int
        Shape of one input, e.g. ``(1, 8, 8)`` or ``(2,)``.
    n_classes : int >= 2
    seed : int >= 0
    **params
        Architecture settings (``hidden`` for ``mlp``, ``channels`` for ``cnn``).
    weights : path, optional
        A ``state_dict`` file loaded into the model after initialisation
        (:func:`load_weights`).

    Returns
    -------
    nn.Module in eval mode, on the CPU, returning logits of shape (n, n_classes).

    Raises
    ------
    UnknownNameError, ConfigError
    """
    builder = models.resolve(name)
    seed = validate_seed("seed", seed)
    k = validate_scalar("n_classes", n_classes, lo=2, integer=True)
    shape = validate_int_sequence("input_shape", input_shape)
    if not shape:
        raise ConfigError("input_shape=() is not allowed: expected at least one dimension")
    validate_params(f"model {name!r}", builder, params, skip=("input_shape", "n_classes"))
    if name in models.names():
        with torch.device("meta"):
            model = builder(input_shape=shape, n_classes=k, **params)
        model = model.to_empty(device="cpu")
        init_parameters(model, torch.Generator().manual_seed(seed))
    else:
        model = _call_factory(name, builder, shape, k, seed, params)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _call_factory(name: str, factory: Callable[..., Any], shape: tuple[int, ...], k: int,
                  seed: int, params: dict[str, Any]) -> nn.Module:
    """Call a user factory with PyTorch's default initialisation seeded by ``seed``."""
    sig: Mapping[str, inspect.Parameter]
    try:
        sig = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        sig = {}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.values())
    kwargs = dict(params)
    for key, value in (("input_shape", shape), ("n_classes", k)):
        if var_kw or key in sig:
            kwargs[key] = value
    if sig:
        try:
            inspect.Signature(list(sig.values())).bind(**kwargs)
        except TypeError as e:
            raise ConfigError(f"model {name!r} cannot be called with "
                              f"{', '.join(kwargs) or 'no arguments'}: {e}") from None
    # Seed the CPU generator only: torch.manual_seed would also seed the CUDA generators
    # (lazily, at CUDA's first use, if it is not initialised yet), a change to the global
    # CUDA RNG that fork_rng(devices=[]) does not undo. When CUDA is initialised, its
    # generators are forked and seeded too, for a factory that builds layers on a GPU.
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        try:
            model = factory(**kwargs)
        except PoisonlabError:
            raise
        except Exception as e:  # the user's factory failed: name it, keep the cause
            raise ConfigError(f"model {name!r} raised {type(e).__name__} when built: "
                              f"{first_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} returned a {type(model).__name__}: expected a "
                          "torch.nn.Module returning logits")
    return model.cpu()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` file with ``torch.load(weights_only=True)``, checked.

    Only tensors and plain containers load: a pickle naming any other class or callable
    (a crafted file that would run code) is refused before anything of it runs.

    Raises
    ------
    ConfigError
        A missing or unreadable file, a refused pickle, or something other than a mapping
        of names to tensors (one line).
    """
    if not isinstance(path, str | Path):
        raise ConfigError(f"weights={path!r} is not allowed: expected a file path")
    p = Path(path)
    expected = "expected a state_dict saved with torch.save(model.state_dict(), path)"
    if not p.exists():
        raise ConfigError(f"weights={str(path)!r} does not exist: {expected}")
    if not p.is_file():
        raise ConfigError(f"weights={str(path)!r} is not a file: {expected}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The unpickler met an object it may not build (a class, or a callable such as
        # exec or os.system that a crafted file would run): nothing of it was executed.
        glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        why = (f" (it names {glob.group(1)}, which a weights file may not: only tensors "
               "and plain containers load)") if glob else ""
        raise ConfigError(f"weights={str(path)!r} is refused by torch.load(weights_only=True)"
                          f"{why}: {expected}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ConfigError(f"weights={str(path)!r} cannot be read ({first_line(e)}): "
                          f"{expected}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(v, torch.Tensor) for key, v in state.items()
    ):
        raise ConfigError(f"weights={str(path)!r} holds a {type(state).__name__} that is not "
                          f"a mapping of names to tensors: {expected}")
    return dict(state)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``state_dict`` file into ``model`` with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    model : nn.Module
        Loaded in place (``strict=True``: every key and shape must match).
    path : str or Path
        Written by ``torch.save(model.state_dict(), path)``. A pickle of anything besides
        tensors and plain containers is refused by ``weights_only=True``
        (:func:`read_state_dict`).

    Returns
    -------
    The same ``model``.

    Raises
    ------
    ConfigError
        A missing or unreadable file, a refused pickle, something other than a state_dict,
        or keys and shapes that do not match the model (one line).
    """
    state = read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
        raise ConfigError(f"weights={str(path)!r} do not fit the model: "
                          f"{msg[:400]}") from None
    return model


def init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """(Re)initialise every Linear and Conv layer of ``model`` from ``generator``.

    BatchNorm layers get weight 1, bias 0 and fresh running statistics (nothing is drawn),
    and a module with a ``reset_buffers()`` method (constant buffers, e.g.
    :class:`poisonlab.architectures.Normalize`) refills them.

    ``generator`` is a CPU generator, which can only fill CPU tensors: the weights of a
    model on another device (CUDA) are drawn into CPU tensors and copied over, so a model
    gets the same weights from the same generator on every device.
    """

    def fill(p: torch.Tensor, draw: Callable[[torch.Tensor], Any]) -> None:
        if p.device.type == "cpu":
            draw(p)
        else:
            host = torch.empty(p.shape, dtype=p.dtype)
            draw(host)
            p.copy_(host)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
                fill(module.weight, lambda w: nn.init.kaiming_uniform_(
                    w, a=math.sqrt(5), generator=generator))
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in)
                    fill(module.bias, lambda b, bound=bound: nn.init.uniform_(
                        b, -bound, bound, generator=generator))
            elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
                module.reset_parameters()  # weight 1, bias 0, running mean 0, var 1
            elif any(True for _ in module.parameters(recurse=False)):
                raise ConfigError(
                    f"model layer {type(module).__name__} has no seeded initialiser: "
                    "register it in poisonlab.models.init_parameters"
                )
            reset_buffers = getattr(module, "reset_buffers", None)
            if callable(reset_buffers):
                reset_buffers()


def _flat(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


@models.register("logistic", help="multinomial logistic regression (one linear layer)")
def _logistic(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(_flat(input_shape), n_classes))


@models.register("mlp", help="multilayer perceptron with ReLU hidden layers")
def _mlp(
    *, input_shape: tuple[int, ...], n_classes: int, hidden: Sequence[int] = (128, 128)
) -> nn.Module:
    widths = validate_int_sequence("hidden", hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    prev = _flat(input_shape)
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    layers.append(nn.Linear(prev, n_classes))
    return nn.Sequential(*layers)


@models.register("cnn", help="two conv+ReLU+maxpool blocks and a dense head (image inputs)")
def _cnn(
    *,
    input_shape: tuple[int, ...],
    n_classes: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
) -> nn.Module:
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ConfigError(
            f"model 'cnn' got input_shape={input_shape}: expected an image shape (C, H, W) "
            "with H, W >= 4"
        )
    c1, c2 = validate_int_sequence("channels", channels, length=2)
    h = int(validate_scalar("hidden", hidden, lo=1, integer=True))
    c, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (height // 4) * (width // 4), h), nn.ReLU(),
        nn.Linear(h, n_classes),
    )


# The residual networks (poisonlab.architectures), imported on first use.
models.add("resnet18", "poisonlab.architectures:resnet18",
           help="ResNet-18, CIFAR stem, RobustBench state_dict layout (He et al. 2016); "
                "mean, std")
models.add("preact_resnet18", "poisonlab.architectures:preact_resnet18",
           help="PreAct-ResNet-18, CIFAR stem, RobustBench state_dict layout (He et al. "
                "2016); mean, std")
models.add("wide_resnet", "poisonlab.architectures:wide_resnet",
           help="WideResNet WRN-depth-k, RobustBench state_dict layout (Zagoruyko & "
                "Komodakis 2016); depth (28), widen_factor (10), drop_rate, sub_block1, "
                "mean, std")
models.add_namespace("torchvision", "poisonlab.external_models:torchvision_models",
                     member="model", help="a torchvision classifier, weights=None "
                     "(the vision extra; see poisonlab.external_models)")
models.add_namespace("timm", "poisonlab.external_models:timm_models", member="model",
                     help="a timm model, pretrained=False, in_chans from the data "
                     "(the vision extra)")

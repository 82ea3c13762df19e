"""Parameter validation declared once: every check names the field, the value and the rule."""

from __future__ import annotations

import collections.abc
import math
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import torch

from ._text import short_repr as _r
from .errors import ConfigError, DataError, did_you_mean

E = TypeVar("E", bound=Enum)


def validate_scalar(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_closed: bool = True,
    hi_closed: bool = True,
    integer: bool = False,
) -> Any:
    """Check that ``value`` is a finite real (or integer) number inside an interval.

    Returns the value as ``int`` or ``float``. Raises :class:`ConfigError` naming ``name``.

    >>> validate_scalar("eps", 0.1, lo=0)
    0.1
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name}={value!r} is not allowed: expected {kind}")
    try:
        as_float = float(value)
    except OverflowError:  # an int beyond float range
        raise ConfigError(f"{name}={value!r} is not allowed: expected a finite number") from None
    if not math.isfinite(as_float):
        raise ConfigError(f"{name}={value!r} is not allowed: expected a finite number")
    if integer and not as_float.is_integer():
        raise ConfigError(f"{name}={value!r} is not allowed: expected an integer")
    v: int | float = int(value) if integer else float(value)
    below = lo is not None and (v < lo if lo_closed else v <= lo)
    above = hi is not None and (v > hi if hi_closed else v >= hi)
    if below or above:
        left = "-inf" if lo is None else f"{lo:g}"
        right = "inf" if hi is None else f"{hi:g}"
        interval = (
            ("[" if lo_closed and lo is not None else "(")
            + f"{left}, {right}"
            + ("]" if hi_closed and hi is not None else ")")
        )
        raise ConfigError(f"{name}={value!r} is not allowed: expected a value in {interval}")
    return v


def validate_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices`` (strings), with a did-you-mean hint."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        hint = did_you_mean(str(value), options)
        raise ConfigError(
            f"{name}={value!r} is not allowed: expected one of {', '.join(options)}{hint}"
        )
    return value


def coerce_enum(name: str, value: Any, enum: type[E]) -> E:
    """Accept an enum member or its string value; anything else raises ConfigError."""
    if isinstance(value, enum):
        return value
    validate_choice(name, value, [m.value for m in enum])
    return enum(value)


def validate_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not allowed: expected true or false")
    return value


def validate_seed(name: str, value: Any) -> int:
    """A seed is a non-negative integer (numpy's SeedSequence accepts nothing else)."""
    return int(validate_scalar(name, value, lo=0, integer=True))


def validate_bounds(name: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ConfigError(f"{name}={value!r} is not allowed: expected a pair (lo, hi)")
    lo = validate_scalar(f"{name}[0]", value[0])
    hi = validate_scalar(f"{name}[1]", value[1])
    if not lo < hi:
        raise ConfigError(f"{name}={value!r} is not allowed: expected lo < hi")
    return (float(lo), float(hi))


def validate_inputs(
    x: Any, y: Any, *, n_classes: int | None = None, name_x: str = "x", name_y: str = "y"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a batch of inputs and labels and return them as float32 / int64 tensors.

    Raises :class:`DataError` for non-tensors, NaN/Inf, a length mismatch, non-integer labels
    or labels outside ``0 .. n_classes - 1``.
    """
    x_t = validate_x(x, name_x)
    y_t = as_tensor(name_y, y)
    if y_t.dim() != 1 or y_t.shape[0] != x_t.shape[0]:
        raise DataError(
            f"{name_y} has shape {tuple(y_t.shape)}: expected ({x_t.shape[0]},) to match "
            f"{name_x} of shape {tuple(x_t.shape)}"
        )
    y_t = validate_labels(y_t, n_classes=n_classes, name=name_y)
    return x_t, y_t


def validate_x(x: Any, name: str = "x") -> torch.Tensor:
    """Check a batch of inputs (n, *input_shape): real, finite; return it as floating point.

    Integer and bool inputs become float32; floating-point inputs keep their dtype.
    """
    x_t = as_tensor(name, x)
    if torch.is_complex(x_t):
        raise DataError(f"{name} has dtype {x_t.dtype}: expected real numbers")
    if not torch.is_floating_point(x_t):
        x_t = x_t.float()
    if x_t.dim() < 2:
        raise DataError(f"{name} has shape {tuple(x_t.shape)}: expected (n, *input_shape)")
    if not torch.isfinite(x_t).all():
        bad = int((~torch.isfinite(x_t)).sum())
        raise DataError(f"{name} contains {bad} NaN or Inf values: expected finite inputs")
    return x_t


def validate_distinct(name: str, values: Sequence[Any], *, what: str = "entries",
                   show: Callable[[Any], str] = repr,
                   error: type[ConfigError] = ConfigError) -> None:
    """Raise ``error`` for the first entry of ``values`` equal to an earlier one:
    ``{name}[i]={show(value)} is listed twice: expected distinct {what}``."""
    for i, v in enumerate(values):
        if v in values[:i]:
            raise error(f"{name}[{i}]={show(v)} is listed twice: expected distinct {what}")


def validate_labels(y: Any, *, n_classes: int | None = None, name: str = "y",
                 of_model: bool = False) -> torch.Tensor:
    """Check a 1-D vector of integer class ids (in ``0 .. n_classes - 1``); return int64.

    ``of_model``: ``n_classes`` is the width of a model's output, and the message says so.
    """
    y_t = as_tensor(name, y)
    if torch.is_floating_point(y_t) or y_t.dtype == torch.bool or torch.is_complex(y_t):
        raise DataError(f"{name} has dtype {y_t.dtype}: expected integer class ids")
    if y_t.dim() != 1:
        raise DataError(f"{name} has shape {tuple(y_t.shape)}: expected a vector (n,)")
    y_t = y_t.long()
    if n_classes is not None and y_t.numel() and (y_t.min() < 0 or y_t.max() >= n_classes):
        why = f" to match the model's {n_classes} outputs" if of_model else ""
        raise DataError(
            f"{name} has labels in [{int(y_t.min())}, {int(y_t.max())}]: expected class ids "
            f"in [0, {n_classes - 1}]{why}"
        )
    return y_t


def as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        _validate_numeric(name, value)
        try:
            return torch.from_numpy(np.ascontiguousarray(value))
        except TypeError:  # a numeric dtype torch has no counterpart for (longdouble)
            raise DataError(f"{name} has dtype {value.dtype}: expected bool, int or float "
                            "up to 64 bits") from None
    raise DataError(f"{name} is a {type(value).__name__}: expected a torch.Tensor or numpy array")


#: numpy dtype kinds that hold numbers: bool, signed and unsigned int, float, complex.
_NUMERIC_KINDS = "biufc"


def _validate_numeric(name: str, value: np.ndarray) -> None:
    """Raise DataError for an array of strings, objects, bytes, dates or records."""
    if value.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(f"{name} has dtype {value.dtype}: expected numbers (bool, int or float)")


def as_array(name: str, value: Any) -> np.ndarray:
    """``value`` (a tensor, numpy array, nested list or number) as a numeric numpy array.

    For functions that take array-likes (the metrics). Raises :class:`DataError` for None,
    ragged lists, strings, objects and complex numbers.

    >>> as_array("y", [0, 1]).tolist()
    [0, 1]
    """
    if isinstance(value, torch.Tensor):
        arr = value.detach().cpu().numpy()
    elif value is None or isinstance(value, str | bytes):
        raise DataError(f"{name} is a {type(value).__name__}: expected an array of numbers")
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:  # ragged nested lists
            first = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
            raise DataError(f"{name} is not a rectangular array ({first}): expected an array "
                            "of numbers") from None
    _validate_numeric(name, arr)
    if arr.dtype.kind == "c":
        raise DataError(f"{name} has dtype {arr.dtype}: expected real numbers")
    return arr


def validate_label_array(name: str, value: Any, *, n_classes: int | None = None) -> np.ndarray:
    """A 1-D numpy vector of integer class ids (in ``0 .. n_classes - 1``), as int64."""
    arr = as_array(name, value)
    if arr.dtype.kind not in "iu":
        raise DataError(f"{name} has dtype {arr.dtype}: expected integer class ids")
    if arr.ndim != 1:
        raise DataError(f"{name} has shape {arr.shape}: expected a vector (n,)")
    arr = arr.astype(np.int64)
    if n_classes is not None and arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise DataError(f"{name} has labels in [{int(arr.min())}, {int(arr.max())}]: expected "
                        f"class ids in [0, {n_classes - 1}]")
    return arr


def validate_finite_array(name: str, value: Any, *, ndim: int | None = None) -> np.ndarray:
    """A real numpy array without NaN or Inf (of ``ndim`` dimensions if given), as float64."""
    arr = as_array(name, value)
    if ndim is not None and arr.ndim != ndim:
        want = "a vector (n,)" if ndim == 1 else f"{ndim} dimensions"
        raise DataError(f"{name} has shape {arr.shape}: expected {want}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{name} contains {bad} NaN or Inf values: expected finite numbers")
    return arr


def validate_int_sequence(name: str, value: Any, *, lo: int = 1,
                       length: int | None = None) -> tuple[int, ...]:
    """A list or tuple of integers >= ``lo`` (of ``length`` entries if given)."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | torch.Size):
        want = f"{length} integers" if length is not None else "a list of integers"
        raise ConfigError(f"{name}={value!r} is not allowed: expected {want}, e.g. "
                          f"{list(range(lo + 1, lo + 1 + (length or 2)))}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{name}={list(value)!r} is not allowed: expected {length} integers")
    return tuple(int(validate_scalar(name, v, lo=lo, integer=True)) for v in value)


def validate_model(value: Any, name: str = "model") -> torch.nn.Module:
    """Raise ConfigError unless ``value`` is an ``nn.Module`` (a model returning logits)."""
    if not isinstance(value, torch.nn.Module):
        # a callable's repr carries a memory address: name its kind instead
        shown = (f"a {type(value).__name__} {getattr(value, '__qualname__', '')}".rstrip()
                 if callable(value) or len(repr(value)) > 60 else repr(value))
        raise ConfigError(f"{name}={shown} is not allowed: expected a torch.nn.Module "
                          "returning logits")
    return value


def validate_params(kind: str, fn: Any, params: dict[str, Any], *,
                    skip: tuple[str, ...] = ()) -> None:
    """Raise ConfigError if ``params`` has a keyword that ``fn`` does not take.

    Unknown parameters never pass silently (ART's habit of ignoring them is refused).
    """
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: the call will tell
        return
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    allowed = [n for n, p in sig.parameters.items()
               if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in skip]
    for key in params:
        if key not in allowed:
                raise ConfigError(
                f"{kind} got unknown parameter {key!r}: expected one of "
                f"{', '.join(allowed) or '(none)'}{did_you_mean(key, allowed)}"
            )


def validate_device(name: str, value: Any) -> torch.device:
    """A torch device that exists here: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``.

    ``"auto"`` is the first CUDA device when one is available, else the CPU. Raises
    :class:`ConfigError` for any other string, a CUDA device this torch build or machine
    does not have, or a CUDA index out of range.

    >>> validate_device("device", "cpu")
    device(type='cpu')
    """
    if isinstance(value, torch.device):
        dev = value
    elif isinstance(value, str):
        if value == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(value)
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise ConfigError(f"{name}={value!r} is not allowed: expected 'cpu', 'cuda', "
                              "'cuda:N' or 'auto'")
    else:
        raise ConfigError(f"{name}={value!r} is not allowed: expected a device name such as "
                          "'cpu', 'cuda' or 'auto'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{name}={value!r} is not available: this machine (or torch "
                              f"build {torch.__version__}) has no CUDA device; use 'cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{name}={value!r} is not available: CUDA devices here are "
                              f"0 .. {count - 1}")
    elif dev.type != "cpu":
        raise ConfigError(f"{name}={value!r} is not allowed: expected a CPU or CUDA device")
    return dev


def _hint_text(hint: Any) -> str | None:
    """How an error names a type hint; None for hints this check does not judge."""
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "a string"
    if hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_hint_text(a) for a in args]
        return None if None in parts else " or ".join(p for p in parts if p)
    if origin in (list, tuple, collections.abc.Sequence) and args:
        inner = _hint_text(args[0])
        if inner is None or (origin is tuple and (len(args) != 2 or args[1] is not ...)):
            return None
        return f"a list of {inner.removeprefix('an ').removeprefix('a ')}s"
    return None


def _fits(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(value, list | tuple) and all(_fits(x, args[0]) for x in value)
    return True


def validate_hinted_types(kind: str, fn: Callable[..., Any], params: dict[str, Any]) -> None:
    """Check ``params`` against ``fn``'s type hints where they are plain (int, float,
    bool, str, a sequence of them, unions); a string where a number goes, true where a
    number goes (YAML's true is not 1) or NaN raise ConfigError naming the parameter."""
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError, AttributeError, SyntaxError):  # unresolvable hints
        return
    for key, value in params.items():
        if key not in hints:
            continue
        text = _hint_text(hints[key])
        if text is not None and not _fits(value, hints[key]):
            raise ConfigError(f"{kind}: {key}={_r(value)} is not allowed: expected {text}")

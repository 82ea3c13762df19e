"""Input sanity at the boundary: a threat model that does not fit the data's scale.

An evaluation that runs without error can still answer the wrong question: data in
0..255 attacked at linf eps 0.1 (a 0.04% change per pixel) looks robust; bounds of
[0, 255] declared for data in [0, 1] let an attack leave the data's domain. These
functions say so, as :class:`~poisonlab.errors.InputWarning` lines naming the numbers;
``poisonlab run --strict`` and ``poisonlab evaluate --strict`` turn them into exit 1.

The scale of an eps is the data's range ``hi - lo`` (min and max over the test inputs)
for linf, and the range times ``sqrt(d)`` (the l2 diameter of the data's box, ``d``
input features) for l2. An eps below :data:`EPS_MIN_FRACTION` of it (1% for linf, 0.1%
for l2: CIFAR-10's standard l2 eps 0.5 is 0.9% of its diameter) or above
:data:`EPS_MAX_FRACTION` (50%) is flagged; eps 0 (the clean point of a security curve)
never is. Bounds are flagged when the data cover less than :data:`BOUNDS_MIN_COVER` of
them.

>>> print(threat_scale_problems([0.1], "linf", bounds=(0.0, 255.0),
...                             data_range=(0.0, 255.0), n_features=784)[0])
... # doctest: +ELLIPSIS
linf eps=0.1 is 0.039% of the data range [0, 255] (under 1%): the attack can barely ...
>>> threat_scale_problems([8 / 255], "linf", bounds=(0.0, 1.0), data_range=(0.0, 1.0),
...                       n_features=3072)
[]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

from .errors import InputWarning

#: Below this fraction of the data's scale an eps is too small to say anything.
EPS_MIN_FRACTION: dict[str, float] = {"linf": 0.01, "l2": 0.001}
#: Above this fraction of the data's scale an eps changes what the input is.
EPS_MAX_FRACTION = 0.5
#: Bounds the data cover less of than this are likely in other units than the data.
BOUNDS_MIN_COVER = 0.5


def _pct(v: float) -> str:
    return f"{100 * v:.2g}%" if v < 0.1 else f"{100 * v:.0f}%"


def threat_scale_problems(eps: Iterable[float], norm: str, *,
                          bounds: Sequence[float], data_range: Sequence[float],
                          n_features: int) -> list[str]:
    """One line per eps (and for the bounds) that does not fit the data's scale.

    ``eps`` in the data's units, ``norm`` "linf" or "l2", ``bounds`` the attacker's input
    domain, ``data_range`` the test inputs' (min, max), ``n_features`` the number of input
    features (``prod(input_shape)``). Returns ``[]`` when everything fits.
    """
    lo, hi = float(data_range[0]), float(data_range[1])
    span = hi - lo
    out = []
    b_span = float(bounds[1]) - float(bounds[0])
    if b_span > 0 and span < BOUNDS_MIN_COVER * b_span:
        out.append(f"bounds [{bounds[0]:g}, {bounds[1]:g}] but the test inputs lie in "
                   f"[{lo:g}, {hi:g}] ({_pct(span / b_span)} of the bounds, under "
                   f"{_pct(BOUNDS_MIN_COVER)}): are the bounds in the data's units?")
    if span <= 0:
        return out
    scale = span * (math.sqrt(n_features) if norm == "l2" else 1.0)
    what = "data range" if norm != "l2" else f"l2 diameter of the data range (x sqrt({n_features}))"
    low = EPS_MIN_FRACTION.get(norm, EPS_MIN_FRACTION["linf"])
    for e in sorted(set(float(v) for v in eps)):
        if e <= 0:
            continue
        f = e / scale
        if f < low:
            out.append(f"{norm} eps={e:g} is {_pct(f)} of the {what} [{lo:g}, {hi:g}] "
                       f"(under {_pct(low)}): the attack can barely change an input, so "
                       "robust accuracy will look high; give eps in the data's units")
        elif f > EPS_MAX_FRACTION:
            out.append(f"{norm} eps={e:g} is {_pct(f)} of the {what} [{lo:g}, {hi:g}] "
                       f"(over {_pct(EPS_MAX_FRACTION)}): a perturbation that large can "
                       "change what the input is; give eps in the data's units")
    return out


def warn_threat_scale(where: str, eps: Iterable[float], norm: str, *,
                      bounds: Sequence[float], data_range: Sequence[float],
                      n_features: int) -> list[str]:
    """:func:`threat_scale_problems`, each issued as an :class:`InputWarning` prefixed with
    ``where`` (the suite entry or flag); returns the lines."""
    lines = [f"{where}: {p}" for p in threat_scale_problems(
        eps, norm, bounds=bounds, data_range=data_range, n_features=n_features)]
    for line in lines:
        warnings.warn(line, InputWarning, stacklevel=2)
    return lines

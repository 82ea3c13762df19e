"""Expectations: claims about directions between the defenses of a suite, judged by seed noise.

A suite may state what it expects to see, e.g. that label smoothing lowers the ECE or that
a defense loses less accuracy under label flips than the undefended model. Each claim
compares one metric between two defenses in the same scope (dataset, model), poisoning,
threat and attack, and gets a verdict from the seed spread: *holds*, *does not hold* or
*inconclusive*. ``poisonlab check`` fails when a claim marked ``required`` does not hold.

Two forms are accepted in a suite's ``expectations:`` list::

    expectations:
      - "ece of label_smoothing below none"
      - "accuracy_drop of gce below none under random 0.4"
      - {claim: "robust_accuracy of pgd_at above none at linf eps=0.1 by worst-case",
         required: true}
      - {metric: ece, defense: "label_smoothing(eps=0.1)", below: none, required: true}

The one-line grammar (:data:`GRAMMAR`)::

    METRIC of DEFENSE (below|above) DEFENSE [under POISONING] [at THREAT] [by ATTACK]
        [by more than MARGIN]

Keywords (``of below above under at by``) are whole words outside brackets; names are
everything between two keywords (a label such as ``pgd(rel_stepsize=0.1, steps=40)``
keeps its spaces inside the brackets, a poisoning id such as ``random 0.4`` its spaces
between words). The clauses after the second defense come in any order, each at most once;
``by more than M`` is the margin and any other ``by`` names the attack. The defaults that
let the common claims go without extra words are in :func:`parse_expectations`.

The verdict rule (:func:`evaluate_expectations`). With ``diff = mean_a - mean_b`` (``a`` the
defense the claim is about, ``b`` the one it is compared with), ``claimed = -diff`` for
``below`` and ``+diff`` for ``above``, and ``se = sqrt(std_a**2/n_a + std_b**2/n_b)``::

    holds          claimed > margin + Z_SE * se
    does not hold  claimed < margin - Z_SE * se
    inconclusive   otherwise, or n < 2 on either side, or a number missing

``Z_SE`` is :data:`poisonlab.harness.stats.Z_SE` (2): the same "clearly
different" as the report's verdicts against the baseline defense.

>>> from poisonlab.harness.claims import parse_expectations
>>> e, = parse_expectations(["ece of label_smoothing below none"],
...                         defenses=["none", "label_smoothing(eps=0.1)"])
>>> e.defense, e.relation, e.than, e.threat
('label_smoothing(eps=0.1)', 'below', 'none', None)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

from .._text import fmt_number
from ..errors import DataError
from ..metrics import GROUP_METRICS, METRICS, RAY_ALPHAS
from .stats import Z_SE

__all__ = [
    "GRAMMAR",
    "WORST_CASE",
    "Expectation",
    "ExpectationResult",
    "ExpectationVerdict",
    "evaluate_expectations",
    "expectation_table",
    "expectations_from_doc",
    "expectations_to_doc",
    "measured_metrics",
]

GRAMMAR = ("METRIC of DEFENSE below|above DEFENSE [under POISONING] [at THREAT] "
           "[by ATTACK] [by more than MARGIN]")
RELATIONS = ("below", "above")
KEYWORDS = ("of", "below", "above", "under", "at", "by")
#: The attack label of the per-sample worst case over a suite's attacks (robust accuracy).
WORST_CASE = "worst-case"
#: Poisoning id of the clean (unpoisoned) cells.
NO_POISONING = "none"

#: Metrics measured under an evasion threat and one attack.
EVASION_METRICS = frozenset(m.name for m in METRICS if m.scope == "evasion")
#: Metrics measured under a poisoning; their threat is the poisoning's id.
POISONING_METRICS = frozenset(m.name for m in METRICS if m.scope == "poisoning")
#: Metrics measured on one fixed kind of noise (the threat id measure.py records).
FIXED_THREATS: dict[str, str] = {m.name: m.threat for m in METRICS
                                 if m.scope == "noise" and m.threat is not None}
#: ray_confidence is recorded once per ray multiplier, as threat ``alpha=A``.
RAY_THREATS: tuple[str, ...] = tuple(f"alpha={a:g}" for a in RAY_ALPHAS)

_STRUCTURED_KEYS = ("metric", "defense", "below", "above", "poisoning", "threat", "attack",
                    "dataset", "model", "margin", "required", "claim")
_CLAIM_KEYS = ("claim", "required", "dataset", "model")


def z_se() -> float:
    """Standard errors a difference must exceed to be clear: :data:`.stats.Z_SE`."""
    return Z_SE


def measured_metrics(groups: Iterable[str]) -> tuple[str, ...]:
    """The metric names a suite with these metric groups records (for ``metrics=``).

    >>> measured_metrics(["accuracy"])  # doctest: +NORMALIZE_WHITESPACE
    ('clean_accuracy', 'teacher_accuracy', 'certified_accuracy', 'median_certified_radius',
     'accuracy_drop', 'poisoning_success_rate', 'n_flipped')
    """
    out = [m for g in groups for m in GROUP_METRICS.get(g, ())]
    out += GROUP_METRICS["poisoning"]
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------- the claim


class ExpectationVerdict(StrEnum):
    """The verdict of one claim in one scope."""

    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Expectation:
    """A claim: ``metric`` of ``defense`` is ``relation`` (below/above) that of ``than``.

    Both defenses are compared under the same ``poisoning`` (``"none"``: the clean cells),
    ``threat`` and ``attack`` (None where the metric has none), in each (dataset, model)
    scope of the results, or only in ``dataset``/``model`` when given. ``margin`` (in the
    metric's units, >= 0) is how much beyond the other defense the claim says it is.
    ``claim`` is the text shown in reports.
    """

    metric: str
    defense: str
    relation: str
    than: str
    poisoning: str = NO_POISONING
    threat: str | None = None
    attack: str | None = None
    dataset: str | None = None
    model: str | None = None
    margin: float = 0.0
    required: bool = False
    claim: str = ""

    @property
    def sign(self) -> int:
        """+1 when the claim is ``above`` (a larger mean), -1 when ``below``."""
        return 1 if self.relation == "above" else -1

    @property
    def text(self) -> str:
        """The claim as written, or :meth:`canonical` when none was."""
        return self.claim or self.canonical()

    def canonical(self) -> str:
        """The claim in the one-line grammar, every default spelled out.

        >>> Expectation("accuracy_drop", "gce", "below", "none", poisoning="random 0.4",
        ...             threat="random 0.4", margin=0.02).canonical()
        'accuracy_drop of gce below none under random 0.4 by more than 0.02'
        """
        out = f"{self.metric} of {self.defense} {self.relation} {self.than}"
        if self.poisoning != NO_POISONING:
            out += f" under {self.poisoning}"
        if self.threat not in (None, self.poisoning, FIXED_THREATS.get(self.metric)):
            out += f" at {self.threat}"
        if self.attack is not None:
            out += f" by {self.attack}"
        if self.margin:
            out += f" by more than {self.margin:g}"
        return out

    def key(self) -> tuple[Any, ...]:
        """What the claim says, independent of how it is phrased: (lower, higher, where)."""
        lower, higher = ((self.defense, self.than) if self.relation == "below"
                         else (self.than, self.defense))
        return (self.metric, self.poisoning, self.threat, self.attack, self.dataset,
                self.model, lower, higher)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, ``claim`` as shown (:attr:`text`)."""
        return {**asdict(self), "claim": self.text}

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "expectation") -> Expectation:
        """The inverse of :meth:`to_dict`; other keys (``verdict``, ``results``) are ignored.

        Raises
        ------
        DataError
            A field is missing or has the wrong type (the message names it).
        """
        if not isinstance(d, Mapping):
            raise DataError(f"{where}={d!r} is not allowed: expected a mapping")

        def get(key: str, ok: Any, expected: str, default: Any = ...) -> Any:
            if key not in d:
                if default is ...:
                    raise DataError(f"{where} has no {key!r}: expected {expected}")
                return default
            if not ok(d[key]):
                raise DataError(f"{where}.{key}={d[key]!r} is not allowed: expected {expected}")
            return d[key]

        def is_str(v: Any) -> bool:
            return isinstance(v, str) and bool(v)

        def is_opt(v: Any) -> bool:
            return v is None or is_str(v)

        relation = get("relation", lambda v: v in RELATIONS, "'below' or 'above'")
        margin = get("margin", _is_margin, "a number >= 0", 0.0)
        return cls(
            metric=get("metric", is_str, "a metric name"),
            defense=get("defense", is_str, "a defense label"), relation=relation,
            than=get("than", is_str, "a defense label"),
            poisoning=get("poisoning", is_str, "a poisoning id or 'none'", NO_POISONING),
            threat=get("threat", is_opt, "a threat id or null", None),
            attack=get("attack", is_opt, "an attack label or null", None),
            dataset=get("dataset", is_opt, "a dataset label or null", None),
            model=get("model", is_opt, "a model label or null", None),
            margin=float(margin),
            required=get("required", lambda v: isinstance(v, bool), "true or false", False),
            claim=get("claim", lambda v: isinstance(v, str), "a string", ""),
        )


def _is_margin(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 0)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class ExpectationResult:
    """The verdict of one :class:`Expectation` in one (dataset, model) scope.

    ``a_*`` are the aggregate of ``expectation.defense``, ``b_*`` that of
    ``expectation.than``; ``diff = a_mean - b_mean``; ``se`` the standard error of that
    difference. Numbers are None where they could not be read; ``reason`` says why a
    verdict is inconclusive.
    """

    expectation: Expectation
    dataset: str | None
    model: str | None
    verdict: ExpectationVerdict
    a_mean: float | None = None
    a_std: float | None = None
    a_n: int | None = None
    b_mean: float | None = None
    b_std: float | None = None
    b_n: int | None = None
    diff: float | None = None
    se: float | None = None
    reason: str = ""

    @property
    def scope(self) -> str:
        return f"{self.dataset or '*'}/{self.model or '*'}"

    @property
    def claimed(self) -> float | None:
        """``diff`` signed so that a positive value goes the way the claim says."""
        return None if self.diff is None else self.expectation.sign * self.diff

    @property
    def holds(self) -> bool:
        return self.verdict is ExpectationVerdict.HOLDS

    @property
    def failing(self) -> bool:
        """A required claim that was not demonstrated: fails ``poisonlab check``."""
        return self.expectation.required and not self.holds

    def to_dict(self) -> dict[str, Any]:
        """The per-scope record stored under an expectation's ``results``."""
        return {"dataset": self.dataset, "model": self.model, "verdict": self.verdict.value,
                "a_mean": self.a_mean, "a_std": self.a_std, "a_n": self.a_n,
                "b_mean": self.b_mean, "b_std": self.b_std, "b_n": self.b_n,
                "diff": self.diff, "se": self.se, "reason": self.reason}


def _agg_index(doc: Mapping[str, Any]) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    return {(a["dataset"], a["model"], a["defense"], a["poisoning"], a["metric"],
             a["threat"], a["attack"]): a for a in doc.get("aggregates") or []}


def _judge(e: Expectation, scope: tuple[str, str],
           index: Mapping[tuple[Any, ...], Mapping[str, Any]], z: float) -> ExpectationResult:
    dataset, model = scope

    def look(defense: str) -> Mapping[str, Any] | None:
        return index.get((dataset, model, defense, e.poisoning, e.metric, e.threat, e.attack))

    a, b = look(e.defense), look(e.than)
    nums: dict[str, Any] = {}
    for side, agg in (("a", a), ("b", b)):
        if agg is not None:
            nums.update({f"{side}_mean": agg.get("mean"), f"{side}_std": agg.get("std"),
                         f"{side}_n": agg.get("n")})

    def result(verdict: ExpectationVerdict, reason: str = "", **more: Any) -> ExpectationResult:
        return ExpectationResult(e, dataset, model, verdict, **nums, **more, reason=reason)

    what = e.metric
    if e.poisoning != NO_POISONING:
        what += f" under {e.poisoning}"
    if e.threat is not None and e.threat != e.poisoning:
        what += f" at {e.threat}"
    if e.attack is not None:
        what += f" by {e.attack}"
    for defense, agg in ((e.defense, a), (e.than, b)):
        if agg is None:
            return result(ExpectationVerdict.INCONCLUSIVE,
                          f"no {what} for {defense} in the results")
        if agg.get("mean") is None or not agg.get("n"):
            return result(ExpectationVerdict.INCONCLUSIVE,
                          f"no value of {what} for {defense} (n=0, "
                          f"n_failed={agg.get('n_failed')})")
    if a is None or b is None:  # unreachable: narrows the types for the checker
        return result(ExpectationVerdict.INCONCLUSIVE, "no numbers")
    diff = float(a["mean"]) - float(b["mean"])
    small = [f"n={agg['n']} for {d}" for d, agg in ((e.defense, a), (e.than, b))
             if agg["n"] < 2]
    if small:
        return result(ExpectationVerdict.INCONCLUSIVE,
                      f"{', '.join(small)}: no seed spread to judge by (needs n >= 2)",
                      diff=diff)
    if a.get("std") is None or b.get("std") is None:
        return result(ExpectationVerdict.INCONCLUSIVE, "no std recorded", diff=diff)
    se = math.sqrt(float(a["std"]) ** 2 / a["n"] + float(b["std"]) ** 2 / b["n"])
    claimed = e.sign * diff
    if claimed > e.margin + z * se:
        verdict, reason = ExpectationVerdict.HOLDS, ""
    elif claimed < e.margin - z * se:
        verdict, reason = ExpectationVerdict.DOES_NOT_HOLD, ""
    else:
        verdict = ExpectationVerdict.INCONCLUSIVE
        reason = (f"within {z:g} standard errors of the margin {e.margin:g}" if e.margin
                  else f"no clear difference: |diff| <= {z:g} standard errors")
    return result(verdict, reason, diff=diff, se=se)


def evaluate_expectations(
    doc: Mapping[str, Any],
    expectations: Iterable[Expectation] | None = None,
) -> list[ExpectationResult]:
    """Judge each expectation in each (dataset, model) scope of a results document.

    Parameters
    ----------
    doc : mapping
        A results document (its ``aggregates``: mean, std with ddof=1, n per number).
    expectations : iterable of Expectation, optional
        Default: those stored in ``doc`` (:func:`expectations_from_doc`).

    Returns
    -------
    list of ExpectationResult
        Per expectation, in order, one result per scope of the results (sorted), or only
        the scope its ``dataset``/``model`` names. An expectation whose scope is absent
        from the results gets one inconclusive result saying so.

    Examples
    --------
    >>> doc = {"aggregates": [
    ...     {"dataset": "d", "model": "m", "defense": x, "poisoning": "none",
    ...      "metric": "ece", "threat": None, "attack": None, "mean": mu, "std": 0.01, "n": 3}
    ...     for x, mu in (("ls", 0.02), ("none", 0.10))]}
    >>> e = Expectation("ece", "ls", "below", "none")
    >>> [r.verdict.value for r in evaluate_expectations(doc, [e])]
    ['holds']
    """
    expectations = (expectations_from_doc(doc) if expectations is None
                    else tuple(expectations))
    if not expectations:
        return []
    index = _agg_index(doc)
    scopes = sorted({(k[0], k[1]) for k in index})
    z = z_se()
    out: list[ExpectationResult] = []
    for e in expectations:
        mine = [s for s in scopes if e.dataset in (None, s[0]) and e.model in (None, s[1])]
        if not mine:
            what = " and ".join(f"{k} {v!r}" for k, v in (("dataset", e.dataset),
                                                           ("model", e.model)) if v)
            out.append(ExpectationResult(e, e.dataset, e.model,
                                         ExpectationVerdict.INCONCLUSIVE,
                                         reason=f"no results for {what or 'any scope'}"))
            continue
        out += [_judge(e, s, index, z) for s in mine]
    return out


def overall(results: Iterable[ExpectationResult]) -> ExpectationVerdict:
    """One verdict over scopes: holds only if it holds in every scope; does not hold if it
    fails in any; inconclusive otherwise."""
    verdicts = [r.verdict for r in results]
    if verdicts and all(v is ExpectationVerdict.HOLDS for v in verdicts):
        return ExpectationVerdict.HOLDS
    if ExpectationVerdict.DOES_NOT_HOLD in verdicts:
        return ExpectationVerdict.DOES_NOT_HOLD
    return ExpectationVerdict.INCONCLUSIVE


# --------------------------------------------------------------------------- storage


def expectations_to_doc(results: Iterable[ExpectationResult]) -> list[dict[str, Any]]:
    """The ``expectations`` list of results.json: one entry per expectation, in order.

    Each entry is :meth:`Expectation.to_dict` plus ``verdict`` (:func:`overall`) and
    ``results`` (one :meth:`ExpectationResult.to_dict` per scope).
    """
    grouped: dict[Expectation, list[ExpectationResult]] = {}
    for r in results:
        grouped.setdefault(r.expectation, []).append(r)
    return [{**e.to_dict(), "verdict": overall(rs).value, "results": [r.to_dict() for r in rs]}
            for e, rs in grouped.items()]


def expectations_from_doc(doc: Mapping[str, Any]) -> tuple[Expectation, ...]:
    """The expectations stored in a results document (``doc["expectations"]``); () if none.

    Only the definitions are read: stored verdicts are ignored, so that the caller
    re-evaluates them from the aggregates.

    Raises
    ------
    DataError
        ``expectations`` is not a list, or an entry is malformed (the message names it).
    """
    raw = doc.get("expectations")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise DataError(f"results.expectations={raw!r} is not allowed: expected a list")
    return tuple(Expectation.from_dict(d, where=f"results.expectations[{i}]")
                 for i, d in enumerate(raw))


#: Field names of :class:`Expectation`, the keys of its stored form besides verdict/results.
EXPECTATION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Expectation))


def expectation_table(
    results: Iterable[ExpectationResult],
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (strings) of the expectations, one row per claim and scope.

    ``diff`` is ``mean(defense) - mean(than)``; ``± 2se`` is ``Z_SE`` standard errors
    of that difference, the noise band the verdict is decided against.
    """
    z = z_se()
    headers = ["claim", "scope", "verdict", "a vs b", f"diff ± {z:g}se", "required"]
    rows = []
    for r in results:
        e = r.expectation
        verdict = r.verdict.value + (f" ({r.reason})" if r.reason else "")
        vs = ("-" if r.a_mean is None and r.b_mean is None
              else f"{fmt_number(r.a_mean)} vs {fmt_number(r.b_mean)}")
        diff = fmt_number(r.diff, sign=True)
        if r.se is not None:
            diff += f" ± {z * r.se:.2g}"
        if e.margin:
            diff += f" (margin {e.margin:g})"
        required = ("yes: FAILS" if r.failing else "yes") if e.required else "no"
        rows.append([e.text, r.scope, verdict, vs, diff, required])
    return headers, rows

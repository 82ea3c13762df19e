"""The grammar of a suite's ``expectations:``: a claim in words or as a mapping -> an
:class:`~poisonlab.harness.expectations.Expectation`.

``parse_expectations`` checks every name a claim uses against what the suite declares
(metrics, defenses, poisoning threats, evasion threats, attacks, datasets, models) and
refuses anything else with one :class:`~poisonlab.errors.SuiteError` line that says what
is allowed; the grammar itself is ``GRAMMAR`` (docs/expectations.md).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, SuiteError, UnknownNameError
from ..metrics import HIGHER_IS_BETTER
from ..registry import did_you_mean

__all__ = ["parse_expectations"]
from .expectations import (
    _CLAIM_KEYS,
    _STRUCTURED_KEYS,
    EVASION_METRICS,
    FIXED_THREATS,
    GRAMMAR,
    KEYWORDS,
    NO_POISONING,
    POISONING_METRICS,
    RAY_THREATS,
    RELATIONS,
    WORST_CASE,
    Expectation,
    _is_margin,
)
from .suite_file import refuse_unknown_keys

# --------------------------------------------------------------------------- parsing


_OPEN, _CLOSE = "([{", ")]}"


def _words(text: str, where: str) -> list[str]:
    """Split at whitespace outside brackets: ``'pgd(a=1, b=2) x'`` -> two words."""
    words: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                break
        if ch.isspace() and depth == 0:
            if cur:
                words.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise SuiteError(f"{where}={text!r} is not allowed: unbalanced brackets")
    if cur:
        words.append("".join(cur))
    return words


def _grammar_error(where: str, text: str, why: str) -> SuiteError:
    return SuiteError(f"{where}={text!r} is not allowed: {why}; expected '{GRAMMAR}'")


_MARGIN = re.compile(r"more than (\S+)")


def _parse_claim(text: str, where: str) -> dict[str, Any]:
    """The fields of a one-line claim, names not yet resolved."""
    words = _words(text, where)
    if len(words) < 2 or words[1] != "of":
        hint = did_you_mean(words[1], ["of"]) if len(words) > 1 else ""
        raise _grammar_error(where, text, f"the second word must be 'of'{hint}")
    rel = next((i for i, w in enumerate(words) if w in RELATIONS), None)
    if rel is None:
        hint = next((h for w in words[2:] if (h := did_you_mean(w, list(RELATIONS)))), "")
        raise _grammar_error(where, text, f"no 'below' or 'above'{hint}")
    out: dict[str, Any] = {"metric": words[0], "relation": words[rel]}
    # Split the rest at keywords into (keyword, value) segments.
    segments: list[tuple[str, list[str]]] = [("of", [])]
    for w in words[2:]:
        if w in KEYWORDS:
            segments.append((w, []))
        else:
            segments[-1][1].append(w)
    seen: set[str] = set()
    for kw, value_words in segments:
        value = " ".join(value_words)
        if not value:
            raise _grammar_error(where, text, f"nothing after {kw!r}")
        if kw == "by" and (m := _MARGIN.fullmatch(value)):
            slot, value = "margin", m.group(1)
        else:
            slot = {"of": "defense", "below": "than", "above": "than", "under": "poisoning",
                    "at": "threat", "by": "attack"}[kw]
        if slot in seen:
            what = ("'below'/'above'" if slot == "than" else
                    "'by more than'" if slot == "margin" else repr(kw))
            raise _grammar_error(where, text, f"{what} given twice")
        seen.add(slot)
        out[slot] = value
    if "margin" in out:
        try:
            out["margin"] = float(out["margin"])
        except ValueError:
            raise ConfigError(f"{where}.margin={out['margin']!r} is not allowed: expected a "
                              "number >= 0") from None
    return out


def _resolve_label(where: str, field: str, name: Any, labels: Sequence[str],
                   extra: Sequence[str] = ()) -> str:
    """A suite label (``label_smoothing(eps=0.1)``) from the label or a unique bare name."""
    options = [*labels, *extra]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.{field}={name!r} is not allowed: expected one of "
                          f"{', '.join(options) or '(none declared)'}")
    if name in options:
        return name
    bare = [lab for lab in labels if lab.split("(", 1)[0] == name]
    if len(bare) == 1:
        return bare[0]
    if len(bare) > 1:
        raise ConfigError(f"{where}.{field}={name!r} is ambiguous: the suite has "
                          f"{', '.join(bare)}: name one of them by its label")
    names = list(dict.fromkeys([*options, *(lab.split("(", 1)[0] for lab in labels)]))
    raise UnknownNameError(f"{where}.{field}={name!r} is not known: expected one of "
                           f"{', '.join(options) or '(none declared)'}"
                           f"{did_you_mean(name, names)}")


def _choose(where: str, field: str, value: Any, options: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in options:
        hint = did_you_mean(value, list(options)) if isinstance(value, str) else ""
        raise UnknownNameError(f"{where}.{field}={value!r} is not known: expected one of "
                               f"{', '.join(options) or f'(the suite declares no {what})'}"
                               f"{hint}")
    return value


def _only(where: str, field: str, options: Sequence[str], metric: str, keyword: str,
          what: str) -> str:
    """The default of a field that a metric needs: the suite's only option, else an error."""
    if len(options) == 1:
        return options[0]
    if not options:
        raise ConfigError(f"{where}: {metric} needs {what}, and the suite declares none")
    raise ConfigError(f"{where}.{field} is missing: {metric} needs {what}: add "
                      f"'{keyword} X' (or {field}: X) with X one of {', '.join(options)}")


def _claim_fields(raw: Any, where: str) -> dict[str, Any]:
    """A claim's fields from a one-line claim or a structured mapping, not yet resolved."""
    if isinstance(raw, str):
        f = _parse_claim(raw, where)
        f["claim"] = " ".join(raw.split())
    elif isinstance(raw, Mapping):
        refuse_unknown_keys(raw, _STRUCTURED_KEYS, entry=where)
        if "metric" in raw:
            if "defense" not in raw:
                raise SuiteError(f"{where} has no 'defense': expected the defense the "
                                 "claim is about")
            present = [r for r in RELATIONS if r in raw]
            if len(present) != 1:
                has = " and ".join(present) or "neither below nor above"
                raise SuiteError(f"{where} has {has}: expected exactly one of below: DEFENSE "
                                 "or above: DEFENSE")
            f = {k: v for k, v in raw.items() if k not in RELATIONS}
            f["relation"] = present[0]
            f["than"] = raw[present[0]]
            if "claim" in raw and (not isinstance(raw["claim"], str) or
                                   not raw["claim"].strip()):
                raise ConfigError(f"{where}.claim={raw['claim']!r} is not allowed: expected "
                                  "a non-empty string (the text shown in reports)")
        else:
            others = [k for k in raw if k not in _CLAIM_KEYS]
            if "claim" not in raw:
                raise SuiteError(
                    f"{where} has neither claim nor metric: expected {{claim: '{GRAMMAR}'}} "
                    "or {metric: M, defense: D, below|above: D}")
            if others:
                raise SuiteError(
                    f"{where}: {', '.join(others)} beside a one-line claim is not allowed: "
                    f"expected only {', '.join(_CLAIM_KEYS[1:])} (a margin goes in the line: "
                    "'by more than M'), or a structured entry with metric:")
            if not isinstance(raw["claim"], str):
                raise SuiteError(f"{where}.claim={raw['claim']!r} is not allowed: expected "
                                 f"'{GRAMMAR}'")
            f = {**_parse_claim(raw["claim"], f"{where}.claim"),
                 **{k: raw[k] for k in ("required", "dataset", "model") if k in raw},
                 "claim": " ".join(raw["claim"].split())}
    else:
        raise SuiteError(f"{where}={raw!r} is not allowed: expected a string '{GRAMMAR}' "
                         "or a mapping {metric: M, defense: D, below|above: D}")
    return f


def _one(
    raw: Any,
    where: str,
    *,
    defenses: Sequence[str],
    poisonings: Sequence[str],
    threats: Sequence[str],
    attacks: Sequence[str],
    metrics: Sequence[str],
    datasets: Sequence[str] | None,
    models: Sequence[str] | None,
) -> Expectation:
    f = _claim_fields(raw, where)
    metric = f["metric"]
    if not isinstance(metric, str) or metric not in metrics:
        if isinstance(metric, str) and metric in HIGHER_IS_BETTER:
            raise ConfigError(f"{where}.metric={metric!r} is not measured by this suite: "
                              f"expected one of {', '.join(metrics)} (add its metric group "
                              "to the suite's metrics)")
        raise UnknownNameError(f"{where}.metric={metric!r} is not known: expected one of "
                               f"{', '.join(metrics)}{did_you_mean(str(metric), list(metrics))}")
    defense = _resolve_label(where, "defense", f["defense"], defenses)
    # A structured entry names the other defense under below:/above:, a line after them.
    than_field = f["relation"] if isinstance(raw, Mapping) and "metric" in raw else "than"
    than = _resolve_label(where, than_field, f["than"], defenses)
    if defense == than:
        raise ConfigError(f"{where}: defense={defense!r} is compared with itself: expected "
                          "two different defenses")
    poisoning = f.get("poisoning", NO_POISONING)
    if poisoning != NO_POISONING:
        poisoning = _choose(where, "poisoning", poisoning, [NO_POISONING, *poisonings],
                            "poisoning")

    threat, attack = f.get("threat"), f.get("attack")
    if threat is not None and not isinstance(threat, str):
        raise ConfigError(f"{where}.threat={threat!r} is not allowed: expected a threat id")
    if metric in EVASION_METRICS:
        threat, attack = _evasion_scope(where, metric, threat, attack, threats, attacks)
    else:
        if attack is not None:
            raise ConfigError(f"{where}.attack={attack!r} is not allowed: {metric} is not "
                              "measured by an attack (only robust_accuracy and "
                              "attack_success_rate are)")
        poisoning, threat = _other_scope(where, metric, threat, poisoning, poisonings,
                                         given_poisoning="poisoning" in f)
    dataset, model = f.get("dataset"), f.get("model")
    if dataset is not None:
        dataset = (_resolve_label(where, "dataset", dataset, datasets) if datasets is not None
                   else _str_field(where, "dataset", dataset))
    if model is not None:
        model = (_resolve_label(where, "model", model, models) if models is not None
                 else _str_field(where, "model", model))
    margin = f.get("margin", 0.0)
    if not _is_margin(margin):
        raise ConfigError(f"{where}.margin={margin!r} is not allowed: expected a number >= 0 "
                          "(in the metric's units)")
    required = f.get("required", False)
    if not isinstance(required, bool):
        raise ConfigError(f"{where}.required={required!r} is not allowed: expected true or "
                          "false")
    e = Expectation(metric=metric, defense=defense, relation=f["relation"], than=than,
                    poisoning=poisoning, threat=threat, attack=attack, dataset=dataset,
                    model=model, margin=float(margin), required=required,
                    claim=str(f.get("claim") or ""))
    # No text given: show the canonical line (stored as such, so that it round-trips).
    return e if e.claim else dataclasses.replace(e, claim=e.canonical())


def _evasion_scope(where: str, metric: str, threat: Any, attack: Any,
                   threats: Sequence[str], attacks: Sequence[str]) -> tuple[str, str]:
    """The threat and attack an evasion metric's claim is judged at (one of each)."""
    threat = (_only(where, "threat", threats, metric, "at", "an evasion threat")
              if threat is None else _choose(where, "threat", threat, threats,
                                             "evasion threat"))
    options = list(attacks)
    if metric == "robust_accuracy" and len(attacks) > 1:
        options.append(WORST_CASE)
    if attack is None:
        attack = (WORST_CASE if WORST_CASE in options
                  else _only(where, "attack", options, metric, "by", "an attack"))
    else:
        attack = _resolve_label(where, "attack", attack, attacks,
                                [WORST_CASE] if WORST_CASE in options else [])
    return threat, attack


def _other_scope(where: str, metric: str, threat: Any, poisoning: str,
                 poisonings: Sequence[str], *, given_poisoning: bool) -> tuple[str, Any]:
    """The poisoning and threat of a claim about a metric no attack measures."""
    if metric in POISONING_METRICS:
        if poisoning == NO_POISONING:
            if given_poisoning:
                raise ConfigError(f"{where}.poisoning='none' is not allowed: {metric} "
                                  "is measured under a poisoning")
            poisoning = _only(where, "poisoning", poisonings, metric, "under",
                              "a poisoning")
        if threat not in (None, poisoning):
            raise ConfigError(f"{where}.threat={threat!r} is not allowed: {metric} is "
                              f"measured under its poisoning ({poisoning!r}): leave the "
                              "threat out")
        threat = poisoning
    elif metric in FIXED_THREATS:
        fixed = FIXED_THREATS[metric]
        if threat not in (None, fixed):
            raise ConfigError(f"{where}.threat={threat!r} is not allowed: {metric} is "
                              f"measured on {fixed!r} noise only: leave the threat out")
        threat = fixed
    elif metric == "ray_confidence":
        threat = (_only(where, "threat", RAY_THREATS, metric, "at", "a ray multiplier")
                  if threat is None else _choose(where, "threat", threat, RAY_THREATS,
                                                 "ray"))
    elif metric in HIGHER_IS_BETTER and threat is not None:
        raise ConfigError(f"{where}.threat={threat!r} is not allowed: {metric} is "
                          "measured on the clean test inputs: leave the threat out")
    # A metric poisonlab does not know (registered by you) keeps what it was given.
    return poisoning, threat

def _str_field(where: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{field}={value!r} is not allowed: expected a label")
    return value


def parse_expectations(
    raw: Any,
    *,
    defenses: Sequence[str],
    poisonings: Sequence[str] = (),
    threats: Sequence[str] = (),
    attacks: Sequence[str] = (),
    metrics: Iterable[str] | None = None,
    datasets: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    where: str = "expectations",
) -> tuple[Expectation, ...]:
    """Validate a suite's ``expectations:`` list into :class:`Expectation` objects.

    Each entry is a one-line claim (:data:`GRAMMAR`), a mapping ``{claim: LINE, required:
    true}`` (also ``dataset``, ``model``), or a structured mapping ``{metric, defense,
    below|above, poisoning, threat, attack, dataset, model, margin, required, claim}``
    where ``claim`` is then free text shown in reports (default :meth:`Expectation.canonical`).

    Names. A defense (or attack, dataset, model) is its suite label
    (``label_smoothing(eps=0.1)``) or its bare name (``label_smoothing``) when only one
    label of the suite has that name. Defaults, so that common claims need no extra words:

    - ``poisoning``: ``none`` (the clean cells); for accuracy_drop, poisoning_success_rate
      and n_flipped, the suite's only poisoning (several: ``under`` is required).
    - ``threat``: robust_accuracy and attack_success_rate: the suite's only evasion threat
      (several: ``at`` is required); poisoning metrics: the poisoning id;
      offmanifold_confidence, alpha_star, offmanifold_auroc: ``uniform``;
      gaussian_confidence: ``gaussian``; ray_confidence: ``at alpha=A`` is required;
      every other metric has no threat (giving one is an error).
    - ``attack``: robust_accuracy: ``worst-case`` when the suite has several attacks, else
      its only attack; attack_success_rate: the only attack (several: ``by`` is required);
      no other metric takes one.
    - ``dataset``, ``model``: none, i.e. the claim is judged in every scope of the results.
    - ``margin``: 0; ``required``: false.

    Descriptive metrics (direction None, e.g. weight_norm) are allowed: a claim about a
    direction needs no notion of better.

    Parameters
    ----------
    raw : list or None
        The suite's ``expectations:`` value; None: no expectations.
    defenses : sequence of str
        The suite's defense labels (``spec_label``).
    poisonings, threats, attacks : sequence of str
        The suite's poisoning ids, evasion threat ids and attack labels.
    metrics : iterable of str, optional
        The metric names the suite measures (:func:`measured_metrics` of its metric
        groups); default every metric of :data:`poisonlab.metrics.HIGHER_IS_BETTER`.
    datasets, models : sequence of str, optional
        The suite's dataset and model labels; None: ``dataset``/``model`` are not checked.
    where : str
        How messages name the list.

    Returns
    -------
    tuple of Expectation
        Names resolved to labels and defaults filled in, in the order given.

    Raises
    ------
    SuiteError
        The list or an entry does not follow the format (not a list, an unknown key, a
        line off the grammar, no or two relations), or two entries make the same claim or
        opposite claims.
    UnknownNameError
        A metric, defense, poisoning, threat, attack, dataset or model is not known (with
        a did-you-mean hint).
    ConfigError
        A value is not allowed (an ambiguous bare name, a threat for a metric without one,
        a negative margin, a defense compared with itself...).

    Examples
    --------
    >>> es = parse_expectations(
    ...     ["accuracy_drop of gce below none under random 0.4",
    ...      {"claim": "robust_accuracy of pgd_at above none at linf eps=0.1",
    ...       "required": True}],
    ...     defenses=["none", "gce(q=0.7)", "pgd_at(eps=0.1)"],
    ...     poisonings=["random 0.2", "random 0.4"], threats=["linf eps=0.1"],
    ...     attacks=["fgsm", "pgd(steps=40)"])
    >>> for e in es:
    ...     print(e.defense, "|", e.threat, "|", e.attack, "|", e.required)
    gce(q=0.7) | random 0.4 | None | False
    pgd_at(eps=0.1) | linf eps=0.1 | worst-case | True
    >>> parse_expectations(["ece of lable_smoothing below none"],
    ...                    defenses=["none", "label_smoothing(eps=0.1)"])
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    poisonlab.errors.UnknownNameError: expectations[0].defense=... (did you mean 'label_smoothing'?)
    """
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise SuiteError(f"{where}={raw!r} is not allowed: expected a list of claims like "
                         f"'{GRAMMAR}'")
    known = list(HIGHER_IS_BETTER if metrics is None else dict.fromkeys(metrics))
    out: list[Expectation] = []
    seen: dict[tuple[Any, ...], int] = {}
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        e = _one(entry, at, defenses=defenses, poisonings=poisonings, threats=threats,
                 attacks=attacks, metrics=known, datasets=datasets, models=models)
        key = e.key()
        if key in seen:
            raise SuiteError(f"{at} repeats {where}[{seen[key]}]: both claim "
                             f"{e.canonical()!r}")
        lower, higher = key[-2:]
        opposite = (*key[:-2], higher, lower)
        if opposite in seen:
            raise SuiteError(f"{at} contradicts {where}[{seen[opposite]}]: "
                             f"{e.canonical()!r} and its opposite cannot both hold")
        seen[key] = i
        out.append(e)
    return tuple(out)

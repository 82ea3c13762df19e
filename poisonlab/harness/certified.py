"""Certified accuracy of partition-aggregation cells, and the check that no label-flip
attack ever beats a certificate.

A cell whose defense is ``dpa`` (partition aggregation) records, with the accuracy group:

- ``certified_accuracy`` at threat ``flips=R``: test points predicted correctly with a
  certified radius of at least ``R`` flipped training labels, for each ``R`` of the suite's
  ``certified: {flips: [...]}`` (a number of flips, or a fraction of the training set) and
  for each poisoning's budget ``round(rate * n_train)``;
- ``median_certified_radius``: the largest ``R`` at which at least half the test points
  are certified correct (-1 if fewer than half are correct);
- the whole certified curve (accuracy at every radius) in the cell's ``certified`` field,
  which the report draws.

The check (:func:`check_certificates`): a poisoned ``dpa`` cell trained on labels with
``n`` flips must classify correctly every test point that its clean-label counterpart
(same dataset, model, defense and seed) certified correct at radius ``n``; a point that it
misclassifies is a broken certificate, recorded as a flagged ``certificate_holds`` check.
The empirical accuracy under the attack can never fall below the certified accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..certify import Certificate, certify
from ..defenses.partition import PartitionEnsemble

#: The certified radii every dpa cell records when the suite names none: fractions of the
#: training set (0.5%, 1%, 2%).
DEFAULT_FLIPS: tuple[float, ...] = (0.005, 0.01, 0.02)
CHECK = "certificate_holds"
CHECK_DOC = "docs/certified.md#the-certificate-check"


def flip_counts(flips: tuple[float, ...], rates: list[float], n_train: int) -> list[int]:
    """The radii to record: each of ``flips`` (ints as is, fractions of ``n_train``) and
    each poisoning rate's budget, sorted, without repeats; 0 always.

    >>> flip_counts((0.01, 5), [0.2], 1000)
    [0, 5, 10, 200]
    """
    out = {0}
    for f in flips:
        out.add(round(f * n_train) if isinstance(f, float) and 0 < f < 1 else int(f))
    out.update(round(r * n_train) for r in rates)
    return sorted(out)


def certified_measurements(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, *,
                           flips: list[int], batch_size: int | None,
                           metric: Callable[..., dict[str, Any]]
                           ) -> tuple[list[dict[str, Any]], dict[str, Any] | None,
                                      list[int] | None]:
    """For a partition ensemble: its metric records (built by ``metric(name, value,
    threat=)``, the harness's record builder), its ``certified`` record and the per-point
    radii (for the check); nothing for any other model."""
    if not isinstance(model, PartitionEnsemble):
        return [], None, None
    cert = certify(model, x_test, batch_size=batch_size)
    out = [metric("certified_accuracy", cert.certified_accuracy(r, y_test),
                  threat=f"flips={r}") for r in flips]
    out.append(metric("median_certified_radius", float(cert.median_radius(y_test))))
    return out, certified_record(cert, y_test), certified_radii(cert, y_test)


def certified_record(cert: Certificate, y: torch.Tensor) -> dict[str, Any]:
    """The cell's ``certified`` field: what the certificate counts and its curve."""
    curve = cert.curve(y)
    return {"k": cert.k, "d": cert.d, "n_train": cert.n_train, "threat": cert.threat,
            "flips": list(curve), "accuracy": list(curve.values()),
            "median_radius": cert.median_radius(y)}


def certified_radii(cert: Certificate, y: torch.Tensor) -> list[int]:
    """Per test point: its radius if predicted correctly, else -1."""
    return torch.where(cert.prediction == y, cert.radius, -1).tolist()


def twin_key(r: dict[str, Any]) -> str:
    """What a poisoned record shares with its clean twin: dataset, model, defense, seed."""
    return repr((r["dataset"], r["model"], r["defense"], r["seed"]))


def check_certificates(records: list[dict[str, Any]]) -> None:
    """Add the ``certificate_holds`` check to each poisoned dpa record, in place (see the
    module docstring); replaces an earlier one, so it may run again."""
    clean = {twin_key(r): r for r in records if r["poisoning"] is None and r["status"] == "ok"
             and r.get("internal", {}).get("certified_radii") is not None}
    for r in records:
        if r["poisoning"] is None or r["status"] != "ok" or twin_key(r) not in clean:
            continue
        radii = np.asarray(clean[twin_key(r)]["internal"]["certified_radii"])
        n = int((r.get("poisoning_info") or {}).get("n_flipped", 0))
        y = np.asarray(r["internal"]["y_test"])
        pred = np.asarray(r["internal"]["pred_clean"])
        certified = radii >= n
        broken = int((certified & (pred != y)).sum())
        r["checks"] = [c for c in r.get("checks") or [] if c["check"] != CHECK]
        r["checks"].append(certificate_outcome(int(certified.sum()), broken, n, len(y),
                                               r["poisoning"]["id"]))


def certificate_outcome(certified: int, broken: int, flips: int, n: int,
                        threat: str) -> dict[str, Any]:
    """The check's record (the sanity checks' format: docs/checks.md)."""
    if broken:
        message = (f"{broken} of the {certified} test points certified correct against "
                   f"{flips} flips are misclassified after this attack's {flips} flips: the "
                   "certificate is broken (a poisonlab bug; please report it)")
    else:
        message = (f"all {certified} of {n} test points certified correct against {flips} "
                   f"flips stay correct under this attack's {flips} flips")
    return {"check": CHECK, "status": "flag" if broken else "pass", "message": message,
            "doc": CHECK_DOC, "threat": threat,
            "evidence": {"certified": certified, "broken": broken, "flips": flips, "n": n}}

"""Read a run's results.json into pandas: one tidy row per measured number.

Two readers, one table shape each (no argument changes what comes back):

- :func:`load_results`: one row per cell x metric record (a metric record carries its
  threat and attack), the numbers exactly as stored per seed;
- :func:`load_aggregates`: the ``aggregates`` of results.json, mean, std and n over seeds.

pandas is imported when they are called, not with poisonlab.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._text import spec_label
from ..errors import DataError
from .schema import RESULTS_NAME, evasion_threats, validate_results
from .schema import RESULTS_SCHEMA_VERSION as SCHEMA_VERSION

if TYPE_CHECKING:
    import pandas as pd

#: The threat as numbers, for filtering and plotting: the evasion threat's ``norm``,
#: ``eps`` (float; NaN where the number has no evasion threat) and ``targeted``, the
#: poisoning's ``strategy`` and ``budget`` (its flip rate; 0.0 for clean cells), and
#: ``flips``, the radius of a certified accuracy (threat ``flips=R``; NaN otherwise).
THREAT_COLUMNS = ("norm", "eps", "targeted", "strategy", "budget", "flips")
#: Columns of :func:`load_results`, in order.
RESULT_COLUMNS = ("suite", "suite_version", "key", "dataset", "model", "defense", "poisoning",
                  "seed", "status", "error", "metric", "threat", "attack", "value",
                  "higher_is_better", *THREAT_COLUMNS)
#: Columns of :func:`load_aggregates`, in order.
AGGREGATE_COLUMNS = ("suite", "suite_version", "dataset", "model", "defense", "poisoning",
                     "metric", "threat", "attack", "mean", "std", "n", "n_failed",
                     "higher_is_better", *THREAT_COLUMNS)


def read_results(path: str | Path) -> dict[str, Any]:
    """Read results.json from a run folder or the file itself and check it is one.

    Parameters
    ----------
    path : str or Path
        A folder written by ``poisonlab run`` or its ``results.json``.

    Returns
    -------
    dict
        The results document, as written (``None`` where a number was undefined).

    Raises
    ------
    DataError
        ``path`` does not exist, the folder holds no results.json, or the file is not a
        poisonlab results.json of schema version 1.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_NAME
        if not p.is_file():
            raise DataError(f"path={str(path)!r} holds no {RESULTS_NAME}: expected a folder "
                            "written by 'poisonlab run' (or run 'poisonlab report' on it)")
    elif not p.is_file():
        raise DataError(f"path={str(path)!r} does not exist: expected a run folder or its "
                        f"{RESULTS_NAME}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"path={str(p)!r} is not a poisonlab {RESULTS_NAME}: "
                        f"{type(e).__name__}: {e}".replace("\n", " ")) from None
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if version != SCHEMA_VERSION:
        raise DataError(f"path={str(p)!r} is not a poisonlab {RESULTS_NAME}: "
                        f"schema_version={version!r}, expected {SCHEMA_VERSION}")
    # suite, environment and aggregates as the gate reads them; cells where they are read
    validate_results(doc, where=f"path={str(p)!r}")
    if not isinstance(doc.get("cells"), list):
        raise DataError(f"path={str(p)!r}: cells={doc.get('cells')!r:.60} is not allowed: "
                        "expected a list")
    return doc


def _malformed(path: str | Path, where: str, e: Exception) -> DataError:
    what = f"has no {e}" if isinstance(e, KeyError) else f"is malformed ({e})"
    return DataError(f"path={str(path)!r}: {where} {what}: expected it as 'poisonlab run' "
                     "writes it (poisonlab/schemas/results.schema.json)".replace("\n", " "))


def _threats(doc: dict[str, Any]) -> tuple[dict[str, tuple[str, float, bool]],
                                          dict[str, tuple[str, float]]]:
    """Evasion threat id -> (norm, eps, targeted) with the exact eps of the threat model
    (an id shows eps to 6 digits), and poisoning id -> (strategy, rate)."""
    evasion = {t["id"]: (t["norm"], float(t["eps"]), t["targeted"])
               for t in evasion_threats(doc)}
    poisoning = {p["id"]: (p.get("strategy"), float(p["rate"]))
                 for p in (doc.get("threat_model") or {}).get("poisoning") or []
                 if "id" in p and "rate" in p}
    return evasion, poisoning


def _threat_values(threat: Any, poisoning: str, threats: tuple[dict[str, Any], dict[str, Any]]
                   ) -> tuple[Any, ...]:
    """The THREAT_COLUMNS of one number, from the run's threat model."""
    evasion, flips = threats
    norm, eps, targeted = evasion.get(threat, (None, math.nan, None))
    strategy, budget = flips.get(poisoning, (None, math.nan if poisoning != "none" else 0.0))
    radius = (float(threat.removeprefix("flips=")) if isinstance(threat, str)
              and threat.startswith("flips=") else math.nan)
    return norm, eps, targeted, strategy, budget, radius


def _rows_of(head: tuple[Any, ...], c: Any,
             threats: tuple[dict[str, Any], dict[str, Any]]) -> list[tuple[Any, ...]]:
    poisoning = "none" if c["poisoning"] is None else c["poisoning"]["id"]
    cell = (*head, c["key"], spec_label(c["dataset"]), spec_label(c["model"]),
            spec_label(c["defense"]), poisoning, c["seed"], c["status"], c.get("error"))
    if not c["metrics"]:
        return [(*cell, None, None, None, None, None,
                 *_threat_values(None, poisoning, threats))]
    return [(*cell, m["metric"], m["threat"], m["attack"], m["value"], m["higher_is_better"],
             *_threat_values(m["threat"], poisoning, threats))
            for m in c["metrics"]]


def _typed(df: pd.DataFrame, dtypes: dict[str, str], path: str | Path) -> pd.DataFrame:
    try:
        return df.astype(dtypes)
    except (ValueError, TypeError, OverflowError) as e:
        raise _malformed(path, "a column", e) from None


def load_results(path: str | Path) -> pd.DataFrame:
    """Every number of a run as a tidy table: one row per cell x metric record.

    A metric record is measured under one threat (``"linf eps=0.1"``, ``"random 0.2"``,
    ``None`` for clean metrics) and, for evasion, one attack; so a cell has one row per
    (metric, threat, attack). A failed cell has no metrics: it keeps one row with
    ``status="failed"``, its ``error``, and missing ``metric``, ``threat``, ``attack``,
    ``value`` and ``higher_is_better``, so that no cell drops out unseen; filter with
    ``df[df.status == "ok"]``. ``path`` is what :func:`read_results` takes.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`RESULT_COLUMNS`: ``suite`` (name) and ``suite_version``; the cell's
        ``key``, ``dataset``, ``model`` and ``defense`` labels (as in the aggregates and
        reports, e.g. ``"label_smoothing(eps=0.1)"``), ``poisoning`` (threat id or
        ``"none"``), ``seed`` (int64), ``status`` (``"ok"`` or ``"failed"``) and ``error``;
        the record's ``metric``, ``threat``, ``attack``, ``value`` (float64, NaN where
        results.json holds null) and ``higher_is_better`` (nullable boolean); then the
        threat as numbers (:data:`THREAT_COLUMNS`): ``norm``, ``eps`` (float64, NaN for a
        number measured without an evasion threat) and ``targeted`` of the evasion
        threat, ``strategy`` and ``budget`` (float64 flip rate, 0.0 for clean cells) of
        the cell's poisoning, and ``flips`` (float64) for a certified accuracy. Rows in
        cell (grid) order, then in the cell's metric order.

    Raises
    ------
    DataError
        ``path`` does not exist or is not a poisonlab results.json (see
        :func:`read_results`).

    See Also
    --------
    load_aggregates : mean, std and n over seeds.

    Examples
    --------
    >>> from poisonlab import load_results
    >>> df = load_results("runs/quickstart")  # doctest: +SKIP
    >>> ra = df[(df.metric == "robust_accuracy") & (df.attack == "worst-case")]  # doctest: +SKIP
    >>> ra.groupby(["defense", "threat"]).value.mean()  # doctest: +SKIP
    >>> ra[(ra.norm == "linf") & (ra.eps <= 0.1)].pivot_table(  # doctest: +SKIP
    ...     index="defense", columns="eps", values="value")
    """
    import pandas as pd

    doc = read_results(path)
    suite, version = doc["suite"]["name"], doc["suite"]["version"]
    rows: list[tuple[Any, ...]] = []
    threats = _threats(doc)
    for i, c in enumerate(doc["cells"]):
        try:
            rows += _rows_of((suite, version), c, threats)
        except (KeyError, TypeError, AttributeError) as e:
            raise _malformed(path, f"cells[{i}]", e) from None
    df = pd.DataFrame.from_records(rows, columns=list(RESULT_COLUMNS))
    return _typed(df, {"suite_version": "int64", "seed": "int64", "value": "float64",
                       "higher_is_better": "boolean", **_THREAT_DTYPES}, path)


def load_aggregates(path: str | Path) -> pd.DataFrame:
    """The aggregates of a run: mean, std and n over seeds, one row per group x metric.

    A group is (dataset, model, defense, poisoning); failed cells are left out of ``mean``
    and counted in ``n_failed``. The table is results.json's ``aggregates``, not
    recomputed.

    ``path`` is what :func:`load_results` takes: a folder written by ``poisonlab run``
    or its ``results.json``. Returns a pandas.DataFrame with the columns
    :data:`AGGREGATE_COLUMNS`: ``suite``, ``suite_version``, the group's ``dataset``,
    ``model``, ``defense`` and ``poisoning`` labels (as in :func:`load_results`),
    ``metric``, ``threat``, ``attack``, ``mean`` and ``std`` (float64, sample std with
    ddof=1, 0 for n=1, NaN where results.json holds null), ``n`` and ``n_failed`` (int64),
    ``higher_is_better`` (nullable boolean), and the threat as numbers like
    :func:`load_results` (:data:`THREAT_COLUMNS`).

    Raises
    ------
    DataError
        ``path`` does not exist or is not a poisonlab results.json.

    See Also
    --------
    load_results : the per-seed numbers these are computed from.

    Examples
    --------
    >>> from poisonlab import load_aggregates
    >>> agg = load_aggregates("runs/quickstart")  # doctest: +SKIP
    >>> acc = agg[agg.metric == "clean_accuracy"]  # doctest: +SKIP
    >>> acc.pivot(index="defense", columns="poisoning", values="mean")  # doctest: +SKIP
    """
    import pandas as pd

    doc = read_results(path)
    suite, version = doc["suite"]["name"], doc["suite"]["version"]
    rows = []
    threats = _threats(doc)
    for i, a in enumerate(doc["aggregates"]):
        try:
            own = AGGREGATE_COLUMNS[2:-len(THREAT_COLUMNS)]
            rows.append((suite, version, *(a[k] for k in own),
                         *_threat_values(a["threat"], a["poisoning"], threats)))
        except KeyError as e:
            raise _malformed(path, f"aggregates[{i}]", e) from None
    df = pd.DataFrame.from_records(rows, columns=list(AGGREGATE_COLUMNS))
    return _typed(df, {"suite_version": "int64", "mean": "float64", "std": "float64",
                       "n": "int64", "n_failed": "int64", "higher_is_better": "boolean",
                       **_THREAT_DTYPES}, path)


_THREAT_DTYPES = {"eps": "float64", "targeted": "boolean", "budget": "float64",
                  "flips": "float64"}

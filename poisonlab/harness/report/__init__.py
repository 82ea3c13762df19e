"""Reports generated from results.json alone: report.md (figures beside it) and a
self-contained report.html (figures embedded).

Contents: the threat model; the evaluation sanity checks' flags beside the defense they
concern (docs/checks.md); a verdict per defense against the ``none`` baseline, decided by
seed noise and stated plainly (including "no clear difference"); tables of mean +- std (n)
for every metric; plots of robust accuracy against eps, accuracy against flip rate, and
confidence along ``alpha * x``.

The package: :mod:`.view` (the results as the report reads them), :mod:`.tables` (verdicts,
ranking, tables), :mod:`.figures` (matplotlib figures) and :mod:`.documents` (report.md,
report.html and the CLI summary); every public name imports from here.
"""

from __future__ import annotations

from .documents import (
    sanity_summary,
    summary_rows,
    threat_summary,
    write_reports,
)
from .figures import (
    figures,
    pooled_reliability,
)
from .tables import (
    PRETRAINED,
    findings,
    ranking,
    tables,
    threat_columns,
)
from .view import (
    BASELINE,
    Results,
    Table,
    flip_description,
    flip_family,
    fmt,
)

__all__ = [
    "BASELINE",
    "PRETRAINED",
    "Results",
    "Table",
    "figures",
    "findings",
    "flip_description",
    "flip_family",
    "fmt",
    "pooled_reliability",
    "ranking",
    "sanity_summary",
    "summary_rows",
    "tables",
    "threat_columns",
    "threat_summary",
    "write_reports",
]

"""The old home of a cell's measurement: :mod:`poisonlab.harness.measure` now.

Kept so that ``from poisonlab.harness.evaluate import evaluate_cell`` keeps working
(issue 20); ``evaluate_cell`` (the record, with a progress bar) lives with the executors,
``measure_cell`` (a :class:`~poisonlab.harness.measure.CellResult`) in ``measure``.
"""

from __future__ import annotations

from .executors import evaluate_cell
from .measure import CellResult, derive_poisoning, measure_cell, metric, unexpected_error

__all__ = ["CellResult", "derive_poisoning", "evaluate_cell", "measure_cell", "metric",
           "unexpected_error"]

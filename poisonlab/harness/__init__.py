"""The benchmark harness: suites, cells, runs, stored results and reports."""

from __future__ import annotations

from .executors import executors
from .results import load_aggregates, load_results, read_results
from .runner import run_suite, write_results
from .spec import Cell, Suite
from .suite import load_suite, parse_suite

__all__ = ["Cell", "Suite", "executors", "load_aggregates", "load_results", "load_suite",
           "parse_suite", "read_results", "run_suite", "write_results"]

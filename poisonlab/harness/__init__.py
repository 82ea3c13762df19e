"""The benchmark harness: suites, cells, runs, stored results and reports."""

from __future__ import annotations

from .executors import executors
from .runner import run_suite, write_results
from .suite import Cell, Suite, load_suite, parse_suite

__all__ = ["Cell", "Suite", "executors", "load_suite", "parse_suite", "run_suite",
           "write_results"]

"""Executors run cells and hand each finished record back as soon as it exists.

An executor is a callable ``(suite, cells, on_done, progress) -> None`` that calls
``on_done(position, record)`` once per cell, in any order; the runner stores each record
before the next one is handed over. ``local`` runs cells one after another in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from ..registry import Registry
from .evaluate import evaluate_cell
from .suite import Cell, Suite

OnDone = Callable[[int, dict[str, Any]], None]


class Executor(Protocol):
    def __call__(self, suite: Suite, cells: Sequence[tuple[int, Cell]], on_done: OnDone,
                 *, progress: bool) -> None: ...


executors: Registry[Executor] = Registry("executor")


@executors.register("local", help="run cells one after another in this process")
def run_local(suite: Suite, cells: Sequence[tuple[int, Cell]], on_done: OnDone,
              *, progress: bool) -> None:
    bar = tqdm(cells, desc=f"{suite.name}: cells", unit="cell", disable=None if progress else True)
    for position, cell in bar:
        bar.set_postfix_str(f"{cell.defense.label} | {cell.poison_id} | seed {cell.seed}")
        on_done(position, evaluate_cell(suite, cell))

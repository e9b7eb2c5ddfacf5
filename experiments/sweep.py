"""Run a grid of cells into a `ResultsStore`: skip finished cells, write each as it finishes.

    results = run_cells(store, cells, compute, desc="curves")

``compute(cell) -> CellResult`` does the work of one cell. The runner shows a progress bar
(cells done / total, ETA) on stderr, writes every finished cell in its own transaction, and
returns the stored rows of all the cells, in the order given, finished earlier or now.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, NamedTuple, Sequence

from .store import Cell, ResultsStore

__all__ = ["CellResult", "run_cells", "progress_bar"]


class CellResult(NamedTuple):
    """What a cell's computation returns: JSON-able metrics and its cost."""

    metrics: dict
    steps: int          # trajectory-steps simulated
    device: str = "cpu"


def progress_bar(total: int, desc: str, enabled: bool | None = None):
    """A tqdm bar on stderr (disabled when ``enabled`` is False or stderr is not a terminal and
    ``enabled`` is None)."""
    from tqdm import tqdm
    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="cell", disable=disable, dynamic_ncols=True)


def run_cells(store: ResultsStore, cells: Sequence[Cell], compute: Callable[[Cell], CellResult],
              *, desc: str = "cells", progress: bool | None = None) -> list[dict]:
    """Compute the cells that are not in ``store`` yet, one transaction per finished cell.

    Args:
        store: where finished cells live.
        cells: the grid; duplicates are computed once.
        compute: maps a cell to its `CellResult`.
        desc: label of the progress bar.
        progress: force the bar on or off (default: on when stderr is a terminal).
    Returns:
        The stored row (see `ResultsStore.rows`) of every cell, in the order of ``cells``.
    """
    unique = list({c.key: c for c in cells}.values())
    todo = [c for c in unique if not store.done(c)]
    with progress_bar(len(unique), desc, progress) as bar:
        bar.update(len(unique) - len(todo))
        for cell in todo:
            start = time.perf_counter()
            result = compute(cell)
            store.put(cell, result.metrics, steps=result.steps,
                      seconds=time.perf_counter() - start, device=result.device)
            bar.update(1)
    return [store.get(c) for c in cells]

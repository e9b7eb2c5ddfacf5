"""Run a grid of cells into a `ResultsStore`: skip finished cells, write each as it finishes.

    results = run_cells(store, cells, compute, desc="curves")

``compute(cell) -> CellResult`` does the work of one cell. The runner shows a progress bar
(cells done / total, ETA) on stderr, writes every finished cell in its own transaction, and
returns the stored rows of all the cells, in the order given, finished earlier or now.

With ``backend="ray"`` the cells run as Ray tasks (a local Ray instance, or the cluster at
``address``); each result comes back to the driver, which alone writes the store, as soon as
that cell finishes, so an interrupted Ray sweep resumes like a local one. ``compute`` then must
be picklable: a module-level function or a closure over plain data (not over the store).

A command gets the ``--backend/--address`` flags with `add_backend_arguments(parser)` and
passes them on with ``run_cells(..., **backend_options(args))``.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, NamedTuple, Sequence

from .store import Cell, ResultsStore

__all__ = ["CellResult", "run_cells", "progress_bar", "add_backend_arguments", "backend_options",
           "BACKENDS"]

BACKENDS = ("local", "ray")


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


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--backend {local,ray}`` and ``--address ADDR`` to a command's parser."""
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="where cells run: this process (local, default) or Ray tasks "
                             "(needs pip install 'chaosgrad[ray]')")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address for --backend ray (default: start a local one)")


def backend_options(args: argparse.Namespace) -> dict:
    """``{"backend", "address"}`` from parsed `add_backend_arguments` flags, for `run_cells`."""
    if args.address is not None and args.backend != "ray":
        raise ValueError("--address needs --backend ray")
    return {"backend": args.backend, "address": args.address}


def _timed(compute: Callable[[Cell], CellResult], cell: Cell) -> tuple[CellResult, float]:
    start = time.perf_counter()
    result = compute(cell)
    return result, time.perf_counter() - start


def run_cells(store: ResultsStore, cells: Sequence[Cell], compute: Callable[[Cell], CellResult],
              *, desc: str = "cells", progress: bool | None = None, backend: str = "local",
              address: str | None = None) -> list[dict]:
    """Compute the cells that are not in ``store`` yet, one transaction per finished cell.

    Args:
        store: where finished cells live.
        cells: the grid; duplicates are computed once.
        compute: maps a cell to its `CellResult` (picklable for the Ray backend).
        desc: label of the progress bar.
        progress: force the bar on or off (default: on when stderr is a terminal).
        backend: "local" (this process, in order) or "ray" (one Ray task per cell, one CPU
            each, written in the order they finish).
        address: the Ray cluster to join (None: reuse or start a local instance).
    Returns:
        The stored row (see `ResultsStore.rows`) of every cell, in the order of ``cells``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    unique = list({c.key: c for c in cells}.values())
    todo = [c for c in unique if not store.done(c)]
    with progress_bar(len(unique), desc, progress) as bar:
        bar.update(len(unique) - len(todo))
        for cell, (result, seconds) in _results(todo, compute, backend, address):
            store.put(cell, result.metrics, steps=result.steps, seconds=seconds,
                      device=result.device)
            bar.update(1)
    return [store.get(c) for c in cells]


def _results(todo: list[Cell], compute, backend: str, address: str | None):
    """Yield ``(cell, (result, seconds))`` as each cell finishes."""
    if backend == "local" or not todo:
        for cell in todo:
            yield cell, _timed(compute, cell)
        return
    from estimators.distributed import connect
    ray = connect(address)
    task = ray.remote(num_cpus=1)(_timed)
    fn = ray.put(compute)
    pending = {task.remote(fn, cell): cell for cell in todo}
    try:
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(ready), ray.get(ready)
    finally:  # interrupted (or a cell failed): stop the rest; finished cells are stored
        for ref in pending:
            ray.cancel(ref)

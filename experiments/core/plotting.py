"""What every figure shares: a figure without global pyplot state, saving it with its data and
caption, estimator colours and labels, log axes, error bars on a log scale, and off-scale marks.

Every figure of a results directory is ``DIR/figures/<name>.png`` beside ``<name>.csv`` (the
plotted numbers) and ``<name>.txt`` (a one-paragraph caption), which the report embeds:

    fig, axes = new_figure(1, 2, width=10, height=4)
    errorbar(axes[0][0], xs, log10_values, log10_ses, color=estimator_color("bptt"))
    save_figure(fig, "results", "fig1_gradient_variance", ["T", "log10_var"], rows, caption)

Matplotlib is imported inside the functions, so commands that draw nothing do not load it.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

__all__ = ["new_figure", "save_figure", "ESTIMATOR_COLORS", "ESTIMATOR_LABELS",
           "estimator_color", "estimator_label", "colors", "finite", "errorbar", "log_y",
           "headroom", "off_scale"]

ESTIMATOR_COLORS = {"bptt": "tab:red", "truncated_bptt": "tab:orange",
                    "antithetic_es": "tab:blue", "truncated_es": "tab:cyan", "pes": "tab:green",
                    "nres": "tab:purple"}
ESTIMATOR_LABELS = {"bptt": "BPTT", "truncated_bptt": "TruncatedBPTT",
                    "antithetic_es": "AntitheticES", "truncated_es": "TruncatedES", "pes": "PES",
                    "nres": "NRES"}


def estimator_color(name: str) -> str | None:
    """The colour of estimator ``name`` in every figure (None: matplotlib's next colour)."""
    return ESTIMATOR_COLORS.get(name)


def estimator_label(name: str) -> str:
    """The paper's name of estimator ``name`` (``"pes"`` -> ``"PES"``; others unchanged)."""
    return ESTIMATOR_LABELS.get(name, name)


def new_figure(nrows: int, ncols: int, width: float, height: float, *,
               layout: str | None = "constrained", **subplots):
    """``(figure, axes[nrows][ncols])``: a `matplotlib.figure.Figure` (no pyplot state, nothing
    to close) of ``width x height`` inches; ``subplots`` go to ``Figure.subplots`` (sharex=...)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout=layout)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, axes


def save_figure(fig, directory: str | Path, name: str, header: Sequence[str],
                rows: Sequence[Sequence], caption: str, dpi: int = 150) -> Path:
    """Write ``DIR/figures/name.png``, its data ``name.csv`` (``header`` then ``rows``) and its
    caption ``name.txt`` (whitespace collapsed to one paragraph); returns the PNG path."""
    out = Path(directory) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    fig.savefig(png, dpi=dpi)
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    (out / f"{name}.txt").write_text(" ".join(caption.split()) + "\n")
    return png


def colors(n: int) -> list:
    """``n`` colours along viridis (one per horizon, per learning rate, ...)."""
    from matplotlib import colormaps
    cm = colormaps["viridis"]
    return [cm(0.1 + 0.8 * i / max(n - 1, 1)) for i in range(n)]


def finite(xs, ys, es=None):
    """``(xs, ys)`` (and ``es``) without the points whose y is not finite."""
    keep = [i for i, y in enumerate(ys) if math.isfinite(y)]
    pick = lambda v: [v[i] for i in keep]  # noqa: E731
    return (pick(xs), pick(ys)) if es is None else (pick(xs), pick(ys), pick(es))


def errorbar(ax, xs, logs, ses, log: bool = True, **kw) -> None:
    """Plot ``10**logs`` on a log y axis with multiplicative error bars ``10**(logs +- ses)``
    (with ``log=False``: ``logs`` as they are, on a linear axis, error bars +- ``ses``).

    Points whose value is not finite are left out; a NaN SE (a single seed) draws no bar.
    """
    xs, logs, ses = finite(xs, logs, ses)
    if log:
        ax.set_yscale("log")
    if not xs:
        return
    ses = [e if math.isfinite(e) else 0.0 for e in ses]
    if not log:
        ax.errorbar(xs, logs, yerr=ses if any(ses) else None, capsize=2, **kw)
        return
    ys = [10.0 ** m for m in logs]
    err = [[y - 10.0 ** (m - e) for y, m, e in zip(ys, logs, ses)],
           [10.0 ** (m + e) - y for y, m, e in zip(ys, logs, ses)]]
    ax.errorbar(xs, ys, yerr=err if any(ses) else None, capsize=2, **kw)


def log_y(ax) -> None:
    """Log y axis with at most ~8 labelled decades (ranges can span 30 decades in chaos); a
    panel with nothing positive to show (every draw overflowed) says so instead."""
    import numpy as np
    from matplotlib.ticker import LogLocator, NullLocator
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    if not any(((y > 0) & np.isfinite(y)).any() for y in ys if y.size):
        ax.text(0.5, 0.5, "no finite positive values", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=8))
    ax.yaxis.set_minor_locator(NullLocator())


def headroom(ax, fraction: float) -> None:
    """Extend a log y axis upwards by ``fraction`` of its decades (room for the legend)."""
    lo, hi = ax.get_ylim()
    if lo > 0 and hi > lo:
        ax.set_ylim(lo, hi * (hi / lo) ** fraction)


def off_scale(ax, cap: float, values: dict[str, float], what: str = "MSE") -> None:
    """Clip the y axis at ``cap`` and name the curves that lie wholly above it.

    ``values`` maps each curve's label to its smallest value (chaos puts BPTT's MSE near 1e25,
    which would flatten every other curve).
    """
    off = {label: v for label, v in values.items() if v > cap}
    if not off:
        return
    lo, _ = ax.get_ylim()
    ax.set_ylim(lo, cap)
    ax.text(0.98, 0.97, "off scale: " + ", ".join(f"{label} ({what} $\\geq$ {v:.0e})"
                                                  for label, v in off.items()),
            transform=ax.transAxes, ha="right", va="top", fontsize=7.5,
            bbox={"fc": "white", "ec": "0.8", "alpha": 0.9})

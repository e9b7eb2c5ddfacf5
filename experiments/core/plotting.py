"""What every figure shares: a figure without global pyplot state, saving it with its data and
caption, estimator colours and labels, log axes, error bars on a log scale, and off-scale marks.

Every figure of a results directory is ``DIR/figures/<name>.png`` beside ``<name>.csv`` (the
plotted numbers) and ``<name>.txt`` (a one-paragraph caption), which the report embeds:

    fig, axes = new_figure(1, 2, width=10, height=4)
    errorbar(axes[0][0], xs, log10_values, log10_ses, color=estimator_color("bptt"))
    save_figure(fig, "results", "fig1_gradient_variance", ["T", "log10_var"], rows, caption)

Text that comes from the user (a system's name, a file path) goes through `text` before it
reaches matplotlib, so a ``$`` in it is not read as mathtext; figure file names come from
`file_stem` (readable, no hash). Point labels are placed by `label_points` so they do not
overlap.

Matplotlib is imported inside the functions, so commands that draw nothing do not load it.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Sequence

__all__ = ["new_figure", "save_figure", "ESTIMATOR_COLORS", "ESTIMATOR_LABELS",
           "estimator_color", "estimator_label", "colors", "finite", "errorbar", "log_y",
           "headroom", "off_scale", "text", "file_stem", "label_points"]

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "_": r"\_", "$": r"\$", "%": r"\%", "&": r"\&",
                "#": r"\#", "{": r"\{", "}": r"\}", "^": r"\^{}", "~": r"\~{}"}


def text(value: object) -> str:
    """``str(value)`` safe as matplotlib text: mathtext reads ``$...$`` as math, so every ``$`` is
    escaped (``_`` and ``\\`` are literal outside math); under ``text.usetex`` every LaTeX
    special character is escaped."""
    import matplotlib
    s = str(value)
    if matplotlib.rcParams.get("text.usetex"):
        return re.sub(r"[\\_$%&#{}^~]", lambda m: _TEX_SPECIAL[m.group()], s)
    return s.replace("$", r"\$")


def file_stem(*parts: object) -> str:
    """A readable figure file name from ``parts`` (``"advise", "henon.py:Henon", "chaotic",
    "mse"`` -> ``advise_henon_Henon_chaotic_mse``): a ``path/file.py:attr`` target becomes
    ``file_attr``; other characters outside ``[0-9A-Za-z_.-]`` become ``_``; empty parts are
    left out."""
    out = []
    for part in parts:
        s = str(part) if part is not None else ""
        where, sep, attr = s.rpartition(":")
        if sep and (where.endswith(".py") or "/" in where or "\\" in where):
            s = f"{Path(where.replace(chr(92), '/')).stem}_{attr}"
        s = re.sub(r"[^0-9A-Za-z_.-]+", "_", s).strip("_.")
        if s:
            out.append(s)
    return "_".join(out)

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


def off_scale(ax, cap: float, values: dict, what: str = "MSE") -> list[str]:
    """Clip the y axis at ``cap`` and name every curve that leaves it; returns their labels.

    ``values`` maps each curve's label to its values (or to one value): chaos puts BPTT's MSE
    near 1e25, which would flatten every other curve. A curve wholly above the cap is named with
    its smallest value, one partly above with how many of its points leave the axis and its
    largest value.
    """
    off = []
    for label, vs in values.items():
        vs = [v for v in ([vs] if isinstance(vs, (int, float)) else vs) if math.isfinite(v)]
        above = [v for v in vs if v > cap]
        if not above:
            continue
        if len(above) == len(vs):
            off.append((label, f"{text(label)} ({what} $\\geq$ {min(vs):.0e})"))
        else:
            off.append((label, f"{text(label)} ({len(above)} of {len(vs)} points, up to "
                               f"{max(above):.0e})"))
    if not off:
        return []
    lo, _ = ax.get_ylim()
    ax.set_ylim(lo, cap)
    ax.text(0.98, 0.97, "off scale: " + ", ".join(t for _, t in off),
            transform=ax.transAxes, ha="right", va="top", fontsize=7.5, wrap=True,
            bbox={"fc": "white", "ec": "0.8", "alpha": 0.9})
    return [label for label, _ in off]


# offsets (points) tried in turn for a point's label: right, above, below, left, further out
_OFFSETS = [(4, 3), (4, -10), (-4, 3), (-4, -10), (4, 12), (4, -19), (-4, 12), (-4, -19),
            (4, 21), (4, -28), (-4, 21), (-4, -28)]


def label_points(ax, points: Sequence[tuple], fontsize: float = 7) -> list:
    """Label data points without overlaps: ``points`` are ``(x, y, label, color)``; each label
    takes the first offset around its point whose box overlaps no label placed before (and is
    left out, rather than overlapping, when none is free). Call it after the axis limits and
    scales are final. Points outside the axes are not labelled. Returns the text artists."""
    fig = ax.figure
    if not hasattr(fig.canvas, "get_renderer"):  # a bare Figure: measure with Agg
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    scale = fig.dpi / 72.0
    placed, artists = [], []
    for x, y, label, color in points:
        px, py = ax.transData.transform((x, y))
        if not (box.x0 - 1 <= px <= box.x1 + 1 and box.y0 - 1 <= py <= box.y1 + 1):
            continue
        w, h = 0.62 * fontsize * len(str(label)) * scale, fontsize * 1.2 * scale
        for dx, dy in _OFFSETS:
            x0 = px + dx * scale - (w if dx < 0 else 0)
            y0 = py + dy * scale
            rect = (x0, y0, x0 + w, y0 + h)
            if all(rect[2] <= r[0] or rect[0] >= r[2] or rect[3] <= r[1] or rect[1] >= r[3]
                   for r in placed):
                placed.append(rect)
                artists.append(ax.annotate(text(label), (x, y), xytext=(dx, dy),
                                           textcoords="offset points", fontsize=fontsize,
                                           color=color, ha="right" if dx < 0 else "left",
                                           va="bottom", annotation_clip=True))
                break
    return artists

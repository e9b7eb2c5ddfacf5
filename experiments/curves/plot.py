"""The curves' three figures: bias^2, variance, MSE and cosine against the horizon T, against
the truncation K, and the MSE against the cost (simulated steps and wall time)."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import estimators
from experiments.core.plotting import (estimator_color, estimator_label, file_stem, label_points,
                                       log_y, new_figure, off_scale, save_figure, text)
from experiments.core.resolve import system_regimes

from .config import Config, truncation_for_horizons
from .summary import slope_log_variance

__all__ = ["plot", "plot_horizon", "plot_truncation", "plot_cost"]

_MARKERS = {  # marker, marker size, filled: overlapping curves stay visible
    "bptt": ("o", 5, True), "truncated_bptt": ("s", 5, True), "antithetic_es": ("o", 9, False),
    "truncated_es": ("D", 4, True), "pes": ("P", 6, True), "nres": ("x", 6, True)}
_METRICS = [("variance", "variance of one estimate"),
            ("bias2", "bias$^2$ = $\\|E\\,\\hat g - \\nabla L_\\sigma\\|^2$"),
            ("mse", "MSE = bias$^2$ + variance"),
            ("cosine", "E cos(estimate, $\\nabla L_\\sigma$)")]
_CSV_COLUMNS = ["system", "regime", "estimator", "T", "K", "sigma", "pairs", "draws", "seeds",
                "bias2", "bias2_se", "bias_z", "variance", "variance_se", "variance_lo",
                "variance_hi", "mse", "mse_se", "cosine", "cosine_se", "steps", "seconds",
                "nonfinite", "nonfinite_fraction"]
_DPI = 120


def _style(name: str) -> dict:
    color = estimator_color(name)
    marker, size, filled = _MARKERS.get(name, ("o", 5, True))
    return {"color": color, "marker": marker, "ms": size,
            "mfc": color if filled else "none", "mew": 1.2}


def _regime_title(system: str, regime: str) -> str:
    settings = system_regimes(system).get(regime, {})
    inner = ", ".join(f"{k} = {v:g}" if isinstance(v, (int, float)) else f"{k} = {v}"
                      for k, v in settings.items())
    return f"{regime} regime" + (f" ({inner})" if inner else "")


def _csv_rows(rows: list[dict]) -> list[list]:
    return [["" if r.get(k) is None else r.get(k) for k in _CSV_COLUMNS] for r in rows]


def _draw_metric(ax, xs, rows, metric, top=None):
    """Plot one metric of ``rows`` (sorted by x) with its uncertainty on ``ax``.

    bias^2 is unbiased, so it can be <= 0 by noise: significant values (> 2 SE) are filled
    markers with 2-SE error bars, the others an open triangle at the upper bound (+2 SE);
    upper bounds above ``top`` are drawn at ``top`` as an up-triangle (off scale)."""
    import numpy as np
    x = np.array(xs, dtype=float)
    st = _style(rows[0]["estimator"])
    color = st["color"]
    if metric == "variance":
        y = np.array([r["variance"] for r in rows])
        lo = np.array([r.get("variance_lo", np.nan) for r in rows])
        hi = np.array([r.get("variance_hi", np.nan) for r in rows])
        ok = np.isfinite(y) & (y > 0)
        ax.plot(x[ok], y[ok], ls="-", **st)
        if rows[0]["seeds"] > 1:
            ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.15, lw=0)
    elif metric in ("cosine", "mse"):
        y = np.array([r[metric] for r in rows])
        e = np.array([2 * r[f"{metric}_se"] for r in rows])
        ok = np.isfinite(y) & ((y > 0) if metric == "mse" else True)
        if metric == "mse":
            e = np.minimum(e, 0.9 * y)  # a lower bar reaching 0 would stretch the log axis
        ax.errorbar(x[ok], y[ok], yerr=np.where(np.isfinite(e), e, 0)[ok], ls="-", capsize=2, **st)
    else:
        y = np.array([r["bias2"] for r in rows])
        e = np.array([r["bias2_se"] for r in rows])
        ok = np.isfinite(y) & np.isfinite(e)
        sig = ok & (y > 2 * e)
        shown = np.where(sig, y, y + 2 * e)
        if top is not None:
            shown = np.minimum(shown, top)
        keep = ok & (shown > 0)
        ax.plot(x[keep], shown[keep], "-", color=color, lw=1, alpha=0.5)
        ax.errorbar(x[sig], y[sig], yerr=np.minimum(2 * e[sig], 0.999 * y[sig]), ls="none",
                    capsize=2, **st)
        ub = ok & ~sig & (y + 2 * e > 0)
        off = ub & (top is not None) & (y + 2 * e > (top if top is not None else np.inf))
        ax.plot(x[ub & ~off], (y + 2 * e)[ub & ~off], "v", mfc="none", color=color, ms=7)
        ax.plot(x[off], np.full(int(off.sum()), top if top is not None else 0.0), "^",
                mfc="none", color=color, ms=7, clip_on=False)


def _notes(summary, regime, estimators_: list[str]) -> list[str]:
    """Warnings a reader needs: non-finite draws and seeds that disagree wildly."""
    out = []
    for r in summary:
        if r["regime"] != regime or r["estimator"] not in estimators_:
            continue
        where = f"{estimator_label(r['estimator'])} T={r['T']}" + (f" K={r['K']}" if r["K"] else "")
        if r["nonfinite"]:
            out.append(f"{where}: {100 * r['nonfinite_fraction']:.0f}% of draws non-finite "
                       "(dropped)")
        lo, hi = r.get("variance_lo", math.nan), r.get("variance_hi", math.nan)
        if r["seeds"] > 1 and lo > 0 and hi / lo > 30:
            out.append(f"{where}: variance differs {hi / lo:.0f}x across seeds (heavy tail)")
    return out[:5]


def _format_axes(axes, j, xs, xlabel, x_log):
    for i, (metric, label) in enumerate(_METRICS):
        ax = axes[i, j]
        if metric == "cosine":
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="0.6", lw=0.5)
        else:
            log_y(ax)
        if x_log:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.minorticks_off() if x_log else None
        ax.grid(True, which="major", alpha=0.3)
        if j == 0:
            ax.set_ylabel(label)
        if i == len(_METRICS) - 1:
            ax.set_xlabel(xlabel)


def _full_horizon_lines(axes, j, lines: dict, top):
    """Dashed horizontal lines: the full-horizon estimators at the same T (truncation figure)."""
    for name, row in lines.items():
        for i, (metric, _) in enumerate(_METRICS):
            v = row[metric]
            significant = v > 2 * row["bias2_se"] and (top is None or v <= top)
            if metric == "bias2" and not significant:
                continue  # only a significant, on-scale bias is a line worth drawing
            if math.isfinite(v) and (metric == "cosine" or v > 0):
                axes[i, j].axhline(v, color=_style(name)["color"], ls="--", lw=1)


def _legend(fig, names, ref_lines, references):
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], ls="-", label=estimator_label(n), **_style(n)) for n in names]
    handles += [Line2D([], [], color=_style(n)["color"], ls="--",
                       label=f"{estimator_label(n)} (full horizon)")
                for n in dict.fromkeys(k for d in (ref_lines or {}).values() for k in d)]
    handles += [Line2D([], [], color="0.3", marker="v", mfc="none", ls="none",
                       label="bias$^2$ within noise: its upper bound (+2 SE)")]
    if references:
        handles += [Line2D([], [], color="0.3", marker="^", mfc="none", ls="none",
                           label="upper bound off scale"),
                    Line2D([], [], color="0.4", ls=":",
                           label="$\\|\\nabla L_\\sigma\\|^2$ (scale of the target)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)


def _width(columns: int) -> float:
    """Figure width in inches for ``columns`` regime columns: 5.2 each, at least 9 so that one
    column keeps its title, labels and legend inside the figure."""
    return max(5.2 * columns, 9.0)


def _grid(summary, x_key, select, title, xlabel, ref_lines=None, x_log=False, notes=None,
          references=None):
    """A (metrics x regimes) grid of panels; ``select(row) -> bool`` picks rows. Returns the
    figure and the plotted rows.

    ``references``: {regime: {x: |grad L_sigma|^2}}, drawn in the bias^2 panels as the scale
    of the target (a bias^2 above it is worse than answering zero)."""
    regimes = list(dict.fromkeys(r["regime"] for r in summary))
    fig, axes = new_figure(len(_METRICS), len(regimes), _width(len(regimes)), 12, layout=None,
                           sharex="col")
    names = list(dict.fromkeys(r["estimator"] for r in summary if select(r)))
    xs = sorted({r[x_key] for r in summary if select(r)})
    data_rows = []
    for j, regime in enumerate(regimes):
        ref_sq = (references or {}).get(regime, {})
        top = 1e3 * max(ref_sq.values()) if ref_sq else None
        if ref_sq:
            xs_ref = sorted(ref_sq)
            axes[1, j].plot(xs_ref, [ref_sq[x] for x in xs_ref], ":", color="0.4", lw=1.5)
        for name in names:
            rows = sorted((r for r in summary if r["regime"] == regime and r["estimator"] == name
                           and select(r)), key=lambda r: r[x_key])
            data_rows += rows
            for i, (metric, _) in enumerate(_METRICS if rows else ()):
                _draw_metric(axes[i, j], [r[x_key] for r in rows], rows, metric,
                             top=top if metric == "bias2" else None)
        _full_horizon_lines(axes, j, (ref_lines or {}).get(regime, {}), top)
        axes[0, j].set_title(_regime_title(summary[0]["system"], regime))
        _format_axes(axes, j, xs, xlabel, x_log)
        lines = (notes or {}).get(regime, [])
        if lines:
            axes[0, j].text(0.02, 0.98, "\n".join(lines), transform=axes[0, j].transAxes,
                            va="top", fontsize=7.5, bbox={"fc": "white", "ec": "0.8", "alpha": 0.9})
    _legend(fig, names, ref_lines, references)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.92, bottom=0.12, hspace=0.12, wspace=0.2)
    return fig, data_rows


class _Context(NamedTuple):
    """What the three figures share: the settings line, the reference sentence, |g*|^2."""

    cfg: Config
    summary: list[dict]
    K0: int
    T_max: int
    setting: str
    ref_text: str
    uncertainty: str
    ref_sq: dict      # regime -> {T: |grad L_sigma|^2}


def _reference_text(references: list[dict]) -> str:
    """How the target was computed and how precisely (one sentence for the captions)."""
    how = "; ".join(sorted({r["metrics"]["method"] for r in references}))
    rel = [r["metrics"]["se_norm"] / r["metrics"]["grad_norm"] for r in references
           if r["metrics"]["grad_norm"] > 0]
    worst = (f" (standard error at most {max(rel):.2g} of |grad L_sigma|, included in the bias "
             f"standard errors)") if rel and max(rel) > 0 else ""
    return (f"The target grad L_sigma at each (regime, T) is a reference gradient computed by "
            f"{how}{worst}; the report's reference table lists each one.")


def _context(results: dict) -> _Context:
    cfg = results["config"]
    ref_sq = defaultdict(dict)
    for ref in results["references"]:
        ref_sq[ref["params"]["regime"]][ref["params"]["T"]] = ref["metrics"]["grad_norm"] ** 2
    return _Context(
        cfg, results["summary"], truncation_for_horizons(cfg), max(cfg.horizons),
        f"$\\sigma$ = {cfg.sigma:g}, N = {cfg.pairs} per estimate, M = {cfg.draws} draws, "
        f"{cfg.seeds} seed{'s' if cfg.seeds > 1 else ''}",
        _reference_text(results["references"]),
        "Shaded bands: min-max of the variance over seeds; error bars: 2 standard errors (pooled "
        "over seeds for the bias). " if cfg.seeds > 1 else
        "Error bars: 2 standard errors within the single seed. ", ref_sq)


def plot_horizon(ctx: _Context, directory: str | Path) -> Path:
    """``curves_<system>_horizon``: the four metrics against T (online estimators at K0)."""
    cfg, summary, K0 = ctx.cfg, ctx.summary, ctx.K0
    pick_T = lambda r: r["K"] in (None, K0)  # noqa: E731
    notes = {}
    for regime in cfg.regimes:
        s, se, _ = slope_log_variance(summary, regime)
        notes[regime] = ([f"BPTT: d ln(variance)/dT = {s:.3f} $\\pm$ {se:.3f} per step"]
                         if math.isfinite(s) else [])
        notes[regime] += _notes([r for r in summary if pick_T(r)], regime, list(cfg.estimators))
    fig, data = _grid(summary, "T", pick_T,
                      f"{text(cfg.system)}: estimators of $\\nabla L_\\sigma$ against the horizon T "
                      f"(online estimators at K = {K0})\n{ctx.setting}", "horizon T (steps)",
                      notes=notes, references=ctx.ref_sq)
    overlap = ("NRES with lockstep episodes sums its windows to exactly AntitheticES's estimate, "
               "so their curves coincide (open circles: AntitheticES). "
               if {"nres", "antithetic_es"} <= set(cfg.estimators) else "")
    caption = (
        f"Bias^2, variance, MSE and mean cosine with the target of one {cfg.pairs}-sample "
        f"estimate of the gradient of the Gaussian-smoothed (sigma = {cfg.sigma:g}) full-horizon "
        f"loss of {cfg.system} at the regime's theta, against the horizon T. Online estimators "
        f"(truncated BPTT, truncated ES, PES, NRES) advance K = {K0} steps per call and their "
        f"window estimates are averaged over one episode. {ctx.ref_text} {ctx.uncertainty}Open "
        f"down-triangles mark a bias^2 within noise of zero (drawn at its upper bound); the "
        f"dotted line is |grad L_sigma|^2. BPTT is smoothed with the same sigma "
        f"(reparameterised), so it targets the same gradient; truncated BPTT is not smoothed. "
        f"{overlap}The text box gives the fitted growth rate of BPTT's log-variance with T "
        f"(least squares over every seed's point): in a chaotic regime about twice the leading "
        f"Lyapunov exponent, somewhat more because the variance is dominated by the "
        f"trajectories whose finite-time exponent is largest.")
    return save_figure(fig, directory, file_stem("curves", cfg.system, "horizon"), _CSV_COLUMNS,
                       _csv_rows(data), caption, dpi=_DPI)


def plot_truncation(ctx: _Context, directory: str | Path) -> Path | None:
    """``curves_<system>_truncation``: the online estimators against K at the largest T, beside
    the full-horizon ones (dashed); None when no online estimator was measured."""
    cfg, summary, T_max = ctx.cfg, ctx.summary, ctx.T_max
    if not any(estimators.ESTIMATORS.get(n).online for n in cfg.estimators):
        return None
    full = {}
    for r in summary:
        if r["regime"] in cfg.regimes and r["T"] == T_max and r["K"] is None:
            full.setdefault(r["regime"], {})[r["estimator"]] = r
    full = {regime: full[regime] for regime in cfg.regimes if regime in full}
    pick_K = lambda r: r["K"] is not None and r["T"] == T_max  # noqa: E731
    notes = {regime: _notes([r for r in summary if pick_K(r)], regime, list(cfg.estimators))
             for regime in cfg.regimes}
    fig, data = _grid(summary, "K", pick_K,
                      f"{text(cfg.system)}: online estimators of $\\nabla L_\\sigma$ against the "
                      f"truncation K at T = {T_max}\n{ctx.setting}; dashed: full-horizon "
                      "estimators", "truncation K (steps per window, log scale)", ref_lines=full,
                      x_log=True, notes=notes,
                      references={g: {K: v[T_max] for K in cfg.truncations}
                                  for g, v in ctx.ref_sq.items() if T_max in v})
    caption = (
        f"Bias^2, variance, MSE and mean cosine with the target of the online estimators "
        f"against the truncation window K at T = {T_max} (one episode = T/K windows, "
        f"{cfg.pairs} samples per estimate); dashed lines: the full-horizon estimators at "
        f"the same T. {ctx.ref_text} {ctx.uncertainty}Truncation trades bias for variance: "
        f"truncated BPTT and truncated ES ignore how theta moved the state before each window, "
        f"and truncated BPTT with K = T is BPTT without smoothing. PES and NRES stay unbiased at "
        f"every K; PES pays for it with variance at small K.")
    return save_figure(fig, directory, file_stem("curves", cfg.system, "truncation"), _CSV_COLUMNS,
                       _csv_rows(data), caption, dpi=_DPI)


def _budget_panel(ax, rows, K0, cap) -> list[dict]:
    """MSE of an estimate averaging samples until a budget of simulated steps is spent."""
    import numpy as np
    data, peak = [], {}
    for r in rows:
        finite = math.isfinite(r["variance"]) and math.isfinite(r["bias2"])
        if r["K"] not in (None, K0) or not finite:
            continue
        data.append(r)
        per_sample = r["steps"] / r["pairs"]
        budget = np.geomspace(per_sample, per_sample * 1e5, 60)
        floor = r["bias2"] if r["bias2"] > 2 * r["bias2_se"] else 0.0  # noise is not bias
        mse = floor + r["variance"] * r["pairs"] * per_sample / budget
        st = _style(r["estimator"])
        ax.plot(budget, mse, "-", color=st["color"], label=estimator_label(r["estimator"]))
        ax.plot(r["steps"], floor + r["variance"], ls="none", **st)
        label = estimator_label(r["estimator"])
        peak.setdefault(label, []).extend(float(v) for v in mse)
    ax.set_xscale("log")
    log_y(ax)
    off_scale(ax, cap, peak)
    ax.set_xlabel("budget: simulated trajectory-steps per estimate")
    ax.grid(True, alpha=0.3)
    return data


def _time_panel(ax, rows, cfg: Config, cap) -> tuple[list[dict], list[tuple]]:
    """MSE of one estimate against its measured wall time, every K of the online estimators;
    returns the rows drawn and the K labels to place (`label_points`, once the layout is set)."""
    data, values, labels = [], {}, []
    for name in dict.fromkeys(r["estimator"] for r in rows):
        pts = sorted((r for r in rows if r["estimator"] == name and math.isfinite(r["mse"])),
                     key=lambda r: r["K"] or 0)
        pts = [r for r in pts if r["mse"] > 0]
        if not pts:
            continue
        data += pts
        st = _style(name)
        ax.plot([r["seconds"] for r in pts], [r["mse"] for r in pts], ls="-",
                label=estimator_label(name), **st)
        labels += [(r["seconds"], r["mse"], f"K={r['K']}", st["color"])
                   for r in {id(p): p for p in (pts[0], pts[-1])}.values() if r["K"] is not None]
        values[estimator_label(name)] = [r["mse"] for r in pts]
    ax.set_xscale("log")
    log_y(ax)
    off_scale(ax, cap, values)
    ax.margins(x=0.12)  # room for the K labels
    from matplotlib.ticker import NullFormatter
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a narrow decade overlap
    ax.set_xlabel(f"wall-clock seconds per {cfg.pairs}-sample estimate ({cfg.device})")
    ax.grid(True, alpha=0.3)
    return data, labels


def plot_cost(ctx: _Context, directory: str | Path) -> Path:
    """``curves_<system>_cost``: MSE against a budget of simulated steps (top) and against the
    measured wall time of one estimate (bottom), at the largest T."""
    from matplotlib.lines import Line2D
    cfg, T_max = ctx.cfg, ctx.T_max
    regimes = list(cfg.regimes)
    fig, axes = new_figure(2, len(regimes), _width(len(regimes)), 8.5, layout=None)
    data, labels = [], []
    for j, regime in enumerate(regimes):
        rows = [r for r in ctx.summary if r["regime"] == regime and r["T"] == T_max]
        cap = 1e4 * ctx.ref_sq.get(regime, {}).get(T_max, math.inf) or math.inf
        data += _budget_panel(axes[0, j], rows, ctx.K0, cap)
        axes[0, j].set_title(_regime_title(cfg.system, regime))
        drawn, points = _time_panel(axes[1, j], rows, cfg, cap)
        data += [r for r in drawn if r not in data]
        labels.append(points)
    axes[0, 0].set_ylabel("MSE at that budget")
    axes[1, 0].set_ylabel("MSE of one estimate")
    names = list(dict.fromkeys(r["estimator"] for r in data))
    handles = [Line2D([], [], ls="-", label=estimator_label(n), **_style(n)) for n in names]
    if handles:
        fig.legend(handles, [h.get_label() for h in handles], loc="lower center",
                   ncol=min(6, len(handles)), frameon=False)
    fig.suptitle(f"{text(cfg.system)}: MSE against cost at T = {T_max}\n{ctx.setting}",
                 fontsize=11)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.13, hspace=0.3, wspace=0.2)
    for j, points in enumerate(labels):
        label_points(axes[1, j], points)
    caption = (
        f"Cost at T = {T_max}. Top: MSE of an estimate that averages samples until a budget of "
        f"simulated trajectory-steps is spent, bias^2 + (per-sample variance) x (steps "
        f"per sample) / budget (a bias^2 within 2 standard errors of zero counts as 0), "
        f"computed from the measured bias and variance (markers: the "
        f"measured N = {cfg.pairs}); online estimators at K = {ctx.K0}. The ES family simulates "
        f"two trajectories per sample, so its lines start at 2T. Bottom: MSE against the "
        f"measured wall-clock time of one {cfg.pairs}-sample full-horizon estimate on "
        f"{cfg.device} (median over seeds), for every K of the online estimators (smallest and "
        f"largest K labelled): small K means many short calls. {ctx.ref_text}")
    return save_figure(fig, directory, file_stem("curves", cfg.system, "cost"), _CSV_COLUMNS,
                       _csv_rows(data), caption, dpi=_DPI)


def plot(results: dict, directory: str | Path = "results") -> list[Path]:
    """Write ``curves_<system>_{horizon,truncation,cost}`` PNG + CSV + caption from `run`'s
    results; return the PNG paths."""
    ctx = _context(results)
    paths = [plot_horizon(ctx, directory), plot_truncation(ctx, directory),
             plot_cost(ctx, directory)]
    return [p for p in paths if p is not None]

"""`chaosgrad reproduce`: the chaos-failure figures of Metz, Freeman, Schoenholz, Kachman 2021.

"Gradients are Not All You Need" (arXiv 2111.05803) shows that backpropagation through a
chaotic unroll gives gradients whose variance grows like exp(2 lambda T), while black-box
estimators of the smoothed loss (ES, PES) keep a bounded variance. Four figures, each measured
cell by cell into the results store of the output directory (a rerun skips finished cells):

1. policy rollouts (mass_spring_walker, double_pendulum): the loss along a 1-D slice of theta
   for several T, and the per-sample gradient variance tr Cov vs T for BPTT, ES and PES;
2. learned-optimizer unrolls (metz_sgd_momentum): meta-loss vs learning rate for several T, and
   the BPTT gradient's magnitude and variance across the same sweep against ES;
3. disk packing: energy after K FIRE steps vs the diameter D over seeds, and the variance of
   dE/dD vs K for BPTT and ES;
4. Jacobian spectra of the per-step state Jacobian (regular vs chaotic), and on the logistic map
   the Lyapunov exponent vs r beside the measured growth rate of log std(BPTT gradient).

Each figure has a ``Config`` (``quick()`` and ``full()``), ``run(config, store) -> results``
and ``plot(results, directory) -> [png paths]``; figures go to ``DIR/figures/<name>.png`` with
their data (``.csv``) and a caption (``.txt``).

Variance is the trace of the covariance of the per-sample contributions
(``Estimate.samples``), i.e. the variance of a one-sample estimate; it is computed in float64
and stored as log10 so that values beyond 1e308 do not overflow. Non-finite samples are
counted, not fatal.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch

import estimators
import systems
from experiments.store import Cell, ResultsStore
from experiments.sweep import CellResult, add_backend_arguments, backend_options, run_cells

__all__ = ["Fig1Config", "Fig2Config", "Fig3Config", "Fig4Config", "Rollout", "FIGURES", "Fit",
           "run_fig1", "run_fig2", "run_fig3", "run_fig4", "plot_fig1", "plot_fig2",
           "plot_fig3", "plot_fig4", "fit_log_variance", "variance_table", "select_rows",
           "make_system", "measure_estimator", "mean_losses", "episode_keys", "add_arguments",
           "main"]

F64 = torch.float64
_SLICE_SALT = 0x511CE  # episode keys of the loss slices and energy curves


# --------------------------------------------------------------------------- shared measurement

def make_system(name: str, regime: str, **overrides):
    """``name`` in ``regime`` (its documented constructor settings), with ``overrides``."""
    cls = systems.SYSTEMS.get(name)
    if regime not in cls.regimes:
        raise ValueError(f"unknown regime {regime!r} of {name}; "
                         f"available: {', '.join(cls.regimes)}")
    return cls(**{**cls.regimes[regime], **overrides})


def episode_keys(seed: int, n: int, device) -> torch.Tensor:
    """``[n]`` episode keys as a pure function of ``seed`` (common across thetas)."""
    seeds = torch.full((n,), int(seed), dtype=torch.int64, device=device)
    return systems.noise.fold(seeds, torch.arange(n, device=device), _SLICE_SALT)


@torch.no_grad()
def mean_losses(system, theta: torch.Tensor, keys: torch.Tensor, horizon: int) -> torch.Tensor:
    """``[B]`` mean per-step loss (1/T) sum_t l_t of B unrolls with parameters ``theta [B, D]``."""
    state = system.init_state(theta, keys)
    total = theta.new_zeros(theta.shape[0])
    for j in range(horizon):
        state, loss = system.step(theta, state, torch.full_like(keys, j), keys)
        total = total + loss
    return total / horizon


def _log10_trace_cov(samples: torch.Tensor) -> float:
    """log10 tr Cov of ``[N, D]`` samples, rescaled first so huge values do not overflow."""
    if samples.shape[0] < 2:
        return math.nan
    scale = samples.abs().max()
    if not bool(torch.isfinite(scale)):
        return math.nan
    if scale == 0:
        return -math.inf
    tr = (samples / scale).var(0).sum()
    return float(tr.log10() + 2 * scale.log10()) if tr > 0 else -math.inf


def _log10_norm(v: torch.Tensor) -> float:
    scale = v.abs().max()
    if not bool(torch.isfinite(scale)) or scale == 0:
        return math.nan if not bool(torch.isfinite(scale)) else -math.inf
    return float((v / scale).norm().log10() + scale.log10())


def measure_estimator(system, name: str, hyper: dict, seed: int, device) -> CellResult:
    """Per-sample statistics of one full-horizon gradient estimate at ``system.init_params()``.

    Full-horizon estimators use one call; online ones (PES) the per-pair average of their T/K
    window contributions over one lockstep episode (a full-horizon estimate of the same target).
    Metrics: ``log10_var`` (log10 tr Cov of the samples), ``log10_grad_norm`` (of their mean),
    ``grad`` (the mean), ``loss``, ``n`` finite samples, ``nonfinite`` dropped ones.
    """
    est = estimators.make(name, **hyper)
    theta = system.init_params(dtype=F64, device=device)
    state = est.init(system, theta, seed=seed)
    T = est.horizon_for(system)
    if est.online:
        windows, losses, steps, nonfinite = [], [], 0, 0
        for _ in range(T // est.truncation):
            e, state = est.estimate(system, theta, state)
            windows.append(e.samples)
            losses.append(float(e.loss))
            steps += e.steps
            nonfinite = max(nonfinite, e.nonfinite)
        # rows of different windows no longer align once one was dropped
        samples = torch.stack(windows).mean(0) if not nonfinite else windows[0][:0]
        loss = sum(losses) / len(losses)
    else:
        e, _ = est.estimate(system, theta, state)
        samples, loss, steps, nonfinite = e.samples, float(e.loss), e.steps, e.nonfinite
    samples = samples.to(F64)
    mean = samples.mean(0) if samples.shape[0] else torch.full_like(theta, math.nan)
    metrics = {"log10_var": _log10_trace_cov(samples), "log10_grad_norm": _log10_norm(mean),
               "grad": mean.tolist(), "loss": loss, "n": int(samples.shape[0]),
               "nonfinite": int(nonfinite)}
    return CellResult(metrics, steps, str(device))


class Fit(NamedTuple):
    """Least-squares line ``ln var = slope * T + intercept`` with the slope's standard error."""

    slope: float
    se: float
    intercept: float
    n: int


def fit_log_variance(rows: Sequence[dict]) -> Fit:
    """OLS of the natural log of the variance against ``params["T"]`` over finite rows.

    Every (T, seed) cell is one point; ``se`` is the usual residual-based standard error of the
    slope (NaN with fewer than three points or a single T).
    """
    pts = [(r["params"]["T"], r["metrics"]["log10_var"] * math.log(10)) for r in rows
           if math.isfinite(r["metrics"]["log10_var"])]
    n = len(pts)
    if n < 2 or len({x for x, _ in pts}) < 2:
        return Fit(math.nan, math.nan, math.nan, n)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    intercept = my - slope * mx
    if n < 3:
        return Fit(slope, math.nan, intercept, n)
    rss = sum((y - intercept - slope * x) ** 2 for x, y in pts)
    return Fit(slope, math.sqrt(rss / (n - 2) / sxx), intercept, n)


def variance_table(rows: Sequence[dict], key: str = "T") -> list[tuple[float, float, float, int]]:
    """``(x, mean log10 var, its standard error over seeds, seeds)`` per value of ``params[key]``.

    Non-finite variances are left out of the mean (their count is in the CSV's nonfinite column).
    """
    by: dict[float, list[float]] = {}
    for r in rows:
        by.setdefault(r["params"][key], [])
        if math.isfinite(r["metrics"]["log10_var"]):
            by[r["params"][key]].append(r["metrics"]["log10_var"])
    out = []
    for x in sorted(by):
        v = by[x]
        if not v:
            out.append((x, math.nan, math.nan, 0))
            continue
        m = sum(v) / len(v)
        se = (math.sqrt(sum((y - m) ** 2 for y in v) / (len(v) - 1) / len(v))
              if len(v) > 1 else math.nan)
        out.append((x, m, se, len(v)))
    return out


def select_rows(rows: Sequence[dict], **match) -> list[dict]:
    """Rows whose kind/system/estimator/seed columns or params equal ``match``."""
    out = []
    for r in rows:
        ok = True
        for k, v in match.items():
            have = r[k] if k in ("kind", "system", "estimator", "seed") else r["params"].get(k)
            ok = ok and have == v
        if ok:
            out.append(r)
    return out


# --------------------------------------------------------------------------- plotting helpers

ESTIMATOR_STYLE = {  # label, colour, marker
    "bptt": ("BPTT (pathwise, sigma = 0)", "tab:red", "o"),
    "antithetic_es": ("antithetic ES", "tab:blue", "s"),
    "pes": ("PES (full-horizon mean of windows)", "tab:green", "^"),
}


def _figure(nrows: int, ncols: int, width: float, height: float):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, directory: Path, name: str, header: Sequence[str], rows: Sequence[Sequence],
          caption: str) -> Path:
    """``DIR/figures/name.png`` plus its data ``.csv`` and one-paragraph caption ``.txt``."""
    out = Path(directory) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    fig.savefig(png, dpi=150)
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    (out / f"{name}.txt").write_text(" ".join(caption.split()) + "\n")
    return png


def _finite(xs, ys, es=None):
    keep = [i for i, y in enumerate(ys) if math.isfinite(y)]
    pick = lambda v: [v[i] for i in keep]  # noqa: E731
    return (pick(xs), pick(ys)) if es is None else (pick(xs), pick(ys), pick(es))


def _errorbar(ax, xs, logs, ses, log: bool = True, **kw):
    """Plot ``10**logs`` on a log y axis with multiplicative error bars ``10**(logs +- ses)``
    (with ``log=False``: ``logs`` as they are, on a linear axis, error bars +- ``ses``).

    Points whose value is not finite are left out; a NaN SE (a single seed) draws no bar.
    """
    xs, logs, ses = _finite(xs, logs, ses)
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


def _headroom(ax, fraction: float) -> None:
    """Extend a log y axis upwards by ``fraction`` of its decades (room for the legend)."""
    lo, hi = ax.get_ylim()
    if lo > 0 and hi > lo:
        ax.set_ylim(lo, hi * (hi / lo) ** fraction)


def _decades(x: float) -> float:
    """A natural-log slope in decades (log10 units)."""
    return x / math.log(10)


def _fmt(x: float, digits: int = 2) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.{digits}g}"


# --------------------------------------------------------------------------- figure 1

@dataclass(frozen=True)
class Rollout:
    """One policy-rollout system of figure 1 and its per-system settings."""

    system: str
    horizons: tuple[int, ...]      # T grid (each a multiple of ``truncation``)
    truncation: int                 # PES window K
    sigma: float                    # ES / PES perturbation scale
    slice_horizons: tuple[int, ...]
    slice_span: float               # theta0 + alpha d, alpha in [-span, span], |d| = 1


@dataclass(frozen=True)
class Fig1Config:
    """Settings of figure 1 (policy rollouts): loss slices and gradient variance against T.

    Each `Rollout` names a system, its horizons, the PES window, sigma and the slice
    settings; ``samples`` BPTT keys = ES / PES pairs per cell, over ``seeds``.
    """

    rollouts: tuple[Rollout, ...]
    regimes: tuple[str, ...] = ("regular", "chaotic")
    estimators: tuple[str, ...] = ("bptt", "antithetic_es", "pes")
    samples: int = 32               # BPTT keys = ES / PES pairs per cell
    seeds: tuple[int, ...] = (0,)
    slice_points: int = 61
    slice_keys: int = 4
    device: str = "cpu"

    @classmethod
    def quick(cls) -> "Fig1Config":
        """The ``--quick`` settings (minutes on a CPU)."""
        return cls(rollouts=(
            Rollout("mass_spring_walker", (100, 200, 400, 600, 800, 1000), 100, 0.3,
                    (100, 300, 1000), 0.5),
            Rollout("double_pendulum", (100, 200, 400, 600, 800, 1000), 100, 0.3,
                    (100, 300, 1000), 0.5)), seeds=(0, 1))

    @classmethod
    def full(cls) -> "Fig1Config":
        """The publication settings (the default of ``chaosgrad reproduce``)."""
        grid = tuple(range(100, 1001, 100))
        return cls(rollouts=(
            Rollout("mass_spring_walker", grid, 100, 0.3, (100, 200, 500, 1000), 0.5),
            Rollout("double_pendulum", grid, 100, 0.3, (100, 200, 500, 1000), 0.5)),
            samples=128, seeds=(0, 1, 2), slice_points=201, slice_keys=8)


def _fig1_cells(cfg: Fig1Config) -> list[Cell]:
    cells = []
    for ro in cfg.rollouts:
        for T in ro.slice_horizons:
            cells.append(Cell("fig1_slice", ro.system, "-",
                              {"regime": "chaotic", "T": T, "points": cfg.slice_points,
                               "span": ro.slice_span, "keys": cfg.slice_keys}, 0))
        for regime in cfg.regimes:
            for T in ro.horizons:
                for name in cfg.estimators:
                    p = {"regime": regime, "T": T, "N": cfg.samples}
                    if name != "bptt":
                        p["sigma"] = ro.sigma
                    if name == "pes":
                        p["K"] = ro.truncation
                    for seed in cfg.seeds:
                        cells.append(Cell("fig1_variance", ro.system, name, p, seed))
    return cells


def _hyper(name: str, p: dict) -> dict:
    """Estimator constructor arguments from a cell's params (T, N, sigma, K)."""
    hp = {"horizon": p["T"]}
    hp.update({"samples": p["N"]} if name == "bptt" else {"pairs": p["N"], "sigma": p["sigma"]})
    if "K" in p:
        hp["truncation"] = p["K"]
    return hp


def _slice_direction(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(dim, generator=g, dtype=F64)
    return d / d.norm()


def _compute_slice(cell: Cell, device) -> CellResult:
    p = cell.params
    system = make_system(cell.system, p["regime"])
    theta0 = system.init_params(dtype=F64, device=device)
    d = _slice_direction(system.param_dim, cell.seed).to(device)
    alpha = torch.linspace(-p["span"], p["span"], p["points"], dtype=F64, device=device)
    rows = (theta0 + alpha[:, None] * d).repeat_interleave(p["keys"], 0)
    keys = episode_keys(cell.seed, p["keys"], device).repeat(p["points"])
    loss = mean_losses(system, rows, keys, p["T"]).reshape(p["points"], p["keys"])
    finite = torch.isfinite(loss)
    mean = torch.where(finite, loss, torch.zeros_like(loss)).sum(1) / finite.sum(1)
    metrics = {"alpha": alpha.tolist(), "loss": mean.tolist(), "nonfinite": int((~finite).sum())}
    return CellResult(metrics, rows.shape[0] * p["T"], str(device))


def _compute_fig1(cell: Cell, device) -> CellResult:
    if cell.kind == "fig1_slice":
        return _compute_slice(cell, device)
    system = make_system(cell.system, cell.params["regime"])
    return measure_estimator(system, cell.estimator, _hyper(cell.estimator, cell.params),
                             cell.seed, device)


def run_fig1(cfg: Fig1Config, store: ResultsStore, progress: bool | None = None,
             **backend) -> dict:
    """Measure figure 1's cells (those not in ``store`` yet); returns config and rows."""
    rows = run_cells(store, _fig1_cells(cfg), lambda c: _compute_fig1(c, cfg.device),
                     desc="fig1 policy rollouts", progress=progress, **backend)
    return {"config": cfg, "rows": rows}


def _regime_label(system: str, regime: str) -> str:
    settings = systems.SYSTEMS.get(system).regimes[regime]
    return f"{regime} ({', '.join(f'{k} = {_fmt(v, 3)}' for k, v in settings.items())})"


def _dt_note(system: str) -> str:
    dt = getattr(systems.SYSTEMS.get(system)(), "dt", None)
    return f" (steps of dt = {dt * 1000:g} ms)" if dt else ""


def plot_fig1(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/fig1_loss_slices.png and fig1_gradient_variance.png`` (with ``.csv`` data and ``.txt`` captions)
    from `run_fig1`'s results; returns the PNG paths."""
    cfg: Fig1Config = results["config"]
    rows = results["rows"]
    written = []

    # (a) loss slices
    fig, axes = _figure(1, len(cfg.rollouts), 5.2 * len(cfg.rollouts), 4.0)
    data = []
    for ax, ro in zip(axes[0], cfg.rollouts):
        cmap = _cmap(len(ro.slice_horizons))
        for i, T in enumerate(ro.slice_horizons):
            (r,) = select_rows(rows, kind="fig1_slice", system=ro.system, T=T)
            a, loss = r["metrics"]["alpha"], r["metrics"]["loss"]
            mid = loss[len(loss) // 2]
            ax.plot(a, [v - mid for v in loss], color=cmap[i], lw=1.2, label=f"T = {T}")
            data += [[ro.system, "chaotic", T, x, v] for x, v in zip(a, loss)]
        ax.axvline(0.0, color="0.7", lw=0.8, ls=":")
        ax.set_xlabel(r"step $\alpha$ along a random unit direction $d$ of $\theta$")
        ax.set_ylabel(r"$L(\theta_0 + \alpha d) - L(\theta_0)$  (mean loss per step)")
        ax.set_title(f"{ro.system}, {_regime_label(ro.system, 'chaotic')}", fontsize=9)
        ax.legend(title="horizon T" + _dt_note(ro.system), fontsize=8, title_fontsize=8)
    fig.suptitle("Figure 1a. Loss along a 1-D slice of the policy parameters: smooth for short "
                 "unrolls, rugged for long ones", fontsize=10)
    caption = (
        "Figure 1a. Mean per-step loss of policy rollouts along a line theta0 + alpha d through "
        "the system's initial policy theta0 (d a fixed random unit direction), in the chaotic "
        f"regime, each point the mean over {cfg.slice_keys} episode keys shared by all alpha "
        f"(common random numbers), {cfg.slice_points} points; curves are shifted so that the "
        "loss at alpha = 0 is zero. Look for: short horizons give smooth curves, long ones are "
        "rugged with many local minima, so the pathwise derivative at a point says little "
        "about the loss a finite step away.")
    written.append(_save(fig, directory, "fig1_loss_slices",
                         ["system", "regime", "T", "alpha", "loss"], data, caption))

    # (b) gradient variance vs T
    fig, axes = _figure(len(cfg.rollouts), len(cfg.regimes), 5.0 * len(cfg.regimes),
                        3.6 * len(cfg.rollouts))
    data, notes = [], []
    for i, ro in enumerate(cfg.rollouts):
        for j, regime in enumerate(cfg.regimes):
            ax = axes[i][j]
            for name in cfg.estimators:
                sel = select_rows(rows, kind="fig1_variance", system=ro.system, estimator=name,
                              regime=regime)
                table = variance_table(sel)
                label, colour, marker = ESTIMATOR_STYLE[name]
                fit = fit_log_variance(sel)
                xs = [t for t, *_ in table]
                _errorbar(ax, xs, [m for _, m, _, _ in table], [s for _, _, s, _ in table],
                          color=colour, marker=marker, ms=4, lw=1.2,
                          label=f"{label}: {_fmt(_decades(fit.slope) * 100)} ± "
                                f"{_fmt(_decades(fit.se) * 100, 1)} decades / 100 steps")
                notes.append(f"{ro.system} {regime} {name}: {_fmt(_decades(fit.slope) * 100, 3)} "
                             f"± {_fmt(_decades(fit.se) * 100, 2)} decades per 100 steps")
                for r in sel:
                    m = r["metrics"]
                    data.append([ro.system, regime, name, r["params"]["T"], r["seed"],
                                 r["params"].get("sigma", 0.0), r["params"].get("K", ""),
                                 m["n"], m["log10_var"], m["log10_grad_norm"], m["loss"],
                                 m["nonfinite"]])
            ax.set_xlabel("horizon T" + _dt_note(ro.system))
            ax.set_ylabel("gradient variance, tr Cov (log scale)")
            ax.set_title(f"{ro.system}, {_regime_label(ro.system, regime)}", fontsize=9)
            ax.legend(fontsize=7, loc="upper left")
            ax.grid(alpha=0.3, which="major")
            _headroom(ax, 0.4)
    fig.suptitle("Figure 1b. Gradient variance vs unroll length: BPTT's grows exponentially in "
                 "the chaotic regime, ES's and PES's far more slowly", fontsize=10)
    caption = (
        "Figure 1b. Variance of one-sample gradient estimates (log10 of the trace of the "
        "covariance of the per-sample contributions) against the horizon T at the initial "
        f"policy, for BPTT (sigma = 0, {cfg.samples} episode keys), antithetic ES and PES "
        f"({cfg.samples} pairs; "
        + ", ".join(f"{ro.system}: sigma = {ro.sigma}, PES window K = {ro.truncation}"
                    for ro in cfg.rollouts) + f"), over seeds "
        f"{list(cfg.seeds)} (error bars: standard error over seeds). Rows are systems, columns "
        "regimes. The legend gives the least-squares slope of log10 variance against T in "
        "decades per 100 steps; a leading Lyapunov exponent lambda predicts 2 lambda dt / ln 10 "
        "per step for BPTT (implied exponents of the chaotic fits: "
        + "; ".join(_implied_lyapunov(rows, cfg)) + "). Look for: BPTT's variance grows "
        "exponentially with T in the chaotic regime (a straight rising line on this log axis) "
        "and at most slowly in the regular one, while ES's and PES's stay within "
        "about one order of magnitude, or grow only as fast as the smoothed gradient itself "
        "(relative variance tr Cov / |mean|^2 roughly constant). Measured slopes: "
        + "; ".join(notes) + ". ES and PES relative variance at the shortest and longest T: "
        + "; ".join(_relative_variance_notes(rows, cfg)) + ".")
    written.append(_save(fig, directory, "fig1_gradient_variance",
                         ["system", "regime", "estimator", "T", "seed", "sigma", "K", "n",
                          "log10_var", "log10_grad_norm", "loss", "nonfinite"], data, caption))
    return written


def _implied_lyapunov(rows: Sequence[dict], cfg: Fig1Config) -> list[str]:
    notes = []
    for ro in cfg.rollouts:
        fit = fit_log_variance(select_rows(rows, kind="fig1_variance", system=ro.system,
                                       estimator="bptt", regime="chaotic"))
        dt = getattr(systems.SYSTEMS.get(ro.system)(), "dt", None)
        unit = "/s" if dt else "per step"
        notes.append(f"{ro.system} lambda ~ {_fmt(fit.slope / 2 / (dt or 1.0), 3)} "
                     f"± {_fmt(fit.se / 2 / (dt or 1.0), 2)} {unit}")
    return notes


def _relative_variance_notes(rows: Sequence[dict], cfg: Fig1Config) -> list[str]:
    notes = []
    for ro in cfg.rollouts:
        for regime in cfg.regimes:
            for name in cfg.estimators:
                if name == "bptt":
                    continue
                ends = []
                for T in (ro.horizons[0], ro.horizons[-1]):
                    rel = [r["metrics"]["log10_var"] - 2 * r["metrics"]["log10_grad_norm"]
                           for r in select_rows(rows, kind="fig1_variance", system=ro.system,
                                            estimator=name, regime=regime, T=T)]
                    rel = [x for x in rel if math.isfinite(x)]
                    ends.append(f"{10 ** (sum(rel) / len(rel)):.3g} (T = {T})" if rel else "nan")
                notes.append(f"{ro.system} {regime} {name}: {' -> '.join(ends)}")
    return notes


def _cmap(n: int) -> list:
    from matplotlib import colormaps
    cm = colormaps["viridis"]
    return [cm(0.1 + 0.8 * i / max(n - 1, 1)) for i in range(n)]


# --------------------------------------------------------------------------- figure 2

def _log_grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    """``n`` values from ``lo`` to ``hi`` evenly spaced in log, rounded to 4 digits."""
    a, b = math.log10(lo), math.log10(hi)
    return tuple(float(f"{10 ** (a + (b - a) * i / (n - 1)):.4g}") for i in range(n))


@dataclass(frozen=True)
class Fig2Config:
    """Settings of figure 2 (learned-optimizer unrolls): meta-loss and meta-gradient magnitude
    and variance of ``system`` over ``learning_rates`` for each horizon in ``horizons``."""

    system: str = "metz_sgd_momentum"
    horizons: tuple[int, ...] = (10, 30, 100, 300)
    learning_rates: tuple[float, ...] = _log_grid(1e-4, 1.0, 17)
    estimators: tuple[str, ...] = ("bptt", "antithetic_es")
    samples: int = 64
    sigma: float = 0.1              # ES perturbation of theta = (log eta, logit mu)
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"

    @classmethod
    def quick(cls) -> "Fig2Config":
        """The ``--quick`` settings (minutes on a CPU)."""
        return cls()

    @classmethod
    def full(cls) -> "Fig2Config":
        """The publication settings (the default of ``chaosgrad reproduce``)."""
        return cls(learning_rates=_log_grid(1e-4, 1.0, 41), samples=256, seeds=(0, 1, 2))


def _fig2_cells(cfg: Fig2Config) -> list[Cell]:
    cells = []
    for T in cfg.horizons:
        for eta in cfg.learning_rates:
            for name in cfg.estimators:
                p = {"T": T, "eta": eta, "N": cfg.samples}
                if name != "bptt":
                    p["sigma"] = cfg.sigma
                for seed in cfg.seeds:
                    cells.append(Cell("fig2_sweep", cfg.system, name, p, seed))
    return cells


def _compute_fig2(cell: Cell, device) -> CellResult:
    p = cell.params
    system = systems.make(cell.system, learning_rate=p["eta"], horizon=p["T"])
    return measure_estimator(system, cell.estimator, _hyper(cell.estimator, p), cell.seed, device)


def run_fig2(cfg: Fig2Config, store: ResultsStore, progress: bool | None = None,
             **backend) -> dict:
    """Measure figure 2's cells (learned-optimizer unrolls) not in ``store`` yet; returns config and rows."""
    rows = run_cells(store, _fig2_cells(cfg), lambda c: _compute_fig2(c, cfg.device),
                     desc="fig2 learned-optimizer unrolls", progress=progress, **backend)
    return {"config": cfg, "rows": rows}


def _mean_over_seeds(rows: Sequence[dict], key: str, x: str) -> tuple[list, list]:
    by: dict[float, list[float]] = {}
    for r in rows:
        v = r["metrics"][key]
        by.setdefault(r["params"][x], [])
        if math.isfinite(v):
            by[r["params"][x]].append(v)
    xs = sorted(by)
    return xs, [sum(by[k]) / len(by[k]) if by[k] else math.nan for k in xs]


def plot_fig2(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/fig2_lr_sweep.png`` (with ``.csv`` data and ``.txt`` captions)
    from `run_fig2`'s results; returns the PNG paths."""
    cfg: Fig2Config = results["config"]
    rows = results["rows"]
    fig, axes = _figure(1, 3, 16.0, 4.6)
    cmap = _cmap(len(cfg.horizons))
    ax_loss, ax_norm, ax_var = axes[0]
    data = []
    for i, T in enumerate(cfg.horizons):
        bptt = select_rows(rows, estimator="bptt", T=T)
        es = select_rows(rows, estimator="antithetic_es", T=T)
        xs, loss = _mean_over_seeds(bptt, "loss", "eta")
        ax_loss.plot(*_finite(xs, loss), color=cmap[i], marker="o", ms=3, label=f"T = {T}")
        for sel, ls in ((bptt, "-"), (es, "--")):
            for ax, key in ((ax_norm, "log10_grad_norm"), (ax_var, "log10_var")):
                xs, logs = _mean_over_seeds(sel, key, "eta")
                _errorbar(ax, xs, logs, [math.nan] * len(xs), color=cmap[i], ls=ls, marker="o",
                          ms=3, lw=1.2)
        for r in bptt + es:
            m = r["metrics"]
            data.append([r["estimator"], T, r["params"]["eta"], r["seed"],
                         r["params"].get("sigma", 0.0), m["n"], m["loss"], m["log10_grad_norm"],
                         m["log10_var"], m["nonfinite"]])
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel(r"inner learning rate $\eta$ (momentum $\mu$ = 0.9)")
        ax.grid(alpha=0.3)
    ax_loss.set_ylabel("meta-loss (mean inner loss over the unroll)")
    ax_loss.set_title("(a) meta-loss, mean over episode keys", fontsize=9)
    ax_loss.legend(title="unroll length", fontsize=8, title_fontsize=8)
    ax_norm.set_ylabel(r"|mean meta-gradient| w.r.t. ($\log\eta$, logit $\mu$)")
    ax_norm.set_title("(b) meta-gradient magnitude (log scale)", fontsize=9)
    ax_var.set_ylabel("tr Cov of per-sample meta-gradients")
    ax_var.set_title("(c) meta-gradient variance (log scale)", fontsize=9)
    from matplotlib.lines import Line2D
    styles = [Line2D([], [], color="0.3", ls="-", label="BPTT (sigma = 0)"),
              Line2D([], [], color="0.3", ls="--", label=f"antithetic ES (sigma = {cfg.sigma})")]
    for ax in (ax_norm, ax_var):
        ax.legend(handles=styles + [Line2D([], [], color=cmap[i], label=f"T = {T}")
                                    for i, T in enumerate(cfg.horizons)], fontsize=8)
    fig.suptitle("Figure 2. SGD with momentum on f(x) = log(x^2 + 1 + sin 3x) + 1.5: the meta-loss "
                 "stays bounded, the BPTT meta-gradient explodes at large learning rates",
                 fontsize=10)
    worst = max((r["metrics"]["log10_var"] for r in select_rows(rows, estimator="bptt")
                 if math.isfinite(r["metrics"]["log10_var"])), default=math.nan)
    worst_es = max((r["metrics"]["log10_var"] for r in select_rows(rows, estimator="antithetic_es")
                    if math.isfinite(r["metrics"]["log10_var"])), default=math.nan)
    nonfinite = sum(r["metrics"]["nonfinite"] for r in rows)
    caption = (
        "Figure 2. Learned-optimizer unrolls after Metz et al. (2021), Fig. 2: "
        f"{cfg.system} (theta = (log eta, logit mu)) over {len(cfg.learning_rates)} "
        f"learning rates eta from {cfg.learning_rates[0]:g} to {cfg.learning_rates[-1]:g} "
        f"(log axis) and unroll lengths T = {list(cfg.horizons)}. (a) meta-loss (mean inner loss "
        f"over the unroll, averaged over {cfg.samples} episode keys); (b) log10 norm of the mean "
        "meta-gradient; (c) log10 of the per-sample gradient variance (trace of the covariance), "
        f"BPTT solid, antithetic ES (sigma = {cfg.sigma}, {cfg.samples} pairs) dashed. Look for: "
        "the meta-loss is a bounded, fairly smooth function of eta, but once eta is large enough "
        "for the inner iterates to bounce chaotically the BPTT gradient's magnitude and variance "
        "grow by tens of orders of magnitude, more the longer the unroll (largest BPTT variance "
        f"10^{_fmt(worst, 3)} vs 10^{_fmt(worst_es, 3)} for ES), while ES stays bounded. "
        "The CSV holds log10 of the plotted magnitudes and variances. "
        f"Non-finite samples dropped: {nonfinite}.")
    return [_save(fig, directory, "fig2_lr_sweep",
                  ["estimator", "T", "eta", "seed", "sigma", "n", "loss", "log10_grad_norm",
                   "log10_var", "nonfinite"], data, caption)]


# --------------------------------------------------------------------------- figure 3

@dataclass(frozen=True)
class Fig3Config:
    """Settings of figure 3 (disk packing): energy after K FIRE steps against the diameter D
    (``diameters``, ``energy_steps``, ``energy_seeds``) and the variance of dE/dD against K
    (``steps``) at ``diameter``."""

    system: str = "disk_packing"
    n_disks: int = 32
    diameter: float = 1.4           # D of the variance measurement (the usual bidisperse ratio)
    diameters: tuple[float, ...] = tuple(round(0.8 + 0.025 * i, 4) for i in range(41))
    energy_steps: tuple[int, ...] = (25, 200)    # K of the energy-vs-D panels
    energy_seeds: tuple[int, ...] = tuple(range(6))
    steps: tuple[int, ...] = (10, 25, 50, 100, 200)   # K of the variance panel
    estimators: tuple[str, ...] = ("bptt", "antithetic_es")
    samples: int = 32
    sigma: float = 0.05
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    device: str = "cpu"

    @classmethod
    def quick(cls) -> "Fig3Config":
        """The ``--quick`` settings (minutes on a CPU)."""
        return cls()

    @classmethod
    def full(cls) -> "Fig3Config":
        """The publication settings (the default of ``chaosgrad reproduce``)."""
        return cls(n_disks=64, diameters=tuple(round(0.8 + 0.01 * i, 4) for i in range(101)),
                   energy_seeds=tuple(range(16)), steps=(10, 25, 50, 100, 200, 400),
                   samples=64, seeds=(0, 1, 2, 3))


def _fig3_cells(cfg: Fig3Config) -> list[Cell]:
    cells = []
    for K in cfg.energy_steps:
        for seed in cfg.energy_seeds:
            cells.append(Cell("fig3_energy", cfg.system, "-",
                              {"K": K, "n_disks": cfg.n_disks, "D": list(cfg.diameters)}, seed))
    for K in cfg.steps:
        for name in cfg.estimators:
            p = {"T": K, "D": cfg.diameter, "n_disks": cfg.n_disks, "N": cfg.samples}
            if name != "bptt":
                p["sigma"] = cfg.sigma
            for seed in cfg.seeds:
                cells.append(Cell("fig3_variance", cfg.system, name, p, seed))
    return cells


def _compute_fig3(cell: Cell, device) -> CellResult:
    p = cell.params
    if cell.kind == "fig3_energy":
        system = systems.make(cell.system, n_disks=p["n_disks"], horizon=p["K"], loss="final")
        D = torch.tensor(p["D"], dtype=F64, device=device)[:, None]
        keys = episode_keys(cell.seed, 1, device).expand(D.shape[0])
        energy = mean_losses(system, D, keys, p["K"])   # loss="final": the energy after K steps
        return CellResult({"energy": energy.tolist()}, D.shape[0] * p["K"], str(device))
    system = systems.make(cell.system, n_disks=p["n_disks"], diameter=p["D"], horizon=p["T"],
                          loss="final")
    return measure_estimator(system, cell.estimator, _hyper(cell.estimator, p), cell.seed, device)


def run_fig3(cfg: Fig3Config, store: ResultsStore, progress: bool | None = None,
             **backend) -> dict:
    """Measure figure 3's cells (disk packing) not in ``store`` yet; returns config and rows."""
    rows = run_cells(store, _fig3_cells(cfg), lambda c: _compute_fig3(c, cfg.device),
                     desc="fig3 disk packing", progress=progress, **backend)
    return {"config": cfg, "rows": rows}


def plot_fig3(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/fig3_energy_vs_D.png and fig3_gradient_variance.png`` (with ``.csv`` data and ``.txt`` captions)
    from `run_fig3`'s results; returns the PNG paths."""
    cfg: Fig3Config = results["config"]
    rows = results["rows"]
    written = []
    fig, axes = _figure(1, len(cfg.energy_steps), 5.0 * len(cfg.energy_steps), 3.8)
    data = []
    for ax, K in zip(axes[0], cfg.energy_steps):
        curves = select_rows(rows, kind="fig3_energy", K=K)
        for r in curves:
            ax.plot(cfg.diameters, r["metrics"]["energy"], color="tab:blue", lw=0.7, alpha=0.5)
            data += [[K, r["seed"], d, e] for d, e in zip(cfg.diameters, r["metrics"]["energy"])]
        mean = [sum(c["metrics"]["energy"][i] for c in curves) / len(curves)
                for i in range(len(cfg.diameters))]
        ax.plot(cfg.diameters, mean, color="k", lw=2.0, label=f"mean over {len(curves)} seeds")
        ax.plot([], [], color="tab:blue", lw=0.7, label="one seed (initial positions)")
        ax.set_xlabel("diameter D of the large disks (small disks: 1)")
        ax.set_ylabel(f"energy U after K = {K} FIRE steps")
        ax.set_title(f"K = {K} minimisation steps", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Figure 3a. Bidisperse packing of {cfg.n_disks} soft disks (packing fraction "
                 "0.98): energy vs diameter over seeds", fontsize=10)
    caption = (
        f"Figure 3a. Energy of a bidisperse packing of {cfg.n_disks} soft disks (half of "
        "diameter D, half of diameter 1, periodic box at packing fraction 0.98) after K FIRE "
        f"minimisation steps, against D on a grid of {len(cfg.diameters)} values, for "
        f"{len(cfg.energy_seeds)} seeds (random initial positions; thin lines) and their mean "
        "(bold). Look for: each seed's curve is piecewise smooth with jumps where the "
        "minimiser falls into a different local minimum, more so after more steps, so the "
        "derivative dE/dD of one seed is a poor guide to the mean curve's slope.")
    written.append(_save(fig, directory, "fig3_energy_vs_D", ["K", "seed", "D", "energy"],
                         data, caption))

    fig, axes = _figure(1, 1, 5.6, 4.0)
    ax = axes[0][0]
    data, notes = [], []
    for name in cfg.estimators:
        sel = select_rows(rows, kind="fig3_variance", estimator=name)
        table = variance_table(sel)
        label, colour, marker = ESTIMATOR_STYLE[name]
        if name != "bptt":
            label += f" (sigma = {cfg.sigma})"
        _errorbar(ax, [k for k, *_ in table], [m for _, m, _, _ in table],
                  [s for _, _, s, _ in table], color=colour, marker=marker, ms=4, label=label)
        notes.append(f"{name}: " + ", ".join(f"K={k}: 10^{_fmt(m, 3)}" for k, m, _, _ in table))
        for r in sel:
            m = r["metrics"]
            data.append([name, r["params"]["T"], r["seed"], r["params"].get("sigma", 0.0), m["n"],
                         m["loss"], m["grad"][0], m["log10_var"], m["nonfinite"]])
    ax.set_xscale("log")
    ax.set_xlabel("K, number of FIRE minimisation steps unrolled")
    ax.set_ylabel(r"variance of per-sample $dE/dD$ (log scale)")
    ax.set_title(f"Figure 3b. Variance of dE/dD at D = {cfg.diameter}, {cfg.n_disks} disks",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    caption = (
        f"Figure 3b. Variance over episode keys (random initial positions) of the per-sample "
        f"derivative of the final energy with respect to the diameter, dE/dD at D = "
        f"{cfg.diameter}, against the number K of FIRE steps unrolled (log axes), for BPTT "
        f"({cfg.samples} keys) and antithetic ES ({cfg.samples} pairs, sigma = {cfg.sigma}); "
        f"error bars are standard errors over seeds {list(cfg.seeds)}. Look for: the pathwise "
        "derivative's variance rises by orders of magnitude while the packing is being "
        "minimised (and can fall again once it has settled), whereas ES's variance stays "
        "bounded. Means of log10 variance: " + "; ".join(notes) + ".")
    written.append(_save(fig, directory, "fig3_gradient_variance",
                         ["estimator", "K", "seed", "sigma", "n", "energy", "mean_dE_dD",
                          "log10_var", "nonfinite"], data, caption))
    return written


# --------------------------------------------------------------------------- figure 4

@dataclass(frozen=True)
class Fig4Config:
    """Settings of figure 4: per-step Jacobian spectra of the ``spectra`` systems in each regime,
    and on the logistic map the Lyapunov exponent and BPTT gradient growth over ``r_values``."""

    spectra: tuple[tuple[str, tuple[int, ...]], ...] = (   # system, steps t of J_t
        ("metz_sgd_momentum", tuple(range(0, 50, 2))),
        ("learned_optimizer", tuple(range(0, 50, 5))))
    regimes: tuple[str, ...] = ("regular", "chaotic")
    trajectories: int = 8
    r_values: tuple[float, ...] = tuple(round(2.8 + 0.025 * i, 4) for i in range(49))
    lyapunov_steps: int = 500
    burn_in: int = 100
    horizons: tuple[int, ...] = (5, 10, 15, 20, 25, 30)
    samples: int = 64
    attractor_r: int = 601          # r values of the bifurcation diagram
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> "Fig4Config":
        """The ``--quick`` settings (minutes on a CPU)."""
        return cls()

    @classmethod
    def full(cls) -> "Fig4Config":
        """The publication settings (the default of ``chaosgrad reproduce``)."""
        return cls(spectra=tuple((name, tuple(range(50))) for name, _ in cls.spectra),
                   trajectories=16, r_values=tuple(round(2.8 + 0.005 * i, 4) for i in range(241)),
                   lyapunov_steps=2000, samples=256, attractor_r=1201)


def _fig4_cells(cfg: Fig4Config) -> list[Cell]:
    cells = [Cell("fig4_eigenvalues", name, "-", {"regime": regime, "t": list(times),
                                                   "trajectories": cfg.trajectories}, cfg.seed)
             for name, times in cfg.spectra for regime in cfg.regimes]
    r_lo, r_hi = cfg.r_values[0], cfg.r_values[-1]
    cells.append(Cell("fig4_attractor", "logistic_map", "-",
                      {"r": [r_lo, r_hi, cfg.attractor_r], "burn_in": cfg.burn_in, "points": 60},
                      cfg.seed))
    for r in cfg.r_values:
        cells.append(Cell("fig4_lyapunov", "logistic_map", "-",
                          {"r": r, "steps": cfg.lyapunov_steps, "burn_in": cfg.burn_in,
                           "finite_time": max(cfg.horizons), "trajectories": cfg.samples},
                          cfg.seed))
        cells.append(Cell("fig4_growth", "logistic_map", "bptt",
                          {"r": r, "horizons": list(cfg.horizons), "N": cfg.samples}, cfg.seed))
    return cells


def _compute_fig4(cell: Cell, device) -> CellResult:
    p = cell.params
    if cell.kind == "fig4_eigenvalues":
        system = make_system(cell.system, p["regime"])
        theta = system.init_params(dtype=F64, device=device)
        eig, ts = [], []
        for t in p["t"]:
            lam = systems.jacobian_eigenvalues(system, theta, t=t, seed=cell.seed,
                                               trajectories=p["trajectories"]).flatten()
            eig.append(lam)
            ts += [t] * lam.shape[0]
        lam = torch.cat(eig)
        mod = lam.abs()
        radius = torch.stack([e.reshape(p["trajectories"], -1).abs().max(1).values for e in eig])
        metrics = {"real": lam.real.tolist(), "imag": lam.imag.tolist(), "t": ts,
                   "frac_outside": float((mod > 1 + 1e-9).double().mean()),
                   "max_modulus": float(mod.max()),
                   "mean_log_radius": float(radius.log().mean())}
        steps = p["trajectories"] * sum(t + 1 for t in p["t"])
        return CellResult(metrics, steps, str(device))
    if cell.kind == "fig4_attractor":
        lo, hi, n = p["r"]
        system = systems.make(cell.system)
        r = torch.linspace(lo, hi, n, dtype=F64, device=device).repeat_interleave(4)
        keys = episode_keys(cell.seed, 4, device).repeat(n)
        state, xs = system.init_state(r[:, None], keys), []
        with torch.no_grad():
            for j in range(p["burn_in"] + p["points"] // 4):
                state, x = system.step(r[:, None], state, torch.full_like(keys, j), keys)
                if j >= p["burn_in"]:
                    xs.append(x)
        x = torch.stack(xs, 1).reshape(n, -1)   # [n, points]: 4 trajectories x points/4 steps
        return CellResult({"x": [[round(v, 5) for v in row] for row in x.tolist()]},
                          r.shape[0] * (p["burn_in"] + p["points"] // 4), str(device))
    system = systems.make(cell.system, r=p["r"])
    theta = torch.tensor([p["r"]], dtype=F64, device=device)
    if cell.kind == "fig4_lyapunov":
        asym = systems.lyapunov_exponents(system, theta, steps=p["steps"], burn_in=p["burn_in"],
                                          trajectories=p["trajectories"], seed=cell.seed)
        # over the same first steps from t = 0 as the gradients' horizons (transients included)
        early = systems.lyapunov_exponents(system, theta, steps=p["finite_time"], burn_in=0,
                                           trajectories=p["trajectories"], seed=cell.seed)
        metrics = {"lambda": float(asym.per_step[0]), "lambda_se": float(asym.stderr[0]),
                   "lambda_early": float(early.per_step[0]),
                   "lambda_early_se": float(early.stderr[0])}
        steps = p["trajectories"] * (2 * p["burn_in"] + p["steps"] + p["finite_time"])
        return CellResult(metrics, steps, str(device))
    g = systems.gradient_growth_rate(system, theta, horizons=p["horizons"], samples=p["N"],
                                     seed=cell.seed)
    metrics = {"slope": g.slope, "intercept": g.intercept, "log_std": g.log_std.tolist(),
               "nonfinite": g.nonfinite.tolist()}
    return CellResult(metrics, p["N"] * max(p["horizons"]), str(device))


def run_fig4(cfg: Fig4Config, store: ResultsStore, progress: bool | None = None,
             **backend) -> dict:
    """Measure figure 4's cells (Jacobian spectra and Lyapunov exponents) not in ``store`` yet; returns config and rows."""
    rows = run_cells(store, _fig4_cells(cfg), lambda c: _compute_fig4(c, cfg.device),
                     desc="fig4 Jacobian spectra and Lyapunov exponents", progress=progress, **backend)
    return {"config": cfg, "rows": rows}


def plot_fig4(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/fig4_jacobian_spectra.png and fig4_lyapunov_vs_growth.png`` (with ``.csv`` data and ``.txt`` captions)
    from `run_fig4`'s results; returns the PNG paths."""
    cfg: Fig4Config = results["config"]
    rows = results["rows"]
    written = []
    fig, axes = _figure(len(cfg.spectra), len(cfg.regimes), 4.4 * len(cfg.regimes),
                        4.0 * len(cfg.spectra))
    data, notes = [], []
    circle = [complex(math.cos(2 * math.pi * i / 400), math.sin(2 * math.pi * i / 400))
              for i in range(401)]
    for i, (name, times) in enumerate(cfg.spectra):
        for j, regime in enumerate(cfg.regimes):
            ax = axes[i][j]
            (r,) = select_rows(rows, kind="fig4_eigenvalues", system=name, regime=regime)
            m = r["metrics"]
            ax.plot([z.real for z in circle], [z.imag for z in circle], color="0.4", lw=1.0,
                    ls="--", label="unit circle")
            sc = ax.scatter(m["real"], m["imag"], c=m["t"], s=9, cmap="viridis", alpha=0.8,
                            linewidths=0)
            fig.colorbar(sc, ax=ax, label="step t of the Jacobian", shrink=0.85)
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_xlabel(r"Re $\lambda$")
            ax.set_ylabel(r"Im $\lambda$")
            ax.set_title(f"{name}, {_regime_label(name, regime)}\n"
                         f"mean ln spectral radius {m['mean_log_radius']:.3f}, "
                         f"max |lambda| {m['max_modulus']:.3g}", fontsize=9)
            ax.legend(fontsize=7, loc="lower left")
            ax.grid(alpha=0.3)
            notes.append(f"{name} {regime}: mean ln spectral radius {m['mean_log_radius']:.3f}, "
                         f"{100 * m['frac_outside']:.1f}% of eigenvalues outside the unit circle, "
                         f"max modulus {m['max_modulus']:.3g}")
            data += [[name, regime, t, re, im] for t, re, im in zip(m["t"], m["real"], m["imag"])]
    fig.suptitle("Figure 4a. Eigenvalues of the per-step state Jacobian ds_{t+1}/ds_t: "
                 "regular vs chaotic regime", fontsize=10)
    caption = (
        "Figure 4a. Eigenvalues of the per-step state Jacobian J_t = ds_{t+1}/ds_t in the "
        "complex plane, with the unit circle, at the initial parameters of each system, for "
        f"{cfg.trajectories} trajectories and the steps t given by the colour; rows are systems, "
        "columns regimes. Eigenvalues outside the unit circle are locally expanding directions; "
        "a product of T such Jacobians (what BPTT multiplies) grows exponentially when they "
        "persist; the mean over steps and trajectories of the log spectral radius (the log of "
        "the largest modulus, in the panel titles) is a local, per-step analogue of the leading "
        "Lyapunov exponent. Look for: in the regular regime the spectrum hugs the unit circle "
        "from inside or just outside it, in the chaotic regime eigenvalues reach far outside. "
        + "; ".join(notes) + ".")
    written.append(_save(fig, directory, "fig4_jacobian_spectra",
                         ["system", "regime", "t", "real", "imag"], data, caption))

    fig, axes = _figure(2, 1, 7.0, 6.4)
    ax_bif, ax = axes[0][0], axes[1][0]
    lyap = {r["params"]["r"]: r["metrics"] for r in select_rows(rows, kind="fig4_lyapunov")}
    grow = {r["params"]["r"]: r["metrics"] for r in select_rows(rows, kind="fig4_growth")}
    rs = sorted(lyap)
    (att,) = select_rows(rows, kind="fig4_attractor")
    lo, hi, n = att["params"]["r"]
    grid = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    ax_bif.plot([r for r, xs in zip(grid, att["metrics"]["x"]) for _ in xs],
                [x for xs in att["metrics"]["x"] for x in xs], ",", color="k", alpha=0.6)
    ax_bif.set_ylabel(r"attractor $x_t$")
    ax_bif.set_title("(a) attractor of the logistic map x <- r x (1 - x)", fontsize=9)
    ax_bif.set_xlim(rs[0], rs[-1])
    ax_bif.grid(alpha=0.3)
    ax.set_title("(b) Lyapunov exponents and the growth rate of the BPTT gradient's spread",
                 fontsize=9)
    fig.suptitle("Figure 4b. Logistic map: BPTT gradient growth rate vs Lyapunov exponent",
                 fontsize=10)
    _errorbar(ax, rs, [lyap[r]["lambda"] for r in rs], [lyap[r]["lambda_se"] for r in rs],
              log=False, color="k", lw=1.2, ms=0,
              label=f"Lyapunov exponent (burn-in {cfg.burn_in}, {cfg.lyapunov_steps} steps)")
    _errorbar(ax, rs, [lyap[r]["lambda_early"] for r in rs],
              [lyap[r]["lambda_early_se"] for r in rs],
              log=False, color="tab:orange", lw=1.0, ms=0,
              label=f"finite-time exponent over the first {max(cfg.horizons)} steps")
    ax.plot(*_finite(rs, [grow[r]["slope"] for r in rs]), color="tab:red", marker="o", ms=3,
            ls="none", label="slope of ln std(BPTT gradient) vs T, "
                             f"T = {cfg.horizons[0]}..{cfg.horizons[-1]}")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlim(rs[0], rs[-1])
    ax.set_xlabel("parameter r")
    ax.set_ylabel("rate per step")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    data = [[r, lyap[r]["lambda"], lyap[r]["lambda_se"], lyap[r]["lambda_early"],
             lyap[r]["lambda_early_se"], grow[r]["slope"], sum(grow[r]["nonfinite"])] for r in rs]
    caption = (
        "Figure 4b. Logistic map x <- r x (1 - x) for r from "
        f"{rs[0]:g} to {rs[-1]:g}: (a) the attractor (iterates after {cfg.burn_in} burn-in "
        "steps of 4 trajectories); (b) the leading Lyapunov exponent per step (QR method, "
        f"{cfg.samples} trajectories, after {cfg.burn_in} burn-in steps; error bars standard "
        f"errors), the finite-time exponent over the first {max(cfg.horizons)} steps from the "
        "random start (the window the gradients see), and the least-squares slope of the log "
        f"standard deviation of {cfg.samples} per-sample BPTT gradients d/dr of the mean loss "
        f"against T = {list(cfg.horizons)}. Look for: the gradient growth rate follows the "
        "positive Lyapunov exponent where the map is chaotic and stays near zero where it is "
        "regular (lambda < 0: the gradient converges instead of growing, so the rate is about "
        "max(lambda, 0)); in periodic windows (e.g. r ~ 3.83) it follows the finite-time exponent "
        "of the transient rather than the asymptotic one.")
    written.append(_save(fig, directory, "fig4_lyapunov_vs_growth",
                         ["r", "lambda", "lambda_se", "lambda_first_steps",
                          "lambda_first_steps_se", "growth_slope", "nonfinite"], data, caption))
    return written


# --------------------------------------------------------------------------- command line

class Figure(NamedTuple):
    config: type
    run: Callable
    plot: Callable
    title: str


FIGURES = {
    "fig1": Figure(Fig1Config, run_fig1, plot_fig1, "policy rollouts"),
    "fig2": Figure(Fig2Config, run_fig2, plot_fig2, "learned-optimizer unrolls"),
    "fig3": Figure(Fig3Config, run_fig3, plot_fig3, "disk packing"),
    "fig4": Figure(Fig4Config, run_fig4, plot_fig4, "Jacobian spectra and Lyapunov exponents"),
}


def _figure_name(name: str) -> str:
    if name not in (*FIGURES, "all"):
        raise argparse.ArgumentTypeError(f"unknown figure {name!r}; choose from "
                                         f"{', '.join([*FIGURES, 'all'])}")
    return name


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``chaosgrad reproduce``: FIGURE..., ``--quick``, ``--out``, ``--device``."""
    # validated by `_figure_name`, not `choices`: argparse < 3.12 checks an empty '*' default
    # against the choices and rejects it
    p.add_argument("figures", nargs="*", default=[], type=_figure_name,
                   metavar="FIGURE", help="fig1, fig2, fig3, fig4 or all (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="small settings (a few minutes on a CPU); default: publication settings")
    p.add_argument("--out", default="results", metavar="DIR",
                   help="output directory: results.sqlite, figures/, report (default: results)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to simulate (default: cuda when available)")
    add_backend_arguments(p)


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return name


def _build_report(directory: Path) -> str:
    try:
        from experiments import report
    except ModuleNotFoundError as err:
        if err.name != "experiments.report":
            raise
        return "not built (experiments.report is not available in this version)"
    return str(report.build_report(directory) or Path(directory))


def main(args: argparse.Namespace) -> int:
    """``chaosgrad reproduce``: measure and plot the chosen figures, build the report; exit code."""
    chosen = args.figures or ["all"]
    names = list(FIGURES) if "all" in chosen else list(dict.fromkeys(chosen))
    device = _device(args.device)
    directory = Path(args.out)
    store = ResultsStore(directory)
    store.log_run(sys.argv)
    written, total = [], time.perf_counter()
    for name in names:
        spec = FIGURES[name]
        cfg = replace(spec.config.quick() if args.quick else spec.config.full(), device=device)
        before = len(store.rows())
        start = time.perf_counter()
        results = spec.run(cfg, store, **backend_options(args))
        computed = len(store.rows()) - before
        pngs = spec.plot(results, directory)
        written += pngs
        print(f"{name} ({spec.title}): {len(results['rows'])} cells, {computed} computed now, "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    store.close()
    report = _build_report(directory)
    print(f"results: {directory / 'results.sqlite'}")
    print(f"figures: {directory / 'figures'} ({', '.join(p.name for p in written)}, "
          "each with .csv data and .txt caption)")
    print(f"report:  {report}")
    print(f"total time: {time.perf_counter() - total:.1f} s", file=sys.stderr)
    return 0

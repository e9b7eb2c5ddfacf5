"""Figure 1, policy rollouts (mass_spring_walker, double_pendulum): the loss along a 1-D slice of
theta for several T, and the per-sample gradient variance tr Cov against T for BPTT, ES and PES."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from experiments.core.measure import episode_losses
from experiments.core.plotting import colors, errorbar, headroom, new_figure, save_figure, text
from experiments.core.resolve import make_system
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult

from .common import (ESTIMATOR_STYLE, F64, Figure, build, decades, dt_note, episode_keys,
                     fit_log_variance, fmt, hyper, measure_cells, measure_estimator,
                     regime_label, select_rows, system_params, variance_table)

__all__ = ["Rollout", "Fig1Config", "cells", "compute", "run_fig1", "plot_fig1",
           "plot_fig1_slices", "plot_fig1_variance", "for_system", "SWAP_SIGMA", "FIGURE"]

SWAP_SIGMA = 0.1  # ES / PES sigma for a swapped-in system (``reproduce fig1 --system``)


@dataclass(frozen=True)
class Rollout:
    """One policy-rollout system of figure 1 and its per-system settings."""

    system: str
    horizons: tuple[int, ...]      # T grid (each a multiple of ``truncation``)
    truncation: int                 # PES window K
    sigma: float                    # ES / PES perturbation scale
    slice_horizons: tuple[int, ...]
    slice_span: float               # theta0 + alpha d, alpha in [-span, span], |d| = 1
    slice_regime: str = "chaotic"   # the regime of the loss slices


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
    overrides: tuple[tuple[str, object], ...] = ()  # --set of a swapped-in system
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


def cells(cfg: Fig1Config) -> list[Cell]:
    """The loss-slice cells, then one variance cell per (system, regime, T, estimator, seed)."""
    out = []
    for ro in cfg.rollouts:
        extra = system_params(ro.system, dict(cfg.overrides))
        for T in ro.slice_horizons:
            out.append(Cell("fig1_slice", ro.system, "-",
                            {"regime": ro.slice_regime, "T": T, "points": cfg.slice_points,
                             "span": ro.slice_span, "keys": cfg.slice_keys, **extra}, 0))
        for regime in cfg.regimes:
            for T in ro.horizons:
                for name in cfg.estimators:
                    p = {"regime": regime, "T": T, "N": cfg.samples, **extra}
                    if name != "bptt":
                        p["sigma"] = ro.sigma
                    if name == "pes":
                        p["K"] = ro.truncation
                    out += [Cell("fig1_variance", ro.system, name, p, seed) for seed in cfg.seeds]
    return out


def _slice_direction(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(dim, generator=g, dtype=F64)
    return d / d.norm()


@torch.no_grad()
def _compute_slice(cell: Cell, device) -> CellResult:
    p = cell.params
    system = build(cell)
    theta0 = system.init_params(dtype=F64, device=device)
    d = _slice_direction(system.param_dim, cell.seed).to(device)
    alpha = torch.linspace(-p["span"], p["span"], p["points"], dtype=F64, device=device)
    rows = (theta0 + alpha[:, None] * d).repeat_interleave(p["keys"], 0)
    keys = episode_keys(cell.seed, p["keys"], device).repeat(p["points"])
    loss = episode_losses(system, rows, keys, p["T"]).reshape(p["points"], p["keys"])
    finite = torch.isfinite(loss)
    mean = torch.where(finite, loss, torch.zeros_like(loss)).sum(1) / finite.sum(1)
    metrics = {"alpha": alpha.tolist(), "loss": mean.tolist(), "nonfinite": int((~finite).sum())}
    return CellResult(metrics, rows.shape[0] * p["T"], str(device))


def compute(cell: Cell, device) -> CellResult:
    """One cell of figure 1: a loss slice, or one estimator's per-sample statistics."""
    if cell.kind == "fig1_slice":
        return _compute_slice(cell, device)
    system = build(cell)
    return measure_estimator(system, cell.estimator, hyper(cell.estimator, cell.params),
                             cell.seed, device)


def run_fig1(cfg: Fig1Config, store: ResultsStore, progress: bool | None = None,
             **backend) -> dict:
    """Measure figure 1's cells (those not in ``store`` yet); returns config and rows."""
    return measure_cells(cfg, store, cells(cfg), lambda c: compute(c, cfg.device),
                         "fig1 policy rollouts", progress, **backend)


def plot_fig1_slices(results: dict, directory: Path) -> Path:
    """``fig1_loss_slices``: the loss along a random direction of theta, several T."""
    cfg: Fig1Config = results["config"]
    fig, axes = new_figure(1, len(cfg.rollouts), 5.2 * len(cfg.rollouts), 4.0)
    data = []
    for ax, ro in zip(axes[0], cfg.rollouts):
        cmap = colors(len(ro.slice_horizons))
        for i, T in enumerate(ro.slice_horizons):
            (r,) = select_rows(results["rows"], kind="fig1_slice", system=ro.system, T=T)
            a, loss = r["metrics"]["alpha"], r["metrics"]["loss"]
            mid = loss[len(loss) // 2]
            ax.plot(a, [v - mid for v in loss], color=cmap[i], lw=1.2, label=f"T = {T}")
            data += [[ro.system, ro.slice_regime, T, x, v] for x, v in zip(a, loss)]
        ax.axvline(0.0, color="0.7", lw=0.8, ls=":")
        ax.set_xlabel(r"step $\alpha$ along a random unit direction $d$ of $\theta$")
        ax.set_ylabel(r"$L(\theta_0 + \alpha d) - L(\theta_0)$  (mean loss per step)")
        ax.set_title(text(f"{ro.system}, {regime_label(ro.system, ro.slice_regime)}"),
                     fontsize=9)
        ax.legend(title="horizon T" + dt_note(ro.system), fontsize=8, title_fontsize=8)
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
    return save_figure(fig, directory, "fig1_loss_slices",
                       ["system", "regime", "T", "alpha", "loss"], data, caption)


def _variance_panel(ax, rows, ro: Rollout, regime: str, cfg: Fig1Config, notes: list[str],
                    data: list) -> None:
    for name in cfg.estimators:
        sel = select_rows(rows, kind="fig1_variance", system=ro.system, estimator=name,
                          regime=regime)
        table = variance_table(sel)
        label, colour, marker = ESTIMATOR_STYLE[name]
        fit = fit_log_variance(sel)
        errorbar(ax, [t for t, *_ in table], [m for _, m, _, _ in table],
                 [s for _, _, s, _ in table], color=colour, marker=marker, ms=4, lw=1.2,
                 label=f"{label}: {fmt(decades(fit.slope) * 100)} ± "
                       f"{fmt(decades(fit.se) * 100, 1)} decades / 100 steps")
        notes.append(f"{ro.system} {regime} {name}: {fmt(decades(fit.slope) * 100, 3)} "
                     f"± {fmt(decades(fit.se) * 100, 2)} decades per 100 steps")
        for r in sel:
            m = r["metrics"]
            data.append([ro.system, regime, name, r["params"]["T"], r["seed"],
                         r["params"].get("sigma", 0.0), r["params"].get("K", ""), m["n"],
                         m["log10_var"], m["log10_grad_norm"], m["loss"], m["nonfinite"]])
    ax.set_xlabel("horizon T" + dt_note(ro.system))
    ax.set_ylabel("gradient variance, tr Cov (log scale)")
    ax.set_title(text(f"{ro.system}, {regime_label(ro.system, regime)}"), fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, which="major")
    headroom(ax, 0.4)


def plot_fig1_variance(results: dict, directory: Path) -> Path:
    """``fig1_gradient_variance``: tr Cov of one-sample estimates against T, systems x regimes,
    with the fitted growth rates in the legends."""
    cfg: Fig1Config = results["config"]
    rows = results["rows"]
    fig, axes = new_figure(len(cfg.rollouts), len(cfg.regimes), 5.0 * len(cfg.regimes),
                           3.6 * len(cfg.rollouts))
    data, notes = [], []
    for i, ro in enumerate(cfg.rollouts):
        for j, regime in enumerate(cfg.regimes):
            _variance_panel(axes[i][j], rows, ro, regime, cfg, notes, data)
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
    return save_figure(fig, directory, "fig1_gradient_variance",
                       ["system", "regime", "estimator", "T", "seed", "sigma", "K", "n",
                        "log10_var", "log10_grad_norm", "loss", "nonfinite"], data, caption)


def plot_fig1(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/fig1_loss_slices.png`` and ``fig1_gradient_variance.png`` (with
    ``.csv`` data and ``.txt`` captions) from `run_fig1`'s results; returns the PNG paths."""
    return [plot_fig1_slices(results, directory), plot_fig1_variance(results, directory)]


def _implied_lyapunov(rows: Sequence[dict], cfg: Fig1Config) -> list[str]:
    notes = []
    for ro in cfg.rollouts:
        fit = fit_log_variance(select_rows(rows, kind="fig1_variance", system=ro.system,
                                           estimator="bptt", regime=ro.slice_regime))
        dt = getattr(make_system(ro.system), "dt", None)
        dt = dt if isinstance(dt, (int, float)) and dt else None
        unit = "/s" if dt else "per step"
        notes.append(f"{ro.system} lambda ~ {fmt(fit.slope / 2 / (dt or 1.0), 3)} "
                     f"± {fmt(fit.se / 2 / (dt or 1.0), 2)} {unit}")
    return notes


def _relative_variance(rows: Sequence[dict], system: str, name: str, regime: str, T: int) -> str:
    rel = [r["metrics"]["log10_var"] - 2 * r["metrics"]["log10_grad_norm"]
           for r in select_rows(rows, kind="fig1_variance", system=system, estimator=name,
                                regime=regime, T=T)]
    rel = [x for x in rel if math.isfinite(x)]
    return f"{10 ** (sum(rel) / len(rel)):.3g} (T = {T})" if rel else "nan"


def _relative_variance_notes(rows: Sequence[dict], cfg: Fig1Config) -> list[str]:
    return [f"{ro.system} {regime} {name}: " + " -> ".join(
                _relative_variance(rows, ro.system, name, regime, T)
                for T in (ro.horizons[0], ro.horizons[-1]))
            for ro in cfg.rollouts for regime in cfg.regimes for name in cfg.estimators
            if name != "bptt"]


def for_system(cfg: Fig1Config, system: str, regimes: tuple[str, ...],
               overrides: dict) -> Fig1Config:
    """``cfg`` with ``system`` (any name `make_system` takes) in ``regimes`` with ``overrides``
    in place of the paper's rollouts: its horizons are the same fractions of the system's own
    ``horizon`` as ``cfg``'s first rollout's are of its largest T (multiples of the PES window
    K = horizon // 10), sigma = `SWAP_SIGMA`; the slices are in its "chaotic" regime (else its
    last one). ``--set horizon=...`` scales the whole figure."""
    horizon = int(make_system(system, regimes[-1], overrides).horizon)
    k = max(1, horizon // 10)
    ro = cfg.rollouts[0]

    def grid(ts: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted({max(k, round(t / ro.horizons[-1] * horizon / k) * k) for t in ts}))

    rollout = Rollout(system, grid(ro.horizons), k, SWAP_SIGMA, grid(ro.slice_horizons),
                      ro.slice_span, "chaotic" if "chaotic" in regimes else regimes[-1])
    return replace(cfg, rollouts=(rollout,), regimes=tuple(regimes),
                   overrides=tuple(sorted(overrides.items())))


FIGURE = Figure(Fig1Config, run_fig1, plot_fig1, "policy rollouts", for_system)

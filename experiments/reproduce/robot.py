"""Figure "robot": figure 1 on a real robot, gymnasium's HalfCheetah-v5 in MuJoCo.

A linear policy theta = s d (d a fixed random unit direction of the weights, s = |theta| its
scale) controls ``mujoco:half_cheetah`` (Euler integrator, so BPTT runs on MuJoCo's transition
Jacobians). Two panels of measurements, cell by cell into the results store:

1. the regime scan: the least-squares growth rate of log10 tr Cov of the BPTT gradient against
   T over ``scan_horizons``, for each policy scale in ``scan_scales``. A scale where the rate is
   at most zero is a regular regime, one where it is large and positive a chaotic one; the two
   ``regimes`` of panel 2 are picked from this scan (the defaults, |theta| = 0.3 and 1.0, from
   the full scan in docs/robots.md);
2. gradient variance against T for BPTT, antithetic ES and PES in the two regimes, with the
   growth rate per 100 steps and its standard error (`experiments.core.stats.ols` over every
   (T, seed) cell), as in figure 1.

Needs the ``mujoco`` extra (``pip install 'chaosgrad[mujoco]'``); not part of
``chaosgrad reproduce all``: ``chaosgrad reproduce robot [--quick]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

import systems
from experiments.core.measure import episode_estimates
from experiments.core.plotting import errorbar, headroom, new_figure, save_figure
from experiments.core.stats import Fit, log10_norm, log10_trace_cov, ols
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult

from .common import (ESTIMATOR_STYLE, F64, Figure, decades, fmt, hyper, measure_cells,
                     select_rows, variance_table)

__all__ = ["RobotConfig", "policy", "cells", "compute", "growth", "run_robot", "plot_robot",
           "plot_robot_scan", "plot_robot_variance", "FIGURE"]

_DIRECTION_SEED = 0x20B07  # the fixed direction d of theta = s d


@dataclass(frozen=True)
class RobotConfig:
    """Settings of the robot figure: the system, the scan of policy scales, the two regimes
    (name, |theta|), the horizons, ES/PES sigma and PES window K, samples (BPTT keys = ES / PES
    pairs) per cell, seeds."""

    system: str = "mujoco:half_cheetah"
    scan_scales: tuple[float, ...] = (0.1, 0.3, 0.5, 1.0, 3.0)
    scan_horizons: tuple[int, ...] = (25, 50, 75)
    regimes: tuple[tuple[str, float], ...] = (("regular", 0.3), ("chaotic", 1.0))
    horizons: tuple[int, ...] = (25, 50, 75, 100, 125, 150)
    estimators: tuple[str, ...] = ("bptt", "antithetic_es", "pes")
    sigma: float = 0.01             # per weight: |perturbation| ~ sigma sqrt(D) ~ 0.1
    truncation: int = 25            # PES window K (divides every T)
    samples: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"

    @classmethod
    def quick(cls) -> "RobotConfig":
        """The ``--quick`` settings (about a minute on 2 CPU cores)."""
        return cls(scan_scales=(0.1, 1.0, 3.0), scan_horizons=(20, 40), horizons=(20, 40, 60),
                   truncation=20, samples=8, seeds=(0, 1))

    @classmethod
    def full(cls) -> "RobotConfig":
        """The settings of docs/robots.md (the default of ``chaosgrad reproduce robot``)."""
        return cls()


def policy(system: systems.System, scale: float, device=None) -> torch.Tensor:
    """``theta = scale * d`` ``[D]`` float64, d a fixed random unit direction of the weights."""
    g = torch.Generator().manual_seed(_DIRECTION_SEED)
    d = torch.randn(system.param_dim, generator=g, dtype=F64)
    return (scale * d / d.norm()).to(device)


def cells(cfg: RobotConfig) -> list[Cell]:
    """One BPTT cell per (scan scale, scan horizon, seed), then one cell per (regime, T,
    estimator, seed)."""
    out = [Cell("robot_scan", cfg.system, "bptt", {"scale": s, "T": T, "N": cfg.samples}, seed)
           for s in cfg.scan_scales for T in cfg.scan_horizons for seed in cfg.seeds]
    for regime, scale in cfg.regimes:
        for T in cfg.horizons:
            for name in cfg.estimators:
                p = {"regime": regime, "scale": scale, "T": T, "N": cfg.samples}
                if name != "bptt":
                    p["sigma"] = cfg.sigma
                if name == "pes":
                    p["K"] = cfg.truncation
                out += [Cell("robot_variance", cfg.system, name, p, seed) for seed in cfg.seeds]
    return out


def compute(cell: Cell, device) -> CellResult:
    """Per-sample statistics of one estimate at theta = scale d (`episode_estimates`):
    ``log10_var`` (log10 tr Cov of the samples), ``log10_grad_norm``, ``loss``, ``n``,
    ``nonfinite``."""
    system = systems.make(cell.system)
    theta = policy(system, cell.params["scale"], device)
    got = episode_estimates(cell.estimator, hyper(cell.estimator, cell.params), system, theta,
                            cell.seed)
    samples = got.samples.to(F64)
    mean = samples.mean(0) if samples.shape[0] else torch.full_like(theta, math.nan)
    metrics = {"log10_var": log10_trace_cov(samples), "log10_grad_norm": log10_norm(mean),
               "loss": got.loss, "n": int(samples.shape[0]), "nonfinite": int(got.nonfinite)}
    return CellResult(metrics, got.steps, str(device))


def growth(rows: Sequence[dict]) -> Fit:
    """Least-squares slope of log10 tr Cov against T over the finite rows, in decades per 100
    steps, with its standard error (every (T, seed) cell one point)."""
    pts = [(r["params"]["T"], r["metrics"]["log10_var"]) for r in rows
           if math.isfinite(r["metrics"]["log10_var"])]
    fit = ols([x for x, _ in pts], [y for _, y in pts])
    return Fit(100 * fit.slope, 100 * fit.se, fit.intercept, fit.n)


def run_robot(cfg: RobotConfig, store: ResultsStore, progress: bool | None = None,
              **backend) -> dict:
    """Measure the robot figure's cells (those not in ``store`` yet); returns config and rows."""
    return measure_cells(cfg, store, cells(cfg), lambda c: compute(c, cfg.device),
                         "robot (half_cheetah)", progress, **backend)


def plot_robot_scan(results: dict, directory: Path) -> Path:
    """``robot_regime_scan``: BPTT's variance growth rate against the policy scale |theta|."""
    cfg: RobotConfig = results["config"]
    fig, axes = new_figure(1, 1, 5.2, 3.8)
    ax = axes[0][0]
    data, notes = [], []
    for s in cfg.scan_scales:
        fit = growth(select_rows(results["rows"], kind="robot_scan", scale=s))
        data.append([s, fit.slope, fit.se, fit.n])
        notes.append(f"|theta| = {fmt(s)}: {fmt(fit.slope, 3)} ± {fmt(fit.se, 2)}")
    ax.errorbar([d[0] for d in data], [d[1] for d in data], yerr=[d[2] for d in data],
                marker="o", color=ESTIMATOR_STYLE["bptt"][1], capsize=3, lw=1.2)
    ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
    for regime, scale in cfg.regimes:
        ax.axvline(scale, color="0.8", lw=0.8)
        ax.annotate(regime, (scale, 0.0), textcoords="offset points", xytext=(3, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(r"policy scale $|\theta|$ ($\theta = |\theta|\, d$, linear policy)")
    ax.set_ylabel("growth of log10 Var(BPTT grad)\n(decades per 100 steps)")
    ax.set_title(f"{cfg.system}: picking the regimes", fontsize=9)
    ax.grid(alpha=0.3)
    caption = (
        f"Regime scan on {cfg.system}. For a linear policy theta = |theta| d (d a fixed random "
        "unit direction of the weights), the least-squares slope of log10 tr Cov of the "
        f"per-sample BPTT gradient against T (T in {list(cfg.scan_horizons)}, {cfg.samples} "
        f"episode keys per cell, seeds {list(cfg.seeds)}; error bars: the slope's standard "
        "error), in decades per 100 environment steps (dt = 50 ms). At most zero: a regular "
        "regime (perturbations of the trajectory die out); large and positive: a chaotic one. "
        "The vertical lines mark the two regimes of the variance figure. Measured: "
        + "; ".join(notes) + ".")
    return save_figure(fig, directory, "robot_regime_scan",
                       ["scale", "slope_decades_per_100", "se", "points"], data, caption)


def plot_robot_variance(results: dict, directory: Path) -> Path:
    """``robot_gradient_variance``: tr Cov against T for BPTT, ES and PES in both regimes, with
    the growth rates in the legends."""
    cfg: RobotConfig = results["config"]
    fig, axes = new_figure(1, len(cfg.regimes), 5.0 * len(cfg.regimes), 3.8)
    data, notes = [], []
    for ax, (regime, scale) in zip(axes[0], cfg.regimes):
        for name in cfg.estimators:
            sel = select_rows(results["rows"], kind="robot_variance", estimator=name,
                              regime=regime)
            table = variance_table(sel)
            label, colour, marker = ESTIMATOR_STYLE[name]
            fit = growth(sel)
            errorbar(ax, [t for t, *_ in table], [m for _, m, _, _ in table],
                     [s for _, _, s, _ in table], color=colour, marker=marker, ms=4, lw=1.2,
                     label=f"{label}: {fmt(fit.slope)} ± {fmt(fit.se, 1)} decades / 100 steps")
            notes.append(f"{regime} {name}: {fmt(fit.slope, 3)} ± {fmt(fit.se, 2)}")
            for r in sel:
                m = r["metrics"]
                data.append([regime, scale, name, r["params"]["T"], r["seed"],
                             r["params"].get("sigma", 0.0), r["params"].get("K", ""), m["n"],
                             m["log10_var"], m["log10_grad_norm"], m["loss"], m["nonfinite"]])
        ax.set_xlabel("horizon T (environment steps of dt = 50 ms)")
        ax.set_ylabel("gradient variance, tr Cov (log scale)")
        ax.set_title(f"{cfg.system}, {regime} (|theta| = {fmt(scale)})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3, which="major")
        headroom(ax, 0.4)
    fig.suptitle("Gradient variance vs unroll length on HalfCheetah: BPTT's explodes in the "
                 "chaotic regime, ES's and PES's do not", fontsize=10)
    caption = (
        f"Variance of one-sample gradient estimates (log10 tr Cov of the per-sample "
        f"contributions) against the horizon T on {cfg.system} with a linear policy theta = "
        "|theta| d, in a regular and a chaotic regime picked by the regime scan, for BPTT "
        "(pathwise through MuJoCo's transition Jacobians, sigma = 0), antithetic ES and PES "
        f"(sigma = {cfg.sigma} per weight, PES window K = {cfg.truncation}); {cfg.samples} "
        f"keys / pairs per cell, seeds {list(cfg.seeds)} (error bars: SE over seeds). The "
        "legend gives the least-squares slope of log10 variance against T over every (T, seed) "
        "cell in decades per 100 steps, with its standard error. Look for: BPTT's variance "
        "rises along a straight line on this log axis in the chaotic regime, ES's and PES's "
        "stay flat. Measured slopes: " + "; ".join(notes) + ".")
    return save_figure(fig, directory, "robot_gradient_variance",
                       ["regime", "scale", "estimator", "T", "seed", "sigma", "K", "n",
                        "log10_var", "log10_grad_norm", "loss", "nonfinite"], data, caption)


def plot_robot(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/robot_regime_scan.png`` and ``robot_gradient_variance.png`` (with
    ``.csv`` data and ``.txt`` captions) from `run_robot`'s results; returns the PNG paths."""
    return [plot_robot_scan(results, directory), plot_robot_variance(results, directory)]


FIGURE = Figure(RobotConfig, run_robot, plot_robot, "figure 1 on HalfCheetah")

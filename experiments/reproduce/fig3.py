"""Figure 3, disk packing: the energy after K FIRE steps against the diameter D over seeds, and
the variance of dE/dD against K for BPTT and ES."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import systems
from experiments.core.measure import episode_losses
from experiments.core.plotting import errorbar, new_figure, save_figure
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult

from .common import (ESTIMATOR_STYLE, F64, Figure, episode_keys, fmt, hyper, measure_cells,
                     measure_estimator, select_rows, variance_table)

__all__ = ["Fig3Config", "cells", "compute", "run_fig3", "plot_fig3", "plot_fig3_energy",
           "plot_fig3_variance", "FIGURE"]


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


def cells(cfg: Fig3Config) -> list[Cell]:
    """The energy curves (one per K and seed), then one variance cell per (K, estimator, seed)."""
    out = [Cell("fig3_energy", cfg.system, "-",
                {"K": K, "n_disks": cfg.n_disks, "D": list(cfg.diameters)}, seed)
           for K in cfg.energy_steps for seed in cfg.energy_seeds]
    for K in cfg.steps:
        for name in cfg.estimators:
            p = {"T": K, "D": cfg.diameter, "n_disks": cfg.n_disks, "N": cfg.samples}
            if name != "bptt":
                p["sigma"] = cfg.sigma
            out += [Cell("fig3_variance", cfg.system, name, p, seed) for seed in cfg.seeds]
    return out


@torch.no_grad()
def _energy_curve(cell: Cell, device) -> CellResult:
    p = cell.params
    system = systems.make(cell.system, n_disks=p["n_disks"], horizon=p["K"], loss="final")
    D = torch.tensor(p["D"], dtype=F64, device=device)[:, None]
    keys = episode_keys(cell.seed, 1, device).expand(D.shape[0])
    energy = episode_losses(system, D, keys, p["K"])   # loss="final": the energy after K steps
    return CellResult({"energy": energy.tolist()}, D.shape[0] * p["K"], str(device))


def compute(cell: Cell, device) -> CellResult:
    """One cell of figure 3: an energy curve over D, or one estimator's per-sample statistics."""
    if cell.kind == "fig3_energy":
        return _energy_curve(cell, device)
    p = cell.params
    system = systems.make(cell.system, n_disks=p["n_disks"], diameter=p["D"], horizon=p["T"],
                          loss="final")
    return measure_estimator(system, cell.estimator, hyper(cell.estimator, p), cell.seed, device)


def run_fig3(cfg: Fig3Config, store: ResultsStore, progress: bool | None = None,
             **backend) -> dict:
    """Measure figure 3's cells (disk packing) not in ``store`` yet; returns config and rows."""
    return measure_cells(cfg, store, cells(cfg), lambda c: compute(c, cfg.device),
                         "fig3 disk packing", progress, **backend)


def plot_fig3_energy(results: dict, directory: Path) -> Path:
    """``fig3_energy_vs_D``: energy after K steps against D, one thin line per seed."""
    cfg: Fig3Config = results["config"]
    fig, axes = new_figure(1, len(cfg.energy_steps), 5.0 * len(cfg.energy_steps), 3.8)
    data = []
    for ax, K in zip(axes[0], cfg.energy_steps):
        curves = select_rows(results["rows"], kind="fig3_energy", K=K)
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
    return save_figure(fig, directory, "fig3_energy_vs_D", ["K", "seed", "D", "energy"], data,
                       caption)


def plot_fig3_variance(results: dict, directory: Path) -> Path:
    """``fig3_gradient_variance``: the variance of per-sample dE/dD against K."""
    cfg: Fig3Config = results["config"]
    fig, axes = new_figure(1, 1, 5.6, 4.0)
    ax = axes[0][0]
    data, notes = [], []
    for name in cfg.estimators:
        sel = select_rows(results["rows"], kind="fig3_variance", estimator=name)
        table = variance_table(sel)
        label, colour, marker = ESTIMATOR_STYLE[name]
        if name != "bptt":
            label += f" (sigma = {cfg.sigma})"
        errorbar(ax, [k for k, *_ in table], [m for _, m, _, _ in table],
                 [s for _, _, s, _ in table], color=colour, marker=marker, ms=4, label=label)
        notes.append(f"{name}: " + ", ".join(f"K={k}: 10^{fmt(m, 3)}" for k, m, _, _ in table))
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
    return save_figure(fig, directory, "fig3_gradient_variance",
                       ["estimator", "K", "seed", "sigma", "n", "energy", "mean_dE_dD",
                        "log10_var", "nonfinite"], data, caption)


def plot_fig3(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/fig3_energy_vs_D.png`` and ``fig3_gradient_variance.png`` (with
    ``.csv`` data and ``.txt`` captions) from `run_fig3`'s results; returns the PNG paths."""
    return [plot_fig3_energy(results, directory), plot_fig3_variance(results, directory)]


FIGURE = Figure(Fig3Config, run_fig3, plot_fig3, "disk packing")

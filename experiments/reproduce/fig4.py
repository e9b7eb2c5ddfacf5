"""Figure 4: eigenvalues of the per-step state Jacobian in a regular and a chaotic regime, and on
the logistic map the Lyapunov exponent against r beside the measured growth rate of the BPTT
gradient's spread."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import systems
from experiments.core.plotting import errorbar, finite, new_figure, save_figure, text
from experiments.core.resolve import make_system
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult

from .common import (F64, Figure, build, episode_keys, measure_cells, regime_label, select_rows,
                     system_params)

__all__ = ["Fig4Config", "cells", "compute", "run_fig4", "plot_fig4", "plot_fig4_spectra",
           "plot_fig4_lyapunov", "plot_fig4_rates", "for_system", "FIGURE"]


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
    rates: str = ""                 # a swapped-in system: its exponent and growth per regime
    overrides: tuple[tuple[str, object], ...] = ()  # --set of a swapped-in system
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


def cells(cfg: Fig4Config) -> list[Cell]:
    """The spectra (system x regime), the attractor, and per r an exponent and a growth rate
    (for a swapped-in system: no attractor, an exponent and a growth rate per regime)."""
    out = [Cell("fig4_eigenvalues", name, "-",
                {"regime": regime, "t": list(times), "trajectories": cfg.trajectories,
                 **system_params(name, dict(cfg.overrides))}, cfg.seed)
           for name, times in cfg.spectra for regime in cfg.regimes]
    if cfg.rates:
        extra = system_params(cfg.rates, dict(cfg.overrides))
        for regime in cfg.regimes:
            out.append(Cell("fig4_lyapunov", cfg.rates, "-",
                            {"regime": regime, "steps": cfg.lyapunov_steps,
                             "burn_in": cfg.burn_in, "finite_time": max(cfg.horizons),
                             "trajectories": cfg.samples, **extra}, cfg.seed))
            out.append(Cell("fig4_growth", cfg.rates, "bptt",
                            {"regime": regime, "horizons": list(cfg.horizons), "N": cfg.samples,
                             **extra}, cfg.seed))
        return out
    r_lo, r_hi = cfg.r_values[0], cfg.r_values[-1]
    out.append(Cell("fig4_attractor", "logistic_map", "-",
                    {"r": [r_lo, r_hi, cfg.attractor_r], "burn_in": cfg.burn_in, "points": 60},
                    cfg.seed))
    for r in cfg.r_values:
        out.append(Cell("fig4_lyapunov", "logistic_map", "-",
                        {"r": r, "steps": cfg.lyapunov_steps, "burn_in": cfg.burn_in,
                         "finite_time": max(cfg.horizons), "trajectories": cfg.samples},
                        cfg.seed))
        out.append(Cell("fig4_growth", "logistic_map", "bptt",
                        {"r": r, "horizons": list(cfg.horizons), "N": cfg.samples}, cfg.seed))
    return out


def _eigenvalues(cell: Cell, device) -> CellResult:
    p = cell.params
    system = build(cell)
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
    return CellResult(metrics, p["trajectories"] * sum(t + 1 for t in p["t"]), str(device))


@torch.no_grad()
def _attractor(cell: Cell, device) -> CellResult:
    p = cell.params
    lo, hi, n = p["r"]
    system = systems.make(cell.system)
    r = torch.linspace(lo, hi, n, dtype=F64, device=device).repeat_interleave(4)
    keys = episode_keys(cell.seed, 4, device).repeat(n)
    state, xs = system.init_state(r[:, None], keys), []
    for j in range(p["burn_in"] + p["points"] // 4):
        state, x = system.step(r[:, None], state, torch.full_like(keys, j), keys)
        if j >= p["burn_in"]:
            xs.append(x)
    x = torch.stack(xs, 1).reshape(n, -1)   # [n, points]: 4 trajectories x points/4 steps
    return CellResult({"x": [[round(v, 5) for v in row] for row in x.tolist()]},
                      r.shape[0] * (p["burn_in"] + p["points"] // 4), str(device))


def _system_theta(cell: Cell, device):
    """A swapped-in system in its regime at its initial parameters, else the logistic map at r."""
    p = cell.params
    if "regime" in p:
        system = build(cell)
        return system, system.init_params(dtype=F64, device=device)
    return (systems.make(cell.system, r=p["r"]),
            torch.tensor([p["r"]], dtype=F64, device=device))


def _lyapunov(cell: Cell, device) -> CellResult:
    p = cell.params
    system, theta = _system_theta(cell, device)
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


def _growth(cell: Cell, device) -> CellResult:
    p = cell.params
    system, theta = _system_theta(cell, device)
    g = systems.gradient_growth_rate(system, theta, horizons=p["horizons"], samples=p["N"],
                                     seed=cell.seed)
    metrics = {"slope": g.slope, "intercept": g.intercept, "log_std": g.log_std.tolist(),
               "nonfinite": g.nonfinite.tolist()}
    return CellResult(metrics, p["N"] * max(p["horizons"]), str(device))


_COMPUTE = {"fig4_eigenvalues": _eigenvalues, "fig4_attractor": _attractor,
            "fig4_lyapunov": _lyapunov, "fig4_growth": _growth}


def compute(cell: Cell, device) -> CellResult:
    """One cell of figure 4, by its kind (eigenvalues, attractor, Lyapunov exponent, growth)."""
    return _COMPUTE[cell.kind](cell, device)


def run_fig4(cfg: Fig4Config, store: ResultsStore, progress: bool | None = None,
             **backend) -> dict:
    """Measure figure 4's cells (Jacobian spectra and Lyapunov exponents) not in ``store`` yet;
    returns config and rows."""
    return measure_cells(cfg, store, cells(cfg), lambda c: compute(c, cfg.device),
                         "fig4 Jacobian spectra and Lyapunov exponents", progress, **backend)


def _spectrum_panel(fig, ax, m: dict, name: str, regime: str) -> None:
    circle = [complex(math.cos(2 * math.pi * i / 400), math.sin(2 * math.pi * i / 400))
              for i in range(401)]
    ax.plot([z.real for z in circle], [z.imag for z in circle], color="0.4", lw=1.0,
            ls="--", label="unit circle")
    sc = ax.scatter(m["real"], m["imag"], c=m["t"], s=9, cmap="viridis", alpha=0.8,
                    linewidths=0)
    fig.colorbar(sc, ax=ax, label="step t of the Jacobian", shrink=0.85)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(r"Re $\lambda$")
    ax.set_ylabel(r"Im $\lambda$")
    ax.set_title(text(f"{name}, {regime_label(name, regime)}") + "\n"
                 f"mean ln spectral radius {m['mean_log_radius']:.3f}, "
                 f"max |lambda| {m['max_modulus']:.3g}", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)


def plot_fig4_spectra(results: dict, directory: Path) -> Path:
    """``fig4_jacobian_spectra``: eigenvalues of J_t in the complex plane, systems x regimes."""
    cfg: Fig4Config = results["config"]
    fig, axes = new_figure(len(cfg.spectra), len(cfg.regimes), 4.4 * len(cfg.regimes),
                           4.0 * len(cfg.spectra))
    data, notes = [], []
    for i, (name, _) in enumerate(cfg.spectra):
        for j, regime in enumerate(cfg.regimes):
            (r,) = select_rows(results["rows"], kind="fig4_eigenvalues", system=name,
                               regime=regime)
            m = r["metrics"]
            _spectrum_panel(fig, axes[i][j], m, name, regime)
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
    return save_figure(fig, directory, "fig4_jacobian_spectra",
                       ["system", "regime", "t", "real", "imag"], data, caption)


def _attractor_panel(ax, att: dict, rs: list[float]) -> None:
    lo, hi, n = att["params"]["r"]
    grid = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    ax.plot([r for r, xs in zip(grid, att["metrics"]["x"]) for _ in xs],
            [x for xs in att["metrics"]["x"] for x in xs], ",", color="k", alpha=0.6)
    ax.set_ylabel(r"attractor $x_t$")
    ax.set_title("(a) attractor of the logistic map x <- r x (1 - x)", fontsize=9)
    ax.set_xlim(rs[0], rs[-1])
    ax.grid(alpha=0.3)


def _rates_panel(ax, lyap: dict, grow: dict, rs: list[float], cfg: Fig4Config) -> None:
    ax.set_title("(b) Lyapunov exponents and the growth rate of the BPTT gradient's spread",
                 fontsize=9)
    errorbar(ax, rs, [lyap[r]["lambda"] for r in rs], [lyap[r]["lambda_se"] for r in rs],
             log=False, color="k", lw=1.2, ms=0,
             label=f"Lyapunov exponent (burn-in {cfg.burn_in}, {cfg.lyapunov_steps} steps)")
    errorbar(ax, rs, [lyap[r]["lambda_early"] for r in rs],
             [lyap[r]["lambda_early_se"] for r in rs],
             log=False, color="tab:orange", lw=1.0, ms=0,
             label=f"finite-time exponent over the first {max(cfg.horizons)} steps")
    ax.plot(*finite(rs, [grow[r]["slope"] for r in rs]), color="tab:red", marker="o", ms=3,
            ls="none", label="slope of ln std(BPTT gradient) vs T, "
                             f"T = {cfg.horizons[0]}..{cfg.horizons[-1]}")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlim(rs[0], rs[-1])
    ax.set_xlabel("parameter r")
    ax.set_ylabel("rate per step")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)


def plot_fig4_lyapunov(results: dict, directory: Path) -> Path:
    """``fig4_lyapunov_vs_growth``: the logistic map's attractor, and its Lyapunov exponent
    against r beside the growth rate of the BPTT gradient's spread."""
    cfg: Fig4Config = results["config"]
    rows = results["rows"]
    fig, axes = new_figure(2, 1, 7.0, 6.4)
    lyap = {r["params"]["r"]: r["metrics"] for r in select_rows(rows, kind="fig4_lyapunov")}
    grow = {r["params"]["r"]: r["metrics"] for r in select_rows(rows, kind="fig4_growth")}
    rs = sorted(lyap)
    (att,) = select_rows(rows, kind="fig4_attractor")
    _attractor_panel(axes[0][0], att, rs)
    fig.suptitle("Figure 4b. Logistic map: BPTT gradient growth rate vs Lyapunov exponent",
                 fontsize=10)
    _rates_panel(axes[1][0], lyap, grow, rs, cfg)
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
    return save_figure(fig, directory, "fig4_lyapunov_vs_growth",
                       ["r", "lambda", "lambda_se", "lambda_first_steps",
                        "lambda_first_steps_se", "growth_slope", "nonfinite"], data, caption)


def plot_fig4(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/fig4_jacobian_spectra.png`` and ``fig4_lyapunov_vs_growth.png``
    (with ``.csv`` data and ``.txt`` captions) from `run_fig4`'s results; returns PNG paths."""
    rates = plot_fig4_rates if results["config"].rates else plot_fig4_lyapunov
    return [plot_fig4_spectra(results, directory), rates(results, directory)]


def plot_fig4_rates(results: dict, directory: Path) -> Path:
    """``fig4_lyapunov_vs_growth`` of a swapped-in system: per regime, its leading Lyapunov
    exponent (asymptotic and over the gradients' first steps) beside the growth rate of the
    BPTT gradient's spread."""
    cfg: Fig4Config = results["config"]
    rows = results["rows"]
    lyap = {r["params"]["regime"]: r["metrics"] for r in select_rows(rows, kind="fig4_lyapunov")}
    grow = {r["params"]["regime"]: r["metrics"] for r in select_rows(rows, kind="fig4_growth")}
    regimes = [g for g in cfg.regimes if g in lyap and g in grow]
    xs = list(range(len(regimes)))
    fig, axes = new_figure(1, 1, 1.6 * len(regimes) + 4.0, 4.0)
    ax = axes[0][0]
    errorbar(ax, [x - 0.1 for x in xs], [lyap[g]["lambda"] for g in regimes],
             [lyap[g]["lambda_se"] for g in regimes], log=False, color="k", ls="none",
             marker="o", label=f"Lyapunov exponent (burn-in {cfg.burn_in}, "
                               f"{cfg.lyapunov_steps} steps)")
    errorbar(ax, xs, [lyap[g]["lambda_early"] for g in regimes],
             [lyap[g]["lambda_early_se"] for g in regimes], log=False, color="tab:orange",
             ls="none", marker="s", label=f"finite-time exponent, first {max(cfg.horizons)} steps")
    ax.plot(*finite([x + 0.1 for x in xs], [grow[g]["slope"] for g in regimes]), color="tab:red",
            marker="^", ls="none", label="slope of ln std(BPTT gradient) vs T, "
                                         f"T = {cfg.horizons[0]}..{cfg.horizons[-1]}")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xticks(xs, [text(regime_label(cfg.rates, g)) for g in regimes], fontsize=8)
    ax.set_ylabel("rate per step")
    ax.set_title(text(f"{cfg.rates}: BPTT gradient growth rate vs Lyapunov exponent"),
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    data = [[cfg.rates, g, lyap[g]["lambda"], lyap[g]["lambda_se"], lyap[g]["lambda_early"],
             lyap[g]["lambda_early_se"], grow[g]["slope"], sum(grow[g]["nonfinite"])]
            for g in regimes]
    caption = (
        f"Figure 4b for {cfg.rates}: per regime at the initial parameters, the leading Lyapunov "
        f"exponent per step (QR method, {cfg.samples} trajectories after {cfg.burn_in} burn-in "
        f"steps; error bars standard errors), the finite-time exponent over the first "
        f"{max(cfg.horizons)} steps, and the least-squares slope of the log standard deviation "
        f"of {cfg.samples} per-sample BPTT gradients against T = {list(cfg.horizons)}. Look for: "
        "the growth rate follows max(lambda, 0), the finite-time exponent where transients "
        "dominate.")
    return save_figure(fig, directory, "fig4_lyapunov_vs_growth",
                       ["system", "regime", "lambda", "lambda_se", "lambda_first_steps",
                        "lambda_first_steps_se", "growth_slope", "nonfinite"], data, caption)


def for_system(cfg: Fig4Config, system: str, regimes: tuple[str, ...],
               overrides: dict) -> Fig4Config:
    """``cfg`` with ``system`` (any name `make_system` takes) in ``regimes`` with ``overrides``
    in place of the paper's systems: its Jacobian spectra at ``cfg``'s steps below its own
    horizon, and its Lyapunov exponent and BPTT growth rate per regime instead of the logistic
    map's sweep over r."""
    horizon = int(make_system(system, regimes[-1], overrides).horizon)
    times = tuple(t for t in cfg.spectra[0][1] if t < horizon) or (0,)
    return replace(cfg, spectra=((system, times),), regimes=tuple(regimes), rates=system,
                   overrides=tuple(sorted(overrides.items())))


FIGURE = Figure(Fig4Config, run_fig4, plot_fig4, "Jacobian spectra and Lyapunov exponents",
                for_system)

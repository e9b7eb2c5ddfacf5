"""Bias^2, variance, MSE and cosine of gradient estimators against the horizon T, the truncation K
and the cost, at fixed theta, against one target: grad L_sigma, the gradient of the smoothed
full-horizon loss (Metz, Freeman, Schoenholz, Kachman 2021, "Gradients are Not All You Need").

A cell is (system, regime, estimator, T, K, sigma, N pairs, seed). For each cell we draw M
independent per-pair estimates of the full-horizon gradient: a full-horizon estimator's
``samples``; an online estimator's per-pair average of its T/K window contributions over one
lockstep episode (K must divide T). Against the reference g* of the same (system, regime, T,
sigma), itself a cached cell (the closed form where the system has ``exact_grad``, else
antithetic ES with ``ref_pairs`` pairs in float64, whose standard error s*_d is reported):

    b_d      = mean_d - g*_d,     s_d^2 = var_d / M + s*_d^2
    bias^2   = sum_d (b_d^2 - s_d^2)                      (unbiased; can dip below 0 by noise)
    variance = sum_d var_d / N                            (of one estimate with N pairs)
    MSE      = bias^2 + variance
    cosine   = E cos(g_N, g*) over disjoint groups of N draws (one estimate's direction)
    cost     = simulated steps and wall-clock seconds of one N-pair full-horizon estimate,

with SE(bias^2) = sqrt(sum_d 4 b_d^2 s_d^2 + 2 s_d^4) and z = |b| / s (D = 1; else the chi^2
of b normalised). BPTT is smoothed with the same sigma (reparameterised), so it targets the same
gradient; truncated BPTT and truncated ES are biased by construction. PES is unbiased for a loss
smoothed with an independent perturbation per window, which equals L_sigma only for losses
quadratic in theta: in the logistic map's chaotic regime the default settings resolve a PES
bias at T = 160 (bias^2 from 4e-4 at K = 80 to 3e-2 at K = 1, 4 to 7 standard errors, against
|g*|^2 = 0.28); the quick settings cannot.

With several seeds the bias is pooled over seeds and the spread of the variance over seeds is
reported. The T sweep runs online estimators at one K (the largest given K dividing every T);
the K sweep runs them at the largest T.

    python -m experiments.curves logistic_map --quick       # or: chaosgrad curves logistic --quick
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import estimators
import systems
from experiments.store import Cell, ResultsStore
from experiments.measure import episode_estimates, estimator_kwargs
from experiments.sweep import CellResult, add_backend_arguments, backend_options, run_cells

__all__ = ["Config", "QUICK", "DEFAULT_ESTIMATORS", "run", "plot", "summarize", "validate",
           "reference_cell", "slope_log_variance", "command_line", "add_arguments", "main"]

DEFAULT_ESTIMATORS = ("bptt", "truncated_bptt", "antithetic_es", "truncated_es", "pes", "nres")
KIND, REF_KIND = "curves", "curves_reference"
_CHUNK = 16384        # per-pair draws (and reference pairs) simulated in one batch
_REF_SEED = 1 << 30   # reference seeds live apart from the cells' seeds


@dataclass(frozen=True)
class Config:
    """Settings of one `run` (the default is the full, publication setting).

    Attributes:
        system: registry name (or unambiguous prefix, resolved by `validate`).
        regimes: regimes of the system to run; empty means all of ``regimes``.
        estimators: registry names.
        horizons: the T sweep; truncations: the K sweep (at the largest T).
        sigma: perturbation scale of the smoothed target L_sigma (and of BPTT, ES, PES, NRES).
        pairs: N per estimate (what the variance and the cost refer to).
        draws: M per-pair estimates per cell (what the bias is measured with).
        ref_pairs: antithetic pairs of the reference (when there is no closed form).
        seeds: independent repeats 0..seeds-1.
        device: "cpu" or "cuda".
    """

    system: str = "logistic_map"
    regimes: tuple[str, ...] = ()
    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    horizons: tuple[int, ...] = (10, 20, 40, 80, 160)
    truncations: tuple[int, ...] = (1, 2, 5, 10, 20, 40, 80, 160)
    sigma: float = 0.01
    pairs: int = 16
    draws: int = 8192
    ref_pairs: int = 1 << 20
    seeds: int = 5
    device: str = "cpu"


QUICK = Config(horizons=(8, 16, 32, 64), truncations=(2, 4, 8, 16, 32, 64), draws=2048,
               ref_pairs=1 << 17, seeds=2)


# ----------------------------------------------------------------------------- validation
def truncation_for_horizons(cfg: Config) -> int:
    """K used by online estimators in the T sweep: the largest K dividing every horizon."""
    ks = [k for k in cfg.truncations if all(T % k == 0 for T in cfg.horizons)]
    if not ks:
        raise ValueError(f"no truncation in {list(cfg.truncations)} divides every horizon "
                         f"{list(cfg.horizons)}; add one (e.g. 1)")
    return max(ks)


def validate(cfg: Config) -> Config:
    """The config with names resolved and defaults filled in; ValueError on bad settings."""
    from experiments.cli import resolve_system  # cli imports this module lazily: no cycle
    system = resolve_system(cfg.system)
    cls = systems.SYSTEMS.get(system)
    regimes = tuple(cfg.regimes) or tuple(cls.regimes)
    for r in regimes:
        if r not in cls.regimes:
            raise ValueError(f"unknown regime {r!r} of {system}; "
                             f"available: {', '.join(cls.regimes)}")
    if not cfg.estimators:
        raise ValueError("no estimators given")
    for name in cfg.estimators:
        estimators.ESTIMATORS.get(name)
    for label, values in (("horizon", cfg.horizons), ("truncation", cfg.truncations)):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                             for v in values):
            raise ValueError(f"every {label} must be an integer >= 1, got {list(values)}")
    T_max = max(cfg.horizons)
    for K in cfg.truncations:
        if K > T_max:
            raise ValueError(f"truncation K={K} exceeds the largest horizon T={T_max}")
        if T_max % K:
            raise ValueError(f"truncation K={K} does not divide the horizon T={T_max} "
                             "(an episode must be a whole number of windows)")
    if not (isinstance(cfg.sigma, (int, float)) and math.isfinite(cfg.sigma) and cfg.sigma > 0):
        raise ValueError(f"sigma must be > 0 and finite, got {cfg.sigma}")
    for label, value, low in (("pairs", cfg.pairs, 1), ("draws", cfg.draws, 2),
                              ("ref_pairs", cfg.ref_pairs, 2), ("seeds", cfg.seeds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value}")
    if cfg.draws < 2 * cfg.pairs:
        raise ValueError(f"draws ({cfg.draws}) must be at least 2 x pairs ({cfg.pairs})")
    if cfg.device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {cfg.device!r}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here (use --device cpu)")
    cfg = replace(cfg, system=system, regimes=regimes, horizons=tuple(sorted(set(cfg.horizons))),
                  truncations=tuple(sorted(set(cfg.truncations))), sigma=float(cfg.sigma))
    truncation_for_horizons(cfg)
    return cfg


# ----------------------------------------------------------------------------- cells
def cells(cfg: Config) -> tuple[list[Cell], list[Cell]]:
    """(reference cells, estimator cells) of a validated config, references first."""
    refs, grid = {}, []
    K0, T_max = truncation_for_horizons(cfg), max(cfg.horizons)
    differentiable = systems.SYSTEMS.get(cfg.system).differentiable
    for regime in cfg.regimes:
        for name in cfg.estimators:
            cls = estimators.ESTIMATORS.get(name)
            if cls.needs_grad and not differentiable:
                continue
            pts = [(T, K0) for T in cfg.horizons] + [(T_max, K) for K in cfg.truncations]
            pts = sorted(set(pts)) if cls.online else [(T, None) for T in cfg.horizons]
            for T, K in pts:
                refs[(regime, T)] = reference_cell(cfg.system, regime, T, cfg.sigma, cfg.ref_pairs)
                for seed in range(cfg.seeds):
                    grid.append(Cell(KIND, cfg.system, name, {
                        "regime": regime, "T": T, "K": K, "sigma": cfg.sigma, "pairs": cfg.pairs,
                        "draws": cfg.draws, "ref_pairs": cfg.ref_pairs}, seed))
    return list(refs.values()), grid


def reference_cell(system: str, regime: str, T: int, sigma: float, ref_pairs: int) -> Cell:
    """The cell of the reference gradient of L_sigma for (system, regime, T, sigma)."""
    exact = hasattr(systems.SYSTEMS.get(system), "exact_grad")
    return Cell(REF_KIND, system, "exact" if exact else "antithetic_es",
                {"regime": regime, "T": T, "sigma": sigma,
                 "ref_pairs": None if exact else ref_pairs}, 0)


def _system(name: str, regime: str):
    cls = systems.SYSTEMS.get(name)
    return cls(**cls.regimes[regime])


def _reference(cell: Cell, device: str) -> CellResult:
    p = cell.params
    system = _system(cell.system, p["regime"])
    theta = system.init_params(dtype=torch.float64, device=device)
    if cell.estimator == "exact":
        g = system.exact_grad(theta, p["sigma"], p["T"]).to(torch.float64).cpu()
        se = torch.zeros_like(g)
        return CellResult({"grad": g, "se": se, "se_norm": 0.0, "grad_norm": g.norm().item(),
                           "method": "closed form (exact_grad)", "nonfinite": 0}, 0, device)
    total, n, s1, s2, steps, nonfinite = p["ref_pairs"], 0, 0.0, 0.0, 0, 0
    chunk = 0
    while n < total:
        m = min(_CHUNK, total - n)
        hp = {"pairs": m, "sigma": p["sigma"], "horizon": p["T"]}
        samples, bad, st = episode_estimates("antithetic_es", hp, system, theta, _REF_SEED + chunk)
        samples = samples.cpu()
        s1, s2 = s1 + samples.sum(0), s2 + (samples**2).sum(0)
        n, steps, nonfinite, chunk = n + samples.shape[0], steps + st, nonfinite + bad, chunk + 1
        if samples.shape[0] == 0 and bad == m:
            break
    if n < 2:
        raise ValueError(f"reference of {cell.system} ({p['regime']}, T={p['T']}): every "
                         "antithetic ES sample was non-finite")
    mean = s1 / n
    var = (s2 / n - mean**2).clamp_min(0) * n / (n - 1)
    se = (var / n).sqrt()
    return CellResult({"grad": mean, "se": se, "se_norm": se.norm().item(),
                       "grad_norm": mean.norm().item(), "nonfinite": nonfinite,
                       "method": f"antithetic ES, {n} pairs, float64"}, steps, device)


def _per_pair(cell: Cell, device: str) -> tuple[torch.Tensor, int, float]:
    """``[M', D]`` per-pair full-horizon estimates of a cell, non-finite count, seconds."""
    p = cell.params
    system = _system(cell.system, p["regime"])
    theta = system.init_params(dtype=torch.float64, device=device)
    draws, nonfinite, chunk, start = [], 0, 0, time.perf_counter()
    while sum(d.shape[0] for d in draws) + nonfinite < p["draws"]:
        m = min(_CHUNK, p["draws"] - sum(d.shape[0] for d in draws) - nonfinite)
        hp = estimator_kwargs(cell.estimator, horizon=p["T"], n=m, truncation=p["K"],
                              sigma=p["sigma"])
        samples, bad, _ = episode_estimates(cell.estimator, hp, system, theta,
                                            cell.seed * 1_000_003 + chunk)
        if samples.shape[0] == 0 and bad:  # an online estimate lost its rows: all m are lost
            bad = m
        draws.append(samples.cpu())
        nonfinite, chunk = nonfinite + bad, chunk + 1
    return torch.cat(draws), nonfinite, time.perf_counter() - start


def _cost(cell: Cell, device: str) -> tuple[int, float]:
    """Simulated steps and wall seconds of one N-pair full-horizon estimate."""
    p = cell.params
    system = _system(cell.system, p["regime"])
    theta = system.init_params(dtype=torch.float64, device=device)
    hp = estimator_kwargs(cell.estimator, horizon=p["T"], n=p["pairs"], truncation=p["K"],
                          sigma=p["sigma"])
    start = time.perf_counter()
    _, _, steps = episode_estimates(cell.estimator, hp, system, theta, cell.seed * 1_000_003 + 999_983)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps, time.perf_counter() - start


def cell_metrics(draws: torch.Tensor, g_ref: torch.Tensor, se_ref: torch.Tensor,
                 pairs: int) -> dict:
    """Bias^2, variance, MSE and cosine (with standard errors) of per-pair draws ``[M, D]``."""
    M = draws.shape[0]
    nan = math.nan
    if M < 2:
        return {"draws_finite": M, "bias2": nan, "bias2_se": nan, "bias_chi2": nan,
                "variance": nan, "variance_se": nan, "mse": nan, "cosine": nan,
                "cosine_se": nan, "mean": [nan] * g_ref.numel(), "var_pair": [nan] * g_ref.numel()}
    mean, var = draws.mean(0), draws.var(0)
    m4 = ((draws - mean) ** 4).mean(0)
    b, s2 = mean - g_ref, var / M + se_ref**2
    bias2 = (b**2 - s2).sum().item()
    bias2_se = (4 * b**2 * s2 + 2 * s2**2).sum().sqrt().item()
    chi2 = (b**2 / s2).sum().item() if bool((s2 > 0).all()) else math.inf
    variance = var.sum().item() / pairs
    variance_se = ((m4 - var**2).clamp_min(0) / M).sum().sqrt().item() / pairs
    groups = draws[: (M // pairs) * pairs].reshape(-1, pairs, draws.shape[1]).mean(1)
    cos = torch.nn.functional.cosine_similarity(groups, g_ref.expand_as(groups), dim=1)
    return {"draws_finite": M, "bias2": bias2, "bias2_se": bias2_se, "bias_chi2": chi2,
            "variance": variance, "variance_se": variance_se, "mse": bias2 + variance,
            "cosine": cos.mean().item(),
            "cosine_se": (cos.std() / math.sqrt(cos.numel())).item() if cos.numel() > 1 else nan,
            "mean": mean, "var_pair": var}


def _compute(references: dict[str, dict], device: str):
    """The cell computation; ``references`` maps reference cell keys to their metrics (plain
    data, so the closure can be shipped to Ray workers)."""
    def compute(cell: Cell) -> CellResult:
        if cell.kind == REF_KIND:
            return _reference(cell, device)
        p = cell.params
        ref = references[reference_cell(cell.system, p["regime"], p["T"], p["sigma"],
                                        p["ref_pairs"]).key]
        g_ref = torch.tensor(ref["grad"], dtype=torch.float64)
        se_ref = torch.tensor(ref["se"], dtype=torch.float64)
        draws, nonfinite, seconds = _per_pair(cell, device)
        metrics = cell_metrics(draws.to(torch.float64), g_ref, se_ref, p["pairs"])
        steps, wall = _cost(cell, device)
        metrics.update({"nonfinite": nonfinite, "nonfinite_fraction": nonfinite / p["draws"],
                        "steps": steps, "seconds": wall, "draw_seconds": seconds,
                        "dim": int(g_ref.numel())})
        return CellResult(metrics, steps, device)
    return compute


# ----------------------------------------------------------------------------- run
def run(cfg: Config, directory: str | Path = "results", *, progress: bool | None = None,
        backend: str = "local", address: str | None = None) -> dict:
    """Compute the cells of ``cfg`` that ``directory``'s store lacks; return every cell's row.

    ``backend``/``address`` as in `run_cells` (the references are computed before the grid).

    Returns:
        ``{"config", "references": [row], "rows": [row], "summary": [dict], "new": int,
        "store": Path}``; rows as `ResultsStore.rows` gives them, ``summary`` from `summarize`.
    """
    cfg = validate(cfg)
    ref_cells, grid = cells(cfg)
    with ResultsStore(directory) as store:
        before = sum(store.done(c) for c in ref_cells + grid)
        opts = {"progress": progress, "backend": backend, "address": address}
        refs = run_cells(store, ref_cells, _compute({}, cfg.device),
                         desc=f"curves {cfg.system} references", **opts)
        references = {c.key: r["metrics"] for c, r in zip(ref_cells, refs)}
        grid_rows = run_cells(store, grid, _compute(references, cfg.device),
                              desc=f"curves {cfg.system}", **opts)
        path = store.path
    return {"config": cfg, "references": refs, "rows": grid_rows,
            "summary": summarize(grid_rows, refs), "new": len(ref_cells) + len(grid) - before,
            "store": path}


def summarize(rows: list[dict], references: list[dict]) -> list[dict]:
    """One dict per (system, regime, estimator, T, K, sigma, N, M) setting, pooled over seeds.

    The bias is pooled (mean of the seeds' per-pair means against g*); ``variance`` is the mean
    over seeds with ``variance_lo``/``variance_hi`` its min/max; ``*_se`` are standard errors:
    across seeds (std / sqrt(S)) when S >= 2, else within the single seed.
    """
    refs = {(r["system"], r["params"]["regime"], r["params"]["T"], r["params"]["sigma"]): r
            for r in references}
    groups = defaultdict(list)
    for r in rows:
        p = r["params"]
        groups[(r["system"], p["regime"], r["estimator"], p["T"], p["K"], p["sigma"],
                p["pairs"], p["draws"], p.get("ref_pairs"))].append(r)
    out = []
    for (system, regime, name, T, K, sigma, N, M, ref_pairs), rs in groups.items():
        ref = refs.get((system, regime, T, sigma))
        ms = [r["metrics"] for r in rs]
        S = len(ms)
        row = {"system": system, "regime": regime, "estimator": name, "T": T, "K": K,
               "sigma": sigma, "pairs": N, "draws": M, "seeds": S,
               "steps": ms[0]["steps"], "seconds": sorted(m["seconds"] for m in ms)[S // 2],
               "nonfinite": sum(m["nonfinite"] for m in ms),
               "nonfinite_fraction": sum(m["nonfinite"] for m in ms) / (S * M)}
        ok = [m for m in ms if m["draws_finite"] >= 2]
        if ref is None or not ok:
            row.update({k: math.nan for k in ("bias2", "bias2_se", "bias_chi2", "bias_z",
                                              "variance", "variance_se", "variance_lo",
                                              "variance_hi", "mse", "mse_se", "cosine",
                                              "cosine_se")})
            out.append(row)
            continue
        g = torch.tensor(ref["metrics"]["grad"], dtype=torch.float64)
        se_ref = torch.tensor(ref["metrics"]["se"], dtype=torch.float64)
        means = torch.tensor([m["mean"] for m in ok], dtype=torch.float64)
        var_m = torch.tensor([[v / m["draws_finite"] for v in m["var_pair"]] for m in ok],
                             dtype=torch.float64)
        b = means.mean(0) - g
        s2 = var_m.sum(0) / len(ok) ** 2 + se_ref**2
        bias2 = (b**2 - s2).sum().item()
        bias2_se = (4 * b**2 * s2 + 2 * s2**2).sum().sqrt().item()
        chi2 = (b**2 / s2).sum().item() if bool((s2 > 0).all()) else math.inf
        D = g.numel()
        variances = [m["variance"] for m in ok]
        cosines = [m["cosine"] for m in ok]
        if len(ok) >= 2:
            variance_se = _std(variances) / math.sqrt(len(ok))
            cosine_se = _std(cosines) / math.sqrt(len(ok))
        else:
            variance_se, cosine_se = ok[0]["variance_se"], ok[0]["cosine_se"]
        variance = sum(variances) / len(ok)
        row.update({"bias2": bias2, "bias2_se": bias2_se, "bias_chi2": chi2,
                    "bias_z": (chi2 - D) / math.sqrt(2 * D) if D > 1 else math.sqrt(chi2),
                    "variance": variance, "variance_se": variance_se,
                    "variance_lo": min(variances), "variance_hi": max(variances),
                    "mse": bias2 + variance, "mse_se": math.hypot(bias2_se, variance_se),
                    "cosine": sum(cosines) / len(ok), "cosine_se": cosine_se,
                    "log_variances": [math.log(v) if v > 0 else math.nan for v in variances]})
        out.append(row)
    return out


def _std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def slope_log_variance(summary: list[dict], regime: str, estimator: str = "bptt", *,
                       along: str = "T", at: int | None = None) -> tuple[float, float, int]:
    """OLS slope of ln(variance) against T (``along="T"``, rows with K == ``at``) or against K
    (``along="K"``, rows with T == ``at``), over every seed's point: (slope, SE, points)."""
    other = "K" if along == "T" else "T"
    xs, ys = [], []
    for r in summary:
        if r["regime"] == regime and r["estimator"] == estimator and r[other] == at \
                and r[along] is not None:
            for y in r.get("log_variances", []):
                if math.isfinite(y):
                    xs.append(float(r[along]))
                    ys.append(y)
    return _ols(xs, ys)


def _ols(xs: list[float], ys: list[float]) -> tuple[float, float, int]:
    n = len(xs)
    if n < 3 or len(set(xs)) < 2:
        return math.nan, math.nan, n
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return slope, math.sqrt(resid / (n - 2) / sxx), n


# ----------------------------------------------------------------------------- figures
_STYLE = {  # colour, marker, marker size, filled: overlapping curves stay visible
    "bptt": ("tab:red", "o", 5, True), "truncated_bptt": ("tab:orange", "s", 5, True),
    "antithetic_es": ("tab:blue", "o", 9, False), "truncated_es": ("tab:cyan", "D", 4, True),
    "pes": ("tab:green", "P", 6, True), "nres": ("tab:purple", "x", 6, True)}
_LABELS = {"bptt": "BPTT", "truncated_bptt": "TruncatedBPTT", "antithetic_es": "AntitheticES",
           "truncated_es": "TruncatedES", "pes": "PES", "nres": "NRES"}
_METRICS = [("variance", "variance of one estimate"),
            ("bias2", "bias$^2$ = $\\|E\\,\\hat g - \\nabla L_\\sigma\\|^2$"),
            ("mse", "MSE = bias$^2$ + variance"),
            ("cosine", "E cos(estimate, $\\nabla L_\\sigma$)")]


def _style(name: str) -> dict:
    color, marker, size, filled = _STYLE.get(name, (None, "o", 5, True))
    return {"color": color, "marker": marker, "ms": size,
            "mfc": color if filled else "none", "mew": 1.2}


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def _regime_title(system: str, regime: str) -> str:
    settings = systems.SYSTEMS.get(system).regimes.get(regime, {})
    inner = ", ".join(f"{k} = {v:g}" if isinstance(v, (int, float)) else f"{k} = {v}"
                      for k, v in settings.items())
    return f"{regime} regime" + (f" ({inner})" if inner else "")


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


def _log_y(ax) -> None:
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


def _notes(summary, regime, estimators_: list[str]) -> list[str]:
    """Warnings a reader needs: non-finite draws and seeds that disagree wildly."""
    out = []
    for r in summary:
        if r["regime"] != regime or r["estimator"] not in estimators_:
            continue
        if r["nonfinite"]:
            out.append(f"{_label(r['estimator'])} T={r['T']}"
                       + (f" K={r['K']}" if r["K"] else "")
                       + f": {100 * r['nonfinite_fraction']:.0f}% of draws non-finite (dropped)")
        lo, hi = r.get("variance_lo", math.nan), r.get("variance_hi", math.nan)
        if r["seeds"] > 1 and lo > 0 and hi / lo > 30:
            out.append(f"{_label(r['estimator'])} T={r['T']}" + (f" K={r['K']}" if r["K"] else "")
                       + f": variance differs {hi / lo:.0f}x across seeds (heavy tail)")
    return out[:5]


def _grid(summary, x_key, select, title, xlabel, path, ref_lines=None, x_log=False, notes=None,
          references=None):
    """A (metrics x regimes) grid of panels; ``select(row) -> bool`` picks rows.

    ``references``: {regime: {x: |grad L_sigma|^2}}, drawn in the bias^2 panels as the scale
    of the target (a bias^2 above it is worse than answering zero)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    regimes = list(dict.fromkeys(r["regime"] for r in summary))
    system = summary[0]["system"]
    fig, axes = plt.subplots(len(_METRICS), len(regimes), figsize=(5.2 * len(regimes), 12),
                             squeeze=False, sharex="col")
    names = list(dict.fromkeys(r["estimator"] for r in summary if select(r)))
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
            if not rows:
                continue
            data_rows += rows
            for i, (metric, _) in enumerate(_METRICS):
                _draw_metric(axes[i, j], [r[x_key] for r in rows], rows, metric,
                             top=top if metric == "bias2" else None)
        for name, row in (ref_lines or {}).get(regime, {}).items():
            for i, (metric, _) in enumerate(_METRICS):
                v = row[metric]
                significant = v > 2 * row["bias2_se"] and (top is None or v <= top)
                if metric == "bias2" and not significant:
                    continue  # only a significant, on-scale bias is a line worth drawing
                if math.isfinite(v) and (metric == "cosine" or v > 0):
                    axes[i, j].axhline(v, color=_style(name)["color"], ls="--", lw=1)
        axes[0, j].set_title(_regime_title(system, regime))
        for i, (metric, label) in enumerate(_METRICS):
            ax = axes[i, j]
            if metric == "cosine":
                ax.set_ylim(-1.05, 1.05)
                ax.axhline(0, color="0.6", lw=0.5)
            else:
                _log_y(ax)
            if x_log:
                ax.set_xscale("log", base=2)
            xs = sorted({r[x_key] for r in summary if select(r)})
            ax.set_xticks(xs)
            ax.set_xticklabels([str(x) for x in xs])
            ax.minorticks_off() if x_log else None
            ax.grid(True, which="major", alpha=0.3)
            if j == 0:
                ax.set_ylabel(label)
            if i == len(_METRICS) - 1:
                ax.set_xlabel(xlabel)
        text = (notes or {}).get(regime, [])
        if text:
            axes[0, j].text(0.02, 0.98, "\n".join(text), transform=axes[0, j].transAxes,
                            va="top", fontsize=7.5, bbox={"fc": "white", "ec": "0.8", "alpha": 0.9})
    handles = [Line2D([], [], ls="-", label=_label(n), **_style(n)) for n in names]
    handles += [Line2D([], [], color=_style(n)["color"], ls="--",
                       label=f"{_label(n)} (full horizon)")
                for n in dict.fromkeys(k for d in (ref_lines or {}).values() for k in d)]
    handles += [Line2D([], [], color="0.3", marker="v", mfc="none", ls="none",
                       label="bias$^2$ within noise: its upper bound (+2 SE)")]
    if references:
        handles += [Line2D([], [], color="0.3", marker="^", mfc="none", ls="none",
                           label="upper bound off scale"),
                    Line2D([], [], color="0.4", ls=":",
                           label="$\\|\\nabla L_\\sigma\\|^2$ (scale of the target)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.92, bottom=0.12, hspace=0.12, wspace=0.2)
    fig.savefig(path.with_suffix(".png"), dpi=120)
    plt.close(fig)
    _write_csv(path.with_suffix(".csv"), data_rows)


_CSV_COLUMNS = ["system", "regime", "estimator", "T", "K", "sigma", "pairs", "draws", "seeds",
                "bias2", "bias2_se", "bias_z", "variance", "variance_se", "variance_lo",
                "variance_hi", "mse", "mse_se", "cosine", "cosine_se", "steps", "seconds",
                "nonfinite", "nonfinite_fraction"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in _CSV_COLUMNS})


def _reference_text(results: dict) -> str:
    """How the target was computed and how precisely (one sentence for the captions)."""
    refs = results["references"]
    how = "; ".join(sorted({r["metrics"]["method"] for r in refs}))
    rel = [r["metrics"]["se_norm"] / r["metrics"]["grad_norm"] for r in refs
           if r["metrics"]["grad_norm"] > 0]
    worst = (f" (standard error at most {max(rel):.2g} of |grad L_sigma|, included in the bias "
             f"standard errors)") if rel and max(rel) > 0 else ""
    return (f"The target grad L_sigma at each (regime, T) is a reference gradient computed by "
            f"{how}{worst}; the report's reference table lists each one.")


def plot(results: dict, directory: str | Path = "results") -> list[Path]:
    """Write ``curves_<system>_{horizon,truncation,cost}`` PNG + CSV + caption; return PNG paths."""
    cfg = results["config"]
    figdir = Path(directory) / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    summary = results["summary"]
    system, K0, T_max = cfg.system, truncation_for_horizons(cfg), max(cfg.horizons)
    setting = (f"$\\sigma$ = {cfg.sigma:g}, N = {cfg.pairs} per estimate, M = {cfg.draws} draws, "
               f"{cfg.seeds} seed{'s' if cfg.seeds > 1 else ''}")
    online = {n for n in cfg.estimators if estimators.ESTIMATORS.get(n).online}
    ref_text = _reference_text(results)
    uncertainty = ("Shaded bands: min-max of the variance over seeds; error bars: 2 standard "
                   "errors (pooled over seeds for the bias). " if cfg.seeds > 1 else
                   "Error bars: 2 standard errors within the single seed. ")
    paths = []

    ref_sq = defaultdict(dict)
    for ref in results["references"]:
        ref_sq[ref["params"]["regime"]][ref["params"]["T"]] = ref["metrics"]["grad_norm"] ** 2
    overlap = ("NRES with lockstep episodes sums its windows to exactly AntitheticES's estimate, "
               "so their curves coincide (open circles: AntitheticES). "
               if {"nres", "antithetic_es"} <= set(cfg.estimators) else "")

    # vs horizon T
    notes = {}
    pick_T = lambda r: r["K"] in (None, K0)  # noqa: E731
    for regime in cfg.regimes:
        s, se, _ = slope_log_variance(summary, regime)
        notes[regime] = ([f"BPTT: d ln(variance)/dT = {s:.3f} $\\pm$ {se:.3f} per step"]
                         if math.isfinite(s) else [])
        notes[regime] += _notes([r for r in summary if pick_T(r)], regime, list(cfg.estimators))
    name = f"curves_{system}_horizon"
    _grid(summary, "T", pick_T,
          f"{system}: estimators of $\\nabla L_\\sigma$ against the horizon T "
          f"(online estimators at K = {K0})\n{setting}", "horizon T (steps)", figdir / name,
          notes=notes, references=ref_sq)
    (figdir / f"{name}.txt").write_text(
        f"Bias^2, variance, MSE and mean cosine with the target of one {cfg.pairs}-sample "
        f"estimate of the gradient of the Gaussian-smoothed (sigma = {cfg.sigma:g}) full-horizon "
        f"loss of {system} at the regime's theta, against the horizon T. Online estimators "
        f"(truncated BPTT, truncated ES, PES, NRES) advance K = {K0} steps per call and their "
        f"window estimates are averaged over one episode. {ref_text} {uncertainty}Open "
        f"down-triangles mark a bias^2 within noise of zero (drawn at its upper bound); the "
        f"dotted line is |grad L_sigma|^2. BPTT is smoothed with the same sigma "
        f"(reparameterised), so it targets the same gradient; truncated BPTT is not smoothed. "
        f"{overlap}The text box gives the fitted growth rate of BPTT's log-variance with T "
        f"(least squares over every seed's point): in a chaotic regime about twice the leading "
        f"Lyapunov exponent, somewhat more because the variance is dominated by the "
        f"trajectories whose finite-time exponent is largest.\n")
    paths.append(figdir / f"{name}.png")

    # vs truncation K at T_max
    full = {}
    for regime in cfg.regimes:
        for r in summary:
            if r["regime"] == regime and r["T"] == T_max and r["K"] is None:
                full.setdefault(regime, {})[r["estimator"]] = r
    name = f"curves_{system}_truncation"
    if online:
        pick_K = lambda r: r["K"] is not None and r["T"] == T_max  # noqa: E731
        notes = {regime: _notes([r for r in summary if pick_K(r)], regime, list(cfg.estimators))
                 for regime in cfg.regimes}
        _grid(summary, "K", pick_K,
              f"{system}: online estimators of $\\nabla L_\\sigma$ against the truncation K at "
              f"T = {T_max}\n{setting}; dashed: full-horizon estimators",
              "truncation K (steps per window, log scale)", figdir / name, ref_lines=full,
              x_log=True, notes=notes,
              references={g: {K: v[T_max] for K in cfg.truncations} for g, v in ref_sq.items()
                          if T_max in v})
        (figdir / f"{name}.txt").write_text(
            f"Bias^2, variance, MSE and mean cosine with the target of the online estimators "
            f"against the truncation window K at T = {T_max} (one episode = T/K windows, "
            f"{cfg.pairs} samples per estimate); dashed lines: the full-horizon estimators at "
            f"the same T. {ref_text} {uncertainty}Truncation trades bias for variance: truncated "
            f"BPTT and truncated ES ignore how theta moved the state before each window, and "
            f"truncated BPTT with K = T is BPTT without smoothing. PES and NRES stay unbiased at "
            f"every K; PES pays for it with variance at small K.\n")
        paths.append(figdir / f"{name}.png")

    # vs cost
    name = f"curves_{system}_cost"
    _cost_figure(summary, cfg, K0, T_max, figdir / name, setting, ref_sq)
    (figdir / f"{name}.txt").write_text(
        f"Cost at T = {T_max}. Top: MSE of an estimate that averages samples until a budget of "
        f"simulated trajectory-steps is spent, bias^2 + (per-sample variance) x (steps "
        f"per sample) / budget (a bias^2 within 2 standard errors of zero counts as 0), "
        f"computed from the measured bias and variance (markers: the "
        f"measured N = {cfg.pairs}); online estimators at K = {K0}. The ES family simulates two "
        f"trajectories per sample, so its lines start at 2T. Bottom: MSE against the measured "
        f"wall-clock time of one {cfg.pairs}-sample full-horizon estimate on {cfg.device} "
        f"(median over seeds), for every K of the online estimators (smallest and largest K "
        f"labelled): small K means many short calls. {ref_text}\n")
    paths.append(figdir / f"{name}.png")
    return paths


def _cap(ax, cap, values: dict) -> None:
    """Clip the y axis at ``cap`` and name what lies wholly above it (``values``: each curve's
    minimum; chaos puts BPTT's MSE near 1e25)."""
    off = {n: v for n, v in values.items() if v > cap}
    if not off:
        return
    lo, _ = ax.get_ylim()
    ax.set_ylim(lo, cap)
    ax.text(0.98, 0.97, "off scale: " + ", ".join(f"{_label(n)} (MSE $\\geq$ {v:.0e})"
                                                  for n, v in off.items()),
            transform=ax.transAxes, ha="right", va="top", fontsize=7.5,
            bbox={"fc": "white", "ec": "0.8", "alpha": 0.9})


def _cost_figure(summary, cfg, K0, T_max, path, setting, ref_sq):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    regimes = list(cfg.regimes)
    fig, axes = plt.subplots(2, len(regimes), figsize=(5.2 * len(regimes), 8.5), squeeze=False)
    data = []
    for j, regime in enumerate(regimes):
        rows = [r for r in summary if r["regime"] == regime and r["T"] == T_max]
        cap = 1e4 * ref_sq.get(regime, {}).get(T_max, math.inf) or math.inf
        ax = axes[0, j]
        peak = {}
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
            ax.plot(budget, mse, "-", color=st["color"], label=_label(r["estimator"]))
            ax.plot(r["steps"], floor + r["variance"], ls="none", **st)
            peak[r["estimator"]] = max(peak.get(r["estimator"], 0.0), float(mse.min()))
        ax.set_xscale("log")
        _log_y(ax)
        _cap(ax, cap, peak)
        ax.set_xlabel("budget: simulated trajectory-steps per estimate")
        ax.set_title(_regime_title(cfg.system, regime))
        ax.grid(True, alpha=0.3)
        ax = axes[1, j]
        peak = {}
        for idx, name in enumerate(dict.fromkeys(r["estimator"] for r in rows)):
            pts = sorted((r for r in rows if r["estimator"] == name and math.isfinite(r["mse"])),
                         key=lambda r: r["K"] or 0)
            pts = [r for r in pts if r["mse"] > 0]
            if not pts:
                continue
            data += [r for r in pts if r not in data]
            st = _style(name)
            ax.plot([r["seconds"] for r in pts], [r["mse"] for r in pts], ls="-",
                    label=_label(name), **st)
            for r in {id(p): p for p in (pts[0], pts[-1])}.values():
                if r["K"] is not None:
                    ax.annotate(f"K={r['K']}", (r["seconds"], r["mse"]), fontsize=7,
                                xytext=(4, 9 * (idx % 3) - 9), textcoords="offset points",
                                color=st["color"])
            peak[name] = min(r["mse"] for r in pts)
        ax.set_xscale("log")
        _log_y(ax)
        _cap(ax, cap, peak)
        ax.margins(x=0.12)  # room for the K labels
        ax.set_xlabel(f"wall-clock seconds per {cfg.pairs}-sample estimate ({cfg.device})")
        ax.grid(True, alpha=0.3)
        if j == 0:
            axes[0, 0].set_ylabel("MSE at that budget")
            axes[1, 0].set_ylabel("MSE of one estimate")
    from matplotlib.lines import Line2D
    names = list(dict.fromkeys(r["estimator"] for r in data))
    handles = [Line2D([], [], ls="-", label=_label(n), **_style(n)) for n in names]
    labels = [h.get_label() for h in handles]
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), frameon=False)
    fig.suptitle(f"{cfg.system}: MSE against cost at T = {T_max}\n{setting}", fontsize=11)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.13, hspace=0.3, wspace=0.2)
    fig.savefig(path.with_suffix(".png"), dpi=120)
    plt.close(fig)
    _write_csv(path.with_suffix(".csv"), data)


# ----------------------------------------------------------------------------- command line
def command_line(cfg: Config, directory: str | Path) -> list[str]:
    """The explicit command that reproduces ``cfg`` into ``directory``."""
    return (["chaosgrad", "curves", cfg.system, "--regime", *cfg.regimes,
             "--estimators", *cfg.estimators, "--horizons", *map(str, cfg.horizons),
             "--truncations", *map(str, cfg.truncations), "--sigma", f"{cfg.sigma:g}",
             "--pairs", str(cfg.pairs), "--draws", str(cfg.draws), "--ref-pairs",
             str(cfg.ref_pairs), "--seeds", str(cfg.seeds), "--device", cfg.device,
             "--out", str(directory)])


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``chaosgrad curves``."""
    d, q = Config(), QUICK
    p.add_argument("system", help="registered system or an unambiguous prefix (logistic)")
    p.add_argument("--regime", nargs="+", default=None,
                   help="regimes of the system (default: all of them, side by side)")
    p.add_argument("--estimators", nargs="+", default=None,
                   help=f"default: {' '.join(d.estimators)}")
    p.add_argument("--horizons", nargs="+", type=int, default=None,
                   help=f"the T sweep (default {' '.join(map(str, d.horizons))}; quick "
                        f"{' '.join(map(str, q.horizons))})")
    p.add_argument("--truncations", nargs="+", type=int, default=None,
                   help=f"the K sweep at the largest T, each dividing it (default "
                        f"{' '.join(map(str, d.truncations))}; "
                        f"quick {' '.join(map(str, q.truncations))})")
    p.add_argument("--sigma", type=float, default=None, help=f"smoothing scale (default {d.sigma})")
    p.add_argument("--pairs", type=int, default=None,
                   help=f"N samples per estimate (default {d.pairs})")
    p.add_argument("--draws", type=int, default=None,
                   help=f"M per-pair draws per cell (default {d.draws}; quick {q.draws})")
    p.add_argument("--ref-pairs", type=int, default=None,
                   help=f"pairs of the ES reference (default {d.ref_pairs}; quick {q.ref_pairs})")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"independent repeats (default {d.seeds}; quick {q.seeds})")
    p.add_argument("--out", default="results", help="results directory (default: results)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quick", action="store_true", help="small, fast settings (a smoke run)")
    add_backend_arguments(p)


def config_from_args(args: argparse.Namespace) -> Config:
    base = QUICK if args.quick else Config()
    given = {"regimes": args.regime, "estimators": args.estimators, "horizons": args.horizons,
             "truncations": args.truncations, "sigma": args.sigma, "pairs": args.pairs,
             "draws": args.draws, "ref_pairs": args.ref_pairs, "seeds": args.seeds}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}
    return validate(replace(base, system=args.system, device=args.device, **given))


def _check_writable(directory: Path) -> None:
    try:
        (directory / "figures").mkdir(parents=True, exist_ok=True)
        probe = directory / "figures" / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write to --out {str(directory)!r}: "
                         f"{err.strerror or err}") from None


def main(args: argparse.Namespace) -> int:
    """``chaosgrad curves``: validate, measure the missing cells, plot, build the report."""
    from experiments.report import build_report
    from experiments.store import environment

    cfg = config_from_args(args)
    out = Path(args.out)
    _check_writable(out)
    with ResultsStore(out) as store:
        store.log_run(command_line(cfg, out), environment())
    start = time.perf_counter()
    results = run(cfg, out, **backend_options(args))
    figures = plot(results, out)
    report = build_report(out)
    total = len(results["rows"]) + len(results["references"])
    print(f"curves {cfg.system}: {total} cells ({results['new']} computed now, "
          f"{total - results['new']} reused) in {time.perf_counter() - start:.1f} s")
    for ref in results["references"]:
        m = ref["metrics"]
        print(f"  reference {ref['params']['regime']:>8s} T={ref['params']['T']:<4d} "
              f"|grad L_sigma| = {m['grad_norm']:.4g}  SE {m['se_norm']:.2g}  ({m['method']})")
    print(f"results: {results['store']}")
    print(f"figures: {', '.join(str(p) for p in figures)} (+ .csv data, .txt captions)")
    print(f"report:  {report}")
    return 0


if __name__ == "__main__":
    import sys

    from experiments.cli import main as cli_main
    sys.exit(cli_main(["curves", *sys.argv[1:]]))

"""The cells of a `curves` run and what each computes: the reference gradient of L_sigma at
(system, regime, T, sigma), and an estimator setting's per-pair draws against it."""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import torch

import estimators
from experiments.core.measure import episode_estimates, estimator_kwargs
from experiments.core.resolve import make_system
from experiments.core.stats import pair_stats
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult, run_cells

from .config import KIND, REF_KIND, Config, truncation_for_horizons, validate
from .summary import summarize

__all__ = ["cells", "reference_cell", "cell_metrics", "run"]

_CHUNK = 16384        # per-pair draws (and reference pairs) simulated in one batch
_REF_SEED = 1 << 30   # reference seeds live apart from the cells' seeds
_COST_SEED = 999_983  # the timed estimate's seed offset (apart from the draws' chunks)


def cells(cfg: Config) -> tuple[list[Cell], list[Cell]]:
    """(reference cells, estimator cells) of a validated config, references first."""
    refs, grid = {}, []
    K0, T_max = truncation_for_horizons(cfg), max(cfg.horizons)
    overrides = dict(cfg.overrides)
    differentiable = make_system(cfg.system, cfg.regimes[0], overrides).differentiable
    for regime in cfg.regimes:
        for name in cfg.estimators:
            cls = estimators.ESTIMATORS.get(name)
            if cls.needs_grad and not differentiable:
                continue
            pts = [(T, K0) for T in cfg.horizons] + [(T_max, K) for K in cfg.truncations]
            pts = sorted(set(pts)) if cls.online else [(T, None) for T in cfg.horizons]
            for T, K in pts:
                refs[(regime, T)] = reference_cell(cfg.system, regime, T, cfg.sigma, cfg.ref_pairs,
                                                   overrides)
                for seed in range(cfg.seeds):
                    grid.append(Cell(KIND, cfg.system, name, {
                        "regime": regime, "T": T, "K": K, "sigma": cfg.sigma, "pairs": cfg.pairs,
                        "draws": cfg.draws, "ref_pairs": cfg.ref_pairs, **_set(overrides)},
                        seed))
    return list(refs.values()), grid


@functools.lru_cache(maxsize=256)
def _has_exact_grad(system: str, regime: str, overrides: str) -> bool:
    return hasattr(type(make_system(system, regime, json.loads(overrides))), "exact_grad")


def _dumps(overrides: dict) -> str:
    return json.dumps(overrides, sort_keys=True)


def _set(overrides: dict) -> dict:
    # only present when given, so the cells of a plain run keep their keys
    return {"set": overrides} if overrides else {}


def reference_cell(system: str, regime: str, T: int, sigma: float, ref_pairs: int,
                   overrides: dict | None = None) -> Cell:
    """The cell of the reference gradient of L_sigma for (system, regime, T, sigma) with the
    system's constructor ``overrides``."""
    exact = _has_exact_grad(system, regime, _dumps(overrides or {}))
    return Cell(REF_KIND, system, "exact" if exact else "antithetic_es",
                {"regime": regime, "T": T, "sigma": sigma,
                 "ref_pairs": None if exact else ref_pairs, **_set(overrides or {})}, 0)


def _at_theta(cell: Cell, device: str):
    system = make_system(cell.system, cell.params["regime"], cell.params.get("set"))
    return system, system.init_params(dtype=torch.float64, device=device)


def _exact_reference(system, theta, p: dict, device: str) -> CellResult:
    g = system.exact_grad(theta, p["sigma"], p["T"]).to(torch.float64).cpu()
    return CellResult({"grad": g, "se": torch.zeros_like(g), "se_norm": 0.0,
                       "grad_norm": g.norm().item(), "method": "closed form (exact_grad)",
                       "nonfinite": 0}, 0, device)


def _reference(cell: Cell, device: str) -> CellResult:
    """grad L_sigma: the closed form, else the mean of ``ref_pairs`` antithetic ES pairs in
    float64 (in chunks of ``_CHUNK``), with its per-coordinate standard error."""
    p = cell.params
    system, theta = _at_theta(cell, device)
    if cell.estimator == "exact":
        return _exact_reference(system, theta, p, device)
    total, n, s1, s2, steps, nonfinite = p["ref_pairs"], 0, 0.0, 0.0, 0, 0
    chunk = 0
    while n < total:
        m = min(_CHUNK, total - n)
        hp = estimator_kwargs("antithetic_es", horizon=p["T"], n=m, sigma=p["sigma"])
        draws = episode_estimates("antithetic_es", hp, system, theta, _REF_SEED + chunk)
        samples = draws.samples.cpu()
        s1, s2 = s1 + samples.sum(0), s2 + (samples**2).sum(0)
        n, steps, chunk = n + samples.shape[0], steps + draws.steps, chunk + 1
        nonfinite += draws.nonfinite
        if samples.shape[0] == 0 and draws.nonfinite == m:
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


def _hyper(cell: Cell, n: int) -> dict:
    p = cell.params
    return estimator_kwargs(cell.estimator, horizon=p["T"], n=n, truncation=p["K"],
                            sigma=p["sigma"])


def _per_pair(cell: Cell, device: str) -> tuple[torch.Tensor, int, float]:
    """``[M', D]`` per-pair full-horizon estimates of a cell, non-finite count, seconds."""
    system, theta = _at_theta(cell, device)
    total = cell.params["draws"]
    draws, nonfinite, chunk, start = [], 0, 0, time.perf_counter()
    while sum(d.shape[0] for d in draws) + nonfinite < total:
        m = min(_CHUNK, total - sum(d.shape[0] for d in draws) - nonfinite)
        got = episode_estimates(cell.estimator, _hyper(cell, m), system, theta,
                                cell.seed * 1_000_003 + chunk)
        bad = got.nonfinite
        if got.samples.shape[0] == 0 and bad:  # an online estimate lost its rows: all m are lost
            bad = m
        draws.append(got.samples.cpu())
        nonfinite, chunk = nonfinite + bad, chunk + 1
    return torch.cat(draws), nonfinite, time.perf_counter() - start


def _cost(cell: Cell, device: str) -> tuple[int, float]:
    """Simulated steps and wall seconds of one N-pair full-horizon estimate."""
    system, theta = _at_theta(cell, device)
    start = time.perf_counter()
    got = episode_estimates(cell.estimator, _hyper(cell, cell.params["pairs"]), system, theta,
                            cell.seed * 1_000_003 + _COST_SEED)
    if device == "cuda":
        torch.cuda.synchronize()
    return got.steps, time.perf_counter() - start


def cell_metrics(draws: torch.Tensor, g_ref: torch.Tensor, se_ref: torch.Tensor,
                 pairs: int) -> dict:
    """Bias^2, variance, MSE and cosine (with standard errors) of per-pair draws ``[M, D]``
    (`experiments.core.stats.pair_stats`; variance and cosine of one ``pairs``-pair estimate)."""
    M = draws.shape[0]
    nan = math.nan
    if M < 2:
        return {"draws_finite": M, "bias2": nan, "bias2_se": nan, "bias_chi2": nan,
                "variance": nan, "variance_se": nan, "mse": nan, "cosine": nan,
                "cosine_se": nan, "mean": [nan] * g_ref.numel(), "var_pair": [nan] * g_ref.numel()}
    st = pair_stats(draws, g_ref, se_ref)
    variance = st.var_pair / pairs
    groups = draws[: (M // pairs) * pairs].reshape(-1, pairs, draws.shape[1]).mean(1)
    cos = torch.nn.functional.cosine_similarity(groups, g_ref.expand_as(groups), dim=1)
    return {"draws_finite": M, "bias2": st.bias.bias2, "bias2_se": st.bias.se,
            "bias_chi2": st.bias.chi2, "variance": variance, "variance_se": st.var_pair_se / pairs,
            "mse": st.bias.bias2 + variance, "cosine": cos.mean().item(),
            "cosine_se": (cos.std() / math.sqrt(cos.numel())).item() if cos.numel() > 1 else nan,
            "mean": st.mean, "var_pair": st.var}


def _compute(references: dict[str, dict], device: str):
    """The cell computation; ``references`` maps reference cell keys to their metrics (plain
    data, so the closure can be shipped to Ray workers)."""
    def compute(cell: Cell) -> CellResult:
        if cell.kind == REF_KIND:
            return _reference(cell, device)
        p = cell.params
        ref = references[reference_cell(cell.system, p["regime"], p["T"], p["sigma"],
                                        p["ref_pairs"], p.get("set")).key]
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

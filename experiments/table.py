"""Bias / variance table of every estimator on a system at fixed theta (the quick main job).

For each estimator we draw M independent per-pair (per-key) estimates of the full-horizon
gradient: a full-horizon estimator's samples directly, an online estimator's per-pair average of
its T/K window contributions over one lockstep episode. Against a reference gradient g* of the
smoothed full-horizon loss L_sigma (the closed form where the system has one, else antithetic ES
with ``ref_pairs`` pairs, whose own standard error is reported):

    bias^2   = ||mean - g*||^2 - tr(Cov)/M - |SE(g*)|^2   (unbiased; can dip below 0 by noise;
                                                           `experiments.core.stats.pair_stats`)
    variance = tr(Cov) / N                                 (of one estimate with N pairs)
    MSE      = bias^2 + variance,  cos = cos(mean, g*),  steps = simulated steps per estimate.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch

import estimators
from experiments.core.command import Command
from experiments.core.measure import episode_estimates, estimator_kwargs
from experiments.core.resolve import make_system, parse_overrides, resolve_system, system_regimes
from experiments.core.stats import pair_stats

__all__ = ["Config", "Row", "run", "format_table", "add_arguments", "main", "COMMANDS"]

DEFAULT_ESTIMATORS = ["bptt", "truncated_bptt", "antithetic_es", "truncated_es", "pes", "nres"]


@dataclass(frozen=True)
class Config:
    """One table: a system in one regime, the estimators and their shared hyper-parameters.

    ``pairs`` is N of one estimate (the variance column), ``draws`` M per-pair estimates that
    measure the mean, ``ref_pairs`` the pairs of the antithetic-ES reference.
    """

    system: str = "linear_quadratic"
    regime: str = "regular"
    estimators: tuple[str, ...] = tuple(DEFAULT_ESTIMATORS)
    horizon: int = 20
    truncation: int = 5
    sigma: float = 0.1
    pairs: int = 16          # N of one estimate (the variance column)
    draws: int = 2048        # M per-pair estimates used to measure the mean
    ref_pairs: int = 32768
    seed: int = 0
    device: str = "cpu"
    overrides: tuple[tuple[str, object], ...] = ()  # --set key=value (constructor arguments)


@dataclass
class Row:
    """One estimator's line: bias^2, variance and MSE of one N-pair estimate, cosine of the
    mean with the reference, simulated steps per estimate, seconds spent measuring the M draws,
    non-finite draws."""

    estimator: str
    bias2: float
    variance: float
    mse: float
    cosine: float
    steps: int
    seconds: float
    nonfinite: int


def _hyper(name: str, cfg: Config, n: int) -> dict:
    return estimator_kwargs(name, horizon=cfg.horizon, n=n, truncation=cfg.truncation,
                            sigma=cfg.sigma)


def reference(cfg: Config, system, theta) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(g* ``[D]``, its standard error ``[D]``, how it was computed)."""
    if hasattr(system, "exact_grad"):
        g = system.exact_grad(theta, cfg.sigma, cfg.horizon).to(theta)
        return g, torch.zeros_like(g), "closed form"
    est = estimators.AntitheticES(pairs=cfg.ref_pairs, sigma=cfg.sigma, horizon=cfg.horizon)
    e, _ = est.estimate(system, theta, est.init(system, theta, seed=cfg.seed + 10_000))
    se = (e.samples.var(0) / e.samples.shape[0]).sqrt()
    return e.grad, se, f"antithetic ES, {cfg.ref_pairs} pairs"


def measure_row(name: str, cfg: Config, system, theta, ref, ref_se) -> Row:
    """One estimator's `Row`: M = ``cfg.draws`` per-pair draws against the reference."""
    start = time.perf_counter()
    draws = episode_estimates(name, _hyper(name, cfg, cfg.draws), system, theta, cfg.seed)
    seconds = time.perf_counter() - start
    n = draws.samples.shape[0]
    if n < 2:
        return Row(name, *[math.nan] * 4, 0, seconds, draws.nonfinite)
    st = pair_stats(draws.samples, ref, ref_se)
    variance = st.var_pair / cfg.pairs
    cosine = torch.nn.functional.cosine_similarity(st.mean, ref, dim=0).item()
    rows_per = cfg.pairs * (2 if "pairs" in _hyper(name, cfg, cfg.pairs) else 1)
    return Row(name, st.bias.bias2, variance, st.bias.bias2 + variance, cosine,
               rows_per * cfg.horizon, seconds, draws.nonfinite)


def run(cfg: Config, progress=None) -> dict:
    """Measure every estimator of ``cfg``; returns the reference and one `Row` per estimator."""
    system = make_system(cfg.system, cfg.regime, dict(cfg.overrides))
    theta = system.init_params(dtype=torch.float64, device=cfg.device)
    ref, ref_se, how = reference(cfg, system, theta)
    rows = []
    for name in cfg.estimators:
        if estimators.ESTIMATORS.get(name).needs_grad and not system.differentiable:
            continue
        rows.append(measure_row(name, cfg, system, theta, ref, ref_se))
        if progress is not None:
            progress.update(1)
    return {"config": cfg, "reference": ref, "reference_se": ref_se.norm().item(),
            "reference_method": how, "rows": rows, "system": system}


def format_table(result: dict) -> str:
    """`run`'s result as a text table with a header line (system, theta, T, K, sigma, N)."""
    cfg = result["config"]
    head = (f"{cfg.system} ({cfg.regime}), theta = {result['system'].init_params(torch.float64).tolist()}, "
            f"T = {cfg.horizon}, K = {cfg.truncation}, sigma = {cfg.sigma}, N = {cfg.pairs} per estimate\n"
            f"reference grad L_sigma: {[round(x, 4) for x in result['reference'].tolist()]} "
            f"({result['reference_method']}, SE {result['reference_se']:.2g})\n")
    lines = [f"{'estimator':16s}{'bias^2':>12s}{'variance':>12s}{'MSE':>12s}{'cos':>8s}{'steps':>9s}{'nonfinite':>10s}"]
    for r in result["rows"]:
        lines.append(f"{r.estimator:16s}{r.bias2:12.3g}{r.variance:12.3g}{r.mse:12.3g}{r.cosine:8.3f}"
                     f"{r.steps:9d}{r.nonfinite:10d}")
    return head + "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``chaosgrad table``."""
    p.add_argument("--systems", nargs="+", default=["linear_quadratic", "logistic_map",
                                                     "influence_balancing"],
                   help="registered systems (or prefixes), path/to/file.py:attr or "
                        "package.module:attr")
    p.add_argument("--regime", nargs="+", default=None,
                   help="regimes to tabulate (default: every regime of each system)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor override of every system, repeatable (e.g. --set r=3.7)")
    p.add_argument("--estimators", nargs="+", default=DEFAULT_ESTIMATORS)
    p.add_argument("--horizon", type=int, default=20)
    p.add_argument("--truncation", type=int, default=5)
    p.add_argument("--sigma", type=float, default=0.01)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--draws", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer draws (a smoke run)")


def main(args: argparse.Namespace) -> int:
    """``chaosgrad table``: print one table per (system, regime); exit code."""
    from tqdm import tqdm

    draws = 256 if args.quick else args.draws
    overrides = parse_overrides(args.set)
    jobs = []
    for name in args.systems:
        name = resolve_system(name)
        known = system_regimes(name)
        for r in args.regime or known:
            if r not in known:
                raise ValueError(f"unknown regime {r!r} of {name}; available: {', '.join(known)}")
            jobs.append((name, r))
    for name in args.estimators:
        estimators.ESTIMATORS.get(name)
    for system, regime in jobs:  # bad --set values and unresolvable sigmas fail before any work
        built = make_system(system, regime, overrides)
        theta = built.init_params(dtype=torch.float64)
        for name in args.estimators:
            est = estimators.make(name, **estimator_kwargs(
                name, horizon=args.horizon, n=args.pairs, truncation=args.truncation,
                sigma=args.sigma))
            if built.differentiable or not est.needs_grad:
                est.check(built, theta)
    with tqdm(total=len(jobs) * len(args.estimators), unit="cell", desc="table") as bar:
        for system, regime in jobs:
            cfg = Config(system, regime, tuple(args.estimators), args.horizon, args.truncation,
                         args.sigma, args.pairs, draws, 8 * draws, args.seed,
                         overrides=tuple(overrides.items()))
            result = run(cfg, progress=bar)
            tqdm.write(format_table(result) + "\n")
    return 0


COMMANDS = (Command("table", "bias^2 / variance / MSE of every estimator at fixed theta, printed",
                    add_arguments, main),)

"""The advisor's measurements, phase by phase, within a budget of simulated steps or seconds.

`measure` checks the system against the contract, prices a step (forward and backward), draws
antithetic ES at each sigma of the grid (and picks sigma* with the pure
`experiments.advise.score.choose_sigma`), computes the reference gradient of L_sigma*, then the
candidates' per-pair draws and the chaos diagnostics. A `Ledger` counts steps and seconds; a
phase that no longer fits is skipped and listed. The result is a `Measurements`, nothing scored.
"""
from __future__ import annotations

import math
import time

import torch

import estimators
import systems
from experiments.core.measure import episode_estimates, episode_losses, estimator_kwargs

from .model import (DRAWS, F64, GROWTH_FRACTIONS, PAIRS_YARDSTICK, REF_FACTOR, UNBIASED, Advice,
                    Draws, Measurements)
from .score import choose_sigma

__all__ = ["Ledger", "measure", "truncations", "cost_probe"]

_CHUNK = 4096            # reference pairs per batch
_REF_SEED, _DIAG_SEED = 1 << 30, 1 << 29


class Ledger:
    """Simulated steps and seconds spent; says whether a phase still fits."""

    def __init__(self, budget_steps: int | None, time_limit: float | None):
        self.budget, self.limit = budget_steps, time_limit
        self.steps, self.start = 0, time.perf_counter()
        self.call = None        # (a, b): seconds of one forward step call of B rows = a + b B
        self.backward = 1.0     # time factor of a pathwise (forward + backward) phase
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        """Seconds since the ledger was opened."""
        return time.perf_counter() - self.start

    def seconds(self, steps: int, rows: int, pathwise: bool = False) -> float:
        """Predicted seconds of ``steps`` trajectory-steps taken ``rows`` at a time."""
        a, b = self.call
        return steps / max(rows, 1) * (a + b * rows) * (self.backward if pathwise else 1.0)

    def fits(self, what: str, steps: int, rows: int = 1, pathwise: bool = False) -> bool:
        """Whether ``steps`` more fit the step budget and the time limit; if not, ``what`` is
        listed in ``skipped`` with the reason."""
        if self.budget is not None and self.steps + steps > self.budget:
            self.skipped.append(f"{what} (needs {steps:,} steps; {self.budget - self.steps:,} "
                                f"of the budget left)")
            return False
        if self.limit is not None and self.call is not None:
            need = self.seconds(steps, rows, pathwise)
            if self.elapsed() + need > self.limit:
                self.skipped.append(f"{what} (about {need:.1f} s; "
                                    f"{max(self.limit - self.elapsed(), 0):.1f} s left)")
                return False
        return True


def truncations(T: int) -> list[int]:
    """Up to three K dividing T, near T/20, T/5 and T/2 (K < T)."""
    divisors = [k for k in range(1, T) if T % k == 0]
    picks = []
    for target in (T / 20, T / 5, T / 2):
        if divisors:
            k = min(divisors, key=lambda d: (abs(math.log(d / target)), d))
            if k not in picks:
                picks.append(k)
    return sorted(picks)


def _timed_unroll(system, theta, rows: int, steps: int, grad: bool) -> float:
    keys = torch.arange(rows, dtype=torch.int64)
    x = theta.expand(rows, -1).clone()
    start = time.perf_counter()
    with torch.set_grad_enabled(grad):
        r = x.clone().requires_grad_(grad)
        loss = episode_losses(system, r, keys, steps)
        if grad and loss.requires_grad:
            torch.autograd.grad(loss.sum(), r, allow_unused=True)
    return time.perf_counter() - start


def cost_probe(system, theta, rows: int, steps: int,
               differentiable: bool) -> tuple[float, float, tuple[float, float]]:
    """(seconds per forward trajectory-step at ``rows``, c_bwd = forward+backward time / forward
    time, (a, b) with a + b B the seconds of one forward step call of B rows)."""
    forward = min(_timed_unroll(system, theta, rows, steps, False) for _ in range(2))
    both = (min(_timed_unroll(system, theta, rows, steps, True) for _ in range(2))
            if differentiable else math.nan)
    small = min(_timed_unroll(system, theta, 1, steps, False) for _ in range(2))
    b = max((forward - small) / steps / max(rows - 1, 1), 0.0)
    a = max(small / steps - b, 0.0)
    return forward / (rows * steps), (both / forward if differentiable else math.nan), (a, b)


def _lyapunov_steps(system, T: int) -> int:
    """Simulated steps of `systems.lyapunov_exponents` with 8 trajectories over T steps."""
    return 8 * T * min(32, max(1, int(getattr(system, "state_dim", 1))))


def _growth_horizons(T: int) -> list[int]:
    return sorted({max(1, round(T * f)) for f in GROWTH_FRACTIONS})


class _Run:
    """One measurement: the system at theta and horizon T, the ledger, the seed, what is known."""

    def __init__(self, system, th, T, ledger: Ledger, seed: int, m: Measurements):
        self.system, self.th, self.T, self.ledger, self.seed = system, th, T, ledger, seed
        self.m, self.a = m, m.advice

    def draws(self, name: str, n: int, seed: int, **hp):
        """Per-pair draws of ``name`` at the horizon T, counted in the ledger."""
        got = episode_estimates(name, estimator_kwargs(name, horizon=self.T, n=n, **hp),
                                self.system, self.th, seed)
        self.ledger.steps += got.steps
        return got

    def plan(self, M: int, sigmas) -> int:
        """Simulated steps of the whole measurement with M draws per candidate."""
        T, ledger = self.T, self.ledger
        ref = 0 if hasattr(self.system, "exact_grad") else 2 * REF_FACTOR * M * T
        n_k = len(truncations(T))
        per = 2 * len(sigmas) * M * T + ref + (M + n_k * M) * T + (2 * M * T if n_k else 0)
        n_g = min(M, 32)
        diag = (n_g * T + 2 * n_g * sum(_growth_horizons(T)) + _lyapunov_steps(self.system, T)
                if self.a.differentiable else 0)
        return ledger.steps + per + diag


def _choose_draws(run: _Run, budget_steps, time_limit, draws, sigmas) -> int:
    """M: given, else the largest power of two (<= 1024) whose plan fits the budget, else 128;
    prices a step on the way (`cost_probe`) and shrinks M to fit a time limit."""
    ledger, a, T = run.ledger, run.a, run.T
    if draws is not None:
        M = draws
    elif budget_steps is not None:
        M = 1024
        while M > 8 and run.plan(M, sigmas) > budget_steps:
            M //= 2
    else:
        M = DRAWS
    probe_rows, probe_steps = min(M, 64), min(T, 10)
    fwd, c_bwd, ledger.call = cost_probe(run.system, run.th, probe_rows, probe_steps,
                                         a.differentiable)
    ledger.steps += (probe_rows + 1) * probe_steps * (5 if a.differentiable else 3)
    ledger.backward = c_bwd if a.differentiable and math.isfinite(c_bwd) else 1.0
    if time_limit is not None and draws is None:
        # pessimistic: every phase priced as pathwise, at 2M rows per call
        while M > 8 and ledger.seconds(run.plan(M, sigmas) - ledger.steps, 2 * M,
                                       True) > time_limit - ledger.elapsed():
            M //= 2
    a.draws, a.step_seconds, a.backward_factor = M, fwd, c_bwd
    a.compute = float(2 * PAIRS_YARDSTICK * T)
    return M


def _sigma_grid(run: _Run, M: int, sigmas) -> dict[float, Draws]:
    """Antithetic ES draws at each sigma that fits, largest first; sets sigma* and the grid."""
    grid = {}
    for s in sorted(sigmas, reverse=True):
        if not run.ledger.fits(f"antithetic ES at sigma = {s:g}", 2 * M * run.T, 2 * M):
            continue
        t0 = time.perf_counter()
        got = run.draws("antithetic_es", M, run.seed, sigma=s)
        grid[s] = Draws("antithetic_es", "es", {"sigma": s}, got.samples, got.nonfinite,
                        2 * M * run.T, time.perf_counter() - t0)
    if not any(d.nonfinite == 0 and d.samples.shape[0] >= 2 for d in grid.values()):
        bad = ", ".join(f"{d.nonfinite} of {d.nonfinite + d.samples.shape[0]} at sigma = {s:g}"
                        for s, d in grid.items())
        raise ValueError(
            "no recommendation: no sigma gave all-finite ES draws "
            + (f"(non-finite: {bad}); the trajectories diverge: try a shorter horizon "
               "(--horizon), a theta where the system stays bounded (--theta) or smaller sigmas"
               if grid else f"(the draws at every sigma of {list(sigmas)} did not fit the budget): "
               "give more budget "
               "(--budget / --time) or a shorter horizon (--horizon)"))
    run.a.sigma, run.a.sigma_grid = choose_sigma({s: (d.samples, d.nonfinite)
                                                  for s, d in grid.items()})
    return grid


def _reference(run: _Run, M: int, fallback: Draws) -> None:
    """g* = grad L_sigma* at T: exact, else antithetic ES with REF_FACTOR * M pairs, else (no
    budget left) the candidate's own draws, whose bias is then not measurable."""
    a, sigma = run.a, run.a.sigma
    if hasattr(run.system, "exact_grad"):
        g = run.system.exact_grad(run.th, sigma, run.T).to(F64).cpu()
        se_ref = torch.zeros_like(g)
        a.reference = {"method": "closed form (exact_grad)", "se_norm": 0.0}
    elif run.ledger.fits("the reference gradient", 2 * REF_FACTOR * M * run.T,
                         2 * min(REF_FACTOR * M, _CHUNK)):
        R, s1, s2, n, bad = REF_FACTOR * M, 0.0, 0.0, 0, 0
        for i, start in enumerate(range(0, R, _CHUNK)):
            got = run.draws("antithetic_es", min(_CHUNK, R - start),
                            _REF_SEED + run.seed * 1000 + i, sigma=sigma)
            d = got.samples
            s1, s2, n, bad = s1 + d.sum(0), s2 + (d**2).sum(0), n + d.shape[0], bad + got.nonfinite
        if n < 2:
            g = se_ref = torch.full((run.system.param_dim,), math.nan, dtype=F64)
        else:
            g = s1 / n
            se_ref = ((s2 / n - g**2).clamp_min(0) / (n - 1)).sqrt()
        a.reference = {"method": f"antithetic ES, {n} pairs", "se_norm": se_ref.norm().item(),
                       "pairs": n, "nonfinite": bad}
    else:
        d = fallback.samples
        g, se_ref = d.mean(0), (d.var(0) / d.shape[0]).sqrt()
        a.reference = {"method": "the ES draws themselves (bias not measurable)",
                       "se_norm": se_ref.norm().item()}
    a.reference.update({"grad": g.tolist(), "grad_norm": g.norm().item(),
                        "se": se_ref.tolist()})
    run.m.g, run.m.se_ref = g, se_ref


def _candidate(run: _Run, M: int, name: str, K: int | None = None) -> None:
    """Per-pair draws of ``name`` (at truncation K, at sigma* if it targets L_sigma*)."""
    family = "pathwise" if estimators.ESTIMATORS.get(name).needs_grad else "es"
    sigma = run.a.sigma if name in UNBIASED else None
    settings = {k: v for k, v in (("K", K), ("sigma", sigma)) if v is not None}
    label = name + (f"({', '.join(f'{k} = {v:g}' for k, v in settings.items())})"
                    if settings else "")
    rows = 2 * M if family == "es" else M
    if family == "pathwise" and not run.a.differentiable:
        return
    if not run.ledger.fits(label, rows * run.T, rows, family == "pathwise"):
        return
    t0 = time.perf_counter()
    got = run.draws(name, M, run.seed + 1, truncation=K, sigma=sigma)
    run.m.candidates.append(Draws(name, family, settings, got.samples, got.nonfinite, got.steps,
                                  time.perf_counter() - t0))


def _growth(run: _Run, M: int, reason: str) -> None:
    """The BPTT gradient's std against T (with ES's at the same T), if it fits."""
    T, sigma, hs, n = run.T, run.a.sigma, _growth_horizons(run.T), min(M, 32)
    if not run.a.differentiable:
        run.ledger.skipped.append(f"the BPTT gradient's growth with T and the Lyapunov exponent "
                                  f"(pathwise unavailable: {reason})")
        return
    if len(hs) < 2 or not run.ledger.fits("the BPTT std against T",
                                          n * T + 2 * n * sum(hs), n, True):
        return
    gr = systems.gradient_growth_rate(run.system, run.th, horizons=hs, samples=n,
                                      seed=_DIAG_SEED + run.seed)
    es_std = []
    for h in hs:
        hp = estimator_kwargs("antithetic_es", horizon=h, n=n, sigma=sigma)
        d = episode_estimates("antithetic_es", hp, run.system, run.th,
                              _DIAG_SEED + run.seed).samples
        es_std.append(0.5 * math.log(d.var(0).sum().item()) if d.shape[0] >= 2 else math.nan)
    run.ledger.steps += n * T + 2 * n * sum(hs)
    run.a.growth = {"horizons": gr.horizons.tolist(), "log_std": gr.log_std.tolist(),
                    "slope": gr.slope, "nonfinite": gr.nonfinite.tolist(),
                    "es_log_std": es_std, "samples": n}


def _lyapunov(run: _Run) -> None:
    """The leading finite-time Lyapunov exponent from t = 0 over the horizon, if it fits."""
    n_state = _lyapunov_steps(run.system, run.T)
    if not run.a.differentiable or not run.ledger.fits("the Lyapunov exponent", n_state,
                                                       n_state // run.T, True):
        return
    ly = systems.lyapunov_exponents(run.system, run.th, steps=run.T, burn_in=0, k=1,
                                    trajectories=8, seed=_DIAG_SEED + run.seed)
    run.ledger.steps += n_state
    run.a.lyapunov, run.a.lyapunov_se = ly.per_step[0].item(), ly.stderr[0].item()
    if ly.per_time is not None:
        run.a.lyapunov_per_time = ly.per_time[0].item()


def measure(system: systems.System, th: torch.Tensor, T: int, *, budget_steps: int | None,
            time_limit: float | None, seed: int, sigmas: tuple[float, ...],
            draws: int | None) -> Measurements:
    """Every phase of the advisor's measurement (module docstring) at ``th [D]`` (float64).

    Raises:
        ValueError: when the system fails the contract, or no ES draw could be measured.
    """
    ledger = Ledger(budget_steps, time_limit)
    report = systems.check_system(system, th, seed=seed, steps=T)
    if not report.ok:
        raise ValueError(f"{report.system} fails the contract: "
                         + "; ".join(f"{c.name}: {c.message}" for c in report.failures))
    ledger.steps += 4 * T + 40
    a = Advice(report.system, getattr(system, "name", "") or type(system).__name__, th.tolist(),
               T, [str(c) for c in report.checks], report.differentiable, report.reason,
               blind=list(report.blind))
    m = Measurements(a)
    run = _Run(system, th, T, ledger, seed, m)
    M = _choose_draws(run, budget_steps, time_limit, draws, sigmas)
    grid = _sigma_grid(run, M, sigmas)
    _reference(run, M, grid[a.sigma])
    Ks = truncations(T)
    m.candidates.append(grid[a.sigma])
    _candidate(run, M, "bptt")
    _growth(run, M, report.reason)
    _lyapunov(run)
    for K in Ks:
        _candidate(run, M, "truncated_bptt", K)
    if Ks:
        _candidate(run, M, "pes", Ks[len(Ks) // 2])
    a.unmeasured, a.steps_used, a.seconds = ledger.skipped, ledger.steps, ledger.elapsed()
    return m

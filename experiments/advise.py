"""Which gradient estimator for this system? Measure, then recommend, with the evidence.

``chaosgrad advise TARGET`` loads a system (a registered name, ``path/to/file.py:attr`` or
``package.module:attr``; the attribute is a `System` instance, a System subclass or a
zero-argument factory), checks it against the contract (`systems.check_system`) and then, at
``theta`` and the user's horizon T, within a budget of simulated steps (``--budget``) or seconds
(``--time``), measures:

1. cost per step: seconds per trajectory-step of a forward unroll and of forward + backward,
   whose ratio c_bwd prices every pathwise step (compute = forward-step equivalents);
2. sigma: antithetic ES at each sigma of a small grid, M per-pair draws each. Less smoothing
   means less bias, so sigma* is the smallest sigma whose per-pair variance is within a factor 4
   (2 in std) of the grid's lowest: on a smooth loss the variance is flat in sigma and the
   smallest sigma wins; where the loss turns rugged (chaos) the variance starts its 1/sigma^2
   rise and sigma* stops above it. A sigma with any non-finite draw is excluded. The smoothing
   bias against the smallest finite sigma, sum_d (m_sigma - m_min)_d^2 - noise, is reported;
3. the reference g* = grad L_sigma* at horizon T: the system's ``exact_grad`` when it has one,
   else antithetic ES with many pairs (its standard error enters every bias);
4. per-pair full-horizon draws (as `experiments.curves`: online estimators average their T/K
   lockstep windows) of BPTT (reparameterised at sigma*, so it targets grad L_sigma*),
   TruncatedBPTT at a few K, AntitheticES (the sigma*
   draws of step 2) and PES at one K; for each, with standard errors,

       bias2 = sum_d (b_d^2 - s_d^2),  b = mean - g*,  s_d^2 = var_d / M + SE(g*)_d^2
       MSE(C) = B + var_pair * cost_pair / C,    C = 2 P T forward steps (P = 64),

   with B = max(bias2, 0) for estimators biased by design (TruncatedBPTT), and for those
   unbiased for grad L_sigma* by construction (BPTT at sigma*, AntitheticES, PES) B = bias2 only
   when it is significant (> 2 standard errors; a discontinuity biases BPTT), else 0: their
   measured bias is otherwise the noise of M draws and of g*. MSE(C) is
   the MSE of one estimate given the compute of P antithetic pairs of the horizon (so the MSE
   ratio of two unbiased estimators is their ratio of MSE per unit of compute at any budget);
5. evidence: the BPTT gradient's std against T (`systems.gradient_growth_rate`, with ES's std
   at the same T) and the leading finite-time Lyapunov exponent from t = 0 over the horizon
   (burn_in = 0: transient chaos such as MetzSGDMomentum at eta = 0.3 counts).

Decision rule (explicit, tested): among the measured candidates whose draws were all finite
(pathwise ones only when the system is differentiable and passes the gradient check), recommend
the one with the smallest MSE(C), where an estimator biased by design is ranked by the upper end
MSE(C) + 2 SE(bias2) (a bias the reference is too noisy to resolve does not win by default). Its settings: K as measured, sigma = sigma* for the ES family,
and pairs (samples for pathwise) = the power of two in [4, 1024] nearest above
var_pair / (0.25 |g*|^2), so that one estimate's noise is at most half the gradient's norm.
The Lyapunov exponent and the growth rate explain the choice; they do not make it.

    chaosgrad advise logistic_map --regime chaotic --horizon 100
    chaosgrad advise my_system.py:make --budget 2000000 --out results/mine
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.util
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import estimators
import systems
from experiments.measure import episode_estimates, estimator_kwargs
from experiments.store import Cell, ResultsStore

__all__ = ["Advice", "Candidate", "advise", "format_advice", "load_target", "parse_overrides",
           "decide", "plot", "command_line", "add_arguments", "main"]

F64 = torch.float64
SIGMAS = (0.3, 0.1, 0.03, 0.01)
SIGMA_VARIANCE_FACTOR = 4.0  # see step 2 of the module docstring
# Unbiased for grad L_sigma by construction (same sigma as the reference): a measured bias counts
# only when significant. Every other estimator (truncated BPTT) is biased by design.
UNBIASED = ("bptt", "antithetic_es", "pes")
PAIRS_YARDSTICK = 64     # P: the compute C of one estimate is 2 P T forward steps
DRAWS = 128              # M per-pair draws per candidate when no budget is given
REF_FACTOR = 16          # reference pairs per draw M (when there is no exact_grad)
GROWTH_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1)
_CHUNK = 4096            # reference pairs per batch
_REF_SEED, _DIAG_SEED = 1 << 30, 1 << 29


@dataclass
class Candidate:
    """The measurement of one estimator setting at the user's horizon.

    ``cost_pair``: forward-step equivalents of one per-pair draw (pathwise steps times c_bwd);
    ``mse``: MSE(C) of one estimate with the compute C of `Advice.compute`.
    """

    estimator: str
    family: str                  # "pathwise" or "es"
    settings: dict
    draws: int = 0
    nonfinite: int = 0
    bias2: float = math.nan
    bias2_se: float = math.nan
    var_pair: float = math.nan
    var_pair_se: float = math.nan
    cost_pair: float = math.nan
    mse: float = math.nan
    mse_se: float = math.nan
    rank: float = math.nan       # what the decision rule minimises
    seconds: float = 0.0

    @property
    def label(self) -> str:
        """The estimator with its settings, e.g. ``pes(K = 10, sigma = 0.05, pairs = 64)``."""
        extra = ", ".join(f"{k} = {v:g}" for k, v in self.settings.items())
        return f"{self.estimator}({extra})" if extra else self.estimator

    @property
    def usable(self) -> bool:
        """Whether the candidate may be recommended: all draws finite and a finite rank."""
        return self.nonfinite == 0 and self.draws >= 2 and math.isfinite(self.rank)


@dataclass
class Advice:
    """What `advise` measured, what it recommends and why (JSON-able via `dataclasses.asdict`)."""

    system: str                          # repr of the system
    name: str                            # its registry name (or class name)
    theta: list
    horizon: int
    checks: list[str]
    differentiable: bool
    differentiable_reason: str
    draws: int = 0
    compute: float = math.nan            # C, forward-step equivalents of one estimate
    step_seconds: float = math.nan       # forward, per trajectory-step
    backward_factor: float = math.nan    # c_bwd
    lyapunov: float | None = None        # per step, from t = 0 over the horizon
    lyapunov_se: float | None = None
    lyapunov_per_time: float | None = None
    growth: dict = field(default_factory=dict)
    sigma: float = math.nan
    sigma_grid: list = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    recommendation: dict = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)
    steps_used: int = 0
    seconds: float = 0.0


# ----------------------------------------------------------------------------- loading
def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: list[str] | None) -> dict:
    """``["r=3.7", "horizon=50"]`` -> ``{"r": 3.7, "horizon": 50}`` (ValueError on bad items)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key] = _parse_value(value)
    return out


def _construct(cls: type, regime: str | None, overrides: dict, what: str) -> systems.System:
    kwargs = {}
    if regime is not None:
        regimes = getattr(cls, "regimes", {})
        if regime not in regimes:
            raise ValueError(f"unknown regime {regime!r} of {what}; available: "
                             f"{', '.join(regimes) or 'none'}")
        kwargs.update(regimes[regime])
    kwargs.update(overrides)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"cannot build {what} with {kwargs}: {err}") from None


def _import_attr(target: str) -> tuple[Any, str]:
    where, _, attr = target.rpartition(":")
    if not attr.isidentifier():
        raise ValueError(f"{target!r}: expected path/to/file.py:attr or package.module:attr")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"no such file: {where!r}")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        name = f"chaosgrad_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {where!r} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            sys.modules.pop(name, None)
            raise ValueError(f"importing {where!r} failed: {type(err).__name__}: {err}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as err:
            raise ValueError(f"cannot import {where!r}: {type(err).__name__}: {err}") from None
    if not hasattr(module, attr):
        raise ValueError(f"{where!r} has no attribute {attr!r}")
    return getattr(module, attr), f"{where}:{attr}"


def load_target(target: str, *, regime: str | None = None,
                overrides: dict | None = None) -> systems.System:
    """The `System` named by ``target`` (registered name or prefix, ``file.py:attr``,
    ``package.module:attr``). ``regime`` and ``overrides`` apply to registered names and to
    System subclasses. Every failure is a ValueError with a one-line message."""
    overrides = dict(overrides or {})
    if ":" not in target:
        names = list(systems.available())
        hits = [target] if target in names else [n for n in names if n.startswith(target)]
        if len(hits) != 1:
            raise ValueError(f"unknown system {target!r}; available: {', '.join(names)} "
                             "(or path/to/file.py:attr, package.module:attr)")
        return _construct(systems.SYSTEMS.get(hits[0]), regime, overrides, hits[0])
    obj, what = _import_attr(target)
    if isinstance(obj, type) and issubclass(obj, systems.System):
        return _construct(obj, regime, overrides, what)
    if regime is not None or overrides:
        raise ValueError(f"--regime/--set need a registered name or a System subclass; "
                         f"{what} is a {type(obj).__name__}")
    if callable(obj) and not isinstance(obj, systems.System):
        try:
            obj = obj()
        except Exception as err:
            raise ValueError(f"calling {what}() failed: {type(err).__name__}: {err}") from None
    if not isinstance(obj, systems.System):
        raise ValueError(f"{what} is a {type(obj).__name__}, not a systems.System instance or "
                         "a zero-argument factory returning one")
    return obj


# ----------------------------------------------------------------------------- measuring
class _Ledger:
    """Simulated steps and seconds spent; says whether a phase still fits."""

    def __init__(self, budget_steps: int | None, time_limit: float | None):
        self.budget, self.limit = budget_steps, time_limit
        self.steps, self.start = 0, time.perf_counter()
        self.call = None        # (a, b): seconds of one forward step call of B rows = a + b B
        self.backward = 1.0     # time factor of a pathwise (forward + backward) phase
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def seconds(self, steps: int, rows: int, pathwise: bool = False) -> float:
        """Predicted seconds of ``steps`` trajectory-steps taken ``rows`` at a time."""
        a, b = self.call
        return steps / max(rows, 1) * (a + b * rows) * (self.backward if pathwise else 1.0)

    def fits(self, what: str, steps: int, rows: int = 1, pathwise: bool = False) -> bool:
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


def _stats(draws: torch.Tensor, g: torch.Tensor, se_ref: torch.Tensor) -> dict:
    M = draws.shape[0]
    if M < 2:
        return {}
    mean, var = draws.mean(0), draws.var(0)
    m4 = ((draws - mean) ** 4).mean(0)
    b, s2 = mean - g, var / M + se_ref**2
    return {"bias2": (b**2 - s2).sum().item(),
            "bias2_se": (4 * b**2 * s2 + 2 * s2**2).sum().sqrt().item(),
            "var_pair": var.sum().item(),
            "var_pair_se": ((m4 - var**2).clamp_min(0) / M).sum().sqrt().item()}


def _truncations(T: int) -> list[int]:
    """Up to three K dividing T, near T/20, T/5 and T/2 (K < T)."""
    divisors = [k for k in range(1, T) if T % k == 0]
    picks = []
    for target in (T / 20, T / 5, T / 2):
        if divisors:
            k = min(divisors, key=lambda d: (abs(math.log(d / target)), d))
            if k not in picks:
                picks.append(k)
    return sorted(picks)


def _cost_probe(system, theta, rows: int, steps: int,
                differentiable: bool) -> tuple[float, float, tuple[float, float]]:
    """(seconds per forward trajectory-step at ``rows``, c_bwd = forward+backward time / forward
    time, (a, b) with a + b B the seconds of one forward step call of B rows)."""

    def unroll(grad: bool, rows: int = rows) -> float:
        keys = torch.arange(rows, dtype=torch.int64)
        x = theta.expand(rows, -1).clone()
        start = time.perf_counter()
        with torch.set_grad_enabled(grad):
            r = x.clone().requires_grad_(grad)
            state, total = system.init_state(r, keys), r.new_zeros(rows)
            for t in range(steps):
                state, loss = system.step(r, state, torch.full_like(keys, t), keys)
                total = total + loss
            if grad and total.requires_grad:
                torch.autograd.grad(total.sum(), r, allow_unused=True)
        return time.perf_counter() - start

    forward = min(unroll(False) for _ in range(2))
    both = min(unroll(True) for _ in range(2)) if differentiable else math.nan
    small = min(unroll(False, 1) for _ in range(2))
    b = max((forward - small) / steps / max(rows - 1, 1), 0.0)
    a = max(small / steps - b, 0.0)
    return forward / (rows * steps), (both / forward if differentiable else math.nan), (a, b)


def _lyapunov_steps(system, T: int) -> int:
    """Simulated steps of `systems.lyapunov_exponents` with 8 trajectories over T steps."""
    return 8 * T * min(32, max(1, int(getattr(system, "state_dim", 1))))


def _pairs_for(var_pair: float, g_norm2: float) -> int:
    """Power of two in [4, 1024] at or above var_pair / (0.25 |g|^2)."""
    if not (g_norm2 > 0 and math.isfinite(var_pair)):
        return 1024
    need = var_pair / (0.25 * g_norm2)
    n = 4
    while n < need and n < 1024:
        n *= 2
    return n


def decide(candidates: list[Candidate], differentiable: bool) -> Candidate | None:
    """The decision rule: the usable candidate with the smallest MSE(C) (pathwise ones only if
    ``differentiable``); None when nothing usable was measured."""
    ok = [c for c in candidates if c.usable and (differentiable or c.family != "pathwise")]
    return min(ok, key=lambda c: c.rank) if ok else None


def advise(system: systems.System, theta: torch.Tensor | None = None, *, horizon: int | None = None,
           budget_steps: int | None = None, time_limit: float | None = None, seed: int = 0,
           sigmas: tuple[float, ...] = SIGMAS, draws: int | None = None) -> Advice:
    """Measure the estimators on ``system`` at ``theta`` and horizon T; recommend one.

    Args:
        system: any `System`; it is first checked with `systems.check_system`.
        theta: ``[D]`` (default ``init_params``), used in float64.
        horizon: T (default the system's ``horizon``).
        budget_steps: simulated trajectory-steps the measurements may use (sets the number of
            draws M per candidate; phases that no longer fit are skipped and listed).
        time_limit: seconds; phases that would overrun are skipped and listed.
        seed: fixes every key and perturbation.
        sigmas: the ES smoothing grid.
        draws: M per candidate (default from the budget, else 128).
    Returns:
        An `Advice`.
    Raises:
        ValueError: when the system fails the contract (one line listing the failures), or on
            bad arguments.
    """
    if not isinstance(system, systems.System):
        raise ValueError(f"not a systems.System: {type(system).__name__}")
    T = system.horizon if horizon is None else horizon
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {T!r}")
    for label, v in (("budget", budget_steps), ("time", time_limit)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{label} must be > 0, got {v!r}")
    if not sigmas or any(not (math.isfinite(s) and s > 0) for s in sigmas):
        raise ValueError(f"every sigma must be > 0, got {list(sigmas)}")
    th = (system.init_params(dtype=F64) if theta is None else torch.as_tensor(theta)).detach()
    if not th.is_floating_point() or th.shape != (system.param_dim,):
        raise ValueError(f"theta must be {system.param_dim} floats, got shape {list(th.shape)}")
    th = th.to(F64)
    ledger = _Ledger(budget_steps, time_limit)

    report = systems.check_system(system, th, seed=seed, steps=T)
    if not report.ok:
        raise ValueError(f"{report.system} fails the contract: "
                         + "; ".join(f"{c.name}: {c.message}" for c in report.failures))
    ledger.steps += 4 * T + 40
    diff = report.differentiable
    advice = Advice(report.system, getattr(system, "name", "") or type(system).__name__,
                    th.tolist(), T, [str(c) for c in report.checks], diff,
                    report.reason)

    def plan(m: int) -> int:
        """Simulated steps of the whole measurement with m draws per candidate."""
        ref = 0 if hasattr(system, "exact_grad") else 2 * REF_FACTOR * m * T
        n_k = len(_truncations(T))
        per = 2 * len(sigmas) * m * T + ref + (m + n_k * m) * T + (2 * m * T if n_k else 0)
        n_g = min(m, 32)
        hs = sorted({max(1, round(T * f)) for f in GROWTH_FRACTIONS})
        diag = n_g * T + 2 * n_g * sum(hs) + _lyapunov_steps(system, T) if diff else 0
        return ledger.steps + per + diag

    if draws is not None:
        M = draws
    elif budget_steps is not None:
        M = 1024
        while M > 8 and plan(M) > budget_steps:
            M //= 2
    else:
        M = DRAWS
    probe_rows, probe_steps = min(M, 64), min(T, 10)
    fwd, c_bwd, ledger.call = _cost_probe(system, th, probe_rows, probe_steps, diff)
    ledger.steps += (probe_rows + 1) * probe_steps * (5 if diff else 3)
    ledger.backward = c_bwd if diff and math.isfinite(c_bwd) else 1.0
    if time_limit is not None and draws is None:
        # pessimistic: every phase priced as pathwise, at 2M rows per call
        while M > 8 and ledger.seconds(plan(M) - ledger.steps, 2 * M, True) > time_limit - ledger.elapsed():
            M //= 2
    advice.draws, advice.step_seconds, advice.backward_factor = M, fwd, c_bwd
    price = c_bwd if diff and math.isfinite(c_bwd) else 1.0
    C = 2 * PAIRS_YARDSTICK * T
    advice.compute = float(C)

    # sigma grid: antithetic ES draws at each sigma
    es_draws = {}
    for s in sorted(sigmas, reverse=True):
        if not ledger.fits(f"antithetic ES at sigma = {s:g}", 2 * M * T, 2 * M):
            continue
        t0 = time.perf_counter()
        d, bad, steps = episode_estimates("antithetic_es", estimator_kwargs("antithetic_es", horizon=T, n=M,
                                                                    sigma=s), system, th, seed)
        ledger.steps += steps
        es_draws[s] = (d, bad, time.perf_counter() - t0)
    finite = {s: v for s, v in es_draws.items() if v[1] == 0 and v[0].shape[0] >= 2}
    if not finite:
        raise ValueError("no ES draw could be measured: every sigma in "
                         f"{list(sigmas)} gave non-finite losses or did not fit the budget")
    s_min = min(finite)
    m0, v0 = finite[s_min][0].mean(0), finite[s_min][0].var(0)
    scores = {}
    for s, (d, bad, _) in es_draws.items():
        row = {"sigma": s, "nonfinite": bad}
        if s in finite:
            b2 = ((d.mean(0) - m0) ** 2 - (d.var(0) + v0) / d.shape[0]).sum().item() if s != s_min else 0.0
            row.update({"smoothing_bias2": b2, "var_pair": d.var(0).sum().item()})
            scores[s] = row["var_pair"]
        advice.sigma_grid.append(row)
    floor = SIGMA_VARIANCE_FACTOR * min(scores.values())
    sigma = min(s for s, v in scores.items() if v <= floor)
    advice.sigma = sigma

    # reference gradient of L_sigma at T
    if hasattr(system, "exact_grad"):
        g = system.exact_grad(th, sigma, T).to(F64).cpu()
        se_ref = torch.zeros_like(g)
        advice.reference = {"method": "closed form (exact_grad)", "se_norm": 0.0}
    else:
        R = REF_FACTOR * M
        if ledger.fits("the reference gradient", 2 * R * T, 2 * min(R, _CHUNK)):
            s1, s2, n = 0.0, 0.0, 0
            for i, start in enumerate(range(0, R, _CHUNK)):
                m = min(_CHUNK, R - start)
                hp = estimator_kwargs("antithetic_es", horizon=T, n=m, sigma=sigma)
                d, _, steps = episode_estimates("antithetic_es", hp, system, th,
                                                _REF_SEED + seed * 1000 + i)
                ledger.steps += steps
                s1, s2, n = s1 + d.sum(0), s2 + (d**2).sum(0), n + d.shape[0]
            g = s1 / n
            se_ref = ((s2 / n - g**2).clamp_min(0) / (n - 1)).sqrt()
            advice.reference = {"method": f"antithetic ES, {n} pairs", "se_norm": se_ref.norm().item()}
        else:
            d = finite[sigma][0]  # fall back: the candidate's own draws (bias unmeasurable)
            g, se_ref = d.mean(0), (d.var(0) / d.shape[0]).sqrt()
            advice.reference = {"method": "the ES draws themselves (bias not measurable)",
                                "se_norm": se_ref.norm().item()}
    advice.reference.update({"grad": g.tolist(), "grad_norm": g.norm().item()})

    def candidate(name: str, K: int | None = None, given=None) -> None:
        family = "pathwise" if estimators.ESTIMATORS.get(name).needs_grad else "es"
        smoothed = name in UNBIASED
        settings = {k: v for k, v in (("K", K), ("sigma", sigma if smoothed else None))
                    if v is not None}
        c = Candidate(name, family, settings)
        rows = 2 * M if family == "es" else M
        if given is None:
            if family == "pathwise" and not diff:
                return
            if not ledger.fits(c.label, rows * T, rows, family == "pathwise"):
                return
            t0 = time.perf_counter()
            hp = estimator_kwargs(name, horizon=T, n=M, truncation=K,
                                  sigma=sigma if smoothed else None)
            d, bad, steps = episode_estimates(name, hp, system, th, seed + 1)
            ledger.steps += steps
            secs = time.perf_counter() - t0
        else:
            d, bad, secs = given
            steps = rows * T
        c.draws, c.nonfinite, c.seconds = d.shape[0], bad, secs
        c.cost_pair = steps / M * (price if family == "pathwise" else 1.0)
        st = _stats(d.to(F64), g, se_ref)
        if st:
            c.bias2, c.bias2_se, c.var_pair, c.var_pair_se = (st["bias2"], st["bias2_se"],
                                                              st["var_pair"], st["var_pair_se"])
            significant = c.bias2 > 2 * c.bias2_se
            B = max(c.bias2, 0.0) if not smoothed or significant else 0.0
            c.mse = B + c.var_pair * c.cost_pair / C
            c.mse_se = math.hypot(c.bias2_se if B else 0.0, c.var_pair_se * c.cost_pair / C)
            c.rank = c.mse + (0.0 if smoothed else 2 * c.bias2_se)
        advice.candidates.append(c)

    Ks = _truncations(T)
    candidate("antithetic_es", given=finite[sigma])
    candidate("bptt")
    growth_horizons = sorted({max(1, round(T * f)) for f in GROWTH_FRACTIONS})
    n_growth = min(M, 32)
    if not diff:
        ledger.skipped.append(f"the BPTT gradient's growth with T and the Lyapunov exponent "
                              f"(pathwise unavailable: {report.reason})")
    elif len(growth_horizons) >= 2 and ledger.fits("the BPTT std against T", n_growth * T
                                                   + 2 * n_growth * sum(growth_horizons),
                                                   n_growth, True):
        gr = systems.gradient_growth_rate(system, th, horizons=growth_horizons,
                                          samples=n_growth, seed=_DIAG_SEED + seed)
        es_std = []
        for h in growth_horizons:
            hp = estimator_kwargs("antithetic_es", horizon=h, n=n_growth, sigma=sigma)
            d, _, _ = episode_estimates("antithetic_es", hp, system, th, _DIAG_SEED + seed)
            es_std.append(0.5 * math.log(d.var(0).sum().item()) if d.shape[0] >= 2 else math.nan)
        ledger.steps += n_growth * T + 2 * n_growth * sum(growth_horizons)
        advice.growth = {"horizons": gr.horizons.tolist(), "log_std": gr.log_std.tolist(),
                         "slope": gr.slope, "nonfinite": gr.nonfinite.tolist(),
                         "es_log_std": es_std, "samples": n_growth}
    if diff:
        n_state = _lyapunov_steps(system, T)
        if ledger.fits("the Lyapunov exponent", n_state, n_state // T, True):
            ly = systems.lyapunov_exponents(system, th, steps=T, burn_in=0, k=1, trajectories=8,
                                            seed=_DIAG_SEED + seed)
            ledger.steps += n_state
            advice.lyapunov, advice.lyapunov_se = ly.per_step[0].item(), ly.stderr[0].item()
            if ly.per_time is not None:
                advice.lyapunov_per_time = ly.per_time[0].item()
    for K in Ks:
        candidate("truncated_bptt", K)
    if Ks:
        candidate("pes", Ks[len(Ks) // 2])

    best = decide(advice.candidates, diff)
    advice.unmeasured = ledger.skipped
    advice.steps_used, advice.seconds = ledger.steps, ledger.elapsed()
    g2 = g.norm().item() ** 2
    if best is not None:
        n = _pairs_for(best.var_pair, g2)
        settings = dict(best.settings)
        settings["pairs" if best.family == "es" else "samples"] = n
        advice.recommendation = {"estimator": best.estimator, "family": best.family,
                                 "settings": settings, "mse": best.mse}
    advice.evidence = _evidence(advice, best, diff)
    return advice


# ----------------------------------------------------------------------------- evidence
def _fmt_settings(settings: dict) -> str:
    return ", ".join(f"{k} = {v:g}" for k, v in settings.items())


def _evidence(a: Advice, best: Candidate | None, diff: bool) -> list[str]:
    ev = []
    if not diff:
        ev.append(f"pathwise unavailable: {a.differentiable_reason}; only loss-based (ES-family) "
                  "estimators were measured")
    if a.lyapunov is not None:
        unit = (f" ({a.lyapunov_per_time:.3g} per unit time)" if a.lyapunov_per_time is not None
                else "")
        ev.append(f"lambda = {a.lyapunov:.3g} +/- {a.lyapunov_se:.2g} per step{unit}: leading "
                  f"finite-time Lyapunov exponent from t = 0 over the T = {a.horizon} steps")
    if a.growth:
        hs, ls, slope = a.growth["horizons"], a.growth["log_std"], a.growth["slope"]
        ok = [(h, x) for h, x in zip(hs, ls) if math.isfinite(x)]
        if math.isfinite(slope) and slope > 0 and len(ok) >= 2:
            ratio = math.exp(ok[-1][1] - ok[0][1])
            ev.append(f"the BPTT gradient's std grows by {slope:.3g} nats per step (doubles every "
                      f"{math.log(2) / slope:.3g} steps): {ratio:.3g}x larger at T = {ok[-1][0]} "
                      f"than at T = {ok[0][0]}")
        elif math.isfinite(slope):
            ev.append(f"the BPTT gradient's std does not grow with T (slope {slope:.3g} per step)")
        if sum(a.growth["nonfinite"]):
            ev.append(f"BPTT gradients overflowed (non-finite) at T = "
                      f"{[h for h, n in zip(hs, a.growth['nonfinite']) if n]}")
    es = [c for c in a.candidates if c.family == "es" and c.usable]
    pw = [c for c in a.candidates if c.family == "pathwise"]
    best_es = min(es, key=lambda c: c.mse) if es else None
    if best_es is not None:
        for c in pw:
            if c.estimator != "bptt":
                continue
            if not c.usable:
                ev.append(f"BPTT at T = {a.horizon}: {c.nonfinite} of {c.draws + c.nonfinite} "
                          "per-pair gradients were non-finite: unusable")
            else:
                r = c.mse / best_es.mse
                ev.append(f"at T = {a.horizon} BPTT's MSE per step of compute is {r:.3g} times "
                          f"{best_es.label}'s ({c.mse:.3g} vs {best_es.mse:.3g} at the compute "
                          f"of {PAIRS_YARDSTICK} ES pairs)")
    tb = [c for c in pw if c.estimator == "truncated_bptt" and c.usable]
    if tb and a.reference.get("grad_norm", 0) > 0:
        g2 = a.reference["grad_norm"] ** 2
        parts = ", ".join(f"{c.bias2 / g2:.2g} +/- {c.bias2_se / g2:.1g} at K = {c.settings['K']}"
                          for c in tb)
        ev.append(f"TruncatedBPTT's bias^2 / |g|^2: {parts}")
    if a.sigma_grid:
        var = ", ".join(f"{r['var_pair']:.3g} at {r['sigma']:g}" for r in a.sigma_grid
                        if "var_pair" in r)
        ev.append(f"sigma = {a.sigma:g}: the smallest sigma (least smoothing bias) whose ES "
                  f"variance per pair is within {SIGMA_VARIANCE_FACTOR:g}x of the lowest ({var})"
                  + ("".join(f"; sigma = {r['sigma']:g} excluded ({r['nonfinite']} non-finite)"
                             for r in a.sigma_grid if r["nonfinite"])))
    if best is not None:
        second = sorted((c for c in a.candidates if c.usable and c is not best),
                        key=lambda c: c.mse)
        vs = (f"; next best {second[0].label} has {second[0].mse / best.mse:.3g}x its MSE"
              if second and best.mse > 0 else "")
        rec = a.recommendation
        ev.append(f"use {best.estimator} with {_fmt_settings(rec['settings'])} "
                  f"(smallest MSE per unit of compute at T = {a.horizon}{vs})")
    else:
        ev.append("no recommendation: no estimator could be measured within the budget")
    return ev


def format_advice(a: Advice) -> str:
    """The advice as terminal text: checks, measurements with standard errors, evidence."""
    lines = [f"advice for {a.system} at theta = {_short(a.theta)}, horizon T = {a.horizon}",
             *("  " + c for c in a.checks),
             f"  => {'differentiable' if a.differentiable else 'pathwise unavailable'}: "
             f"{a.differentiable_reason}",
             f"cost: {a.step_seconds:.3g} s per forward trajectory-step"
             + (f", backward x{a.backward_factor:.2f}" if math.isfinite(a.backward_factor) else ""),
             f"reference grad L_sigma (sigma = {a.sigma:g}): {a.reference.get('method')}, "
             f"|g| = {a.reference.get('grad_norm', math.nan):.3g}, SE {a.reference.get('se_norm', math.nan):.2g}",
             f"M = {a.draws} draws per estimator; MSE at the compute of {PAIRS_YARDSTICK} ES pairs "
             f"(C = {a.compute:.0f} forward steps):",
             f"  {'estimator':34s}{'bias^2':>11s}{'+/-':>9s}{'var/pair':>11s}{'cost/pair':>11s}"
             f"{'MSE(C)':>11s}{'+/-':>9s}{'x best':>9s}"]
    best = min((c.mse for c in a.candidates if c.usable), default=math.nan)
    for c in a.candidates:
        ratio = c.mse / best if c.usable and best > 0 else math.nan
        tag = "" if c.usable else f"  ({c.nonfinite} non-finite)"
        lines.append(f"  {c.label:34s}{c.bias2:11.3g}{c.bias2_se:9.2g}{c.var_pair:11.3g}"
                     f"{c.cost_pair:11.4g}{c.mse:11.3g}{c.mse_se:9.2g}{ratio:9.3g}{tag}")
    lines.append("evidence:")
    lines += [f"  - {e}" for e in a.evidence]
    if a.unmeasured:
        lines.append("not measured within the budget:")
        lines += [f"  - {u}" for u in a.unmeasured]
    lines.append(f"({a.steps_used:,} simulated steps, {a.seconds:.1f} s)")
    return "\n".join(lines)


def _short(theta: list) -> str:
    text = ", ".join(f"{x:.4g}" for x in theta[:6])
    return f"[{text}{', ...' if len(theta) > 6 else ''}]"


# ----------------------------------------------------------------------------- outputs
def plot(a: Advice, directory: str | Path, tag: str = "") -> list[Path]:
    """``DIR/figures/advise_<name>[_<tag>]_{growth,mse}.png`` with CSV data and .txt captions
    (``tag`` tells apart advice on the same system: the regime, or a hash of the settings)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir = Path(directory) / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    stem = "advise_" + re.sub(r"[^0-9A-Za-z_]+", "_", "_".join(x for x in (a.name, tag) if x))
    paths = []
    if a.growth:
        name = figdir / f"{stem}_growth"
        hs = a.growth["horizons"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(hs, a.growth["log_std"], "o-", label="BPTT (pathwise, sigma = 0)")
        ax.plot(hs, a.growth["es_log_std"], "s--", label=f"antithetic ES, sigma = {a.sigma:g}")
        ax.set_xlabel("horizon T (steps)")
        ax.set_ylabel("log std of one per-pair gradient")
        ax.set_title(f"{a.name}: gradient spread against T", fontsize=10)
        ax.legend()
        fig.tight_layout()
        fig.savefig(name.with_suffix(".png"), dpi=110)
        plt.close(fig)
        with open(name.with_suffix(".csv"), "w") as f:
            f.write("T,bptt_log_std,es_log_std\n")
            for row in zip(hs, a.growth["log_std"], a.growth["es_log_std"]):
                f.write(",".join(f"{v}" for v in row) + "\n")
        name.with_suffix(".txt").write_text(
            f"Advisor, {a.system}: natural log of the standard deviation (sqrt of the trace of "
            f"the covariance) of one per-key BPTT gradient and of one antithetic-ES pair's "
            f"gradient against the horizon T, {a.growth['samples']} samples each, at theta = "
            f"{_short(a.theta)}. Fitted BPTT growth: {a.growth['slope']:.3g} per step.\n")
        paths.append(name.with_suffix(".png"))
    cands = [c for c in a.candidates if c.draws >= 2 and math.isfinite(c.mse)]
    if cands:
        name = figdir / f"{stem}_mse"
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(cands) + 1.5))
        y = list(range(len(cands)))
        colors = ["tab:blue" if c.family == "pathwise" else "tab:orange" for c in cands]
        ax.barh(y, [c.mse for c in cands], xerr=[min(2 * c.mse_se, 0.99 * c.mse) for c in cands],
                color=colors)
        ax.set_yticks(y, [c.label for c in cands])
        ax.set_xscale("log")
        ax.set_xlabel(f"MSE of one estimate at the compute of {PAIRS_YARDSTICK} ES pairs")
        ax.set_title(f"{a.name}, T = {a.horizon} (blue: pathwise, orange: ES family)", fontsize=10)
        fig.tight_layout()
        fig.savefig(name.with_suffix(".png"), dpi=110)
        plt.close(fig)
        with open(name.with_suffix(".csv"), "w") as f:
            f.write("estimator,family,settings,bias2,bias2_se,var_pair,var_pair_se,cost_pair,"
                    "mse,mse_se,nonfinite\n")
            for c in a.candidates:
                f.write(f"{c.estimator},{c.family},{_fmt_settings(c.settings).replace(',', ';')},"
                        f"{c.bias2},{c.bias2_se},{c.var_pair},{c.var_pair_se},{c.cost_pair},"
                        f"{c.mse},{c.mse_se},{c.nonfinite}\n")
        name.with_suffix(".txt").write_text(
            f"Advisor, {a.system} at T = {a.horizon}: MSE against grad L_sigma "
            f"({a.reference.get('method')}) of one estimate given the compute of "
            f"{PAIRS_YARDSTICK} antithetic ES pairs (pathwise steps priced x"
            f"{a.backward_factor:.2f} for the backward pass), error bars 2 standard errors. "
            + " ".join(e + "." for e in a.evidence) + "\n")
        paths.append(name.with_suffix(".png"))
    return paths


def _cell(a: Advice, args: argparse.Namespace) -> Cell:
    return Cell("advise", a.name, "-",
                {"target": args.target, "regime": args.regime, "set": list(args.set),
                 "theta": a.theta, "T": a.horizon, "budget": args.budget, "time": args.time},
                args.seed)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``chaosgrad advise``."""
    p.add_argument("target", help="registered system (or prefix), path/to/file.py:attr or "
                   "package.module:attr (a System instance, subclass or zero-argument factory)")
    p.add_argument("--regime", default=None, help="named regime of a registered system")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor override, repeatable (e.g. --set r=3.7)")
    p.add_argument("--theta", nargs="+", type=float, default=None,
                   help="parameters (default: the system's init_params)")
    p.add_argument("--horizon", type=int, default=None, help="T (default: the system's horizon)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=int, default=None, help="simulated steps to spend")
    budget.add_argument("--time", type=float, default=None, help="seconds to spend")
    p.add_argument("--out", default="results", help="results directory (default: results)")
    p.add_argument("--seed", type=int, default=0)


def command_line(args: argparse.Namespace) -> list[str]:
    """The ``chaosgrad advise`` command that reproduces ``args`` (recorded in the store)."""
    argv = ["chaosgrad", "advise", args.target]
    if args.regime is not None:
        argv += ["--regime", args.regime]
    for item in args.set:
        argv += ["--set", item]
    if args.theta is not None:
        argv += ["--theta", *map(repr, args.theta)]
    for flag, value in (("--horizon", args.horizon), ("--budget", args.budget),
                        ("--time", args.time)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + ["--out", str(args.out), "--seed", str(args.seed)]


def main(args: argparse.Namespace) -> int:
    """``chaosgrad advise``: check the system, measure, print and store the advice."""
    if args.seed < 0:
        raise ValueError(f"seed must be >= 0, got {args.seed}")
    system = load_target(args.target, regime=args.regime, overrides=parse_overrides(args.set))
    theta = None if args.theta is None else torch.tensor(args.theta, dtype=F64)
    advice = advise(system, theta, horizon=args.horizon, budget_steps=args.budget,
                    time_limit=args.time, seed=args.seed)
    print(format_advice(advice))
    with ResultsStore(args.out) as store:
        store.log_run(command_line(args))
        cell = _cell(advice, args)
        store.put(cell, asdict(advice), steps=advice.steps_used, seconds=advice.seconds)
    plain = args.regime is not None and not args.set and args.theta is None
    plot(advice, args.out, args.regime if plain else cell.key[:8])
    try:
        from experiments.report import build_report
    except ImportError:
        build_report = None
    if build_report is not None:
        print(f"report: {build_report(args.out)}")
    return 0

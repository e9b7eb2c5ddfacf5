"""Chaos report of every registered system: Lyapunov exponents and BPTT gradient spread per regime.

For each system and each regime in its ``regimes`` (constructor settings), at theta =
``init_params`` in float64:

* the leading finite-time Lyapunov exponent lambda_1 (QR/Benettin with step Jacobians,
  `systems.lyapunov_exponents`) per step, its standard error over trajectories, and per second
  where the system has a time step ``dt``;
* the spread of the per-sample pathwise (BPTT, sigma = 0) gradient of the mean per-step loss,
  std = sqrt(tr Cov) over episode keys, at T = 10, 100, 1000 (`estimators.BPTT`), with the
  number of non-finite samples. When a T would cost more than the budget (time or autograd
  memory, measured on a two-step probe) the system's own horizon is used instead, marked
  ``T=<horizon>*``; when even that does not fit, the cell is left empty.

In a chaotic regime lambda_1 > 0 and the std grows like exp(lambda_1 T) (Metz, Freeman,
Schoenholz, Kachman 2021, "Gradients are Not All You Need", arXiv 2111.05803).

    python -m experiments.bench.system_report            # full table (~10 min on 2 CPU cores)
    python -m experiments.bench.system_report --quick    # smoke run (seconds per system)
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field

import torch

import estimators
import systems
from experiments.core.resolve import make_system

__all__ = ["Config", "Row", "run", "format_table", "main"]

F64 = torch.float64


@dataclass(frozen=True)
class Config:
    """Which systems (empty: all registered), the horizons of the BPTT gradient spread, and the
    Lyapunov-exponent settings (steps, burn-in, trajectories)."""

    systems: tuple[str, ...] = ()          # empty: every registered system
    horizons: tuple[int, ...] = (10, 100, 1000)
    lyapunov_steps: int = 2000
    burn_in: int = 1000                    # the double pendulum mixes slowly after release
    trajectories: int = 8
    samples: int = 16                      # episode keys per BPTT std
    seed: int = 0
    cell_seconds: float = 12.0             # budget of one BPTT cell (forward + backward)
    cell_bytes: float = 3e9                # autograd memory budget of one BPTT cell
    lyapunov_seconds: float = 20.0         # budget of one exponent (fewer steps if exceeded)
    device: str = "cpu"


QUICK = dict(horizons=(10, 100), lyapunov_steps=60, burn_in=20, trajectories=4, samples=8,
             cell_seconds=1.0, cell_bytes=2e8, lyapunov_seconds=1.0)


@dataclass
class Row:
    """One (system, regime): its constructor arguments, leading Lyapunov exponent with standard
    error, and the BPTT gradient's spread at each horizon."""

    system: str
    regime: str
    kwargs: dict
    dt: float | None
    lyapunov_steps: tuple[int, int]                  # (burn-in, accumulated) steps used
    lambda_step: float
    lambda_se: float
    lambda_time: float | None
    grad_std: dict = field(default_factory=dict)     # requested T -> (T used, std, nonfinite)
    seconds: float = 0.0


def _probe(system, theta: torch.Tensor, n: int) -> tuple[float, float]:
    """Seconds and autograd bytes per step of an n-row unroll (two steps, with grad)."""
    saved = 0

    def pack(x):
        nonlocal saved
        saved += x.numel() * x.element_size()
        return x

    rows = theta.expand(n, -1).clone().requires_grad_()
    keys = torch.arange(n, dtype=torch.int64, device=theta.device)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        state = system.init_state(rows, keys)
        total = 0.0
        for t in range(2):
            state, loss = system.step(rows, state, torch.full_like(keys, t), keys)
            total = total + loss
    total.sum().backward()
    return (time.perf_counter() - start) / 2, saved / 2


def _fits(T: int, per_step: tuple[float, float], cfg: Config) -> bool:
    seconds, nbytes = per_step
    return T * seconds <= cfg.cell_seconds and T * nbytes <= cfg.cell_bytes


def _lyapunov_steps(system, theta: torch.Tensor, cfg: Config) -> tuple[int, int]:
    """(burn-in, steps) of the configuration, scaled down together to fit the time budget."""
    def probe(steps: int) -> float:
        start = time.perf_counter()
        systems.lyapunov_exponents(system, theta, steps=steps, burn_in=0,
                                   trajectories=cfg.trajectories, seed=cfg.seed)
        return time.perf_counter() - start

    probe(1)  # the first call pays one-off set-up costs
    per_step = probe(3) / 3
    scale = min(1.0, cfg.lyapunov_seconds / (per_step * (cfg.burn_in + cfg.lyapunov_steps)))
    return int(cfg.burn_in * scale), max(3, int(cfg.lyapunov_steps * scale))


def bptt_std(system, theta: torch.Tensor, T: int, cfg: Config) -> tuple[float, int]:
    """sqrt(tr Cov) of the per-key pathwise gradients at horizon T and the non-finite count."""
    est = estimators.BPTT(samples=cfg.samples, horizon=T)
    e, _ = est.estimate(system, theta, est.init(system, theta, seed=cfg.seed))
    if e.samples.shape[0] < 2:
        return math.nan, e.nonfinite
    scale = e.samples.abs().max()  # chaotic gradients reach 1e200: keep their squares finite
    std = (scale * (e.samples / scale).std(0).norm()).item() if scale > 0 else 0.0
    return std, e.nonfinite


def run_one(name: str, regime: str, cfg: Config) -> Row:
    """One system in one regime."""
    kwargs = systems.SYSTEMS.get(name).regimes[regime]
    system = make_system(name, regime)
    theta = system.init_params(dtype=F64, device=cfg.device)
    start = time.perf_counter()
    burn_in, steps = _lyapunov_steps(system, theta, cfg)
    lyap = systems.lyapunov_exponents(system, theta, steps=steps, burn_in=burn_in,
                                      trajectories=cfg.trajectories, seed=cfg.seed)
    dt = getattr(system, "dt", None)
    row = Row(name, regime, dict(kwargs), dt, (burn_in, steps), lyap.per_step.item(),
              lyap.stderr.item(), None if lyap.per_time is None else lyap.per_time.item())
    if system.differentiable:
        per_step = _probe(system, theta, cfg.samples)
        for T in cfg.horizons:
            use = T if _fits(T, per_step, cfg) else system.horizon
            if use != T and (use > T or not _fits(use, per_step, cfg)):
                row.grad_std[T] = None
                continue
            row.grad_std[T] = (use, *bptt_std(system, theta, use, cfg))
    row.seconds = time.perf_counter() - start
    return row


def run(cfg: Config, progress=None) -> list[Row]:
    """Every (system, regime) of ``cfg``; returns one `Row` each."""
    names = list(cfg.systems) or list(systems.available())
    jobs = [(n, r) for n in names for r in systems.SYSTEMS.get(n).regimes]
    rows = []
    for name, regime in jobs:
        rows.append(run_one(name, regime, cfg))
        if progress is not None:
            progress.update(1)
    return rows


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def format_table(rows: list[Row], cfg: Config) -> str:
    """The rows as a text table, with a header that states the settings."""
    head = (f"theta = init_params, float64; lambda_1 over {cfg.lyapunov_steps} steps after "
            f"{cfg.burn_in} burn-in (fewer where marked 'burn+steps'), {cfg.trajectories} "
            f"trajectories (mean +- SE); BPTT std = "
            f"sqrt(tr Cov) of {cfg.samples} per-key pathwise gradients of the mean loss; "
            f"'*' = the system's horizon used instead of T (T too costly); [n] = non-finite samples\n")
    cols = "".join(f"{f'std T={T}':>18s}" for T in cfg.horizons)
    lines = [f"{'system':20s}{'regime':34s}{'lambda_1/step':>32s}{'lambda_1/s':>12s}{cols}{'sec':>6s}"]
    for r in rows:
        lam = f"{r.lambda_step:.4f} +- {r.lambda_se:.4f}"
        if r.lyapunov_steps != (cfg.burn_in, cfg.lyapunov_steps):
            lam += f" ({r.lyapunov_steps[0]}+{r.lyapunov_steps[1]})"
        cells = ""
        for T in cfg.horizons:
            cell = r.grad_std.get(T)
            if cell is None:
                text = "-"
            else:
                used, std, bad = cell
                text = f"{std:.3g}" + (f" [{bad}]" if bad else "") + ("" if used == T else f" T={used}*")
            cells += f"{text:>18s}"
        setting = ",".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r.kwargs.items())
        regime = r.regime + (f" ({setting})" if setting else "")
        lines.append(f"{r.system:20s}{regime[:33]:34s}{lam:>32s}{_fmt(r.lambda_time, '.3f'):>12s}"
                     f"{cells}{r.seconds:6.0f}")
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.bench.system_report [--quick] [SYSTEM ...]``: print the table; exit code."""
    from tqdm import tqdm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", nargs="+", default=[], help="registry names (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = p.parse_args(argv)
    cfg = Config(systems=tuple(args.systems), seed=args.seed, **(QUICK if args.quick else {}))
    names = list(cfg.systems) or list(systems.available())
    total = sum(len(systems.SYSTEMS.get(n).regimes) for n in names)
    with tqdm(total=total, unit="regime", desc="system report", file=sys.stderr) as bar:
        rows = run(cfg, progress=bar)
    print(format_table(rows, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())

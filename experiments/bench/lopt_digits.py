"""Speed of the digits learned-optimizer task: inner steps per second, eager and compiled, and
the wall time of one PES estimate.

    python -m experiments.bench.lopt_digits [--B 64 1024] [--steps 20] [--T 1000] [--K 20]
                                            [--pairs 64] [--threads N] [--no-compile]

Rows:

- inner step: ``system.step`` of `LearnedOptimizerDigits` (the learned optimizer's update of
  the MLP 64-32-10 on a minibatch of 128) on B trajectories at once, ``steps`` times, no
  autograd, eager and through `estimators.rollout.compiled` (timed after its warm-up, whose
  seconds are printed apart); trajectory-steps per second = B * steps / seconds;
- PES estimate: one `estimators.PES` estimate (2 * pairs * K trajectory-steps) at horizon T,
  eager, after `init`; its wall time and trajectory-steps per second.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import estimators
import systems
from estimators.rollout import compiled

__all__ = ["inner_step_rate", "pes_estimate_seconds", "main"]


@torch.no_grad()
def inner_step_rate(system, B: int, steps: int) -> float:
    """Trajectory-steps per second of ``system.step`` on B trajectories (one warm-up step)."""
    theta = system.init_params().expand(B, -1)
    keys = torch.arange(B)
    state = system.init_state(theta, keys)
    state, _ = system.step(theta, state, torch.zeros_like(keys), keys)  # warm-up (and compile)
    start = time.perf_counter()
    for t in range(1, steps + 1):
        state, _ = system.step(theta, state, torch.full_like(keys, t), keys)
    return B * steps / (time.perf_counter() - start)


def pes_estimate_seconds(system, truncation: int, pairs: int, sigma: float = 0.01) -> float:
    """Wall seconds of one PES estimate (after `init`) of ``2 pairs truncation`` steps."""
    pes = estimators.PES(truncation=truncation, pairs=pairs, sigma=sigma)
    theta = system.init_params()
    state = pes.init(system, theta, seed=0)
    start = time.perf_counter()
    pes.estimate(system, theta, state)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Print the inner-step table and the PES estimate cost; exit code 0."""
    p = argparse.ArgumentParser(prog="python -m experiments.bench.lopt_digits",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--B", type=int, nargs="+", default=[64, 1024])
    p.add_argument("--steps", type=int, default=20, help="timed inner steps per batch")
    p.add_argument("--T", type=int, default=1000, help="horizon of the PES estimate")
    p.add_argument("--K", type=int, default=20, help="PES truncation")
    p.add_argument("--pairs", type=int, default=64, help="PES antithetic pairs")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    system = systems.make("learned_optimizer_digits", horizon=a.T)
    print(f"learned_optimizer_digits inner step, {a.steps} steps, {a.threads} threads: "
          f"trajectory-steps/s")
    print(f"{'B':>6s}{'eager':>12s}{'compiled':>12s}{'compile s':>11s}")
    for B in a.B:
        eager = inner_step_rate(system, B, a.steps)
        comp, compile_s = float("nan"), float("nan")
        if not a.no_compile:
            runner = compiled(system)
            comp = inner_step_rate(runner, B, a.steps)
            compile_s = getattr(runner, "compile_seconds", float("nan"))
        print(f"{B:6d}{eager:12.0f}{comp:12.0f}{compile_s:11.1f}")
    seconds = pes_estimate_seconds(system, a.K, a.pairs)
    steps = 2 * a.pairs * a.K
    print(f"\nPES estimate: T = {a.T}, K = {a.K}, {a.pairs} pairs ({steps} trajectory-steps): "
          f"{seconds:.2f} s, {steps / seconds:.0f} trajectory-steps/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

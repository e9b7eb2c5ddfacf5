"""Per-generation overhead of every ask/tell strategy, and of the torch-native estimator math.

    python -m experiments.bench.strategies [--popsize 256] [--dim 1000] [--generations 10]

One generation is ``ask()`` + ``tell(fitness)`` with the fitness given (no rollout): the cost a
strategy adds on top of simulating its P candidates. The torch-native rows do the same work with
the project's estimator functions: draw N = P/2 counter-based perturbations, build the 2N
antithetic rows, and turn given fitness into a gradient (antithetic ES; PES with its accumulated
xi) plus an Adam step. Each row is the mean over ``generations`` after two warm-up generations
(which absorb evosax's jit compile, reported separately).
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

import estimators
from estimators.base import perturbations

__all__ = ["ADAPTERS", "time_strategy", "time_torch_native", "main"]

ADAPTERS = ["cmaes", "cmaes (diagonal)", "evosax:Open_ES", "evosax:PersistentES",
            "evosax:NoiseReuseES", "evosax:SNES", "evosax:Sep_CMA_ES", "evosax:CMA_ES",
            "nevergrad:ParametrizedCMA", "nevergrad:TBPSA", "nevergrad:NGOpt",
            "nevergrad:TwoPointsDE"]


def _make(label: str, popsize: int):
    if label == "cmaes (diagonal)":
        return estimators.make("cmaes", sigma=0.1, popsize=popsize, diagonal_above=0)
    return estimators.make(label, sigma=0.1, popsize=popsize)


def time_strategy(label: str, popsize: int, dim: int, generations: int) -> tuple[float, float]:
    """(seconds per generation, seconds of the first generation, compile included)."""
    fitness = torch.randn(generations + 2, popsize, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    s = _make(label, popsize).init(torch.zeros(dim), seed=0)
    s.ask()
    s.tell(fitness[0])
    first = time.perf_counter() - start
    s.ask()
    s.tell(fitness[1])
    start = time.perf_counter()
    for g in range(generations):
        s.ask()
        s.tell(fitness[g + 2])
    _ = s.mean  # waits for JAX's asynchronous dispatch
    return (time.perf_counter() - start) / generations, first


def time_torch_native(kind: str, popsize: int, dim: int, generations: int) -> float:
    """Seconds per generation of antithetic ES ("es") or PES ("pes") math + an Adam step."""
    n, sigma = popsize // 2, 0.1
    theta = torch.nn.Parameter(torch.zeros(dim))
    opt = torch.optim.Adam([theta], lr=1e-3)
    seed, particle = torch.tensor(0), torch.arange(n)
    xi = torch.zeros(n, dim)
    fitness = torch.randn(generations + 2, popsize, generator=torch.Generator().manual_seed(0))

    def generation(g: int) -> None:
        nonlocal xi
        with torch.no_grad():
            eps = perturbations(seed, particle, g, dim, torch.float32)
            torch.cat([theta + sigma * eps, theta - sigma * eps])  # ask: the [2N, D] rows
            loss_pos, loss_neg = fitness[g].chunk(2)               # tell: the given fitness
            if kind == "pes":
                xi = xi + eps
                grad = estimators.pes_samples(loss_pos, loss_neg, xi, sigma).mean(0)
            else:
                grad = estimators.antithetic_samples(loss_pos, loss_neg, eps, sigma).mean(0)
        theta.grad = grad
        opt.step()

    generation(0)
    generation(1)
    start = time.perf_counter()
    for g in range(generations):
        generation(g + 2)
    return (time.perf_counter() - start) / generations


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.bench.strategies``: print the ask + tell overhead per generation
    of each adapter beside torch-native ES and PES; exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--popsize", type=int, default=256)
    p.add_argument("--dim", type=int, default=1000)
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--adapters", nargs="+", default=ADAPTERS)
    args = p.parse_args(argv)
    P, D, G = args.popsize, args.dim, args.generations
    print(f"ask + tell overhead per generation, P = {P}, D = {D}, mean of {G} generations "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'method':34s}{'ms / generation':>16s}{'first gen (ms)':>16s}")
    for kind, label in (("es", "torch-native antithetic ES + Adam"), ("pes", "torch-native PES + Adam")):
        print(f"{label:34s}{1e3 * time_torch_native(kind, P, D, G):16.2f}{'':>16s}")
    for label in args.adapters:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycma's precision notes at D = 1000
            try:
                per, first = time_strategy(label, P, D, G)
            except ImportError as err:
                print(f"{label:34s}{'not installed: ' + str(err.name):>32s}")
                continue
        print(f"{label:34s}{1e3 * per:16.2f}{1e3 * first:16.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

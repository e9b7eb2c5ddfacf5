"""Backpropagation through the full unroll (the reparameterised / pathwise gradient).

    g = (1/N) sum_i grad_theta L(theta + sigma eps_i; key_i),    eps_i ~ N(0, I)

With sigma = 0 this is the plain pathwise gradient averaged over N episode keys; with sigma > 0
it is an unbiased estimate of grad L_sigma (the reparameterisation trick). In a chaotic system
its variance grows like exp(2 lambda T) (Metz et al. 2021, "Gradients are Not All You Need").

Memory grows like T (autograd keeps every step's intermediates and graph nodes). With
``checkpoint=S`` the unroll is cut into segments of S steps recomputed in the backward pass
(memory ~ T/S boundary states + one segment's graph, for about one extra forward pass; the
gradient is the same). The unroll is `estimators.full_horizon.full_unroll`, shared with
AntitheticES and Mixed.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from systems import System
from systems.validation import check_int

from .base import Estimate, Estimator, finite_estimate
from .full_horizon import checkpointed_unroll, full_unroll, pathwise_samples
from .registry import register

__all__ = ["BPTT", "BPTTState", "pathwise_samples", "checkpointed_unroll"]


class BPTTState(NamedTuple):
    """State of `BPTT` between calls: the seed, the call counter (each call uses fresh keys) and
    the particles it holds (population indices ``particle`` ``[N]`` and the population size)."""

    seed: Tensor        # int64 scalar
    count: Tensor       # int64 scalar, calls so far
    particle: Tensor    # [N] int64 population indices of the samples
    population: Tensor  # int64 scalar, samples in the whole population


@register("bptt")
class BPTT(Estimator):
    """Pathwise gradient through the full horizon, optionally Gaussian-smoothed (sigma).

    ``checkpoint=S`` recomputes S-step segments in the backward pass (memory ~ T/S states
    plus one segment's graph).
    """

    needs_grad = True
    particles_attr = "samples"
    sigma_may_be_zero = True

    def __init__(self, samples: int = 8, sigma: float = 0.0, horizon: int | None = None,
                 checkpoint: int | None = None):
        super().__init__(horizon=horizon, samples=samples, sigma=sigma)
        self.checkpoint = None if checkpoint is None else check_int("checkpoint", checkpoint)

    def init(self, system: System, theta: Tensor, *, seed: int, offset: int = 0,
             population: int | None = None) -> BPTTState:
        seed, particle, population = self.identity(self.check(system, theta), seed, offset,
                                                   population)
        return BPTTState(seed, torch.zeros_like(seed), particle, population)

    def estimate(self, system: System, theta: Tensor, state: BPTTState) -> tuple[Estimate, BPTTState]:
        theta = self.check(system, theta)
        self.particles(state)
        run = full_unroll(system, theta, state, self.sigma, self.horizon_for(system),
                          antithetic=False, pathwise=True, checkpoint=self.checkpoint)
        est = finite_estimate(run.grads, run.losses, run.steps)
        return est, state._replace(count=state.count + 1)

"""Truncated backpropagation through time: the state is detached every K steps.

Each call advances the N particles K steps and returns, per particle, the gradient of that
window's mean per-step loss through the window only. The variance is bounded (at most K
Jacobians are multiplied) but the estimate ignores how theta moved the state before the window:
the short-horizon bias (Wu et al. 2018; on `InfluenceBalancing` it has the wrong sign for K <= 10).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from systems import System

from .base import Estimate, Estimator, episode_keys, finite_estimate
from .full_horizon import pathwise_samples
from .registry import register
from .rollout import detach, stagger_offsets, start_episodes, unroll

__all__ = ["TruncatedBPTT", "TruncatedBPTTState"]


class TruncatedBPTTState(NamedTuple):
    """State of `TruncatedBPTT`: N system states (detached), step index ``t`` ``[N]`` and episode
    counter ``[N]`` of each particle, the seed, the number of calls so far and the samples it
    holds (population indices ``particle`` ``[N]`` and the population size)."""

    system: Any         # N system states
    t: Tensor           # [N] step index in the episode
    episode: Tensor     # [N] episode counter
    seed: Tensor
    count: Tensor
    particle: Tensor    # [N] int64 population indices of the samples
    population: Tensor  # int64 scalar, samples in the whole population


@register("truncated_bptt")
class TruncatedBPTT(Estimator):
    """Backprop through windows of K steps, state detached between windows; biased."""

    online = True
    needs_grad = True
    particles_attr = "samples"

    def __init__(self, truncation: int = 10, samples: int = 8, horizon: int | None = None,
                 stagger: bool = False):
        super().__init__(horizon=horizon, truncation=truncation, samples=samples, stagger=stagger)

    def init(self, system: System, theta: Tensor, *, seed: int, offset: int = 0,
             population: int | None = None) -> TruncatedBPTTState:
        theta = self.check(system, theta)
        T = self.horizon_for(system)
        seed, particle, population = self.identity(theta, seed, offset, population)
        offsets = stagger_offsets(particle, population, T, self.stagger)
        seg = start_episodes(system, theta.expand(particle.shape[0], -1),
                             lambda ep: episode_keys(seed, particle, ep), offsets, T)
        return TruncatedBPTTState(seg.state, seg.t, seg.episode, seed, torch.zeros_like(seed),
                                  particle, population)

    def estimate(self, system: System, theta: Tensor, state: TruncatedBPTTState):
        theta = self.check(system, theta)
        T, K = self.horizon_for(system), self.truncation
        particle = self.particles(state)
        rows = theta.expand(particle.shape[0], -1).clone().requires_grad_()
        with torch.enable_grad():
            seg = unroll(system, rows, state.system, state.t, state.episode,
                         lambda ep: episode_keys(state.seed, particle, ep), K, T)
            losses = (seg.loss_pre + seg.loss_post) / K
            samples = pathwise_samples(losses, rows)
        est = finite_estimate(samples.detach(), losses.detach(), particle.shape[0] * K)
        return est, state._replace(system=detach(seg.state), t=seg.t, episode=seg.episode,
                                   count=state.count + 1)

"""Truncated ES: antithetic ES on each window of K steps from a shared state.

Each call draws eps_i, starts both members of pair i from particle i's state, advances them K
steps and returns eps_i (L_w(+) - L_w(-)) / (2 sigma) with L_w the window's mean per-step loss.
The particle then continues from the positive member's state. Like TruncatedBPTT it ignores the
effect of theta on the state before the window, so it is biased. ``shaping`` shapes the 2N
member losses of the window first (`estimators.shaping`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from systems import System, tree_cat, tree_index

from .antithetic_es import antithetic_samples
from .base import Estimate, Estimator, episode_keys, finite_estimate, perturbations
from .registry import register
from .shaping import check_shaping, shape_losses
from .rollout import antithetic_rows, stagger_offsets, start_episodes, unroll

__all__ = ["TruncatedES", "TruncatedESState"]


class TruncatedESState(NamedTuple):
    """State of `TruncatedES`: one shared system state per pair, step index ``t`` ``[N]`` and
    episode counter ``[N]``, the seed, the number of windows so far and the pairs it holds
    (population indices ``particle`` ``[N]`` and the population size)."""

    system: Any         # N shared states (one per pair)
    t: Tensor           # [N]
    episode: Tensor     # [N]
    seed: Tensor
    count: Tensor
    particle: Tensor    # [N] int64 population indices of the pairs
    population: Tensor  # int64 scalar, pairs in the whole population


@register("truncated_es")
class TruncatedES(Estimator):
    """Antithetic ES per window of K steps, both members from a shared state; biased.

    ``shaping`` (None, ``"std"``, ``"ranks"``): fitness shaping of the window's member losses
    (`estimators.shaping.shape_losses`).
    """

    online = True

    def __init__(self, truncation: int = 10, pairs: int = 8, sigma: float = 0.1,
                 horizon: int | None = None, stagger: bool = False,
                 shaping: str | None = None):
        super().__init__(horizon=horizon, truncation=truncation, pairs=pairs, sigma=sigma,
                         stagger=stagger)
        self.shaping = check_shaping(shaping)

    def init(self, system: System, theta: Tensor, *, seed: int, offset: int = 0,
             population: int | None = None) -> TruncatedESState:
        theta = self.check(system, theta)
        T = self.horizon_for(system)
        seed, particle, population = self.identity(theta, seed, offset, population)
        offsets = stagger_offsets(particle, population, T, self.stagger)
        seg = start_episodes(system, theta.expand(particle.shape[0], -1),
                             lambda ep: episode_keys(seed, particle, ep), offsets, T)
        return TruncatedESState(seg.state, seg.t, seg.episode, seed, torch.zeros_like(seed),
                                particle, population)

    @torch.no_grad()
    def estimate(self, system: System, theta: Tensor, state: TruncatedESState):
        theta = self.check(system, theta)
        T, K = self.horizon_for(system), self.truncation
        particle = self.particles(state)
        N = particle.shape[0]
        eps = perturbations(state.seed, particle, state.count, system.param_dim, theta.dtype)
        pair = particle.repeat(2)
        seg = unroll(system, antithetic_rows(theta, eps, self.sigma),
                     tree_cat([state.system, state.system]), state.t.repeat(2),
                     state.episode.repeat(2), lambda ep: episode_keys(state.seed, pair, ep), K, T)
        loss_pos, loss_neg = ((seg.loss_pre + seg.loss_post) / K).chunk(2)
        samples = antithetic_samples(*shape_losses(loss_pos, loss_neg, self.shaping), eps,
                                     self.sigma)
        est = finite_estimate(samples, 0.5 * (loss_pos + loss_neg), 2 * N * K)
        nxt = state._replace(system=tree_index(seg.state, slice(0, N)), t=seg.t[:N],
                             episode=seg.episode[:N], count=state.count + 1)
        return est, nxt

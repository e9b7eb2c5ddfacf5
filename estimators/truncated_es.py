"""Truncated ES: antithetic ES on each window of K steps from a shared state.

Each call draws eps_i, starts both members of pair i from particle i's state, advances them K
steps and returns eps_i (L_w(+) - L_w(-)) / (2 sigma) with L_w the window's mean per-step loss.
The particle then continues from the positive member's state. Like TruncatedBPTT it ignores the
effect of theta on the state before the window, so it is biased.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from systems import System, tree_cat, tree_index

from .antithetic_es import antithetic_rows, antithetic_samples
from .base import Estimate, Estimator, _check_int, _check_sigma, episode_keys, finite_estimate, perturbations
from .registry import register
from .rollout import stagger_offsets, start_episodes, unroll

__all__ = ["TruncatedES", "TruncatedESState"]


class TruncatedESState(NamedTuple):
    """State of `TruncatedES`: one shared system state per pair, step index ``t`` ``[N]`` and
    episode counter ``[N]``, the seed and the number of windows so far."""

    system: Any      # N shared states (one per pair)
    t: Tensor        # [N]
    episode: Tensor  # [N]
    seed: Tensor
    count: Tensor


@register("truncated_es")
class TruncatedES(Estimator):
    """Antithetic ES per window of K steps, both members from a shared state; biased."""

    online = True

    def __init__(self, truncation: int = 10, pairs: int = 8, sigma: float = 0.1,
                 horizon: int | None = None, stagger: bool = False):
        super().__init__(horizon=horizon, truncation=truncation)
        self.pairs = _check_int("pairs", pairs)
        self.sigma = _check_sigma(sigma, allow_zero=False)
        self.stagger = bool(stagger)

    def init(self, system: System, theta: Tensor, *, seed: int) -> TruncatedESState:
        theta = self.check(system, theta)
        T, N = self.horizon_for(system), self.pairs
        seed_t = self.seed_tensor(seed, theta)
        particle = torch.arange(N, device=theta.device)
        offsets = stagger_offsets(N, T, self.stagger, theta.device)
        seg = start_episodes(system, theta.expand(N, -1),
                             lambda ep: episode_keys(seed_t, particle, ep), offsets, T)
        return TruncatedESState(seg.state, seg.t, seg.episode, seed_t, torch.zeros_like(seed_t))

    @torch.no_grad()
    def estimate(self, system: System, theta: Tensor, state: TruncatedESState):
        theta = self.check(system, theta)
        T, K, N = self.horizon_for(system), self.truncation, self.pairs
        particle = torch.arange(N, device=theta.device)
        eps = perturbations(state.seed, particle, state.count, system.param_dim, theta.dtype)
        pair = particle.repeat(2)
        seg = unroll(system, antithetic_rows(theta, eps, self.sigma),
                     tree_cat([state.system, state.system]), state.t.repeat(2),
                     state.episode.repeat(2), lambda ep: episode_keys(state.seed, pair, ep), K, T)
        loss_pos, loss_neg = ((seg.loss_pre + seg.loss_post) / K).chunk(2)
        samples = antithetic_samples(loss_pos, loss_neg, eps, self.sigma)
        est = finite_estimate(samples, 0.5 * (loss_pos + loss_neg), 2 * N * K)
        nxt = TruncatedESState(tree_index(seg.state, slice(0, N)), seg.t[:N], seg.episode[:N],
                               state.seed, state.count + 1)
        return est, nxt

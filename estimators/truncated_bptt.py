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

from .base import Estimate, Estimator, _check_int, episode_keys, finite_estimate
from .bptt import pathwise_samples
from .registry import register
from .rollout import detach, stagger_offsets, start_episodes, unroll

__all__ = ["TruncatedBPTT", "TruncatedBPTTState"]


class TruncatedBPTTState(NamedTuple):
    """State of `TruncatedBPTT`: N system states (detached), step index ``t`` ``[N]`` and episode
    counter ``[N]`` of each particle, the seed and the number of calls so far."""

    system: Any      # N system states
    t: Tensor        # [N] step index in the episode
    episode: Tensor  # [N] episode counter
    seed: Tensor
    count: Tensor


@register("truncated_bptt")
class TruncatedBPTT(Estimator):
    """Backprop through windows of K steps, state detached between windows; biased."""

    online = True
    needs_grad = True

    def __init__(self, truncation: int = 10, samples: int = 8, horizon: int | None = None,
                 stagger: bool = False):
        super().__init__(horizon=horizon, truncation=truncation)
        self.samples = _check_int("samples", samples)
        self.stagger = bool(stagger)

    def _keys(self, seed: Tensor, n: int):
        particle = torch.arange(n, device=seed.device)
        return lambda episode: episode_keys(seed, particle, episode)

    def init(self, system: System, theta: Tensor, *, seed: int) -> TruncatedBPTTState:
        theta = self.check(system, theta)
        T, N = self.horizon_for(system), self.samples
        seed_t = self.seed_tensor(seed, theta)
        offsets = stagger_offsets(N, T, self.stagger, theta.device)
        seg = start_episodes(system, theta.expand(N, -1), self._keys(seed_t, N), offsets, T)
        return TruncatedBPTTState(seg.state, seg.t, seg.episode, seed_t, torch.zeros_like(seed_t))

    def estimate(self, system: System, theta: Tensor, state: TruncatedBPTTState):
        theta = self.check(system, theta)
        T, K, N = self.horizon_for(system), self.truncation, self.samples
        rows = theta.expand(N, -1).clone().requires_grad_()
        with torch.enable_grad():
            seg = unroll(system, rows, state.system, state.t, state.episode,
                         self._keys(state.seed, N), K, T)
            losses = (seg.loss_pre + seg.loss_post) / K
            samples = pathwise_samples(losses, rows)
        est = finite_estimate(samples.detach(), losses.detach(), N * K)
        return est, TruncatedBPTTState(detach(seg.state), seg.t, seg.episode, state.seed, state.count + 1)

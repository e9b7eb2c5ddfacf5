"""Persistent evolution strategies (Vicol, Metz, Sohl-Dickstein, ICML 2021, arXiv 2112.13835).

Each antithetic pair keeps its +/- states across windows and accumulates the perturbations they
have seen in the current episode. At each window draw eps_i and

    xi_i <- xi_i + eps_i,
    g = (1/(2 N sigma)) sum_i xi_i [L_w(theta + sigma eps_i) - L_w(theta - sigma eps_i)],

where L_w is the window's mean per-step loss. xi and the states are reset when an episode ends
(if that happens inside a window, the new episode's part is weighted by eps_i alone). Summed over
an episode's windows, the estimate is unbiased for the gradient of the full unroll's smoothed loss,
smoothed over independent per-window perturbations theta + sigma eps_w (for a loss quadratic in
theta that equals grad L_sigma).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .antithetic_es import antithetic_samples
from .base import perturbations
from .online_es import Directions, OnlineES
from .registry import register
from .rollout import Segment

__all__ = ["PES", "PESState", "pes_samples"]


class PESState(NamedTuple):
    """State of `PES`: the 2N member states (+ then -), step index ``t`` ``[N]`` and episode
    counter ``[N]`` per pair, accumulated perturbations ``xi`` ``[N, D]``, the seed, the
    window count (which selects each window's eps) and the pairs it holds (population
    indices ``particle`` ``[N]`` and the population size)."""

    system: Any         # 2N states: the + members, then the - members
    t: Tensor           # [N] step index in the episode (shared by a pair)
    episode: Tensor     # [N] episode counter
    xi: Tensor          # [N, D] perturbations accumulated in the current episode
    seed: Tensor
    count: Tensor       # windows so far (selects each window's eps)
    particle: Tensor    # [N] int64 population indices of the pairs
    population: Tensor  # int64 scalar, pairs in the whole population


def pes_samples(loss_pos: Tensor, loss_neg: Tensor, xi: Tensor, sigma: float) -> Tensor:
    """PES contributions ``xi_i (L+_i - L-_i) / (2 sigma)`` ``[N, D]`` (xi already includes eps):
    `antithetic_samples` with the accumulated xi as the direction."""
    return antithetic_samples(loss_pos, loss_neg, xi, sigma)


@register("pes")
class PES(OnlineES):
    """Persistent ES: online, unbiased for the full unroll, accumulates perturbations."""

    def burn_in_directions(self, seed, particle, dim, dtype) -> Tensor:
        return perturbations(seed, particle, 0, dim, dtype)

    def new_state(self, seg: Segment, eps: Tensor, offsets: Tensor, identity) -> PESState:
        seed, particle, population = identity
        n = offsets.shape[0]
        xi = torch.where((offsets > 0)[:, None], eps, torch.zeros_like(eps))
        return PESState(seg.state, seg.t[:n], seg.episode[:n], xi, seed, torch.ones_like(seed),
                        particle, population)

    def directions(self, state: PESState, particle, dim, dtype) -> Directions:
        eps = perturbations(state.seed, particle, state.count, dim, dtype)
        return Directions(eps, eps, state.xi + eps, eps)

    def next_state(self, state: PESState, seg: Segment, dirs: Directions) -> PESState:
        n = state.t.shape[0]
        xi = torch.where(seg.reset[:n, None], dirs.eps, dirs.w_pre)
        return state._replace(system=seg.state, t=seg.t[:n], episode=seg.episode[:n], xi=xi,
                              count=state.count + 1)

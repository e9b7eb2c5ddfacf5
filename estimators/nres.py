"""Noise-reuse evolution strategies (Li, Vicol, et al., NeurIPS 2023, arXiv 2304.12180).

Each antithetic pair draws one eps_i per episode and reuses it in every window of that episode:

    g = (1/(2 N sigma)) sum_i eps_i [L_w(theta + sigma eps_i) - L_w(theta - sigma eps_i)].

Because the perturbation is constant over the episode, the windows' estimates sum to the full
antithetic-ES estimate of the episode: unbiased for grad L_sigma, with variance no larger than
PES's under the paper's assumptions. eps_i is a function of (seed, pair, episode counter), so
the state carries no accumulator. Online use staggers the pairs' episode offsets (stagger=True).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .base import perturbations
from .online_es import Directions, OnlineES
from .registry import register
from .rollout import Segment

__all__ = ["NRES", "NRESState"]


class NRESState(NamedTuple):
    """State of `NRES`: the 2N member states (+ then -), step index ``t`` ``[N]`` and episode
    counter ``[N]`` per pair (which selects the episode's eps), the seed, the window count and
    the pairs it holds (population indices ``particle`` ``[N]`` and the population size)."""

    system: Any         # 2N states: the + members, then the - members
    t: Tensor           # [N]
    episode: Tensor     # [N] episode counter (selects the episode's eps)
    seed: Tensor
    count: Tensor       # windows so far
    particle: Tensor    # [N] int64 population indices of the pairs
    population: Tensor  # int64 scalar, pairs in the whole population


@register("nres")
class NRES(OnlineES):
    """Noise-reuse ES: online, one perturbation per episode, unbiased for grad L_sigma."""

    def burn_in_directions(self, seed, particle, dim, dtype) -> Tensor:
        return perturbations(seed, particle, 0, dim, dtype)

    def new_state(self, seg: Segment, eps: Tensor, offsets: Tensor, identity) -> NRESState:
        seed, particle, population = identity
        n = offsets.shape[0]
        return NRESState(seg.state, seg.t[:n], seg.episode[:n], seed, torch.zeros_like(seed),
                         particle, population)

    def directions(self, state: NRESState, particle, dim, dtype) -> Directions:
        eps = perturbations(state.seed, particle, state.episode, dim, dtype)
        eps_next = perturbations(state.seed, particle, state.episode + 1, dim, dtype)
        return Directions(eps, eps_next, eps, eps_next)

    def next_state(self, state: NRESState, seg: Segment, dirs: Directions) -> NRESState:
        n = state.t.shape[0]
        return state._replace(system=seg.state, t=seg.t[:n], episode=seg.episode[:n],
                              count=state.count + 1)

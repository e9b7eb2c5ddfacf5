"""Machinery shared by the online antithetic estimators whose pairs keep their own states (PES, NRES).

Each of the N pairs holds a + state and a - state that persist across windows. A window applies
theta + sigma eps_i to the + member and theta - sigma eps_i to the - member for K steps. If a pair's
episode ends inside the window, the rest of the window belongs to a new episode, started with
perturbation eps'_i; the two parts are weighted separately:

    sample_i = (1/(2 sigma)) [ w_i (L_pre(+) - L_pre(-)) + w'_i (L_post(+) - L_post(-)) ]

where L_pre, L_post are the parts' summed losses divided by K. PES and NRES differ only in
eps, eps', w, w' and in what they carry to the next window. With ``shaping`` the parts are
shaped first (`estimators.shaping.shape_split`; a window without a restart is shaped exactly as
`shape_losses` shapes its 2N member losses).
"""
from __future__ import annotations

import abc
from typing import Any, NamedTuple

import torch
from torch import Tensor

from systems import System

from .antithetic_es import antithetic_samples
from .base import Estimate, Estimator, episode_keys, finite_estimate
from .rollout import Segment, antithetic_rows, stagger_offsets, start_episodes, unroll
from .shaping import check_shaping, shape_split

__all__ = ["OnlineES", "Directions", "split_window_samples"]


class Directions(NamedTuple):
    """Perturbations and weights of one window, each ``[N, D]``."""

    eps: Tensor       # applied until an episode restart
    eps_next: Tensor  # applied after it
    w_pre: Tensor     # weight of the loss difference before the restart
    w_post: Tensor    # weight after it


def split_window_samples(pre_pos: Tensor, pre_neg: Tensor, w_pre: Tensor, post_pos: Tensor,
                         post_neg: Tensor, w_post: Tensor, sigma: float) -> Tensor:
    """``[N, D]``: w (L_pre+ - L_pre-)/(2 sigma) + w' (L_post+ - L_post-)/(2 sigma)."""
    return (antithetic_samples(pre_pos, pre_neg, w_pre, sigma)
            + antithetic_samples(post_pos, post_neg, w_post, sigma))


class OnlineES(Estimator):
    """Base of PES and NRES: N antithetic pairs with persistent +/- states, K steps per call.

    ``shaping`` (None, ``"std"``, ``"ranks"``): fitness shaping of the window's member losses
    (`estimators.shaping`); a shaped estimate is not unbiased.
    """

    online = True

    def __init__(self, truncation: int = 10, pairs: int = 8, sigma: float = 0.1,
                 horizon: int | None = None, stagger: bool = False,
                 shaping: str | None = None):
        super().__init__(horizon=horizon, truncation=truncation, pairs=pairs, sigma=sigma,
                         stagger=stagger)
        self.shaping = check_shaping(shaping)

    @abc.abstractmethod
    def burn_in_directions(self, seed: Tensor, particle: Tensor, dim: int, dtype) -> Tensor:
        """``[N, D]`` perturbation applied during the staggered burn-in."""

    @abc.abstractmethod
    def new_state(self, seg: Segment, eps: Tensor, offsets: Tensor,
                  identity: tuple[Tensor, Tensor, Tensor]) -> Any:
        """The state after `init` (``seg`` covers the 2N rows, ``eps`` the burn-in directions,
        ``identity`` is ``(seed, particle, population)``)."""

    @abc.abstractmethod
    def directions(self, state: Any, particle: Tensor, dim: int, dtype) -> Directions:
        """This window's perturbations and weights (``particle``: population indices ``[N]``)."""

    @abc.abstractmethod
    def next_state(self, state: Any, seg: Segment, dirs: Directions) -> Any:
        """The state after a window (``seg`` covers the 2N rows)."""

    @staticmethod
    def _keys(seed: Tensor, particle: Tensor):
        pair = particle.repeat(2)
        return lambda episode: episode_keys(seed, pair, episode)

    def init(self, system: System, theta: Tensor, *, seed: int, offset: int = 0,
             population: int | None = None):
        theta = self.check(system, theta)
        T = self.horizon_for(system)
        identity = self.identity(theta, seed, offset, population)
        seed, particle, population = identity
        eps = self.burn_in_directions(seed, particle, system.param_dim, theta.dtype)
        offsets = stagger_offsets(particle, population, T, self.stagger)
        seg = start_episodes(system, antithetic_rows(theta, eps, self.sigma),
                             self._keys(seed, particle), offsets.repeat(2), T)
        return self.new_state(seg, eps, offsets, identity)

    @torch.no_grad()
    def estimate(self, system: System, theta: Tensor, state) -> tuple[Estimate, Any]:
        theta = self.check(system, theta)
        T, K = self.horizon_for(system), self.truncation
        particle = self.particles(state)
        dirs = self.directions(state, particle, system.param_dim, theta.dtype)
        rows = antithetic_rows(theta, dirs.eps, self.sigma)
        rows_next = rows if dirs.eps_next is dirs.eps else antithetic_rows(theta, dirs.eps_next, self.sigma)
        seg = unroll(system, rows, state.system, state.t.repeat(2), state.episode.repeat(2),
                     self._keys(state.seed, particle), K, T, theta_next=rows_next)
        pre_pos, pre_neg = (seg.loss_pre / K).chunk(2)
        post_pos, post_neg = (seg.loss_post / K).chunk(2)
        losses = 0.5 * (pre_pos + pre_neg + post_pos + post_neg)
        pre_steps = (T - state.t).clamp(max=K)  # a pair restarts after T - t steps
        pre_pos, pre_neg, post_pos, post_neg = shape_split(pre_pos, pre_neg, post_pos, post_neg,
                                                           pre_steps, K, self.shaping)
        samples = split_window_samples(pre_pos, pre_neg, dirs.w_pre, post_pos, post_neg,
                                       dirs.w_post, self.sigma)
        steps = 2 * particle.shape[0] * K
        return finite_estimate(samples, losses, steps), self.next_state(state, seg, dirs)

"""Antithetic evolution strategies on the full horizon (Salimans et al. 2017).

    g = (1/(2 N sigma)) sum_i eps_i [L(theta + sigma eps_i; key_i) - L(theta - sigma eps_i; key_i)]

An unbiased estimate of grad L_sigma that needs only loss values; both members of a pair share
the episode key (common random numbers), which removes the system noise from the difference.
With ``shaping="std"`` or ``"ranks"`` the 2N member losses are shaped first
(`estimators.shaping`), which makes the estimate scale-free and robust but no longer unbiased.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from systems import System

from .base import Estimate, Estimator, finite_estimate
from .full_horizon import full_unroll
from .registry import register
from .shaping import check_shaping, shape_losses

__all__ = ["AntitheticES", "AntitheticESState", "antithetic_samples"]


class AntitheticESState(NamedTuple):
    """State of `AntitheticES` between calls: the seed, the call counter (each call uses fresh
    perturbations and keys) and the pairs it holds (population indices ``particle`` ``[N]`` and
    the population size)."""

    seed: Tensor        # int64 scalar
    count: Tensor       # int64 scalar, calls so far
    particle: Tensor    # [N] int64 population indices of the pairs
    population: Tensor  # int64 scalar, pairs in the whole population


def antithetic_samples(loss_pos: Tensor, loss_neg: Tensor, eps: Tensor, sigma: float) -> Tensor:
    """Per-pair contributions ``eps_i (L+_i - L-_i) / (2 sigma)``, ``[N, D]``.

    Args:
        loss_pos: ``[N]`` losses at theta + sigma eps_i.
        loss_neg: ``[N]`` losses at theta - sigma eps_i.
        eps: ``[N, D]`` directions (PES passes its accumulated xi here).
        sigma: the perturbation scale.
    Returns:
        ``[N, D]``; their mean is the antithetic ES gradient.
    """
    return eps * ((loss_pos - loss_neg) / (2.0 * sigma)).unsqueeze(-1)


@register("antithetic_es")
class AntitheticES(Estimator):
    """Antithetic ES on full unrolls; unbiased for grad L_sigma, no backprop.

    ``shaping`` (None, ``"std"``, ``"ranks"``): fitness shaping of the member losses
    (`estimators.shaping.shape_losses`); a shaped estimate is not unbiased for grad L_sigma.
    """

    def __init__(self, pairs: int = 8, sigma: float = 0.1, horizon: int | None = None,
                 shaping: str | None = None):
        super().__init__(horizon=horizon, pairs=pairs, sigma=sigma)
        self.shaping = check_shaping(shaping)

    def init(self, system: System, theta: Tensor, *, seed: int, offset: int = 0,
             population: int | None = None) -> AntitheticESState:
        seed, particle, population = self.identity(self.check(system, theta), seed, offset,
                                                   population)
        return AntitheticESState(seed, torch.zeros_like(seed), particle, population)

    def estimate(self, system: System, theta: Tensor,
                 state: AntitheticESState) -> tuple[Estimate, AntitheticESState]:
        theta = self.check(system, theta)
        self.particles(state)
        run = full_unroll(system, theta, state, self.sigma, self.horizon_for(system),
                          antithetic=True)
        loss_pos, loss_neg = run.losses.chunk(2)
        samples = antithetic_samples(*shape_losses(loss_pos, loss_neg, self.shaping), run.eps,
                                     self.sigma)
        est = finite_estimate(samples, 0.5 * (loss_pos + loss_neg), run.steps)
        return est, state._replace(count=state.count + 1)

"""Antithetic evolution strategies on the full horizon (Salimans et al. 2017).

    g = (1/(2 N sigma)) sum_i eps_i [L(theta + sigma eps_i; key_i) - L(theta - sigma eps_i; key_i)]

An unbiased estimate of grad L_sigma that needs only loss values; both members of a pair share
the episode key (common random numbers), which removes the system noise from the difference.
"""
from __future__ import annotations

import torch
from torch import Tensor

from systems import System

from .base import Estimate, Estimator, _check_int, _check_sigma, episode_keys, finite_estimate, perturbations
from .bptt import BPTTState
from .registry import register
from .rollout import unroll

__all__ = ["AntitheticES", "antithetic_samples"]


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


def antithetic_rows(theta: Tensor, eps: Tensor, sigma: float) -> Tensor:
    """``[2N, D]``: theta + sigma eps stacked over theta - sigma eps."""
    return torch.cat([theta + sigma * eps, theta - sigma * eps])


@register("antithetic_es")
class AntitheticES(Estimator):
    """Antithetic ES on full unrolls; unbiased for grad L_sigma, no backprop."""

    def __init__(self, pairs: int = 8, sigma: float = 0.1, horizon: int | None = None):
        super().__init__(horizon=horizon)
        self.pairs = _check_int("pairs", pairs)
        self.sigma = _check_sigma(sigma, allow_zero=False)

    def init(self, system: System, theta: Tensor, *, seed: int) -> BPTTState:
        theta = self.check(system, theta)
        zero = torch.zeros((), dtype=torch.int64, device=theta.device)
        return BPTTState(self.seed_tensor(seed, theta), zero)

    @torch.no_grad()
    def estimate(self, system: System, theta: Tensor, state: BPTTState) -> tuple[Estimate, BPTTState]:
        theta = self.check(system, theta)
        T, N = self.horizon_for(system), self.pairs
        particle = torch.arange(N, device=theta.device).repeat(2)
        keys = episode_keys(state.seed, particle, state.count.expand(2 * N))
        eps = perturbations(state.seed, particle[:N], state.count, system.param_dim, theta.dtype)
        rows = antithetic_rows(theta, eps, self.sigma)
        seg = unroll(system, rows, system.init_state(rows, keys), torch.zeros_like(particle),
                     state.count.expand(2 * N), lambda _: keys, T, T)
        loss_pos, loss_neg = (seg.loss_pre / T).chunk(2)
        samples = antithetic_samples(loss_pos, loss_neg, eps, self.sigma)
        est = finite_estimate(samples, 0.5 * (loss_pos + loss_neg), 2 * N * T)
        return est, state._replace(count=state.count + 1)

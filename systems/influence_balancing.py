"""Influence balancing: the PES paper's test of truncation bias (Vicol et al., ICML 2021).

    s_0     = (1, ..., 1) in R^23
    s_{t+1} = A s_t + theta v,   A = 0.5 on the diagonal and the superdiagonal,
    v       = (+1 x 10, -1 x 13)
    l_t     = 0.5 (s_{t+1}[0] - 1)^2

The sensitivity after k steps from a fixed state is ds_k[0]/dtheta = sum_{j<k} (A^j v)[0], which
is +1 at k = 1 and +10 at k = 10 (the first ten entries of v are +1), while the steady state has
ds[0]/dtheta = ((I - A)^{-1} v)[0] = 2 * (10 - 13) = -6. So the long-horizon optimum is
theta = -1/6 (the optimum of a finite episode, `exact_optimum`, tends to it), but truncated backprop with K <= 10 sees the opposite sign and pushes theta away
from it. Deterministic: the episode keys are unused. Episodes are long (``horizon``, default
1000) to stand for "no episode end". Parameters: ``theta0`` (starting theta, 0.5), ``horizon``,
``n_positive`` (entries of v equal to +1, 10). One regime, ``"regular"``: the map is linear with
every Lyapunov exponent ln 0.5; the difficulty is truncation bias, not chaos.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import System
from .registry import register

__all__ = ["InfluenceBalancing"]


@register("influence_balancing")
class InfluenceBalancing(System):
    """PES paper's truncation-bias test: TBPTT with K <= 10 moves theta the wrong way."""

    param_dim = 1
    state_dim = 23
    optimum = -1.0 / 6.0

    def __init__(self, theta0: float = 0.5, horizon: int = 1000, n_positive: int = 10):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not 0 <= n_positive <= self.state_dim:
            raise ValueError(f"n_positive must be in [0, 23], got {n_positive}")
        self.theta0, self.horizon, self.n_positive = float(theta0), horizon, n_positive

    def exact_optimum(self, horizon: int | None = None) -> float:
        """The minimiser of the mean loss over one episode of ``horizon`` steps (float64).

        s_t[0] = a_t + b_t theta is affine in theta, so the optimum is
        -sum_t b_t (a_t - 1) / sum_t b_t^2; it tends to -1/6 as the horizon grows
        (-0.1465 at T = 1000, -0.1645 at T = 10,000) because the transient from s_0 fades.
        """
        a = torch.ones(self.state_dim, dtype=torch.float64)
        b = torch.zeros_like(a)
        v = self._v(a)
        num = den = 0.0
        for _ in range(horizon or self.horizon):
            a = 0.5 * (a + torch.cat([a[1:], a.new_zeros(1)]))
            b = 0.5 * (b + torch.cat([b[1:], b.new_zeros(1)])) + v
            num, den = num + float(b[0] * (a[0] - 1)), den + float(b[0] ** 2)
        return -num / den

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        return torch.tensor([self.theta0], dtype=dtype, device=device)

    def _v(self, like: Tensor) -> Tensor:
        v = -torch.ones(self.state_dim, dtype=like.dtype, device=like.device)
        v[: self.n_positive] = 1.0
        return v

    def init_state(self, theta: Tensor, keys: Tensor) -> Tensor:
        return torch.ones(theta.shape[0], self.state_dim, dtype=theta.dtype, device=theta.device)

    def step(self, theta: Tensor, state: Tensor, t: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        shifted = torch.cat([state[:, 1:], torch.zeros_like(state[:, :1])], dim=1)
        nxt = 0.5 * (state + shifted) + theta[:, :1] * self._v(theta)
        return nxt, 0.5 * (nxt[:, 0] - 1.0) ** 2

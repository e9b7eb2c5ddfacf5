"""A linear-Gaussian system with a quadratic loss: the exact reference for every estimator.

    s_0     = m_0 + init_std * z_0(key)
    s_{t+1} = A s_t + B theta + noise_std * w_t(key, t)
    l_t     = 0.5 * || s_{t+1} - g ||^2

A = rho * Q with Q a fixed orthogonal matrix, so the spectral radius is exactly ``rho``
(``spectral_radius``; rho < 1 is stable, rho > 1 makes pathwise gradients explode without chaos).
With M_t = ds_t/dtheta (M_0 = 0, M_{t+1} = A M_t + B) and mu_t = E[s_t],

    grad L(theta) = (1/T) sum_{t=1..T} M_t^T (mu_t - g),

and because L is quadratic in theta, the Gaussian-smoothed loss L_sigma differs from L by a
constant: grad L_sigma = grad L for every sigma.

Parameters: ``state_dim`` (4), ``param_dim`` (3), ``horizon`` (20), ``spectral_radius`` rho,
``noise_std``, ``init_std``, ``matrix_seed`` (fixes Q, B, g). Regimes (``spectral_radius``):
``"regular"`` 0.9 (every Lyapunov exponent is ln 0.9) and ``"unstable"`` 1.1 (ln 1.1 > 0: the
pathwise gradient grows like 1.1^T, exponential growth without chaos). Not from a paper: the
closed-form reference of the estimator tests (any LQ control text).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["LinearQuadratic"]


@register("linear_quadratic")
class LinearQuadratic(System):
    """Linear dynamics, additive Gaussian noise, quadratic loss; closed-form gradient."""

    regimes = {"regular": {"spectral_radius": 0.9}, "unstable": {"spectral_radius": 1.1}}

    def __init__(self, state_dim: int = 4, param_dim: int = 3, horizon: int = 20,
                 spectral_radius: float = 0.9, noise_std: float = 0.1, init_std: float = 0.5,
                 matrix_seed: int = 0):
        if state_dim < 1 or param_dim < 1 or horizon < 1:
            raise ValueError("state_dim, param_dim and horizon must be >= 1")
        if spectral_radius <= 0 or noise_std < 0 or init_std < 0:
            raise ValueError("spectral_radius must be > 0, noise_std and init_std >= 0")
        self.state_dim, self.param_dim, self.horizon = state_dim, param_dim, horizon
        self.spectral_radius, self.noise_std, self.init_std = spectral_radius, noise_std, init_std
        g = torch.Generator().manual_seed(matrix_seed)
        q, _ = torch.linalg.qr(torch.randn(state_dim, state_dim, generator=g, dtype=torch.float64))
        self.A = spectral_radius * q
        self.B = torch.randn(state_dim, param_dim, generator=g, dtype=torch.float64) / param_dim**0.5
        self.goal = torch.randn(state_dim, generator=g, dtype=torch.float64)
        self.mean0 = torch.ones(state_dim, dtype=torch.float64)

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        return torch.zeros(self.param_dim, dtype=dtype, device=device)

    def _m(self, name: str, like: Tensor) -> Tensor:
        return getattr(self, name).to(dtype=like.dtype, device=like.device)

    def init_state(self, theta: Tensor, keys: Tensor) -> Tensor:
        z = noise.normal(keys, 0, stream=0, shape=(self.state_dim,), dtype=theta.dtype)
        return self._m("mean0", theta) + self.init_std * z

    def step(self, theta: Tensor, state: Tensor, t: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        w = noise.normal(keys, t, stream=1, shape=(self.state_dim,), dtype=theta.dtype)
        nxt = state @ self._m("A", theta).T + theta @ self._m("B", theta).T + self.noise_std * w
        loss = 0.5 * ((nxt - self._m("goal", theta)) ** 2).sum(-1)
        return nxt, loss

    def exact_loss(self, theta: Tensor, sigma: float = 0.0, horizon: int | None = None) -> Tensor:
        """E L_sigma(theta) in float64: (1/T) sum_t 0.5 (||mu_t - g||^2 + tr P_t + sigma^2 ||M_t||_F^2)."""
        theta = theta.detach().to(torch.float64).cpu()
        mu, M = self.mean0.clone(), torch.zeros_like(self.B)
        P = self.init_std**2 * torch.eye(self.state_dim, dtype=torch.float64)
        total = torch.zeros((), dtype=torch.float64)
        T = horizon or self.horizon
        for _ in range(T):
            mu = self.A @ mu + self.B @ theta
            M = self.A @ M + self.B
            P = self.A @ P @ self.A.T + self.noise_std**2 * torch.eye(self.state_dim, dtype=torch.float64)
            total = total + 0.5 * (((mu - self.goal) ** 2).sum() + P.trace() + sigma**2 * (M**2).sum())
        return total / T

    def exact_grad(self, theta: Tensor, sigma: float = 0.0, horizon: int | None = None) -> Tensor:
        """grad_theta L_sigma(theta) = (1/T) sum_{t=1..T} M_t^T (mu_t - g), float64 ``[D]``."""
        del sigma  # L is quadratic in theta: smoothing only adds a constant
        theta = theta.detach().to(torch.float64).cpu()
        mu, M = self.mean0.clone(), torch.zeros_like(self.B)
        grad = torch.zeros(self.param_dim, dtype=torch.float64)
        T = horizon or self.horizon
        for _ in range(T):
            mu = self.A @ mu + self.B @ theta
            M = self.A @ M + self.B
            grad = grad + M.T @ (mu - self.goal)
        return grad / T

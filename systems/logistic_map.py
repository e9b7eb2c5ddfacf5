"""The logistic map, the textbook route to chaos.

    x_0     = 0.1 + 0.8 u(key),   u ~ U(0, 1)
    x_{t+1} = r x_t (1 - x_t),     theta = (r,)
    l_t     = x_{t+1}

Regular (a stable cycle) for r <= 3.5, chaotic above r ~ 3.5699 (with periodic windows); at
r = 4 the Lyapunov exponent is ln 2 per step. For r in [0, 4] the state stays in [0, 1]; beyond 4
it escapes and diverges, which the estimators count as non-finite samples. Parameters: ``r``
(the regime, also `init_params`) and ``horizon`` (default 100). Regimes: ``"regular"`` r = 3.2
(attracting 2-cycle, lambda = ln(0.16)/2 = -0.916 per step) and ``"chaotic"`` r = 3.9
(lambda ~ 0.50 per step).
(May 1976, "Simple mathematical models with very complicated dynamics", Nature 261.)
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["LogisticMap"]


@register("logistic_map")
class LogisticMap(System):
    """x <- r x (1 - x), theta = r, loss = mean x_t; chaotic for r > 3.5699."""

    param_dim = 1
    state_dim = 1
    regimes = {"regular": {"r": 3.2}, "chaotic": {"r": 3.9}}

    def __init__(self, r: float = 3.9, horizon: int = 100):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.r, self.horizon = float(r), horizon

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        return torch.tensor([self.r], dtype=dtype, device=device)

    def init_state(self, theta: Tensor, keys: Tensor) -> Tensor:
        return 0.1 + 0.8 * noise.uniform(keys, 0, stream=0, shape=(1,), dtype=theta.dtype)

    def step(self, theta: Tensor, state: Tensor, t: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        nxt = theta[:, :1] * state * (1.0 - state)
        return nxt, nxt[:, 0]

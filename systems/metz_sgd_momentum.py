"""SGD with momentum on Metz's 1-D inner loss: the meta-loss of a learning rate turns chaotic.

Inner problem (Metz, Freeman, Schoenholz, Kachman 2021, "Gradients are Not All You Need",
arXiv 2111.05803, Sec. 3 / Fig. 2):

    f(x)  = log(x^2 + 1 + sin 3x) + 1.5
    f'(x) = (2x + 3 cos 3x) / (x^2 + 1 + sin 3x)        (x^2 + 1 + sin 3x > 0 for every x)

Unroll, with theta = (log eta, logit mu) so any theta is a valid optimizer:

    x_0     = x0 + jitter * z(key),   z ~ N(0, 1),   v_0 = 0
    v_{t+1} = mu v_t + f'(x_t)
    x_{t+1} = x_t - eta v_{t+1}
    l_t     = f(x_{t+1})

The state is (x, v), ``[B, 2]``. With mu = 0.9 and T = 50 the meta-loss (1/T) sum_t l_t is smooth
in log eta for eta < 0.01; for eta > 0.1 the inner iterates bounce chaotically between the
wells of f, and the pathwise gradient of single episodes grows by many orders of magnitude
(exp(lambda T)) while the episode-averaged loss stays bounded (f' is bounded, so x stays
finite). Regimes: ``regular`` (eta = 0.003) and ``chaotic`` (eta = 0.3), both at mu = 0.9.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["MetzSGDMomentum", "inner_loss", "inner_grad"]


def inner_loss(x: Tensor) -> Tensor:
    """f(x) = log(x^2 + 1 + sin 3x) + 1.5, elementwise."""
    return torch.log(x * x + 1.0 + torch.sin(3.0 * x)) + 1.5


def inner_grad(x: Tensor) -> Tensor:
    """f'(x) = (2x + 3 cos 3x) / (x^2 + 1 + sin 3x), elementwise (analytic, no autograd)."""
    return (2.0 * x + 3.0 * torch.cos(3.0 * x)) / (x * x + 1.0 + torch.sin(3.0 * x))


@register("metz_sgd_momentum")
class MetzSGDMomentum(System):
    """SGD+momentum on log(x^2 + 1 + sin 3x); theta = (log lr, logit momentum)."""

    param_dim = 2
    state_dim = 2
    regimes = {"regular": {"learning_rate": 0.003}, "chaotic": {"learning_rate": 0.3}}

    def __init__(self, learning_rate: float = 0.003, momentum: float = 0.9, horizon: int = 50,
                 x0: float = -4.0, jitter: float = 0.1):
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not jitter >= 0 or not math.isfinite(x0):
            raise ValueError(f"jitter must be >= 0 and x0 finite, got {jitter}, {x0}")
        self.learning_rate, self.momentum = float(learning_rate), float(momentum)
        self.horizon, self.x0, self.jitter = horizon, float(x0), float(jitter)

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        """``(log learning_rate, logit momentum)``, ``[2]``."""
        mu = self.momentum
        return torch.tensor([math.log(self.learning_rate), math.log(mu / (1.0 - mu))],
                            dtype=dtype, device=device)

    def init_state(self, theta: Tensor, keys: Tensor) -> Tensor:
        """``[B, 2]`` = (x_0, v_0) with x_0 = x0 + jitter * N(0, 1) from the key."""
        z = noise.normal(keys, 0, stream=0, shape=(), dtype=theta.dtype)
        x = self.x0 + self.jitter * z
        return torch.stack([x, torch.zeros_like(x)], dim=1)

    def step(self, theta: Tensor, state: Tensor, t: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        eta, mu = torch.exp(theta[:, 0]), torch.sigmoid(theta[:, 1])
        x, v = state[:, 0], state[:, 1]
        v = mu * v + inner_grad(x)
        x = x - eta * v
        return torch.stack([x, v], dim=1), inner_loss(x)

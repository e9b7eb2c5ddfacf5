"""Fitting the Lorenz system's parameters to a target trajectory (parameter identification).

The Lorenz (1963) equations, integrated with explicit Euler steps of dt = 0.005:

    dx/dt = sigma (y - x),   dy/dt = x (rho - z) - y,   dz/dt = x y - beta z,   beta = 8/3

theta = (log sigma, log rho). The state holds two trajectories started from the same point: the
model, run with theta, and the target, run with the true parameters (true_sigma, true_rho). The
per-step loss compares their z coordinates after the step,

    l_t = (z_{t+1}(theta) - z*_{t+1})^2,

so L is zero at theta = log(true parameters) (up to the rounding of exp(log(.))).

The common start is c + burn_in Euler steps of the true system from c = (1, 1, 1) + init_std z,
z ~ N(0, I) from the episode key: for true_rho = 28 a random point on the attractor. The
burn-in does not depend on theta. init_params is the truth offset in log space by
``init_offset`` (default (log 0.8, log(25/28)), i.e. (8, 25) at the classic truth).

Regimes: ``"regular"`` (true_rho = 14: two stable fixed points, trajectories spiral in, pathwise
gradients stay bounded in T) and ``"chaotic"`` (the classic (10, 28, 8/3): leading Lyapunov
exponent about 0.9 per time unit, so BPTT gradients grow like exp(0.9 T dt)).
(Lorenz 1963, "Deterministic nonperiodic flow", J. Atmos. Sci. 20; as a gradient-estimation
benchmark: Metz, Freeman, Schoenholz, Kachman 2021, "Gradients are Not All You Need".)
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["LorenzFit", "LorenzState", "lorenz_euler"]

BETA = 8.0 / 3.0


class LorenzState(NamedTuple):
    """Model and target trajectories, each ``[B, 3]`` (x, y, z)."""

    model: Tensor
    target: Tensor


def lorenz_euler(s: Tensor, sigma: Tensor | float, rho: Tensor | float, dt: float) -> Tensor:
    """One Euler step of the Lorenz system, ``s`` ``[B, 3]``, sigma and rho ``[B]`` or floats."""
    x, y, z = s.unbind(-1)
    ds = torch.stack([sigma * (y - x), x * (rho - z) - y, x * y - BETA * z], -1)
    return s + dt * ds


@register("lorenz_fit")
class LorenzFit(System):
    """Fit (log sigma, log rho) of the Lorenz system to a target z trajectory; chaotic at rho = 28."""

    param_dim = 2
    state_dim = 6
    differentiable = True
    regimes = {"regular": {"true_rho": 14.0}, "chaotic": {"true_rho": 28.0}}

    def __init__(self, true_sigma: float = 10.0, true_rho: float = 28.0, horizon: int = 200,
                 init_offset: tuple[float, float] = (math.log(0.8), math.log(25.0 / 28.0)),
                 dt: float = 0.005, burn_in: int = 400, init_std: float = 1.0):
        if not (true_sigma > 0 and true_rho > 0):
            raise ValueError(f"true_sigma and true_rho must be > 0, got {true_sigma}, {true_rho}")
        if horizon < 1 or burn_in < 0:
            raise ValueError(f"horizon must be >= 1 and burn_in >= 0, got {horizon}, {burn_in}")
        if not dt > 0 or init_std < 0:
            raise ValueError(f"dt must be > 0 and init_std >= 0, got {dt}, {init_std}")
        if len(init_offset) != 2:
            raise ValueError(f"init_offset must have 2 entries, got {init_offset}")
        self.true_sigma, self.true_rho, self.horizon = float(true_sigma), float(true_rho), horizon
        self.init_offset = tuple(float(o) for o in init_offset)
        self.dt, self.burn_in, self.init_std = float(dt), burn_in, float(init_std)

    def true_params(self, dtype=torch.float32, device=None) -> Tensor:
        """theta* = (log true_sigma, log true_rho), ``[2]``."""
        return torch.tensor([math.log(self.true_sigma), math.log(self.true_rho)], dtype=dtype,
                            device=device)

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        offset = torch.tensor(self.init_offset, dtype=dtype, device=device)
        return self.true_params(dtype, device) + offset

    def _truth(self, like: Tensor) -> Tensor:
        return self.true_params(like.dtype, like.device).exp()

    def init_state(self, theta: Tensor, keys: Tensor) -> LorenzState:
        z = noise.normal(keys, 0, stream=0, shape=(3,), dtype=theta.dtype)
        s = (1.0 + self.init_std * z).detach()
        sigma, rho = self._truth(theta).unbind()
        for _ in range(self.burn_in):
            s = lorenz_euler(s, sigma, rho, self.dt)
        return LorenzState(s, s)

    def step(self, theta: Tensor, state: LorenzState, t: Tensor,
             keys: Tensor) -> tuple[LorenzState, Tensor]:
        p = theta.exp()
        model = lorenz_euler(state.model, p[:, 0], p[:, 1], self.dt)
        sigma, rho = self._truth(theta).unbind()
        target = lorenz_euler(state.target, sigma, rho, self.dt)
        loss = (model[:, 2] - target[:, 2]) ** 2
        return LorenzState(model, target), loss

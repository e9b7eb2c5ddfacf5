"""The PES paper's toy meta-objective: tuning a learning-rate schedule on a rugged 2-D loss.

Inner loss (Vicol, Metz, Sohl-Dickstein, ICML 2021, "Unbiased Gradient Estimation in Unrolled
Computation Graphs with Persistent Evolution Strategies", arXiv 2112.13835, Sec. 5.1, Fig.
"Meta-optimizing a learning rate schedule"):

    f(x) = sqrt(x0^2 + 5) - sqrt(5) + sin(x1)^2 exp(-5 x0^2) + 0.25 |x1 - 100|
    df/dx0 = x0 / sqrt(x0^2 + 5) - 10 x0 sin(x1)^2 exp(-5 x0^2)
    df/dx1 = sin(2 x1) exp(-5 x0^2) + 0.25 sign(x1 - 100)

Unroll: plain SGD from x_0 = (1, 1) (+ ``jitter`` * N(0, I) from the key; 0 by default, so the
system is deterministic and the keys are unused), for T = ``horizon`` = 100 steps,

    x_{t+1} = x_t - lr_t grad f(x_t),    l_t = f(x_{t+1}),

with the schedule parameterised by theta = (theta_0, theta_1), the initial and final log
learning rates. ``schedule="linear"`` (default, as in the paper's reference code,
google-research/persistent_es) interpolates the learning rates linearly,

    lr_t = (1 - t/T) exp(theta_0) + (t/T) exp(theta_1);

``schedule="log_linear"`` interpolates their logarithms, lr_t = exp((1 - t/T) theta_0 +
(t/T) theta_1). T in the schedule is always the system's ``horizon``. theta starts at (-4, -4).
The meta-loss surface is rugged: the sin(x1)^2 ripples, gated by exp(-5 x0^2), trap short
unrolls, so truncated BPTT (short-horizon bias) stalls while PES reaches the region of large
initial and small final learning rates. At large learning rates (lr_t of several units) the
meta-loss is rugged at every scale: late in the episode the ripple gate opens while lr_t is
still large, and x1 bounces across the kink of |x1 - 100| (a discontinuity of the step in x1),
so near the optimum (2.75, -1.75) the 100-step pathwise gradient is ~1e5 times the slope of
the meta-loss on a 0.25 grid. Not chaotic on average; one regime: ``regular`` (the paper's
setup).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["LRScheduleToy", "inner_loss", "inner_grad"]

_SQRT5 = math.sqrt(5.0)


def inner_loss(x: Tensor) -> Tensor:
    """f(x) for ``x [..., 2]``, returns ``[...]``."""
    x0, x1 = x[..., 0], x[..., 1]
    return (torch.sqrt(x0 * x0 + 5.0) - _SQRT5 + torch.sin(x1) ** 2 * torch.exp(-5.0 * x0 * x0)
            + 0.25 * torch.abs(x1 - 100.0))


def inner_grad(x: Tensor) -> Tensor:
    """grad f(x) for ``x [..., 2]`` (analytic; d|u|/du = sign(u)), returns ``[..., 2]``."""
    x0, x1 = x[..., 0], x[..., 1]
    gate = torch.exp(-5.0 * x0 * x0)
    g0 = x0 / torch.sqrt(x0 * x0 + 5.0) - 10.0 * x0 * torch.sin(x1) ** 2 * gate
    g1 = torch.sin(2.0 * x1) * gate + 0.25 * torch.sign(x1 - 100.0)
    return torch.stack([g0, g1], dim=-1)


@register("lr_schedule_toy")
class LRScheduleToy(System):
    """SGD on the PES paper's rugged 2-D loss; theta = initial and final log learning rates."""

    param_dim = 2
    state_dim = 2
    regimes = {"regular": {}}

    def __init__(self, horizon: int = 100, theta0: tuple[float, float] = (-4.0, -4.0),
                 x0: tuple[float, float] = (1.0, 1.0), schedule: str = "linear",
                 jitter: float = 0.0):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if schedule not in ("linear", "log_linear"):
            raise ValueError(f"schedule must be 'linear' or 'log_linear', got {schedule!r}")
        if not jitter >= 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}")
        if len(theta0) != 2 or len(x0) != 2:
            raise ValueError("theta0 and x0 must have two entries each")
        self.horizon, self.schedule, self.jitter = horizon, schedule, float(jitter)
        self.theta0 = tuple(float(v) for v in theta0)
        self.x0 = tuple(float(v) for v in x0)

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        """``(theta_0, theta_1)`` = initial and final log learning rates, ``[2]``."""
        return torch.tensor(self.theta0, dtype=dtype, device=device)

    def learning_rate(self, theta: Tensor, t: Tensor) -> Tensor:
        """lr_t ``[B]`` for ``theta [B, 2]`` and step indices ``t [B]``."""
        frac = t.to(theta.dtype) / self.horizon
        if self.schedule == "linear":
            return (1.0 - frac) * torch.exp(theta[:, 0]) + frac * torch.exp(theta[:, 1])
        return torch.exp((1.0 - frac) * theta[:, 0] + frac * theta[:, 1])

    def init_state(self, theta: Tensor, keys: Tensor) -> Tensor:
        """``[B, 2]``: x_0 = (1, 1) + jitter * N(0, I)."""
        start = torch.tensor(self.x0, dtype=theta.dtype, device=theta.device)
        x = start.expand(theta.shape[0], 2)
        if self.jitter > 0:
            x = x + self.jitter * noise.normal(keys, 0, stream=0, shape=(2,), dtype=theta.dtype)
        return x.clone()

    def step(self, theta: Tensor, state: Tensor, t: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        x = state - self.learning_rate(theta, t).unsqueeze(-1) * inner_grad(state)
        return x, inner_loss(x)

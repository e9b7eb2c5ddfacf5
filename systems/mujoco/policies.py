"""Policies on the observation: theta is their weights, one policy per row of ``theta [B, D]``.

* `Linear` (the PES and ARS papers' choice): a = W o with W ``[A, O]``, theta = W row-major,
  D = A O, zero-initialised (a = 0 at the start).
* `MLP`: a = W2 tanh(W1 o + b1) + b2 with H hidden units, theta = (W1, b1, W2, b2) flattened
  in that order, D = H O + H + A H + A; W1 starts at N(0, 1 / O) entries drawn from a fixed key
  (`systems.noise`, so every run starts at the same theta), b1, W2, b2 at zero (a = 0 at the
  start, as the linear policy).

Actions are clipped to the actuators' ctrlrange by the system, not here.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import noise

__all__ = ["Policy", "Linear", "MLP", "make_policy", "POLICIES"]

_INIT_KEY, _INIT_STREAM = 0x90C1, 7


class Policy:
    """A map from observations ``[B, O]`` to actions ``[B, A]`` with weights theta ``[B, D]``.

    Attributes:
        obs_dim: O. act_dim: A. param_dim: D.
    """

    obs_dim: int
    act_dim: int
    param_dim: int

    def init_params(self, dtype: torch.dtype, device) -> Tensor:
        """The starting theta ``[D]``."""
        raise NotImplementedError

    def __call__(self, theta: Tensor, obs: Tensor) -> Tensor:
        """Actions ``[B, A]`` of the policies ``theta [B, D]`` at observations ``obs [B, O]``."""
        raise NotImplementedError


class Linear(Policy):
    """a = W o, theta = W ``[A, O]`` row-major, zero-initialised."""

    def __init__(self, obs_dim: int, act_dim: int):
        self.obs_dim, self.act_dim, self.param_dim = obs_dim, act_dim, obs_dim * act_dim

    def init_params(self, dtype, device) -> Tensor:
        return torch.zeros(self.param_dim, dtype=dtype, device=device)

    def __call__(self, theta: Tensor, obs: Tensor) -> Tensor:
        w = theta.reshape(-1, self.act_dim, self.obs_dim)
        return (w @ obs.unsqueeze(-1)).squeeze(-1)


class MLP(Policy):
    """a = W2 tanh(W1 o + b1) + b2 with ``hidden`` units (see the module docstring)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 32):
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be an int >= 1, got {hidden!r}")
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, hidden
        self.param_dim = hidden * obs_dim + hidden + act_dim * hidden + act_dim

    def init_params(self, dtype, device) -> Tensor:
        key = torch.tensor([_INIT_KEY], device=device)
        w1 = noise.normal(key, 0, _INIT_STREAM, (self.hidden * self.obs_dim,), torch.float64)[0]
        rest = torch.zeros(self.param_dim - w1.numel(), dtype=torch.float64, device=device)
        return torch.cat([w1 / math.sqrt(self.obs_dim), rest]).to(dtype)

    def __call__(self, theta: Tensor, obs: Tensor) -> Tensor:
        h, o, a = self.hidden, self.obs_dim, self.act_dim
        w1, b1, w2, b2 = theta.split([h * o, h, a * h, a], dim=1)
        z = torch.tanh((w1.reshape(-1, h, o) @ obs.unsqueeze(-1)).squeeze(-1) + b1)
        return (w2.reshape(-1, a, h) @ z.unsqueeze(-1)).squeeze(-1) + b2


POLICIES = {"linear": Linear, "mlp": MLP}


def make_policy(name: str, obs_dim: int, act_dim: int, hidden: int = 32) -> Policy:
    """The policy called ``name`` (one of `POLICIES`) for these dimensions."""
    if name == "linear":
        return Linear(obs_dim, act_dim)
    if name == "mlp":
        return MLP(obs_dim, act_dim, hidden)
    raise ValueError(f"unknown policy {name!r}; choices: {', '.join(POLICIES)}")

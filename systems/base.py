"""The System contract: an iterated, parameterised, possibly stochastic map.

    s_0 = init(theta, xi_0)
    s_{t+1}, l_t = step(theta, s_t, t, xi_t)        t = 0 .. T-1
    L(theta) = E_xi [ (1/T) * sum_t l_t ]

All randomness is a pure function of each trajectory's episode key and step (see
`systems.noise`), so a trajectory does not depend on what else is in the batch.
"""
from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor

__all__ = ["System"]


class System(abc.ABC):
    """An iterated dynamical system with parameters ``theta`` of dimension ``param_dim``.

    Subclasses set the class or instance attributes below and implement `init_params`,
    `init_state` and `step`. Everything is batched over ``B`` trajectories and runs on whatever
    device and dtype ``theta`` has.

    Attributes:
        name: registry name.
        param_dim: D, the dimension of theta.
        horizon: T, the default number of steps of one episode.
        state_dim: number of state coordinates of one trajectory (for diagnostics).
        differentiable: whether autograd through `step` gives the pathwise gradient.
        nondifferentiable_reason: why not, when ``differentiable`` is False (shown by the
            estimators that need a pathwise gradient and by the advisor), else None.
        smooth: whether the loss is smooth in theta at finite-difference scales, so central
            differences of a short rollout are a 6-digit reference for its gradient (False for
            contact-stiff or piecewise-smooth losses, whose own tests check the gradient
            between the jumps).
        state_dtype: the dtype of the state's floating leaves when the system fixes it
            (MuJoCo's physics is float64 whatever theta's dtype), or None for theta's dtype.
        dt: physical time per step, or None for maps (Lyapunov exponents per unit time).
        regimes: named constructor settings, e.g. ``{"regular": {"r": 3.2}, "chaotic":
            {"r": 3.9}}``, so tests, the CLI and the advisor can move between regimes without
            knowing the system. Every system has at least ``"regular"``.
    """

    name: str = ""
    param_dim: int
    horizon: int
    state_dim: int
    differentiable: bool = True
    nondifferentiable_reason: str | None = None
    smooth: bool = True
    state_dtype: torch.dtype | None = None
    dt: float | None = None
    regimes: dict[str, dict] = {"regular": {}}

    @abc.abstractmethod
    def init_params(self, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
        """A sensible starting theta, ``[D]``."""

    @abc.abstractmethod
    def init_state(self, theta: Tensor, keys: Tensor) -> Any:
        """Initial states for ``B`` episodes.

        Args:
            theta: ``[B, D]`` parameters (the initial state may depend on them).
            keys: ``[B]`` int64 episode keys.
        Returns:
            A tensor or NamedTuple of tensors with leading dimension ``B``.
        """

    @abc.abstractmethod
    def step(self, theta: Tensor, state: Any, t: Tensor, keys: Tensor) -> tuple[Any, Tensor]:
        """Advance every trajectory one step.

        Args:
            theta: ``[B, D]``.
            state: as returned by `init_state` or `step`.
            t: ``[B]`` int64, each trajectory's own step index within its episode.
            keys: ``[B]`` int64 episode keys.
        Returns:
            ``(next_state, loss)`` with ``loss`` of shape ``[B]``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(D={self.param_dim}, T={self.horizon})"

"""A torque-controlled double pendulum: the textbook chaotic mechanical system.

Two point masses m = 1 on massless rods l = 1, gravity g = 9.81, absolute angles q1, q2 from
the downward vertical. With delta = q1 - q2 and joint torques tau1 (shoulder) and tau2 (elbow,
acting on q2 - q1), the generalised forces are Q = (tau1 - tau2, tau2) and

    2 q1'' + cos(delta) q2'' = Q1 / (m l^2) - sin(delta) q2'^2 - 2 (g / l) sin q1
    cos(delta) q1'' + q2''   = Q2 / (m l^2) + sin(delta) q1'^2 -     (g / l) sin q2

(mass matrix determinant 1 + sin^2 delta > 0), integrated with RK4 at dt = 0.01 s, the torque
held constant over a step. The policy is linear in features with a tanh squashing,

    f   = (sin q1, cos q1, sin q2, cos q2, q1', q2', 1)            [7]
    tau = max_torque * tanh(W f),   theta = W.flatten()            W [2, 7], D = 14

so theta = 0 is the free (unforced) pendulum. The per-step loss is minus the tip height after
the step plus a torque cost, l_t = l (cos q1 + cos q2) + torque_cost * |tau|^2, in [-2, 2] plus
the cost. Episodes release from rest at q_i = release_angle + angle_jitter * z_i(key).

Defaults: max_torque = 2 N m, torque_cost = 1e-3, angle_jitter = 0.01 rad, horizon 500 steps
(5 s). Regimes (``release_angle``): "regular" 0.1 rad (small oscillations, Lyapunov exponent ~ 0;
motion stays regular up to about 0.5 rad) and "chaotic" pi/2 (both rods horizontal, leading
Lyapunov exponent of the free pendulum about 1 /s, so BPTT variance grows like exp(2 t) in
seconds). (Shinbrot, Grebogi, Wisdom, Yorke 1992, "Chaos in a double pendulum", Am. J. Phys. 60;
Metz, Freeman, Schoenholz, Kachman 2021, "Gradients are Not All You Need", arXiv 2111.05803.)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["DoublePendulum"]

_INIT_STREAM = 0


@register("double_pendulum")
class DoublePendulum(System):
    """Double pendulum under a linear-tanh torque policy; chaotic at release angle pi/2."""

    n_features = 7
    param_dim = 2 * n_features
    state_dim = 4  # (q1, q2, q1', q2')
    regimes = {"regular": {"release_angle": 0.1}, "chaotic": {"release_angle": math.pi / 2}}
    mass, length, gravity = 1.0, 1.0, 9.81
    # Read by `estimators.rollout.compiled`: the step reads columns of [B, 4] states and [B, 14]
    # parameters (stride 4 and 14), which inductor's CPU heuristics would leave unvectorised;
    # vectorised anyway the compiled step runs about 3x faster.
    compile_options = {"cpp.enable_tiling_heuristics": False}

    def __init__(self, release_angle: float = math.pi / 2, horizon: int = 500, dt: float = 0.01,
                 max_torque: float = 2.0, torque_cost: float = 1e-3, angle_jitter: float = 0.01):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not dt > 0 or max_torque < 0 or torque_cost < 0 or angle_jitter < 0:
            raise ValueError("dt must be > 0; max_torque, torque_cost, angle_jitter >= 0")
        self.release_angle, self.horizon, self.dt = float(release_angle), horizon, float(dt)
        self.max_torque, self.torque_cost = float(max_torque), float(torque_cost)
        self.angle_jitter = float(angle_jitter)

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        return torch.zeros(self.param_dim, dtype=dtype, device=device)

    def init_state(self, theta: Tensor, keys: Tensor) -> Tensor:
        z = noise.normal(keys.to(theta.device), 0, stream=_INIT_STREAM, shape=(2,),
                         dtype=theta.dtype)
        q = self.release_angle + self.angle_jitter * z
        return torch.cat([q, torch.zeros_like(q)], dim=1)

    def torque(self, theta: Tensor, state: Tensor) -> Tensor:
        """Joint torques ``[B, 2]`` of the policy ``theta`` ``[B, 14]`` at ``state`` ``[B, 4]``."""
        return torch.stack(self._torque(theta, *state.unbind(-1)), -1)

    def derivative(self, state: Tensor, tau: Tensor) -> Tensor:
        """d state / dt ``[B, 4]`` for joint torques ``tau`` ``[B, 2]``."""
        return torch.stack(self._derivative(state.unbind(-1), *tau.unbind(-1)), -1)

    # The step works on the state's columns ([B] tensors) and stacks them once at the end: no
    # [B, 4] intermediates, no einsum, so `torch.compile` fuses a whole step into one
    # vectorised loop over B. Same arithmetic in the same order: eager results are unchanged.
    def _torque(self, theta: Tensor, q1: Tensor, q2: Tensor, w1: Tensor,
                w2: Tensor) -> tuple[Tensor, Tensor]:
        """(tau1, tau2), each ``[B]``: W f summed feature by feature, bias last."""
        f = (q1.sin(), q1.cos(), q2.sin(), q2.cos(), w1, w2)
        w, n = theta.unbind(-1), self.n_features
        tau = []
        for j in range(2):
            a = w[n * j] * f[0]
            for i in range(1, n - 1):
                a = a + w[n * j + i] * f[i]
            tau.append(self.max_torque * torch.tanh(a + w[n * j + n - 1]))  # bias feature 1
        return tau[0], tau[1]

    def _derivative(self, x: tuple[Tensor, ...], tau1: Tensor,
                    tau2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """d state / dt as four ``[B]`` columns, from the columns ``x`` = (q1, q2, q1', q2')."""
        q1, q2, w1, w2 = x
        ml2, gl = self.mass * self.length**2, self.gravity / self.length
        s, c = torch.sin(q1 - q2), torch.cos(q1 - q2)
        r1 = (tau1 - tau2) / ml2 - s * w2 * w2 - 2.0 * gl * q1.sin()
        r2 = tau2 / ml2 + s * w1 * w1 - gl * q2.sin()
        det = 1.0 + s * s
        return w1, w2, (r1 - c * r2) / det, (2.0 * r2 - c * r1) / det

    def tip_height(self, state: Tensor) -> Tensor:
        """Height of the outer mass above the pivot ``[B]`` (-2 l hanging, +2 l upright)."""
        return -self.length * (state[:, 0].cos() + state[:, 1].cos())

    def energy(self, state: Tensor) -> Tensor:
        """Total energy ``[B]``, potential measured from the hanging rest position (>= 0)."""
        q1, q2, w1, w2 = state.unbind(-1)
        m, l, g = self.mass, self.length, self.gravity
        kinetic = 0.5 * m * l * l * (2.0 * w1 * w1 + w2 * w2 + 2.0 * w1 * w2 * torch.cos(q1 - q2))
        potential = m * g * l * (2.0 * (1.0 - q1.cos()) + (1.0 - q2.cos()))
        return kinetic + potential

    def step(self, theta: Tensor, state: Tensor, t: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        x = state.unbind(-1)
        tau = self._torque(theta, *x)
        h = self.dt

        def stage(k: tuple[Tensor, ...], a: float) -> tuple[Tensor, ...]:
            return tuple(xi + a * ki for xi, ki in zip(x, k))

        k1 = self._derivative(x, *tau)
        k2 = self._derivative(stage(k1, 0.5 * h), *tau)
        k3 = self._derivative(stage(k2, 0.5 * h), *tau)
        k4 = self._derivative(stage(k3, h), *tau)
        q1, q2, w1, w2 = (xi + (h / 6.0) * (a + 2.0 * b + 2.0 * c + d)
                          for xi, a, b, c, d in zip(x, k1, k2, k3, k4))
        tip = -self.length * (q1.cos() + q2.cos())  # tip_height of the next state
        loss = -tip + self.torque_cost * (tau[0] * tau[0] + tau[1] * tau[1])
        return torch.stack([q1, q2, w1, w2], -1), loss

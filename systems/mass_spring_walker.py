"""A 2-D mass-spring soft robot walking on penalty ground: contact-rich locomotion.

The analogue of the Brax Ant of Metz, Freeman, Schoenholz, Kachman 2021 ("Gradients are Not
All You Need", arXiv 2111.05803, Fig. 1), built like the mass-spring robots of DiffTaichi /
ChainQueen (Hu et al. 2020, "DiffTaichi: Differentiable Programming for Physical Simulation",
ICLR). Six point masses m form two squares of side a side by side (bottom row on the ground),
joined by 11 damped springs s = (i, j) (every edge and both diagonals of each square) of rest
length r_s. With d_s = p_j - p_i, L_s = |d_s| and u_s = d_s / L_s the tension is

    f_s = k (L_s - r_s(t)) + c (v_j - v_i) . u_s          (force +f_s u_s on i, -f_s u_s on j)

The ground y = 0 acts on every mass through a smooth penalty and smooth Coulomb friction,

    N = k_n eps softplus(-y / eps),   F_y = N - c_n v_y sigmoid(-y / eps),
    F_x = -mu N tanh(v_x / v_eps)

plus gravity -m g, integrated by semi-implicit Euler: v <- v + dt F / m, p <- p + dt v. The
slip scale v_eps keeps dt mu N / (m v_eps) < 1 for a foot carrying the whole body's weight, so
a sticking foot is stable under explicit integration (with v_eps = 0.05 m/s stick-slip itself
makes the gradients burst, even in the regular regime).

Policy: open-loop sinusoids on the rest lengths of the A = 5 actuated springs (the three
verticals and the two bottom edges), theta = (alpha_1, beta_1, ..., alpha_A, beta_A), D = 10:

    r_s(t) = r_s0 (1 + amplitude tanh(alpha_s sin(w t dt) + beta_s cos(w t dt))),  w = 2 pi freq

so theta = 0 is the passive body, and `init_params` a travelling wave (phase lag pi/2 between
neighbouring actuators). Per-step loss: minus the forward speed of the centre of mass over the
step, l_t = -(x_com(t+1) - x_com(t)) / dt, so (1/T) sum_t l_t is minus the average speed.
Episodes start from the rest shape with Gaussian jitter of positions (pos_jitter, m) and
velocities (vel_jitter, m/s) drawn from the key.

Regimes (``amplitude``, the fractional stroke of the actuated springs), at `init_params`:
"regular" 0.1, a periodic shuffle (backwards at 0.05 m/s; leading Lyapunov exponent ~0, from
the translation symmetry in x; the spread of BPTT gradients of the mean loss shrinks like 1/T)
and "chaotic" 0.3, irregular hops forward at ~0.25 m/s (lambda_1 ~ 0.007 /step ~ 1.5 /s; the
BPTT gradient spread is 10x its T = 10 value at T ~ 200 (1 s), ~1e4x at T = 1000). The
transition lies between amplitudes 0.15 and 0.2. Defaults: m = 1 kg, a = 0.5 m, k = 2000 N/m,
c = 5 N s/m, k_n = 1e4 N/m, c_n = 50 N s/m, eps = 5 mm, mu = 0.8, v_eps = 0.3 m/s, freq = 2 Hz,
dt = 5 ms, horizon 1000 steps (5 s). The step has no data-dependent control flow
(``torch.compile(system.step, fullgraph=True)`` works).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["MassSpringWalker", "WalkerState"]

_INIT_STREAM = 0
# Rest shape: bottom row (0, 1, 2) on the ground, top row (3, 4, 5) one side a above.
_NODES = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (0.0, 1.0), (1.0, 1.0), (2.0, 1.0)]
_ACTUATED = [(0, 3), (1, 4), (2, 5), (0, 1), (1, 2)]  # verticals, bottom edges
_PASSIVE = [(3, 4), (4, 5), (0, 4), (1, 3), (1, 5), (2, 4)]  # top edges, diagonals
_SPRINGS = _ACTUATED + _PASSIVE


class WalkerState(NamedTuple):
    """Positions and velocities of the point masses, each ``[B, n_masses, 2]`` (x, y)."""

    position: Tensor
    velocity: Tensor


@register("mass_spring_walker")
class MassSpringWalker(System):
    """2-D mass-spring soft robot with penalty ground contact; loss = minus forward speed."""

    n_masses, n_actuated = len(_NODES), len(_ACTUATED)
    param_dim = 2 * n_actuated
    state_dim = 4 * n_masses
    regimes = {"regular": {"amplitude": 0.1}, "chaotic": {"amplitude": 0.3}}
    mass, gravity = 1.0, 9.81

    def __init__(self, amplitude: float = 0.1, horizon: int = 1000, dt: float = 0.005,
                 freq: float = 2.0, size: float = 0.5, stiffness: float = 2000.0,
                 damping: float = 5.0, ground_stiffness: float = 1e4, ground_damping: float = 50.0,
                 contact_eps: float = 0.005, friction: float = 0.8, slip_eps: float = 0.3,
                 pos_jitter: float = 0.01, vel_jitter: float = 0.01):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not 0 <= amplitude < 1:
            raise ValueError(f"amplitude must be in [0, 1), got {amplitude}")
        positive = dict(dt=dt, freq=freq, size=size, stiffness=stiffness,
                        ground_stiffness=ground_stiffness, contact_eps=contact_eps,
                        slip_eps=slip_eps)
        nonneg = dict(damping=damping, ground_damping=ground_damping, friction=friction,
                      pos_jitter=pos_jitter, vel_jitter=vel_jitter)
        for name, value in {**positive, **nonneg}.items():
            if not (value > 0 if name in positive else value >= 0):
                raise ValueError(f"{name} must be {'>' if name in positive else '>='} 0, "
                                 f"got {value}")
            setattr(self, name, float(value))
        self.amplitude, self.horizon = float(amplitude), horizon
        self.rest_shape = torch.tensor(_NODES, dtype=torch.float64) * self.size  # [N, 2]
        # Incidence [S, N]: d_s = p_j - p_i = (incidence @ p)_s.
        self.incidence = torch.zeros(len(_SPRINGS), self.n_masses, dtype=torch.float64)
        for s, (i, j) in enumerate(_SPRINGS):
            self.incidence[s, i], self.incidence[s, j] = -1.0, 1.0
        self.rest_length = (self.incidence @ self.rest_shape).norm(dim=-1)  # [S]

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        phase = torch.arange(self.n_actuated, dtype=torch.float64) * (math.pi / 2)
        wave = torch.stack([phase.cos(), phase.sin()], -1).flatten()
        return wave.to(dtype=dtype, device=device)

    def init_state(self, theta: Tensor, keys: Tensor) -> WalkerState:
        z = noise.normal(keys.to(theta.device), 0, stream=_INIT_STREAM,
                         shape=(2, self.n_masses, 2), dtype=theta.dtype)
        rest = self.rest_shape.to(dtype=theta.dtype, device=theta.device)
        return WalkerState(rest + self.pos_jitter * z[:, 0], self.vel_jitter * z[:, 1])

    def rest_lengths(self, theta: Tensor, t: Tensor) -> Tensor:
        """Rest lengths ``[B, S]`` of the springs at steps ``t [B]`` under ``theta [B, D]``."""
        phase = (2 * math.pi * self.freq * self.dt) * t.to(theta.dtype)
        ab = theta.reshape(-1, self.n_actuated, 2)
        act = torch.tanh(ab[..., 0] * phase.sin()[:, None] + ab[..., 1] * phase.cos()[:, None])
        r0 = self.rest_length.to(dtype=theta.dtype, device=theta.device)
        passive = act.new_ones(act.shape[0], len(_PASSIVE))
        return r0 * torch.cat([1 + self.amplitude * act, passive], 1)

    def forces(self, state: WalkerState, rest: Tensor) -> Tensor:
        """Total force on each mass ``[B, N, 2]`` (springs, ground contact, gravity)."""
        p, v = state
        inc = self.incidence.to(dtype=p.dtype, device=p.device)
        d, dv = torch.einsum("sn,bnc->bsc", inc, p), torch.einsum("sn,bnc->bsc", inc, v)
        length = d.norm(dim=-1, keepdim=True)
        u = d / length
        stretch = length - rest[..., None]
        tension = self.stiffness * stretch + self.damping * (dv * u).sum(-1, keepdim=True)
        force = -torch.einsum("sn,bsc->bnc", inc, tension * u)
        y, vx, vy = p[..., 1], v[..., 0], v[..., 1]
        depth = -y / self.contact_eps
        elastic = self.ground_stiffness * self.contact_eps * F.softplus(depth)
        normal = elastic - self.ground_damping * vy * torch.sigmoid(depth)
        tangent = -self.friction * elastic * torch.tanh(vx / self.slip_eps)
        ground = torch.stack([tangent, normal - self.mass * self.gravity], -1)
        return force + ground

    def step(self, theta: Tensor, state: WalkerState, t: Tensor,
             keys: Tensor) -> tuple[WalkerState, Tensor]:
        force = self.forces(state, self.rest_lengths(theta, t))
        velocity = state.velocity + (self.dt / self.mass) * force
        position = state.position + self.dt * velocity
        loss = -velocity[..., 0].mean(-1)  # = -(x_com(t+1) - x_com(t)) / dt
        return WalkerState(position, velocity), loss

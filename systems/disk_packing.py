"""Bidisperse soft-disk packing minimised by FIRE: jax-md's meta-optimisation of a diameter.

N disks in a periodic square box, half with diameter D and half with diameter 1. The box side
is set by the packing fraction phi (default 0.98), so it depends on D as well:

    L(D)   = sqrt( (N/2) * pi (D^2 + 1) / 4 / phi )
    U(R)   = sum_{i<j} (1/2) (1 - r_ij / s_ij)^2  [r_ij < s_ij],   s_ij = (d_i + d_j) / 2

with minimum-image distances r_ij. The initial positions are uniform in the box, R_0 = L(D) u,
u ~ U(0, 1)^{N x 2} from the episode key. Each step is one FIRE step (Bitzek et al. 2006, "Structural
relaxation made simple", PRL 97) exactly as jax-md's ``minimize.fire_descent`` writes it
(unit mass, analytic forces F = -dU/dR):

    R   <- wrap(R + dt V + dt^2 F_old);   F = F(R);   V <- V + dt (F_old + F) / 2
    P   = F . V;   V <- V + alpha (F |V| / sqrt(|F|^2 + 1e-6) - V)
    n   <- n + 1 if P >= 0 else 0
    P > 0 and n > n_min:  dt <- min(f_inc dt, dt_max),  alpha <- f_alpha alpha
    P < 0:                dt <- f_dec dt,  alpha <- alpha_start,  V <- 0

with jax-md's defaults dt_start 0.1, dt_max 0.4, n_min 5, f_inc 1.1, f_dec 0.5, alpha_start 0.1,
f_alpha 0.99. Every branch is a ``torch.where`` on per-row tensors (dt, alpha, n are ``[B]``).
theta = (D,). The loss is the energy U(R_{t+1}) after the step:

* ``loss="running"`` (default): l_t = U(R_{t+1}) at every step, so the estimators' mean over any
  horizon is the running energy of the minimisation;
* ``loss="final"``: l_t = 0 except l_{T-1} = T U(R_T) with T the system's ``horizon``, so the mean
  over the system's own horizon is the energy after K = T minimisation steps (Metz et al.'s loss;
  an estimator that overrides the horizon sees a different objective).

Regimes (Metz, Freeman, Schoenholz, Kachman 2021, "Gradients are Not All You Need", disk
packing figure): few FIRE steps give a regular, low-variance dE/dD (``"regular"``, K = 20); at
intermediate K the pathwise dE/dD has a transient burst of variance across seeds (``"chaotic"``,
K = 200); it falls again once the packing has settled into a minimum.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["DiskPacking", "FireState", "box_side", "energy_and_forces"]


class FireState(NamedTuple):
    """FIRE state of B packings: positions, velocities, forces ``[B, N, 2]``; dt, alpha, n ``[B]``."""

    position: Tensor
    velocity: Tensor
    force: Tensor
    dt: Tensor
    alpha: Tensor
    n_pos: Tensor  # int64, consecutive steps with P >= 0


def box_side(diameter: Tensor, n_disks: int, packing_fraction: float) -> Tensor:
    """L = sqrt((N/2) pi (D^2 + 1) / 4 / phi), elementwise over ``diameter``."""
    area = 0.5 * n_disks * math.pi * (diameter**2 + 1.0) / 4.0
    return torch.sqrt(area / packing_fraction)


def energy_and_forces(position: Tensor, side: Tensor, diameters: Tensor) -> tuple[Tensor, Tensor]:
    """Harmonic soft-disk energy ``[B]`` and forces ``-dU/dR`` ``[B, N, 2]`` in a periodic box.

    The pair terms are ``[B, N, N]`` temporaries; run eagerly, rows go through in blocks of
    about 2 MB of pairs each (32 rows at N = 128), which keeps them in cache: about 5x faster at
    B = 4096 than one pass over all rows, the same numbers. Under `torch.compile`, which fuses
    the pair terms into one loop, the rows go in one piece.

    Args:
        position: ``[B, N, 2]``.
        side: ``[B]`` box sides.
        diameters: ``[B, N]``.
    """
    B, n = position.shape[:2]
    block = max(1, _BLOCK_PAIRS // (n * n))
    if B <= block or torch.compiler.is_compiling():
        return _pair_terms(position, side, diameters)
    parts = [_pair_terms(position[i:i + block], side[i:i + block], diameters[i:i + block])
             for i in range(0, B, block)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


_BLOCK_PAIRS = 1 << 19  # pairs per eager block: [block, N, N] float32 temporaries of 2 MB


def _pair_terms(position: Tensor, side: Tensor, diameters: Tensor) -> tuple[Tensor, Tensor]:
    """`energy_and_forces` in one pass, on the x and y columns ([B, N, N] pair tensors, no
    trailing dimension of 2, so a compiled version vectorises over j)."""
    L = side[:, None, None]
    x, y = position[..., 0], position[..., 1]
    dx = x[:, :, None] - x[:, None, :]                                # R_i - R_j, [B, N, N] each
    dy = y[:, :, None] - y[:, None, :]
    dx = dx - L * torch.round(dx / L)                                 # minimum image
    dy = dy - L * torch.round(dy / L)
    n = position.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=position.device)
    r2 = dx * dx + dy * dy
    # the diagonal gets r = 1 so that sqrt and 1/r stay finite (and their gradients too)
    r = torch.sqrt(torch.where(eye, torch.ones_like(r2), r2))
    s = 0.5 * (diameters[:, :, None] + diameters[:, None, :])
    overlap = (r < s) & ~eye
    u = torch.where(overlap, 1.0 - r / s, torch.zeros_like(r))       # 1 - r/s on touching pairs
    energy = 0.25 * (u * u).sum((1, 2))                               # 1/2 per pair, each counted twice
    coef = u / (s * r)                                                # -dU/dr / r
    force = torch.stack([(coef * dx).sum(2), (coef * dy).sum(2)], -1)
    return energy, force


@register("disk_packing")
class DiskPacking(System):
    """Bidisperse soft disks minimised by FIRE; theta = D; loss = energy (running or final)."""

    param_dim = 1
    differentiable = True
    dt = None
    regimes = {"regular": {"horizon": 20}, "chaotic": {"horizon": 200}}

    dt_start, dt_max, n_min, f_inc, f_dec, alpha_start, f_alpha = 0.1, 0.4, 5, 1.1, 0.5, 0.1, 0.99

    def __init__(self, n_disks: int = 128, diameter: float = 1.0, horizon: int = 200,
                 packing_fraction: float = 0.98, loss: str = "running"):
        if isinstance(n_disks, bool) or not isinstance(n_disks, int) or n_disks < 2 or n_disks % 2:
            raise ValueError(f"n_disks must be an even int >= 2, got {n_disks!r}")
        if not diameter > 0:
            raise ValueError(f"diameter must be > 0, got {diameter}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not packing_fraction > 0:
            raise ValueError(f"packing_fraction must be > 0, got {packing_fraction}")
        if loss not in ("running", "final"):
            raise ValueError(f"loss must be 'running' or 'final', got {loss!r}")
        self.n_disks, self.diameter, self.horizon = n_disks, float(diameter), horizon
        self.packing_fraction, self.loss = float(packing_fraction), loss
        self.state_dim = 6 * n_disks + 3

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        return torch.tensor([self.diameter], dtype=dtype, device=device)

    def geometry(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Box sides ``[B]`` and disk diameters ``[B, N]`` (D for the first half, 1 after)."""
        D = theta[:, 0]
        half = self.n_disks // 2
        diameters = torch.cat([D[:, None].expand(-1, half), torch.ones_like(D)[:, None].expand(-1, half)], 1)
        return box_side(D, self.n_disks, self.packing_fraction), diameters

    def energy(self, theta: Tensor, position: Tensor) -> Tensor:
        """U(R) ``[B]`` of positions ``[B, N, 2]`` at diameters ``theta`` ``[B, 1]``."""
        side, diameters = self.geometry(theta)
        return energy_and_forces(position, side, diameters)[0]

    def init_state(self, theta: Tensor, keys: Tensor) -> FireState:
        side, diameters = self.geometry(theta)
        u = noise.uniform(keys, 0, stream=0, shape=(self.n_disks, 2), dtype=theta.dtype)
        position = u * side[:, None, None]
        _, force = energy_and_forces(position, side, diameters)
        B = theta.shape[0]
        full = lambda v: torch.full((B,), v, dtype=theta.dtype, device=theta.device)  # noqa: E731
        return FireState(position, torch.zeros_like(position), force, full(self.dt_start),
                         full(self.alpha_start), torch.zeros(B, dtype=torch.int64, device=theta.device))

    def step(self, theta: Tensor, state: FireState, t: Tensor, keys: Tensor) -> tuple[FireState, Tensor]:
        side, diameters = self.geometry(theta)
        R, V, F_old, dt, alpha, n_pos = state
        dt3 = dt[:, None, None]
        R = R + dt3 * V + dt3**2 * F_old
        R = R - side[:, None, None] * torch.floor(R / side[:, None, None])
        energy, F = energy_and_forces(R, side, diameters)
        V = V + 0.5 * dt3 * (F_old + F)
        f_norm = torch.sqrt((F * F).sum((1, 2)) + 1e-6)
        v2 = (V * V).sum((1, 2))
        v_norm = torch.where(v2 > 0, torch.sqrt(torch.where(v2 > 0, v2, torch.ones_like(v2))),
                             torch.zeros_like(v2))
        power = (F * V).sum((1, 2))
        a3 = alpha[:, None, None]
        V = V + a3 * (F * (v_norm / f_norm)[:, None, None] - V)
        n_pos = torch.where(power >= 0, n_pos + 1, torch.zeros_like(n_pos))
        grow = (power > 0) & (n_pos > self.n_min)
        back = power < 0
        dt = torch.where(grow, torch.clamp(dt * self.f_inc, max=self.dt_max), dt)
        dt = torch.where(back, dt * self.f_dec, dt)
        alpha = torch.where(grow, alpha * self.f_alpha, alpha)
        alpha = torch.where(back, torch.full_like(alpha, self.alpha_start), alpha)
        V = torch.where(back[:, None, None], torch.zeros_like(V), V)
        if self.loss == "running":
            loss = energy
        else:
            loss = torch.where(t == self.horizon - 1, self.horizon * energy, torch.zeros_like(energy))
        return FireState(R, V, F, dt, alpha, n_pos), loss

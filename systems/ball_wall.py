"""A ball thrown over a wall: a contact discontinuity that biases the pathwise gradient.

After the ball-with-wall example of Suh, Simchowitz, Zhang, Tedrake (ICML 2022, "Do
Differentiable Simulators Give Better Policy Gradients?"). A point ball is launched from the
origin with angle a and speed v (theta = (a, v)), perturbed per episode by the key:

    a' = a + angle_noise z_1,   v' = v + speed_noise z_2,   (x, y, vx, vy)_0 = (0, 0, v' cos a', v' sin a')

and flies ballistically under gravity g. Each step of dt is integrated exactly, with the two
events resolved inside the step (so results do not depend on dt):

* a thin wall at x = wall_x of height wall_height: if the ball reaches x = wall_x at a height
  below wall_height before landing, it bounces back with restitution e (default 0: it stops
  horizontally and slides down the wall); above the wall it flies on;
* the ground y = 0: the ball sticks where it lands (perfectly inelastic, infinite friction).

Loss (on the horizontal distance to a target beyond the wall):

* ``loss="running"`` (default): l_t = (x_{t+1} - target_x)^2 at every step;
* ``loss="final"``: l_t = 0 except l_{T-1} = T (x_T - target_x)^2, so the mean over the
  system's own horizon is the squared distance of where the ball ended up.

The landing point jumps from wall_x to beyond the wall when the trajectory clears the wall's
top: L(theta) = E_z l is smooth (the launch noise smooths the jump), but every sample's pathwise
gradient misses the jump, so the average of pathwise gradients is biased near it (zero from
the blocked samples, the ballistic slope from the others), while ES estimates the gradient of
the smoothed loss, which does see the jump. No chaos is involved. Regimes: ``"contact"`` (the
default throw grazes the top of the wall) and ``"regular"`` (the wall stands beyond the range,
the loss is smooth and pathwise gradients are unbiased).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["BallWall", "BallState"]


class BallState(NamedTuple):
    """Position ``[B, 2]``, velocity ``[B, 2]`` and whether the ball has landed ``[B]`` (bool)."""

    position: Tensor
    velocity: Tensor
    landed: Tensor


def _safe(mask: Tensor, x: Tensor) -> Tensor:
    """``x`` where ``mask``, else 1: keeps unused where-branches (and their gradients) finite."""
    return torch.where(mask, x, torch.ones_like(x))


@register("ball_wall")
class BallWall(System):
    """Ball launched at angle/speed theta toward a wall; the loss jumps where it clears the top."""

    param_dim = 2
    state_dim = 5
    differentiable = True
    regimes = {"regular": {"wall_x": 4.0}, "contact": {}}

    def __init__(self, angle: float = 0.5, speed: float = 5.0, wall_x: float = 1.5,
                 wall_height: float = 0.25, target_x: float = 2.5, restitution: float = 0.0,
                 angle_noise: float = 0.02, speed_noise: float = 0.05, gravity: float = 9.81,
                 dt: float = 0.01, horizon: int = 100, loss: str = "running"):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not (dt > 0 and gravity > 0 and wall_x > 0 and wall_height >= 0):
            raise ValueError("dt, gravity and wall_x must be > 0, wall_height >= 0")
        if not 0 <= restitution <= 1 or angle_noise < 0 or speed_noise < 0:
            raise ValueError("restitution must be in [0, 1], the noise scales >= 0")
        if loss not in ("running", "final"):
            raise ValueError(f"loss must be 'running' or 'final', got {loss!r}")
        self.angle, self.speed, self.horizon, self.loss = float(angle), float(speed), horizon, loss
        self.wall_x, self.wall_height, self.target_x = float(wall_x), float(wall_height), float(target_x)
        self.restitution, self.gravity, self.dt = float(restitution), float(gravity), float(dt)
        self.angle_noise, self.speed_noise = float(angle_noise), float(speed_noise)

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        return torch.tensor([self.angle, self.speed], dtype=dtype, device=device)

    def init_state(self, theta: Tensor, keys: Tensor) -> BallState:
        z = noise.normal(keys, 0, stream=0, shape=(2,), dtype=theta.dtype)
        a = theta[:, 0] + self.angle_noise * z[:, 0]
        v = theta[:, 1] + self.speed_noise * z[:, 1]
        velocity = torch.stack([v * torch.cos(a), v * torch.sin(a)], -1)
        landed = torch.zeros(theta.shape[0], dtype=torch.bool, device=theta.device)
        return BallState(torch.zeros_like(velocity), velocity, landed)

    def step(self, theta: Tensor, state: BallState, t: Tensor, keys: Tensor) -> tuple[BallState, Tensor]:
        g, dt, e, xw = self.gravity, self.dt, self.restitution, self.wall_x
        (x, y), (vx, vy), landed = state.position.unbind(-1), state.velocity.unbind(-1), state.landed
        # time to reach the ground: y + vy s - g s^2 / 2 = 0 (the ball is at y >= 0)
        disc = vy * vy + 2.0 * g * y
        t_ground = (vy + torch.sqrt(_safe(disc > 0, disc))) / g
        lands = ~landed & (t_ground <= dt)
        tau = torch.where(lands, t_ground, torch.full_like(t_ground, dt))  # flight time this step
        # time to reach the wall from the left, and the height there
        approaching = ~landed & (vx > 0) & (x < xw)
        t_wall = (xw - x) / _safe(approaching, vx)
        y_wall = y + vy * t_wall - 0.5 * g * t_wall**2
        hits = approaching & (t_wall <= tau) & (y_wall < self.wall_height)
        x_free = x + vx * tau
        x_bounce = xw - e * vx * (tau - t_wall)
        x_new = torch.where(landed, x, torch.where(hits, x_bounce, x_free))
        y_new = torch.where(lands | landed, torch.zeros_like(y), y + vy * dt - 0.5 * g * dt * dt)
        vx_new = torch.where(hits, -e * vx, vx)
        vy_new = vy - g * dt
        stop = lands | landed
        vx_new = torch.where(stop, torch.zeros_like(vx), vx_new)
        vy_new = torch.where(stop, torch.zeros_like(vy), vy_new)
        nxt = BallState(torch.stack([x_new, y_new], -1), torch.stack([vx_new, vy_new], -1), stop)
        dist = (x_new - self.target_x) ** 2
        if self.loss == "running":
            loss = dist
        else:
            loss = torch.where(t == self.horizon - 1, self.horizon * dist, torch.zeros_like(dist))
        return nxt, loss

"""Ball over a wall (Suh et al. 2022): exact ballistics, the wall, and the pathwise-gradient bias."""
import math

import pytest
import torch

from estimators import BPTT, AntitheticES
from systems import BallWall

F64 = torch.float64


def final_x(system, theta_rows, keys, steps=None):
    state = system.init_state(theta_rows, keys)
    for t in range(steps or system.horizon):
        state, _ = system.step(theta_rows, state, torch.full_like(keys, t), keys)
    return state


@pytest.mark.parametrize("dt", [0.01, 0.0137])
def test_landing_point_is_the_ballistic_range_for_any_dt(dt):
    """No wall in reach, no launch noise: the ball lands at v^2 sin(2a) / g, whatever dt (the
    landing is resolved inside the step), and stays there."""
    system = BallWall(wall_x=100.0, angle_noise=0.0, speed_noise=0.0, dt=dt, horizon=120)
    theta = torch.tensor([[0.5, 5.0], [0.9, 4.0]], dtype=F64)
    state = final_x(system, theta, torch.arange(2))
    expect = theta[:, 1] ** 2 * torch.sin(2 * theta[:, 0]) / system.gravity
    torch.testing.assert_close(state.position[:, 0], expect, rtol=1e-12, atol=0)
    assert state.landed.all() and torch.equal(state.position[:, 1], torch.zeros(2, dtype=F64))


def test_wall_stops_a_low_throw_and_a_high_throw_clears_it():
    """Height at the wall: y = x_w tan a - g x_w^2 / (2 v^2 cos^2 a); below wall_height the ball
    stops at the wall (restitution 0), above it flies on to its range."""
    system = BallWall(angle_noise=0.0, speed_noise=0.0)
    theta = torch.tensor([[0.35, 5.0], [0.6, 5.0]], dtype=F64)
    a, v, xw, g = theta[:, 0], theta[:, 1], system.wall_x, system.gravity
    y_wall = xw * torch.tan(a) - g * xw**2 / (2 * v**2 * torch.cos(a) ** 2)
    assert 0 < y_wall[0] < system.wall_height < y_wall[1]  # both still in the air at the wall
    x = final_x(system, theta, torch.arange(2)).position[:, 0]
    torch.testing.assert_close(x[0], torch.tensor(xw, dtype=F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(x[1], v[1] ** 2 * torch.sin(2 * a[1]) / g, rtol=1e-12, atol=0)


def test_autograd_matches_central_differences_across_the_landing():
    """Regular regime over the whole horizon (the landing happens at ~0.5 s of 1 s): the landing
    time is a smooth function of theta, so the loss is smooth; test_finite_differences covers a
    short horizon in flight only."""
    system = BallWall(**BallWall.regimes["regular"])
    keys = torch.arange(3)
    theta = system.init_params(F64)

    def mean_loss(rows):
        state, total = system.init_state(rows, keys), 0.0
        for t in range(system.horizon):
            state, loss = system.step(rows, state, torch.full_like(keys, t), keys)
            total = total + loss
        return total / system.horizon

    rows = theta.expand(3, 2).clone().requires_grad_()
    (grad,) = torch.autograd.grad(mean_loss(rows).sum(), rows)
    h = 1e-5
    for i in range(2):
        e = torch.zeros(2, dtype=F64)
        e[i] = h
        with torch.no_grad():
            fd = (mean_loss((theta + e).expand(3, 2)) - mean_loss((theta - e).expand(3, 2))) / (2 * h)
        torch.testing.assert_close(grad[:, i], fd, rtol=1e-6, atol=0)


def gradients(regime):
    """Pathwise (BPTT over launch noise) and ES (sigma = 0.01) gradients: means and SEs."""
    system = BallWall(**BallWall.regimes[regime])
    theta = system.init_params(F64)
    out = []
    for est, seed in [(BPTT(samples=2048), 0), (AntitheticES(pairs=4096, sigma=0.01), 1)]:
        e, _ = est.estimate(system, theta, est.init(system, theta, seed=seed))
        assert e.nonfinite == 0
        out.append((e.grad, e.samples.std(0) / math.sqrt(e.samples.shape[0])))
    return out


def test_pathwise_gradient_is_biased_at_the_wall_top():
    """Contact regime: the launch noise sends some throws over the wall and stops others, so
    L(theta) = E_z l jumps-then-smooths; each pathwise sample misses the jump and their mean
    differs from the smoothed-loss gradient by far more than 4 standard errors (no chaos here:
    the step Jacobians are bounded)."""
    (gp, sp), (ges, ses) = gradients("contact")
    z = (gp - ges).abs() / (sp**2 + ses**2).sqrt()
    assert (z > 4).all()


def test_pathwise_gradient_is_unbiased_without_contact():
    """Regular regime (the wall is out of reach): pathwise and ES agree within 4 standard errors
    (ES's own O(sigma^2) smoothing bias is far below its standard error at sigma = 0.01)."""
    (gp, sp), (ges, ses) = gradients("regular")
    z = (gp - ges).abs() / (sp**2 + ses**2).sqrt()
    assert (z < 4).all()


def test_validation():
    for bad in [{"horizon": 0}, {"dt": 0.0}, {"restitution": 1.5}, {"loss": "mean"},
                {"angle_noise": -1.0}]:
        with pytest.raises(ValueError):
            BallWall(**bad)

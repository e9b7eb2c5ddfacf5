import math

import pytest
import torch

from systems.lr_schedule_toy import LRScheduleToy, inner_grad, inner_loss
from tests.helpers import assert_deterministic_and_batch_independent

F64 = torch.float64


def mean_loss(system, theta, keys, steps):
    rows = theta.expand(keys.shape[0], -1)
    state = system.init_state(rows, keys)
    total = 0.0
    for t in range(steps):
        state, loss = system.step(rows, state, torch.full_like(keys, t), keys)
        total = total + loss
    return (total / steps).mean()


@pytest.mark.parametrize("schedule", ["linear", "log_linear"])
@pytest.mark.parametrize("theta0", [(-4.0, -4.0), (1.0, -1.0)])
def test_autograd_matches_central_differences(schedule, theta0):
    """At theta = (1, -1) the initial learning rate is e: while the ripple gate exp(-5 x0^2) is
    open the first steps stretch x0 by up to |1 - lr d2f/dx0^2| ~ 10 per step, so the meta-loss is
    smooth but steeply curved (x1 stays below 11 here, far from the kink of |x1 - 100|). A plain
    central difference then carries a truncation error h^2 L'''/6 of ~5e-5 |L'| at h = 1e-6,
    which falls exactly as h^2: a rugged region, not an autograd error. Richardson's
    extrapolation (4 D(h/2) - D(h)) / 3 cancels the h^2 term and leaves O(h^4), so it is used at
    every point; at the gentle start (-4, -4) it only changes the rounding (~1e-7)."""
    system = LRScheduleToy(schedule=schedule, horizon=20, jitter=0.1)
    theta = torch.tensor(theta0, dtype=F64, requires_grad=True)
    keys = torch.tensor([0, 1, 2])
    (grad,) = torch.autograd.grad(mean_loss(system, theta, keys, 20), theta)

    def central(i, h):
        e = torch.zeros(2, dtype=F64)
        e[i] = h
        with torch.no_grad():
            return (mean_loss(system, theta + e, keys, 20) - mean_loss(system, theta - e, keys, 20)) / (2 * h)

    for i in range(2):
        h = 2e-6 * max(1.0, abs(theta[i].item()))
        fd = (4 * central(i, h / 2) - central(i, h)) / 3
        assert abs(fd - grad[i]).item() < 1e-6 * abs(grad[i]).item()


def test_analytic_inner_grad_equals_autograd():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(200, 2, generator=g, dtype=F64) * torch.tensor([1.0, 60.0], dtype=F64)
         + torch.tensor([0.0, 80.0], dtype=F64)).requires_grad_()
    (auto,) = torch.autograd.grad(inner_loss(x).sum(), x)
    torch.testing.assert_close(inner_grad(x.detach()), auto, rtol=1e-12, atol=1e-12)


def test_schedules():
    theta = torch.tensor([[math.log(2.0), math.log(8.0)]], dtype=F64)
    t = torch.tensor([25])
    lin = LRScheduleToy(schedule="linear").learning_rate(theta, t)
    log = LRScheduleToy(schedule="log_linear").learning_rate(theta, t)
    torch.testing.assert_close(lin, torch.tensor([0.75 * 2 + 0.25 * 8], dtype=F64))
    torch.testing.assert_close(log, torch.tensor([2.0**0.75 * 8.0**0.25], dtype=F64))
    with pytest.raises(ValueError, match="schedule"):
        LRScheduleToy(schedule="cosine")


@pytest.mark.parametrize("jitter", [0.0, 0.1])
def test_deterministic_and_batch_independent(jitter):
    system = LRScheduleToy(jitter=jitter)
    theta = torch.tensor([1.0, -1.0], dtype=F64)
    losses = assert_deterministic_and_batch_independent(system, theta, 100)
    assert torch.equal(losses[:, 0], losses[:, 3]) == (jitter == 0.0)


@pytest.mark.parametrize("dtype", [None, torch.float32, F64])
def test_dtype_follows_theta(dtype):
    system = LRScheduleToy()
    theta = system.init_params() if dtype is None else system.init_params(dtype=dtype)
    expect = torch.float32 if dtype is None else dtype
    keys = torch.arange(3)
    state = system.init_state(theta.expand(3, -1), keys)
    state, loss = system.step(theta.expand(3, -1), state, torch.zeros_like(keys), keys)
    assert theta.dtype == state.dtype == loss.dtype == expect and loss.shape == (3,)


def test_better_schedule_and_short_horizon_bias():
    """theta = (-4, -4) barely moves x (L ~ 24.9); a large initial and smaller final learning
    rate (the best point of a grid search over [-6, 4]^2 with spacing 0.25) walks x1 to ~100
    (L ~ 5.6). Along theta_0 at that point:

    * short-horizon bias: the 10-step meta-loss rises monotonically with theta_0 over [2, 3.5]
      (it sees only the first steps, where a large learning rate overshoots), so its gradient says
      "lower the initial learning rate", while the 100-step meta-loss is higher at both ends of
      that interval than beside the grid optimum: following the short horizon makes the episode
      worse;
    * rugged meta-loss: once x0 returns near 0 late in the episode, the ripple gate
      exp(-5 x0^2) opens while lr_t ~ 4 and the state Jacobian product reaches ~e^13, and x1
      bounces across the kink of |x1 - 100|. The 100-step pathwise gradient is then > 1e4 times
      the meta-loss's slope on the grid's scale, and a descent step of only 1e-3 along it raises
      the loss. (An earlier version of this test expected |full gradient| < |short gradient|
      here; that compares the ruggedness, not the bias, and fails: the full one is ~ -4e5.)"""
    system = LRScheduleToy()
    keys = torch.zeros(1, dtype=torch.int64)
    best = torch.tensor([2.75, -1.75], dtype=F64)
    start = mean_loss(system, system.init_params(dtype=F64), keys, 100).item()
    assert 24.5 < start < 25.0 and mean_loss(system, best, keys, 100).item() < 6.0

    def along(theta_0, steps):  # one row per theta_0: rows are independent (same key 0)
        rows = torch.stack([theta_0, torch.full_like(theta_0, -1.75)], 1)
        zeros = torch.zeros(rows.shape[0], dtype=torch.int64)
        state, total = system.init_state(rows, zeros), 0.0
        for t in range(steps):
            state, loss = system.step(rows, state, torch.full_like(zeros, t), zeros)
            total = total + loss
        return total / steps

    grid = torch.linspace(2.0, 3.5, 16, dtype=F64)
    short, full = along(grid, 10), along(grid, 100)
    assert (short.diff() > 0).all()
    assert full[0] > full[7] and full[-1] > full[7]  # grid[7] = 2.7, beside the optimum 2.75

    theta = best.clone().requires_grad_()
    (g10,) = torch.autograd.grad(mean_loss(system, theta, keys, 10), theta)
    (g100,) = torch.autograd.grad(mean_loss(system, theta, keys, 100), theta)
    assert g10[0] > 0
    coarse_slope = ((full[-1] - full[0]) / (grid[-1] - grid[0])).abs()
    assert g100[0].abs() > 1e4 * coarse_slope
    step = torch.tensor([1e-3, 0.0], dtype=F64)
    for steps, g, rises in [(10, g10, False), (100, g100, True)]:
        moved = mean_loss(system, best - step * g[0].sign(), keys, steps)
        assert bool(moved > mean_loss(system, best, keys, steps)) == rises

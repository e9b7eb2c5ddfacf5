import math

import pytest
import torch

from systems.lr_schedule_toy import LRScheduleToy, inner_grad, inner_loss

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
    system = LRScheduleToy(schedule=schedule, horizon=20, jitter=0.1)
    theta = torch.tensor(theta0, dtype=F64, requires_grad=True)
    keys = torch.tensor([0, 1, 2])
    (grad,) = torch.autograd.grad(mean_loss(system, theta, keys, 20), theta)
    for i in range(2):
        h = 1e-6 * max(1.0, abs(theta[i].item()))
        e = torch.zeros(2, dtype=F64)
        e[i] = h
        with torch.no_grad():
            fd = (mean_loss(system, theta + e, keys, 20) - mean_loss(system, theta - e, keys, 20)) / (2 * h)
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
    keys = torch.tensor([5, 9, 5, 2])
    rows = theta.expand(4, -1).clone()
    rows[1, 0] += 0.1
    outs = []
    for ks, rs in [(keys, rows), (keys, rows), (keys[2:3], rows[2:3])]:
        state, losses = system.init_state(rs, ks), []
        for t in range(100):
            state, loss = system.step(rs, state, torch.full_like(ks, t), ks)
            losses.append(loss)
        outs.append((state, torch.stack(losses, 1)))
    assert torch.equal(outs[0][1], outs[1][1]) and torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1][0], outs[0][1][2])
    torch.testing.assert_close(outs[2][1], outs[0][1][2:3], rtol=0, atol=1e-12)
    assert torch.equal(outs[0][1][0], outs[0][1][3]) == (jitter == 0.0)


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
    rate (found by a grid search over [-6, 4]^2) walks x1 to ~100 (L ~ 5.6). A 10-step unroll
    prefers a tiny initial learning rate, the opposite of the full-horizon optimum."""
    system = LRScheduleToy()
    keys = torch.zeros(1, dtype=torch.int64)
    start = mean_loss(system, system.init_params(dtype=F64), keys, 100).item()
    best = mean_loss(system, torch.tensor([2.75, -1.75], dtype=F64), keys, 100).item()
    assert 24.5 < start < 25.0 and best < 6.0
    theta = torch.tensor([2.75, -1.75], dtype=F64, requires_grad=True)
    (short,) = torch.autograd.grad(mean_loss(system, theta, keys, 10), theta)
    (full,) = torch.autograd.grad(mean_loss(system, theta, keys, 100), theta)
    assert short[0] > 0 and abs(full[0]) < abs(short[0])

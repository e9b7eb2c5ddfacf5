import math

import pytest
import torch

from estimators.bptt import BPTT
from systems.metz_sgd_momentum import MetzSGDMomentum, inner_grad, inner_loss
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


def test_autograd_matches_central_differences():
    system = MetzSGDMomentum(**MetzSGDMomentum.regimes["regular"])
    theta = system.init_params(dtype=F64).requires_grad_()
    keys = torch.tensor([0, 1, 2, 3])
    (grad,) = torch.autograd.grad(mean_loss(system, theta, keys, 10), theta)
    for i in range(2):
        h = 1e-6 * max(1.0, abs(theta[i].item()))
        e = torch.zeros(2, dtype=F64)
        e[i] = h
        with torch.no_grad():
            fd = (mean_loss(system, theta + e, keys, 10) - mean_loss(system, theta - e, keys, 10)) / (2 * h)
        assert abs(fd - grad[i]).item() < 1e-6 * abs(grad[i]).item()


def test_analytic_inner_grad_equals_autograd():
    x = torch.linspace(-6, 6, 241, dtype=F64).requires_grad_()
    (auto,) = torch.autograd.grad(inner_loss(x).sum(), x)
    torch.testing.assert_close(inner_grad(x.detach()), auto, rtol=1e-12, atol=1e-12)


def test_deterministic_and_batch_independent():
    system = MetzSGDMomentum(learning_rate=0.3)
    theta = system.init_params(dtype=F64)
    losses = assert_deterministic_and_batch_independent(system, theta, 30)
    assert not torch.equal(losses[:, 0], losses[:, 3])  # the key's jitter matters


@pytest.mark.parametrize("dtype", [None, torch.float32, F64])
def test_dtype_follows_theta(dtype):
    system = MetzSGDMomentum()
    theta = system.init_params() if dtype is None else system.init_params(dtype=dtype)
    expect = torch.float32 if dtype is None else dtype
    keys = torch.arange(3)
    state = system.init_state(theta.expand(3, -1), keys)
    state, loss = system.step(theta.expand(3, -1), state, torch.zeros_like(keys), keys)
    assert theta.dtype == state.dtype == loss.dtype == expect and loss.shape == (3,)


def test_init_params_and_validation():
    theta = MetzSGDMomentum(learning_rate=0.01, momentum=0.5).init_params(dtype=F64)
    torch.testing.assert_close(theta, torch.tensor([math.log(0.01), 0.0], dtype=F64))
    for bad in [{"learning_rate": 0.0}, {"momentum": 1.0}, {"horizon": 0}, {"jitter": -1.0}]:
        with pytest.raises(ValueError):
            MetzSGDMomentum(**bad)


def test_chaotic_pathwise_gradient_explodes():
    """Metz et al. Fig. 2: at mu = 0.9, T = 50 the per-episode gradient blows up for eta > 0.1."""
    stds = {}
    for regime in ("regular", "chaotic"):
        system = MetzSGDMomentum(**MetzSGDMomentum.regimes[regime])
        theta = system.init_params(dtype=F64)
        est = BPTT(samples=32, horizon=50)
        e, _ = est.estimate(system, theta, est.init(system, theta, seed=0))
        assert e.nonfinite == 0
        stds[regime] = e.samples.std(0).norm().item()
    assert stds["regular"] < 1.0
    assert stds["chaotic"] > 1e6 * stds["regular"]

"""Learned optimizer: the inner MLP's analytic gradient, the update rule, regular vs chaotic unrolls."""
import math

import pytest
import torch

from estimators import BPTT
from systems import LearnedOptimizer
from systems.learned_optimizer import mlp_loss_and_grad

F64 = torch.float64


def test_analytic_mlp_gradient_equals_autograd():
    g = torch.Generator().manual_seed(0)
    n_in, h, B, M = 4, 8, 3, 16
    P = h * n_in + 2 * h + 1
    p = torch.randn(B, P, generator=g, dtype=F64).requires_grad_()
    x = torch.randn(B, M, n_in, generator=g, dtype=F64)
    y = torch.randn(B, M, generator=g, dtype=F64)
    loss, grad = mlp_loss_and_grad(p, x, y, n_in, h)
    (auto,) = torch.autograd.grad(loss.sum(), p)
    torch.testing.assert_close(grad, auto, rtol=1e-12, atol=1e-14)


def test_update_without_hidden_output_is_squashed_linear():
    """With c = 0 the MLP term vanishes: update = step_scale tanh(c0 + g s_0 + m s_1 + p s_2)."""
    system = LearnedOptimizer(step_scale=0.3, hidden=4)
    theta = system.init_params(F64).clone()
    H = system.hidden
    theta[4 * H:5 * H] = 0.0                                   # c
    theta[5 * H:] = torch.tensor([0.2, 0.5, -1.0, 0.25], dtype=F64)  # c0, s
    gen = torch.Generator().manual_seed(1)
    g, m, p = (torch.randn(2, 7, generator=gen, dtype=F64) for _ in range(3))
    out = system.update(theta.expand(2, -1), g, m, p)
    torch.testing.assert_close(out, 0.3 * torch.tanh(0.2 + 0.5 * g - 1.0 * m + 0.25 * p),
                               rtol=1e-14, atol=0)


def inner_losses(system, keys, steps):
    theta = system.init_params(F64).expand(keys.shape[0], -1)
    state, out = system.init_state(theta, keys), []
    for t in range(steps):
        state, loss = system.step(theta, state, torch.full_like(keys, t), keys)
        out.append(loss)
    return torch.stack(out, 1)  # [B, steps]


def test_regular_regime_trains_the_inner_mlp():
    """Over 50 steps the inner loss falls: per-key drop from the first step to the mean of the
    last 10, mean over keys > 4 standard errors."""
    system = LearnedOptimizer(**LearnedOptimizer.regimes["regular"])
    losses = inner_losses(system, torch.arange(16), 50)
    drop = losses[:, 0] - losses[:, -10:].mean(1)
    assert drop.mean() > 4 * drop.std() / math.sqrt(drop.shape[0])
    assert (drop > 0).all()


@pytest.mark.parametrize("regime", ["regular", "chaotic"])
def test_pathwise_gradient_spread_with_horizon(regime):
    """Regular (step_scale 0.1): the per-key BPTT gradient's spread does not grow from T = 10 to
    40. Chaotic (step_scale 8, lambda_1 ~ 0.3 per step): it grows ~exp(lambda_1 * 30); we ask
    for more than exp(0.1 * 30) ~ 20, the growth at the onset of chaos (step_scale 6)."""
    system = LearnedOptimizer(**LearnedOptimizer.regimes[regime])
    theta = system.init_params(F64)
    std, n = {}, 32
    for T in (10, 40):
        est = BPTT(samples=n, horizon=T)
        e, _ = est.estimate(system, theta, est.init(system, theta, seed=0))
        assert e.nonfinite == 0
        std[T] = e.samples.std(0).norm().item()
    growth = std[40] / std[10]
    if regime == "regular":  # no growth beyond noise: SE of log(std ratio) ~ sqrt(2 / (2 (n - 1)))
        assert math.log(growth) < 4 * math.sqrt(1 / (n - 1))
    else:
        assert growth > math.exp(0.1 * 30)


def test_validation():
    for bad in [{"step_scale": 0.0}, {"momentum": 1.0}, {"hidden": 0}, {"batch_size": 0}]:
        with pytest.raises(ValueError):
            LearnedOptimizer(**bad)
    system = LearnedOptimizer(hidden=32)
    assert system.param_dim == 5 * 32 + 4 and system.init_params().shape == (164,)

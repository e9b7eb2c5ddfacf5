import math

import pytest
import torch

from estimators import BPTT
from systems.lorenz_fit import LorenzFit, LorenzState
from systems.registry import make
from tests.helpers import rollout

F64 = torch.float64



def test_registered_with_regimes():
    system = make("lorenz_fit")
    assert isinstance(system, LorenzFit) and system.name == "lorenz_fit"
    assert system.param_dim == 2 and system.differentiable and system.dt == 0.005
    assert system.regimes["regular"]["true_rho"] == 14.0 and system.regimes["chaotic"]["true_rho"] == 28.0
    assert torch.allclose(system.init_params(F64).exp(), torch.tensor([8.0, 25.0], dtype=F64))


@pytest.mark.parametrize("kwargs", [{"horizon": 0}, {"true_rho": 0.0}, {"dt": 0.0},
                                    {"init_offset": (0.0,)}, {"burn_in": -1}])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        LorenzFit(**kwargs)


def test_gradient_matches_central_differences():
    system = LorenzFit(**LorenzFit.regimes["regular"], horizon=60)
    keys = torch.tensor([0, 1, 2])
    theta = system.init_params(F64).expand(3, 2) + torch.tensor([[0.0, 0.0], [0.05, -0.02], [-0.1, 0.1]], dtype=F64)

    def mean_loss(th):
        return rollout(system, th, keys, system.horizon)[0].mean(0)

    rows = theta.clone().requires_grad_()
    (grad,) = torch.autograd.grad(mean_loss(rows).sum(), rows)
    h = 1e-6
    for d in range(2):
        e = torch.zeros(2, dtype=F64)
        e[d] = h
        fd = (mean_loss(theta + e) - mean_loss(theta - e)) / (2 * h)
        assert torch.allclose(grad[:, d], fd, rtol=1e-6, atol=0)


@pytest.mark.parametrize("regime", ["regular", "chaotic"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_zero_loss_at_the_true_parameters(regime, dtype):
    system = LorenzFit(**LorenzFit.regimes[regime])
    keys = torch.arange(4)
    theta = system.true_params(dtype).expand(4, 2)
    losses, state = rollout(system, theta, keys, 400)
    assert losses.dtype == dtype and losses.abs().max().item() < 1e-20
    assert torch.allclose(state.model, state.target)
    off, _ = rollout(system, system.init_params(dtype).expand(4, 2), keys, 50)
    assert (off.mean(0) > 0).all()


def test_deterministic_and_batch_independent():
    system = LorenzFit(horizon=100)
    keys = torch.tensor([5, 6, 7])
    theta = system.init_params(F64).expand(3, 2) + torch.tensor([[0.0, 0.0], [0.01, 0.0], [0.0, 0.01]], dtype=F64)
    a, sa = rollout(system, theta, keys, 100)
    b, sb = rollout(system, theta, keys, 100)
    assert torch.equal(a, b) and torch.equal(sa.model, sb.model)
    alone, s1 = rollout(system, theta[2:], keys[2:], 100)
    assert torch.allclose(alone[:, 0], a[:, 2], rtol=0, atol=1e-12)
    assert torch.allclose(s1.model[0], sa.model[2], rtol=0, atol=1e-12)
    assert not torch.equal(sa.target[0], sa.target[1])  # keys give different starts


def test_dtypes():
    system = LorenzFit()
    assert system.init_params().dtype == torch.float32
    keys = torch.tensor([0, 1])
    for dtype in (torch.float32, F64):
        theta = system.init_params(dtype=dtype).expand(2, 2)
        state = system.init_state(theta, keys)
        assert isinstance(state, LorenzState) and state.model.shape == (2, 3)
        state, loss = system.step(theta, state, torch.zeros_like(keys), keys)
        assert loss.dtype == dtype and state.target.dtype == dtype


def test_bptt_gradient_std_grows_with_t_only_when_chaotic():
    """Pathwise gradient std ~ exp(lambda T dt) at rho = 28 (lambda ~ 0.9); bounded at rho = 14."""
    def std(regime, T):
        system = LorenzFit(**LorenzFit.regimes[regime])
        theta = system.init_params(F64)
        est = BPTT(samples=16, horizon=T)
        e, _ = est.estimate(system, theta, est.init(system, theta, seed=0))
        return e.samples.std(0).norm().item()

    assert std("chaotic", 2000) > 10 * std("chaotic", 500)
    assert std("regular", 2000) < std("regular", 500)
    assert math.isfinite(std("regular", 2000))

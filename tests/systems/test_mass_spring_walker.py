import math

import pytest
import torch

from systems import gradient_growth_rate, lyapunov_exponents
from systems.mass_spring_walker import MassSpringWalker, WalkerState
from systems.registry import make
from tests.helpers import rollout

F64 = torch.float64



def x_com(state):
    return state.position[..., 0].mean(-1)


def test_registered_with_regimes():
    system = make("mass_spring_walker")
    assert isinstance(system, MassSpringWalker) and system.name == "mass_spring_walker"
    assert system.param_dim == 10 and system.differentiable and system.dt == 0.005
    assert system.regimes == {"regular": {"amplitude": 0.1}, "chaotic": {"amplitude": 0.3}}
    theta = system.init_params(dtype=F64).expand(2, -1)
    state = system.init_state(theta, torch.tensor([0, 1]))
    assert isinstance(state, WalkerState)
    assert sum(x[0].numel() for x in state) == system.state_dim


@pytest.mark.parametrize("kwargs", [{"amplitude": 1.0}, {"amplitude": -0.1}, {"horizon": 0},
                                    {"dt": 0.0}, {"slip_eps": 0.0}, {"friction": -1.0},
                                    {"stiffness": math.nan}])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MassSpringWalker(**kwargs)


def test_gradient_matches_central_differences():
    system = MassSpringWalker(**MassSpringWalker.regimes["regular"])
    keys, steps, h = torch.tensor([3, 4]), 50, 1e-6
    theta = system.init_params(dtype=F64).expand(2, -1)

    def mean_loss(th, k):
        return rollout(system, th, k, steps)[0].mean(0)

    rows = theta.clone().requires_grad_()
    (grad,) = torch.autograd.grad(mean_loss(rows, keys).sum(), rows)
    # All 2 D perturbed copies of both rows in one batch (rows are independent by contract).
    eye = torch.eye(system.param_dim, dtype=F64)
    shifted = torch.cat([theta[:, None] + h * eye, theta[:, None] - h * eye], 1)  # [2, 2D, D]
    losses = mean_loss(shifted.reshape(-1, system.param_dim),
                       keys.repeat_interleave(2 * system.param_dim)).reshape(2, 2, -1)
    fd = (losses[:, 0] - losses[:, 1]) / (2 * h)
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-9)


def test_loss_is_minus_the_centre_of_mass_speed():
    system = MassSpringWalker(**MassSpringWalker.regimes["chaotic"])
    keys = torch.tensor([0, 1, 2])
    theta = system.init_params(dtype=F64).expand(3, -1)
    losses, state = rollout(system, theta, keys, 200)
    start = x_com(system.init_state(theta, keys))
    speed = (x_com(state) - start) / (200 * system.dt)
    assert torch.allclose(losses.mean(0), -speed, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_passive_body_rests_on_the_ground(dtype):
    system = MassSpringWalker()
    keys = torch.arange(4)
    theta = torch.zeros(4, system.param_dim, dtype=dtype)
    losses, state = rollout(system, theta, keys, 1000)  # 5 s
    start = system.init_state(theta, keys)
    assert state.position.dtype == dtype and torch.isfinite(state.position).all()
    y = state.position[..., 1]
    assert (y > -0.01).all()  # the penalty holds the weight within 1 cm of y = 0
    assert (y[:, :3] < 0.01).all()  # and the feet are not pushed off the ground
    assert torch.allclose(y.mean(1), torch.full((4,), system.size / 2, dtype=dtype), atol=0.01)
    assert state.velocity.abs().max() < 1e-3  # at rest: damped, nothing blows up
    assert (x_com(state) - x_com(start)).abs().max() < 0.01
    assert losses.mean(0).abs().max() < 1e-2 / (1000 * system.dt)


def test_chaotic_gait_stays_above_ground_and_finite():
    system = MassSpringWalker(**MassSpringWalker.regimes["chaotic"])
    keys = torch.arange(8)
    theta = system.init_params().expand(8, -1)
    state, low = system.init_state(theta, keys), torch.tensor(0.0)
    with torch.no_grad():
        for t in range(1000):
            state, loss = system.step(theta, state, torch.full_like(keys, t), keys)
            low = torch.minimum(low, state.position[..., 1].min())
    assert torch.isfinite(state.position).all() and torch.isfinite(state.velocity).all()
    assert low > -0.1  # landings from hops compress the ground by centimetres, no more


def test_gradient_descent_makes_it_walk():
    system = MassSpringWalker(**MassSpringWalker.regimes["regular"])
    theta = torch.nn.Parameter(system.init_params(dtype=F64))
    opt = torch.optim.Adam([theta], lr=0.15)
    keys = torch.tensor([0, 1])
    for _ in range(5):  # BPTT on 0.5 s episodes
        loss = rollout(system, theta.expand(2, -1), keys, 100)[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Held-out keys, 2 s: the starting wave, the descended gait and no actuation in one batch.
    start, none = system.init_params(dtype=F64), torch.zeros(system.param_dim, dtype=F64)
    rows = torch.stack([start, theta.detach(), none]).repeat_interleave(4, 0)
    with torch.no_grad():
        speed = -rollout(system, rows, torch.arange(10, 14).repeat(3), 400)[0].mean(0)
    before, after, still = speed.reshape(3, 4)
    assert (before < -0.02).all()  # the starting wave shuffles backwards
    assert (after > 0.05).all()  # forward at > 5 cm/s (~0.1 m/s)
    assert still.abs().max() < 0.01 and still.abs().max() < after.min() / 5  # settling only


def test_bptt_gradient_spread_explodes_only_in_the_chaotic_regime():
    growth = {}
    for regime in ("regular", "chaotic"):
        system = MassSpringWalker(**MassSpringWalker.regimes[regime])
        g = gradient_growth_rate(system, system.init_params(dtype=F64),
                                 horizons=[10, 200, 400, 600], samples=16, seed=0)
        assert (g.nonfinite == 0).all()
        growth[regime] = (g.log_std[-1] - g.log_std[0]).exp().item()
        growth[regime + "_slope"] = g.slope
    # std(600) / std(10): ~0.2 regular (mean-loss gradients shrink like 1/T), ~170 chaotic.
    assert growth["regular"] < 1 and growth["chaotic"] > 10
    assert growth["chaotic"] > 100 * growth["regular"]
    assert growth["regular_slope"] < 0 < 0.004 < growth["chaotic_slope"]


def test_lyapunov_exponent_positive_only_in_the_chaotic_regime():
    lam = {}
    for regime in ("regular", "chaotic"):
        system = MassSpringWalker(**MassSpringWalker.regimes[regime])
        res = lyapunov_exponents(system, system.init_params(dtype=F64), steps=300, burn_in=100,
                                 trajectories=4, seed=0)
        lam[regime] = res.per_step.item()
    # Regular: ~0 (translation in x is neutral, the rest contracts; the finite-time estimate is
    # biased low while the frame aligns); chaotic ~0.008 per step here, 0.007 on long runs.
    assert lam["regular"] < 0.001 and lam["chaotic"] > 0.003

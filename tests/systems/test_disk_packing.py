import math

import pytest
import torch

from estimators import BPTT
from systems.disk_packing import DiskPacking, box_side, energy_and_forces
from systems.registry import make
from tests.helpers import rollout

F64 = torch.float64



def test_registered_with_regimes():
    system = make("disk_packing", n_disks=16)
    assert isinstance(system, DiskPacking) and system.name == "disk_packing"
    assert system.param_dim == 1 and system.differentiable and system.dt is None
    assert {"regular", "chaotic"} <= set(system.regimes)
    for kwargs in system.regimes.values():
        DiskPacking(n_disks=16, **kwargs)


@pytest.mark.parametrize("kwargs", [{"n_disks": 15}, {"diameter": 0.0}, {"horizon": 0},
                                    {"loss": "mean"}, {"packing_fraction": -1.0}])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DiskPacking(**kwargs)


def test_box_side_matches_packing_fraction():
    system = DiskPacking(n_disks=32, packing_fraction=0.98)
    D = torch.tensor([[0.7], [1.0], [1.4]], dtype=F64, requires_grad=True)
    side, diameters = system.geometry(D)
    disk_area = (math.pi * diameters**2 / 4).sum(1)
    assert torch.allclose(disk_area / side**2, torch.full_like(side, 0.98), rtol=1e-14, atol=0)
    (grad,) = torch.autograd.grad(side.sum(), D)  # the box is differentiated too
    expected = 16 * math.pi * D[:, 0] / 4 / 0.98 / side
    assert torch.allclose(grad[:, 0], expected, rtol=1e-12)
    assert torch.equal(side, box_side(D[:, 0], 32, 0.98))


def test_forces_are_minus_autograd_of_the_energy():
    system = DiskPacking(n_disks=16, horizon=5)
    theta = torch.tensor([[0.8], [1.0], [1.3]], dtype=F64)
    keys = torch.tensor([0, 1, 2])
    _, state = rollout(system, theta, keys, 5)  # also covers positions wrapped by FIRE steps
    for position in (system.init_state(theta, keys).position, state.position):
        position = position.clone().requires_grad_()
        side, diameters = system.geometry(theta)
        energy, force = energy_and_forces(position, side, diameters)
        (grad,) = torch.autograd.grad(energy.sum(), position)
        assert torch.allclose(force, -grad, rtol=1e-12, atol=1e-13)
        assert (energy > 0).all()


def test_blocked_pair_terms_equal_one_pass():
    """Eager `energy_and_forces` takes rows in cache-sized blocks (32 rows at N = 128): 70 rows
    in three blocks give the one-pass energies, forces and gradient w.r.t. the diameter."""
    from systems.disk_packing import _pair_terms
    system = DiskPacking(n_disks=128)
    theta = torch.linspace(0.8, 1.4, 70, dtype=F64)[:, None].requires_grad_()
    position = system.init_state(theta.detach(), torch.arange(70)).position
    side, diameters = system.geometry(theta)
    blocked, whole = energy_and_forces(position, side, diameters), _pair_terms(position, side, diameters)
    for a, b in zip(blocked, whole):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    g1, = torch.autograd.grad(blocked[0].sum(), theta, retain_graph=True)
    g2, = torch.autograd.grad(whole[0].sum(), theta)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("loss", ["running", "final"])
def test_gradient_matches_central_differences(loss):
    system = DiskPacking(n_disks=16, horizon=15, loss=loss)
    keys = torch.tensor([3, 4, 5])
    theta = torch.tensor([[0.9], [1.0], [1.1]], dtype=F64)

    def mean_loss(th):
        return rollout(system, th, keys, system.horizon)[0].mean(0)

    rows = theta.clone().requires_grad_()
    (grad,) = torch.autograd.grad(mean_loss(rows).sum(), rows)
    h = 1e-6
    fd = (mean_loss(theta + h) - mean_loss(theta - h)) / (2 * h)
    assert torch.allclose(grad[:, 0], fd, rtol=1e-6, atol=0)


def test_final_loss_is_the_energy_after_the_horizon():
    keys = torch.tensor([0, 1])
    theta = torch.full((2, 1), 1.0, dtype=F64)
    final, state = rollout(DiskPacking(n_disks=16, horizon=12, loss="final"), theta, keys, 12)
    running, _ = rollout(DiskPacking(n_disks=16, horizon=12), theta, keys, 12)
    assert torch.equal(final[:-1], torch.zeros_like(final[:-1]))
    assert torch.allclose(final.mean(0), running[-1], rtol=1e-14)
    assert torch.allclose(running[-1], DiskPacking(n_disks=16).energy(theta, state.position))


def test_fire_lowers_the_energy():
    system = DiskPacking(n_disks=32)
    keys = torch.arange(4)
    theta = torch.full((4, 1), 1.0, dtype=F64)
    losses, state = rollout(system, theta, keys, 150)
    e0 = system.energy(theta, system.init_state(theta, keys).position)
    assert (losses[-1] < 0.2 * e0).all()
    assert (losses[-1] <= losses[:10].min(0).values).all()
    assert (state.dt > 0).all() and (state.dt <= DiskPacking.dt_max).all()
    assert (state.alpha <= DiskPacking.alpha_start).all()


def test_deterministic_and_batch_independent():
    system = DiskPacking(n_disks=16, horizon=20)
    keys = torch.tensor([7, 8, 9])
    theta = torch.tensor([[0.9], [1.0], [1.2]], dtype=F64)
    a, state_a = rollout(system, theta, keys, 20)
    b, state_b = rollout(system, theta, keys, 20)
    assert torch.equal(a, b) and torch.equal(state_a.position, state_b.position)
    alone, state_alone = rollout(system, theta[1:2], keys[1:2], 20)
    assert torch.allclose(alone[:, 0], a[:, 1], rtol=0, atol=1e-12)
    assert torch.allclose(state_alone.position[0], state_a.position[1], rtol=0, atol=1e-12)
    assert torch.equal(state_alone.n_pos[0], state_a.n_pos[1])


def test_dtypes():
    system = DiskPacking(n_disks=16)
    assert system.init_params().dtype == torch.float32
    keys = torch.tensor([0, 1])
    for dtype in (torch.float32, F64):
        theta = system.init_params(dtype=dtype).expand(2, 1)
        state = system.init_state(theta, keys)
        state, loss = system.step(theta, state, torch.zeros_like(keys), keys)
        assert loss.dtype == dtype and loss.shape == (2,)
        assert all(x.dtype == dtype for x in state[:5]) and state.n_pos.dtype == torch.int64


@pytest.mark.slow
def test_pathwise_variance_bursts_at_intermediate_k():
    """Metz et al. 2021: std over seeds of dE_K/dD is small at K = 50, large around K = 200.

    The burst comes from a heavy tail (a few packings rearranging late: with 96 keys the median
    |dE/dD| is 0.34 at K = 50 and 0.12 at K = 200 while the std goes 0.72 -> 8.3), so it needs
    enough keys to catch the tail: 24 keys missed it for one seed."""
    theta = torch.tensor([1.0], dtype=F64)
    std = {}
    for K in (50, 200):
        system = DiskPacking(n_disks=64, horizon=K, loss="final")
        est = BPTT(samples=96, horizon=K)
        e, _ = est.estimate(system, theta, est.init(system, theta, seed=0))
        std[K] = e.samples.std().item()
    assert std[200] > 3 * std[50]

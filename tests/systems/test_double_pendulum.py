"""Double pendulum physics: energy conservation under RK4, the linearised step, the policy."""
import math

import pytest
import torch

from systems import DoublePendulum, jacobian_eigenvalues

F64 = torch.float64
G = DoublePendulum.gravity / DoublePendulum.length
# Normal modes of small oscillations, M q'' = -K q with M = [[2, 1], [1, 1]], K = (g/l) diag(2, 1):
# omega^2 = (g/l) (2 -+ sqrt 2).
OMEGA = (math.sqrt(G * (2 - math.sqrt(2))), math.sqrt(G * (2 + math.sqrt(2))))


def free_rollout(system, keys, seconds):
    theta = torch.zeros(keys.shape[0], system.param_dim, dtype=F64)  # theta = 0: no torque
    state = system.init_state(theta, keys)
    start = state
    for t in range(int(round(seconds / system.dt))):
        state, _ = system.step(theta, state, torch.full_like(keys, t), keys)
    return start, state


@pytest.mark.parametrize("release_angle", [0.5, math.pi / 2])
def test_free_pendulum_conserves_energy_at_rk4_order(release_angle):
    """RK4 on an oscillation of frequency omega loses |R(i omega h)|^2 - 1 = -(omega h)^6 / 72 +
    O(h^8) of the energy per step, so over a fixed time the relative drift is O(h^5): halving dt
    divides it by ~2^5, and at dt = 0.01 it stays below (seconds / h) (omega_max h)^6 / 72."""
    keys = torch.arange(4)
    drift = {}
    for dt in (0.01, 0.02):
        system = DoublePendulum(release_angle=release_angle, dt=dt)
        start, end = free_rollout(system, keys, 3.0)
        e0 = system.energy(start)
        drift[dt] = ((system.energy(end) - e0).abs() / e0).max().item()
    assert drift[0.01] < (3.0 / 0.01) * (OMEGA[1] * 0.01) ** 6 / 72
    order = math.log2(drift[0.02] / drift[0.01])
    assert 4.0 < order < 6.0


def test_step_jacobian_at_rest_is_the_rk4_propagator():
    """At the hanging rest state the step is linear to first order: J = R(hA) with
    A = [[0, I], [-M^-1 K, 0]] and R(z) = 1 + z + z^2/2 + z^3/6 + z^4/24, whose eigenvalues are
    R(+-i omega_k h); exactly, up to rounding."""
    system = DoublePendulum(release_angle=0.0, angle_jitter=0.0)
    eig = jacobian_eigenvalues(system, torch.zeros(14, dtype=F64), t=0)[0]
    h = system.dt
    expect = []
    for w in OMEGA:
        for sign in (1, -1):
            z = complex(0.0, sign * w * h)
            expect.append(1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24)
    expect = torch.tensor(expect, dtype=torch.complex128)
    dist = (eig[:, None] - expect[None, :]).abs()
    assert dist.min(1).values.max() < 1e-12 and dist.min(0).values.max() < 1e-12
    assert (eig.abs() < 1).all()  # RK4 damps oscillations by (omega h)^6 / 144 per step


def test_policy_torque_and_its_work():
    """tau = max_torque tanh(W f); a constant bias torque on the shoulder does work
    integral tau1 q1' dt, so the energy changes by that amount (to the quadrature's accuracy)."""
    system = DoublePendulum(release_angle=0.3, angle_jitter=0.0, dt=0.001)
    W = torch.zeros(2, 7, dtype=F64)
    W[0, 6] = math.atanh(0.5)  # bias feature: tau1 = max_torque / 2, tau2 = 0
    theta = W.flatten().expand(1, -1)
    keys = torch.zeros(1, dtype=torch.int64)
    state = system.init_state(theta, keys)
    tau = system.torque(theta, state)
    torch.testing.assert_close(tau, torch.tensor([[system.max_torque / 2, 0.0]], dtype=F64))
    e0, work = system.energy(state), torch.zeros(1, dtype=F64)
    for t in range(500):
        nxt, _ = system.step(theta, state, torch.full_like(keys, t), keys)
        work = work + tau[:, 0] * (nxt[:, 0] - state[:, 0])  # tau1 constant: exact work
        state = nxt
    torch.testing.assert_close(system.energy(state) - e0, work, rtol=1e-9, atol=0)
    assert work.abs().item() > 0.1  # the torque does matter


def test_regimes_and_validation():
    assert DoublePendulum.regimes["regular"] == {"release_angle": 0.1}
    assert DoublePendulum.regimes["chaotic"] == {"release_angle": math.pi / 2}
    system = DoublePendulum(**DoublePendulum.regimes["regular"], angle_jitter=0.0)
    state = system.init_state(torch.zeros(2, 14), torch.arange(2))
    torch.testing.assert_close(state, torch.tensor([[0.1, 0.1, 0.0, 0.0]] * 2))
    assert state.dtype == torch.float32
    for bad in [{"horizon": 0}, {"dt": 0.0}, {"max_torque": -1.0}, {"angle_jitter": -0.1}]:
        with pytest.raises(ValueError):
            DoublePendulum(**bad)

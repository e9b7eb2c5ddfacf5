"""Chaos diagnostics against known values: Lyapunov exponents, step Jacobians, gradient growth.

Statistical checks compare the mean over trajectories with the known value within 4 standard
errors (and within the issue's absolute tolerance); exact checks use systems whose exponents
follow from a formula (a linear map, the Henon map's constant Jacobian determinant).
"""
import math
from typing import NamedTuple

import pytest
import torch

import systems
from systems import (DoublePendulum, LinearQuadratic, LogisticMap, gradient_growth_rate,
                     jacobian_eigenvalues, lyapunov_exponents)

F64 = torch.float64


class HenonState(NamedTuple):
    x: torch.Tensor      # [B]
    y: torch.Tensor      # [B]
    steps: torch.Tensor  # [B] int64: not a tangent coordinate, passed through by the diagnostics


class Henon(systems.System):
    """Henon map (x, y) <- (1 - a x^2 + y, b x), theta = (a, b); a user system with a NamedTuple
    state. Its Jacobian [[-2 a x, 1], [b, 0]] has determinant -b at every point, so
    lambda_1 + lambda_2 = ln b exactly; at (1.4, 0.3), lambda_1 = 0.41922 (Henon 1976,
    Commun. Math. Phys. 50; Sprott 2003, "Chaos and Time-Series Analysis", table A)."""

    param_dim, state_dim, horizon = 2, 2, 100

    def init_params(self, dtype=torch.float32, device=None):
        return torch.tensor([1.4, 0.3], dtype=dtype, device=device)

    def init_state(self, theta, keys):
        u = systems.noise.uniform(keys, 0, stream=0, shape=(2,), dtype=theta.dtype)
        return HenonState(0.1 * u[:, 0], 0.1 * u[:, 1], torch.zeros_like(keys))

    def step(self, theta, state, t, keys):
        x = 1.0 - theta[:, 0] * state.x**2 + state.y
        return HenonState(x, theta[:, 1] * state.x, state.steps + 1), x


HENON_LAMBDA1 = 0.41922


def within(res, truth, i=0):
    """|mean - truth| < 4 SE for exponent i."""
    return abs(res.per_step[i].item() - truth) < 4 * res.stderr[i].item()


def test_logistic_map_r4_is_ln2():
    res = lyapunov_exponents(LogisticMap(r=4.0), torch.tensor([4.0], dtype=F64), steps=1000,
                             burn_in=50, trajectories=32, seed=0)
    assert res.per_step.shape == res.stderr.shape == (1,) and res.per_trajectory.shape == (32, 1)
    assert res.per_time is None  # a map has no time step
    assert abs(res.per_step.item() - math.log(2)) < 0.005
    assert within(res, math.log(2))


def test_logistic_map_regular_regime_is_negative():
    """At r = 3.2 the attracting 2-cycle {x-, x+} has multiplier r^2 (1 - 2x-)(1 - 2x+) =
    -r^2 + 2r + 4 = 0.16, so lambda = ln(0.16) / 2 per step (May 1976)."""
    r = 3.2
    res = lyapunov_exponents(LogisticMap(r=r), torch.tensor([r], dtype=F64), steps=200,
                             burn_in=200, trajectories=4)
    exact = 0.5 * math.log(abs(-r * r + 2 * r + 4))
    torch.testing.assert_close(res.per_trajectory, torch.full((4, 1), exact, dtype=F64),
                               rtol=1e-9, atol=0)


def test_henon_map_with_namedtuple_state():
    res = lyapunov_exponents(Henon(), torch.tensor([1.4, 0.3], dtype=F64), steps=2000, burn_in=100,
                             k=2, trajectories=16, seed=0)
    assert res.per_step.shape == (2,)
    assert abs(res.per_step[0].item() - 0.42) < 0.01 and within(res, HENON_LAMBDA1, 0)
    assert abs(res.per_step[1].item() + 1.62) < 0.01 and within(res, math.log(0.3) - HENON_LAMBDA1, 1)
    # |det J| = b at every step, so the sum is ln 0.3 for every trajectory, up to rounding
    torch.testing.assert_close(res.per_trajectory.sum(1), torch.full((16,), math.log(0.3), dtype=F64),
                               rtol=1e-10, atol=0)


def test_henon_jacobian_is_the_analytic_one():
    """J = [[-2 a x, 1], [b, 0]]: real eigenvalues mu = -a x +- sqrt(a^2 x^2 + b), whose product
    is det J = -b and whose sum is the trace -2 a x, with x the state at step t."""
    system, theta = Henon(), torch.tensor([1.4, 0.3], dtype=F64)
    eig = jacobian_eigenvalues(system, theta, t=7, trajectories=3, seed=2)
    assert eig.shape == (3, 2) and torch.equal(eig.imag, torch.zeros_like(eig.imag))
    torch.testing.assert_close(eig.real.prod(1), torch.full((3,), -0.3, dtype=F64), rtol=1e-12, atol=0)
    x = -eig.real.sum(1) / (2 * 1.4)  # the state each trajectory reached, from the trace
    assert (x.abs() < 1.5).all() and x.unique().numel() == 3  # on the attractor, distinct keys
    assert (eig.abs()[:, 0] >= eig.abs()[:, 1]).all()


@pytest.mark.parametrize("state_dim, k", [(4, 2), (40, 3)])  # full-Jacobian and JVP paths
def test_linear_map_exponents_are_log_spectral_radius(state_dim, k):
    """s <- A s + B theta + w with A = rho Q (Q orthogonal): every tangent vector is scaled by
    exactly rho per step, so every finite-time exponent is ln rho (the noise is additive)."""
    system = LinearQuadratic(state_dim=state_dim, spectral_radius=0.9)
    res = lyapunov_exponents(system, system.init_params(F64), steps=30, burn_in=5, k=k,
                             trajectories=3)
    torch.testing.assert_close(res.per_trajectory, torch.full((3, k), math.log(0.9), dtype=F64),
                               rtol=1e-12, atol=0)


def test_jacobian_eigenvalues_of_linear_quadratic_are_the_spectrum_of_a():
    system = LinearQuadratic(state_dim=5, spectral_radius=1.1)
    eig = jacobian_eigenvalues(system, system.init_params(F64), t=3, trajectories=2)
    assert eig.shape == (2, 5) and eig.is_complex()
    truth = torch.linalg.eigvals(system.A)
    for row in eig:  # the same multiset: nearest-neighbour distances both ways
        dist = (row[:, None] - truth[None, :]).abs()
        assert dist.min(1).values.max() < 1e-12 and dist.min(0).values.max() < 1e-12
    torch.testing.assert_close(eig.abs(), torch.full((2, 5), 1.1, dtype=F64), rtol=1e-12, atol=0)


def test_double_pendulum_jacobian_regular_vs_chaotic():
    """Local expansion rate log|mu| / dt of the one-step Jacobian along a trajectory. Near the
    hanging rest position the linearised flow is a rotation (eigenvalues +-i omega, RK4 keeps
    |mu| <= 1 up to the small nonlinearity at 0.1 rad); released at pi/2 the trajectory passes
    through configurations with real, expanding eigenvalues (rates of several per second)."""
    theta = torch.zeros(14, dtype=F64)
    rate = {}
    for regime in ("regular", "chaotic"):
        system = DoublePendulum(**DoublePendulum.regimes[regime])
        rate[regime] = max((jacobian_eigenvalues(system, theta, t=t, trajectories=2).abs().log()
                            / system.dt).max().item() for t in range(0, 400, 50))
    assert rate["regular"] < 0.05  # /s, below the chaotic threshold of the test below
    assert rate["chaotic"] > 1.0   # /s


def test_double_pendulum_exponent_per_second():
    """Free double pendulum (theta = 0). Released at (pi/2, pi/2), lambda_1 ~ 1 /s; the first
    seconds after a release from rest are less mixing than the attractor (finite-time exponents
    over t in [1, 11] s average ~0.76 /s, over [10, 20] s ~0.99 /s), hence the 10 s burn-in. At
    0.1 rad the motion is quasi-periodic: lambda_1 = 0 (the estimate decays like log(t) / t)."""
    theta = torch.zeros(14, dtype=F64)
    chaotic = DoublePendulum(release_angle=math.pi / 2)
    res = lyapunov_exponents(chaotic, theta, steps=1000, burn_in=1000, trajectories=16, seed=0)
    torch.testing.assert_close(res.per_time, res.per_step / chaotic.dt)
    assert 0.7 < res.per_time.item() < 1.3
    regular = DoublePendulum(release_angle=0.1)
    res = lyapunov_exponents(regular, theta, steps=2000, burn_in=100, trajectories=4, seed=0)
    assert res.per_time.item() < 0.05 and within(res, 0.0)


def test_gradient_growth_rate_tracks_lambda_on_logistic_map():
    """log std of the per-key BPTT gradient grows like lambda T (lambda = ln 2 at r = 4). The loss
    is a mean over T steps, which adds -log T and lowers the fitted slope by about 1/40 over
    T = 20..80; the issue's criterion is a slope within 10% of lambda."""
    g = gradient_growth_rate(LogisticMap(r=4.0), torch.tensor([4.0], dtype=F64),
                             horizons=list(range(20, 81, 5)), samples=256, seed=0)
    assert g.horizons.tolist() == list(range(20, 81, 5)) and g.log_std.shape == (13,)
    assert g.nonfinite.sum().item() == 0
    assert abs(g.slope - math.log(2)) < 0.1 * math.log(2)
    # with the mean's 1/T undone, log(T std) grows at ln 2 up to the sampling noise of the fit
    corrected = g.log_std + g.horizons.to(F64).log()
    x = g.horizons.to(F64) - g.horizons.to(F64).mean()
    slope = ((x * (corrected - corrected.mean())).sum() / (x * x).sum()).item()
    assert abs(slope - math.log(2)) < abs(g.slope - math.log(2))


def test_gradient_growth_rate_of_a_stable_linear_system_is_flat():
    """Regular regime: the pathwise gradient of LinearQuadratic depends on theta only through the
    (deterministic) sensitivities, so its spread over keys does not grow with T."""
    slopes = {}
    for rho in (0.9, 1.1):
        system = LinearQuadratic(spectral_radius=rho)
        slopes[rho] = gradient_growth_rate(system, system.init_params(F64), horizons=[10, 20, 40],
                                           samples=256).slope
    # log std of 256 samples has SE ~ 1/sqrt(2 * 255) ~ 0.044, so the fitted slope over T = 10..40
    # has SE ~ 0.002: flat means within ~4 SE of zero, far below the unstable system's growth
    assert abs(slopes[0.9]) < 0.01 and slopes[1.1] > 10 * 0.01


def test_gradient_growth_rate_counts_nonfinite_samples():
    """Beyond r = 4 the logistic map escapes [0, 1] and overflows to -inf: counted, not averaged."""
    g = gradient_growth_rate(LogisticMap(r=4.2), torch.tensor([4.2], dtype=F64),
                             horizons=[2, 400], samples=16)
    assert g.nonfinite[0].item() == 0 and g.nonfinite[1].item() > 0


def test_bad_arguments_are_rejected():
    lm, theta = LogisticMap(r=4.0), torch.tensor([4.0], dtype=F64)
    for kw, name in [({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"burn_in": -1}, "burn_in"),
                     ({"trajectories": 0}, "trajectories"), ({"k": 0}, "k"), ({"k": 2}, "k"),
                     ({"steps": True}, "steps")]:
        with pytest.raises((TypeError, ValueError), match=name):  # non-ints are TypeErrors
            lyapunov_exponents(lm, theta, **{"steps": 10, **kw})
    with pytest.raises(ValueError, match="theta"):
        lyapunov_exponents(lm, torch.tensor([[4.0]], dtype=F64), steps=10)
    with pytest.raises(ValueError, match="theta"):
        jacobian_eigenvalues(lm, torch.tensor([4.0, 1.0], dtype=F64), t=0)
    with pytest.raises(ValueError, match="t must"):
        jacobian_eigenvalues(lm, theta, t=-1)
    with pytest.raises(ValueError, match="two distinct horizons"):
        gradient_growth_rate(lm, theta, horizons=[5, 5])
    with pytest.raises(ValueError, match="horizon"):
        gradient_growth_rate(lm, theta, horizons=[0, 5])
    with pytest.raises(ValueError, match="samples"):
        gradient_growth_rate(lm, theta, horizons=[5, 10], samples=1)
    not_diff = LogisticMap(r=4.0)
    not_diff.differentiable = False
    with pytest.raises(ValueError, match="not differentiable"):
        gradient_growth_rate(not_diff, theta, horizons=[5, 10])


def test_same_seed_same_result_and_seeds_differ():
    lm, theta = LogisticMap(r=3.9), torch.tensor([3.9], dtype=F64)
    a = lyapunov_exponents(lm, theta, steps=50, burn_in=10, trajectories=4, seed=1)
    b = lyapunov_exponents(lm, theta, steps=50, burn_in=10, trajectories=4, seed=1)
    c = lyapunov_exponents(lm, theta, steps=50, burn_in=10, trajectories=4, seed=2)
    assert torch.equal(a.per_trajectory, b.per_trajectory)
    assert not torch.equal(a.per_trajectory, c.per_trajectory)
    assert torch.isnan(lyapunov_exponents(lm, theta, steps=5, trajectories=1).stderr).all()

"""Statistical tests with fixed seeds: |mean - truth| < 4 standard errors (STYLE 6)."""
import pytest
import torch

import estimators
import systems
from estimators.base import perturbations

F64 = torch.float64
THETA = torch.tensor([0.3, -0.2, 0.5], dtype=F64)


def z_scores(samples, truth):
    """|mean - truth| / SE per coordinate, SE = std / sqrt(n) over independent samples ``[n, D]``."""
    se = samples.std(0) / samples.shape[0] ** 0.5
    return (samples.mean(0) - truth).abs() / se


def full_horizon_samples(est, system):
    return est.estimate(system, THETA, est.init(system, THETA, seed=0))[0].samples


def episode_average_samples(est, system):
    """Per pair, the average of its T/K window contributions over one episode (lockstep from
    t = 0); pairs are independent, so these rows are independent episode estimates."""
    state, windows = est.init(system, THETA, seed=0), []
    for _ in range(system.horizon // est.truncation):
        e, state = est.estimate(system, THETA, state)
        assert e.nonfinite == 0
        windows.append(e.samples)
    return torch.stack(windows).mean(0)


@pytest.mark.parametrize("name,hp", [("antithetic_es", {"pairs": 2000, "sigma": 0.5}),
                                     ("bptt", {"samples": 2000, "sigma": 0.5})])
def test_full_horizon_estimators_are_unbiased_for_grad_L_sigma(name, hp):
    lq = systems.LinearQuadratic(horizon=20)
    z = z_scores(full_horizon_samples(estimators.make(name, **hp), lq), lq.exact_grad(THETA, 0.5))
    assert (z < 4).all(), z


@pytest.mark.parametrize("name", ["pes", "nres"])
def test_pes_and_nres_episode_average_is_unbiased(name):
    lq = systems.LinearQuadratic(horizon=20)
    est = estimators.make(name, truncation=4, pairs=2000, sigma=0.3)
    z = z_scores(episode_average_samples(est, lq), lq.exact_grad(THETA, 0.3))
    assert (z < 4).all(), z


@pytest.mark.parametrize("name,hp", [("truncated_bptt", {"samples": 2000}),
                                     ("truncated_es", {"pairs": 2000, "sigma": 0.3})])
def test_truncated_estimators_are_measurably_biased(name, hp):
    lq = systems.LinearQuadratic(horizon=20)
    est = estimators.make(name, truncation=2, **hp)
    z = z_scores(episode_average_samples(est, lq), lq.exact_grad(THETA, 0.3))
    assert z.max() > 6, z


def test_antithetic_pairs_share_system_noise():
    """Common random numbers: both members of pair i see key i's noise. The loss is quadratic
    in theta for a fixed key, so (L+ - L-)/(2 sigma) = eps . grad L_key exactly, and each ES
    sample equals eps eps^T g_i with g_i the pathwise gradient of the same key (BPTT with the
    same seed uses the same keys). Without shared noise the difference would be noise / sigma."""
    lq = systems.LinearQuadratic(horizon=20, noise_std=1.0)
    es = estimators.AntitheticES(pairs=16, sigma=0.05)
    bp = estimators.BPTT(samples=16)
    e, _ = es.estimate(lq, THETA, es.init(lq, THETA, seed=3))
    g, _ = bp.estimate(lq, THETA, bp.init(lq, THETA, seed=3))
    eps = perturbations(torch.tensor(3), torch.arange(16), 0, 3, F64)
    expected = eps * (eps * g.samples).sum(1, keepdim=True)
    torch.testing.assert_close(e.samples, expected, rtol=1e-9, atol=1e-12)
    keys = torch.tensor([4, 4])
    rows = THETA.expand(2, -1)
    a, la = lq.step(rows, lq.init_state(rows, keys), torch.zeros(2, dtype=torch.int64), keys)
    assert torch.equal(la[0], la[1]) and torch.equal(a[0], a[1])


def test_logistic_bptt_std_explodes_while_es_stays_bounded():
    theta = torch.tensor([3.9], dtype=F64)
    system = systems.LogisticMap()
    bptt_std, es_std = [], []
    for T in (10, 50, 100, 200):
        e, _ = (b := estimators.BPTT(samples=64, horizon=T)).estimate(system, theta, b.init(system, theta, seed=0))
        bptt_std.append(e.samples.std().item())
        a = estimators.AntitheticES(pairs=64, sigma=0.01, horizon=T)
        e, _ = a.estimate(system, theta, a.init(system, theta, seed=0))
        es_std.append(e.samples.std().item())
    assert bptt_std[-1] / bptt_std[0] > 1e10  # lambda ~ 0.5 per step: e^(0.5 * 190)
    assert all(b > a for a, b in zip(bptt_std, bptt_std[1:]))
    assert max(es_std) / min(es_std) < 10


def test_nonfinite_samples_are_counted_and_excluded():
    class Blowup(systems.LogisticMap):
        """Logistic map that returns inf losses for odd episode keys."""

        def step(self, theta, state, t, keys):
            nxt, loss = super().step(theta, state, t, keys)
            return nxt, torch.where(keys % 2 == 1, torch.full_like(loss, float("inf")), loss)

    system, theta = Blowup(r=3.2), torch.tensor([3.2], dtype=F64)
    for est in (estimators.BPTT(samples=16, horizon=5), estimators.AntitheticES(pairs=16, horizon=5)):
        state = est.init(system, theta, seed=0)
        e, _ = est.estimate(system, theta, state)
        assert 0 < e.nonfinite < 16 and e.ok
        assert e.samples.shape[0] == 16 - e.nonfinite
        assert torch.isfinite(e.grad).all() and torch.equal(e.grad, e.samples.mean(0))
    empty = estimators.finite_estimate(torch.full((3, 2), float("nan")), torch.zeros(3), steps=6)
    assert not empty.ok and empty.nonfinite == 3 and torch.isnan(empty.grad).all()


@pytest.mark.parametrize("name,hp,moves_away", [
    ("pes", {"pairs": 32, "sigma": 0.01}, False),
    ("nres", {"pairs": 32, "sigma": 0.01, "stagger": True}, False),
    ("truncated_bptt", {"samples": 1, "truncation": 1}, True),
    ("truncated_bptt", {"samples": 1}, True),
])
def test_influence_balancing_training(name, hp, moves_away):
    """PES paper, Fig. 4: online SGD from theta = 0.5. TBPTT (K = 1, 10) climbs away from the
    optimum; PES and NRES settle at the episode's optimum (-0.1465 for T = 1000, -> -1/6)."""
    system = systems.InfluenceBalancing()
    est = estimators.make(name, **{"truncation": 10, **hp})
    theta = torch.nn.Parameter(system.init_params(dtype=F64))
    opt = torch.optim.SGD([theta], lr=5e-4)
    state, path = est.init(system, theta, seed=0), []
    for _ in range(600):
        e, state = est.estimate(system, theta, state)
        theta.grad = e.grad
        opt.step()
        path.append(theta.item())
    end = sum(path[-100:]) / 100
    if moves_away:
        assert end > 1.0
    else:
        assert abs(end - system.exact_optimum()) < 0.02

"""Particle identity travels with the state: blocks of a population compose exactly, without Ray.

A state made by ``init(..., offset=o, population=P)`` holds particles o .. o + n - 1 of a
population of P: their episode keys, perturbations and stagger offsets are those of the same
particles in the single-process run. So two contiguous blocks (3 + 5 pairs of 8), each run
separately and concatenated, are the 8-pair estimate: samples bit for bit, the gradient as their
mean. A state is stepped only as its own block.
"""
import pytest
import torch

import estimators
import systems
from estimators.distributed import ShardedEstimator, _Shard, combine

F64 = torch.float64
T, K = 9, 4  # windows cross episode ends; with stagger the particles' ends differ

CASES = [
    ("antithetic_es", {"sigma": 0.05, "horizon": T}),
    ("mixed", {"sigma": 0.05, "horizon": T, "alpha": 0.3}),
    ("bptt", {"sigma": 0.05, "horizon": T}),
    ("bptt", {"horizon": T}),
    ("truncated_bptt", {"truncation": K, "horizon": T, "stagger": True}),
    ("truncated_es", {"sigma": 0.05, "truncation": K, "horizon": T, "stagger": True}),
    ("pes", {"sigma": 0.05, "truncation": K, "horizon": T, "stagger": True}),
    ("nres", {"sigma": 0.05, "truncation": K, "horizon": T, "stagger": True}),
    ("pes", {"sigma": 0.05, "truncation": K, "horizon": T}),
]


def make(name, n, hp):
    attr = estimators.ESTIMATORS.get(name).particles_attr
    return estimators.make(name, **{attr: n}, **hp)


@pytest.mark.parametrize("system_name", ["logistic_map", "influence_balancing"])
@pytest.mark.parametrize("name, hp", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_two_blocks_compose_to_the_population_estimate(name, hp, system_name):
    system = systems.make(system_name)
    theta = system.init_params(dtype=F64) + 0.05
    whole, first, second = make(name, 8, hp), make(name, 3, hp), make(name, 5, hp)
    s = whole.init(system, theta, seed=5)
    s1 = first.init(system, theta, seed=5, offset=0, population=8)
    s2 = second.init(system, theta, seed=5, offset=3, population=8)
    assert torch.equal(s2.particle, torch.arange(3, 8)) and int(s2.population) == 8
    if whole.online:  # the staggered burn-in spreads the population, not each block
        assert torch.equal(torch.cat([s1.t, s2.t]), s.t)
        assert len(set(s.t.tolist())) > 1 or not hp.get("stagger")
    for _ in range(5):  # several windows: persistent states carry each block's particles
        e, s = whole.estimate(system, theta, s)
        e1, s1 = first.estimate(system, theta, s1)
        e2, s2 = second.estimate(system, theta, s2)
        assert torch.equal(torch.cat([e1.samples, e2.samples]), e.samples)
        joined = combine([e1, e2])
        assert torch.equal(joined.grad, e.grad)
        torch.testing.assert_close(joined.loss, e.loss, rtol=1e-14, atol=0)
        assert (joined.steps, joined.nonfinite) == (e.steps, e.nonfinite)


@pytest.mark.parametrize("name", ["antithetic_es", "bptt", "pes", "truncated_bptt"])
def test_a_state_is_stepped_only_as_its_own_block(name):
    system = systems.make("logistic_map")
    theta = system.init_params(dtype=F64)
    hp = dict(CASES)[name]
    first, second = make(name, 3, hp), make(name, 5, hp)
    s2 = second.init(system, theta, seed=1, offset=3, population=8)
    with pytest.raises(ValueError, match=r"particles 3\.\.7 of a population of 8"):
        first.estimate(system, theta, s2)
    # blocks of the same size: the shard that holds particles 4..7 refuses particles 0..3
    a, b = (_Shard(make(name, 4, hp), system, lo, 8) for lo in (0, 4))
    a.init(theta, 1)
    b.init(theta, 1)
    a.estimate(theta)
    a.state, b.state = b.state, a.state
    with pytest.raises(ValueError, match=r"particles 4\.\.7 of 8, but this shard holds 0\.\.3"):
        a.estimate(theta)


def test_bad_blocks_are_rejected():
    system = systems.make("logistic_map")
    theta = system.init_params(dtype=F64)
    est = estimators.make("pes", pairs=5, truncation=K, horizon=T)
    with pytest.raises(ValueError, match=r"particles 4\.\.8 .*population=8"):
        est.init(system, theta, seed=0, offset=4, population=8)
    with pytest.raises(ValueError, match="offset"):
        est.init(system, theta, seed=0, offset=-1)
    with pytest.raises(TypeError, match="population"):
        est.init(system, theta, seed=0, population=8.0)
    whole = est.init(system, theta, seed=0)  # the default: the whole population
    assert torch.equal(whole.particle, torch.arange(5)) and int(whole.population) == 5


def test_a_population_wide_estimator_is_not_sharded():
    """Mixed's measured alpha depends on every pair, so its blocks would not compose."""
    with pytest.raises(ValueError, match="cannot be sharded"):
        ShardedEstimator(estimators.make("mixed", pairs=4))
    assert ShardedEstimator(estimators.make("mixed", pairs=4, alpha=0.5)).separable

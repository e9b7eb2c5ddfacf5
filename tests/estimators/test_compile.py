"""Compiled systems: same estimates as eager (float64, up to rounding), eager fallback with a
warning when compilation fails, and a sync-free reset schedule equal to the step-by-step one."""
import warnings

import pytest
import torch

import estimators
import systems
from estimators.rollout import CompileFallbackWarning, compiled, reset_steps

F64 = torch.float64


def test_reset_steps_match_the_stepwise_rule():
    t = torch.tensor([0, 3, 10, 9, 10, 2])
    budget = torch.tensor([25, 25, 25, 25, 0, 4])
    T, steps = 10, 25
    expect, tt = [], t.clone()
    for j in range(steps):
        active = budget > j
        done = (tt >= T) & active
        expect.append(bool(done.any()))
        tt = torch.where(done, torch.zeros_like(tt), tt) + active.long()
    assert reset_steps(t, T, steps, budget) == expect
    assert reset_steps(t, T, steps) == [j in (0, 1, 7, 8, 10, 11, 17, 18, 20, 21) for j in range(steps)]


def test_compiled_antithetic_es_matches_eager_float64():
    system = systems.make("logistic_map")
    fast = compiled(system)
    theta = system.init_params(dtype=F64)
    est = estimators.make("pes", pairs=4, sigma=0.01, horizon=12, truncation=5)
    s_eager, s_fast = est.init(system, theta, seed=0), est.init(fast, theta, seed=0)
    for _ in range(3):  # crosses an episode restart
        e1, s_eager = est.estimate(system, theta, s_eager)
        e2, s_fast = est.estimate(fast, theta, s_fast)
        torch.testing.assert_close(e2.samples, e1.samples, rtol=1e-10, atol=1e-12)
    assert fast.fallback is None and fast.compile_seconds > 0
    assert fast.name == system.name and fast.r == system.r  # attributes are delegated


@pytest.mark.slow
@pytest.mark.parametrize("name", ["double_pendulum", "mass_spring_walker"])
def test_compiled_policy_systems_match_eager(name):
    system = systems.make(name, **systems.SYSTEMS.get(name).regimes["regular"])
    fast = compiled(system)
    theta = system.init_params(dtype=F64) + 0.01
    for est_name, hp in [("antithetic_es", {"pairs": 4}), ("bptt", {"samples": 2})]:
        est = estimators.make(est_name, sigma=0.01, horizon=30, **hp)
        e1, _ = est.estimate(system, theta, est.init(system, theta, seed=0))
        e2, _ = est.estimate(fast, theta, est.init(fast, theta, seed=0))
        torch.testing.assert_close(e2.grad, e1.grad, rtol=1e-10, atol=1e-12)



def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    system = systems.make("logistic_map")
    fast = compiled(system)

    def failing_compile(fn, **kw):
        def run(*args):
            raise RuntimeError("backend exploded")
        return run
    monkeypatch.setattr(torch, "compile", failing_compile)
    theta = system.init_params(dtype=F64)
    est = estimators.make("antithetic_es", pairs=2, sigma=0.01, horizon=5)
    with pytest.warns(CompileFallbackWarning, match="backend exploded"):
        e2, _ = est.estimate(fast, theta, est.init(fast, theta, seed=0))
    e1, _ = est.estimate(system, theta, est.init(system, theta, seed=0))
    assert torch.equal(e1.grad, e2.grad) and fast.fallback.startswith("RuntimeError")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once; eager from then on
        est.estimate(fast, theta, est.init(fast, theta, seed=0))


def test_compile_seconds_counts_each_batch_size():
    """A new batch size compiles anew (dynamic=False), and its compile time is added."""
    fast = compiled(systems.make("logistic_map"))
    est = estimators.make("antithetic_es", pairs=2, sigma=0.01, horizon=3)
    theta = fast.init_params()
    est.estimate(fast, theta, est.init(fast, theta, seed=0))
    once = fast.compile_seconds
    est.estimate(fast, theta, est.init(fast, theta, seed=1))  # same B: nothing new to time
    assert fast.compile_seconds == once > 0
    wider = estimators.make("antithetic_es", pairs=5, sigma=0.01, horizon=3)
    wider.estimate(fast, theta, wider.init(fast, theta, seed=0))
    assert fast.compile_seconds > once and fast.fallback is None

"""Ask/tell strategies (pycma, evosax, nevergrad) and cross-checks of the project's ES gradients
against evosax, an implementation written elsewhere (STYLE 6: exact tests with fixed noise).

Cross-check recipe: evosax asks its mirrored population [z_1..z_N, -z_1..-z_N] (x sigma); the
project's estimator is run with those perturbations (its `perturbations` patched to return them);
the per-member window losses it simulated are told to evosax as raw fitness (identity shaping);
evosax's mean then moves by -grad (SGD with learning rate 1), which must equal the project's
``Estimate.grad`` to float32 tolerance.
"""
import importlib
import io
import math

import numpy as np
import pytest
import torch

import estimators
import systems

pytest.importorskip("cma")
pytest.importorskip("nevergrad")
pytest.importorskip("evosax")

ADAPTERS = ["cmaes", "evosax:Open_ES", "evosax:CMA_ES", "evosax:Sep_CMA_ES", "evosax:SNES",
            "evosax:PersistentES", "evosax:NoiseReuseES", "nevergrad:ParametrizedCMA",
            "nevergrad:TBPSA", "nevergrad:NGOpt", "nevergrad:TwoPointsDE"]
D, P = 4, 8


def quadratic(x):
    return ((x - 0.5) ** 2).sum(-1)


def generations(strategy, n):
    asked = []
    for _ in range(n):
        x = strategy.ask()
        asked.append(x)
        strategy.tell(quadratic(x))
    return asked


@pytest.mark.parametrize("name", ADAPTERS)
def test_ask_tell_contract(name):
    theta = torch.linspace(-1, 1, D, dtype=torch.float64)
    np.random.seed(123)
    outer = np.random.get_state()
    s = estimators.make(name, sigma=0.3, popsize=P).init(theta, seed=7)
    x = s.ask()
    assert x.shape == (P, D) and x.dtype == torch.float64 and s.mean.shape == (D,)
    with pytest.raises(ValueError, match="fitness"):
        s.tell(torch.zeros(P + 1))
    metrics = s.tell(quadratic(x))
    assert metrics["generation"] == 1 and math.isfinite(metrics["best_fitness"])
    with pytest.raises(RuntimeError, match="ask"):
        s.tell(quadratic(x))
    first = [x] + generations(s, 1)
    # the caller's global numpy RNG is untouched by the library
    state = np.random.get_state()
    assert state[0] == outer[0] and np.array_equal(state[1], outer[1]) and state[2:] == outer[2:]
    # same seed, same candidates; another seed, others
    again = estimators.make(name, sigma=0.3, popsize=P).init(theta, seed=7)
    assert torch.equal(again.ask(), first[0])
    other = estimators.make(name, sigma=0.3, popsize=P).init(theta, seed=8)
    assert not torch.equal(other.ask(), first[0])
    # state_dict round trip through torch.save: both copies continue identically
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    restored = estimators.make(name, sigma=0.3, popsize=P)
    restored.load_state_dict(torch.load(buf, weights_only=False))
    xa, xb = s.ask(), restored.ask()
    assert torch.equal(xa, xb.to(xa.dtype))
    s.tell(quadratic(xa))
    restored.tell(quadratic(xb))
    assert torch.equal(s.mean, restored.mean.to(s.mean.dtype))


def test_ask_before_init_and_writing_into_candidates():
    s = estimators.make("evosax:SNES", sigma=0.3, popsize=P)
    with pytest.raises(RuntimeError, match="init"):
        s.ask()
    s.init(torch.zeros(D), seed=0)
    x = s.ask()
    x.fill_(1e6)  # a copy: the JAX buffer evosax tells with is unchanged
    s.tell(quadratic(x))
    assert torch.isfinite(s.mean).all() and s.mean.abs().max() < 10


def test_cmaes_minimises_a_quadratic_full_and_diagonal():
    for diag in (1000, 0):
        s = estimators.make("cmaes", sigma=0.5, popsize=10, diagonal_above=diag)
        s.init(torch.full((6,), 2.0, dtype=torch.float64), seed=0)
        generations(s, 120)
        assert quadratic(s.mean) < 1e-8


def test_evosax_compiles_once_per_configuration():
    from evosax.algorithms.base import EvolutionaryAlgorithm as EA
    generations(estimators.make("evosax:SNES", sigma=0.2, popsize=6).init(torch.zeros(3), seed=0), 2)
    sizes = EA.ask._cache_size(), EA.tell._cache_size()
    s = estimators.make("evosax:SNES", sigma=0.2, popsize=6).init(torch.ones(3), seed=1)
    generations(s, 3)
    restored = estimators.make("evosax:SNES", sigma=0.2, popsize=6)
    restored.load_state_dict(s.state_dict())
    generations(restored, 1)
    assert (EA.ask._cache_size(), EA.tell._cache_size()) == sizes


@pytest.mark.parametrize("name, kwargs, match", [
    ("evosax:NoSuchES", {}, "name"), ("nevergrad:NoSuchOpt", {}, "name"),
    ("cmaes", {"popsize": 1}, "popsize"), ("evosax:SNES", {"popsize": 1}, "popsize"),
    ("evosax:Open_ES", {"popsize": 7}, "popsize"), ("nevergrad:TBPSA", {"popsize": 0}, "popsize"),
    ("cmaes", {"sigma": 0.0}, "sigma"), ("evosax:SNES", {"sigma": -0.1}, "sigma"),
    ("nevergrad:NGOpt", {"sigma": math.inf}, "sigma"), ("evosax:SNES", {"shaping": "rank"}, "shaping"),
])
def test_bad_arguments_raise_value_error_naming_them(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimators.make(name, **kwargs)


def test_strategies_are_listed_beside_the_estimators():
    listed = estimators.available()
    assert {"cmaes", "evosax:<Name>", "nevergrad:<Name>", "pes"} <= set(listed)
    assert set(estimators.strategies()) == {"cmaes", "evosax:<Name>", "nevergrad:<Name>"}
    assert isinstance(estimators.make("evosax:SNES", sigma=0.1, popsize=64), estimators.Evosax)
    assert not estimators.is_strategy("pes") and estimators.is_strategy("nevergrad:NGOpt")


# ---- cross-checks against evosax ------------------------------------------------------------

T, K, N, SIGMA = 12, 4, 4, 0.1


class Recorder:
    """Patches an estimator module: its perturbations come from a table, its unrolls are kept."""

    def __init__(self, monkeypatch, noise_module, unroll_module):
        noise_module = importlib.import_module(noise_module)
        unroll_module = importlib.import_module(unroll_module)
        self.table, self.segments = {}, []
        real_unroll = unroll_module.unroll

        def perturbations(seed, particle, counter, dim, dtype):
            c = counter if isinstance(counter, int) else int(torch.as_tensor(counter).reshape(-1)[0])
            return self.table.get(c, torch.zeros(particle.shape[0], dim)).to(dtype)

        def unroll(*args, **kwargs):
            seg = real_unroll(*args, **kwargs)
            self.segments.append(seg)
            return seg
        monkeypatch.setattr(noise_module, "perturbations", perturbations)
        monkeypatch.setattr(unroll_module, "unroll", unroll)


def evosax_es(name, seed=0):
    return estimators.make(f"evosax:{name}", sigma=SIGMA, popsize=2 * N, shaping="identity",
                           optimizer="sgd", lr=1.0,
                           params={"T": T, "K": K} if name != "Open_ES" else None)


def ask_mirrored(strategy):
    """evosax's z_1..z_N of this generation; checks the mirrored layout [z, -z]."""
    pert = (strategy.ask() - strategy.mean) / SIGMA
    torch.testing.assert_close(pert[N:], -pert[:N], rtol=0, atol=1e-5)
    return pert[:N]


def told_gradient(strategy, fitness):
    before = strategy.mean
    strategy.tell(fitness)
    return before - strategy.mean  # SGD with lr 1: mean <- mean - grad


def test_antithetic_es_equals_evosax_open_es(monkeypatch):
    system = systems.make("linear_quadratic", horizon=T)
    theta = system.init_params() + 0.3
    rec = Recorder(monkeypatch, "estimators.full_horizon", "estimators.full_horizon")
    est = estimators.make("antithetic_es", pairs=N, sigma=SIGMA)
    ev = evosax_es("Open_ES").init(torch.zeros(system.param_dim), seed=1)
    state = est.init(system, theta, seed=0)
    for generation in range(3):
        rec.table[generation] = ask_mirrored(ev)
        e, state = est.estimate(system, theta, state)
        fitness = rec.segments[-1].loss_pre / T  # rows: the + members, then the - members
        torch.testing.assert_close(e.grad, told_gradient(ev, fitness), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ours, theirs", [("pes", "PersistentES"), ("nres", "NoiseReuseES")])
def test_online_es_equals_evosax(monkeypatch, ours, theirs):
    """Two episodes of T/K = 3 windows: accumulation (PES), reuse (NRES) and the reset at T."""
    system = systems.make("linear_quadratic", horizon=T)
    theta = system.init_params() - 0.2
    rec = Recorder(monkeypatch, f"estimators.{ours}", "estimators.online_es")
    est = estimators.make(ours, truncation=K, pairs=N, sigma=SIGMA)
    ev = evosax_es(theirs).init(torch.zeros(system.param_dim), seed=2)
    state = est.init(system, theta, seed=0)
    for window in range(1, 2 * T // K + 1):
        z = ask_mirrored(ev)
        episode = (window - 1) // (T // K)
        if ours == "pes":
            rec.table[window] = z  # a fresh eps every window, accumulated by both
        elif episode in rec.table:  # NRES reuses the episode's eps, like evosax
            torch.testing.assert_close(z, rec.table[episode], rtol=0, atol=1e-4)
        else:
            rec.table[episode] = z
        e, state = est.estimate(system, theta, state)
        seg = rec.segments[-1]
        fitness = (seg.loss_pre + seg.loss_post) / K
        torch.testing.assert_close(e.grad, told_gradient(ev, fitness), rtol=1e-4, atol=1e-6)


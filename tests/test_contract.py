"""One suite over both registries: every estimator on every compatible system (STYLE 8)."""
import inspect
import io
import math

import pytest
import torch

import estimators
import systems
from systems import tree_index, tree_leaves

SYSTEMS = list(systems.available())
# Ask/tell strategies (cmaes, evosax:*, nevergrad:*) have their own suite: tests/estimators/test_strategies.py
ESTIMATORS = [n for n in estimators.available() if not estimators.is_strategy(n)]
T, K, N = 7, 3, 3  # T not a multiple of K: online windows cross episode ends


def make_system(name):
    cls = systems.SYSTEMS.get(name)
    return cls(**cls.regimes["regular"])


def make_estimator(name, **over):
    cls = estimators.ESTIMATORS.get(name)
    params = inspect.signature(cls).parameters
    hp = {"truncation": K, "pairs": N, "samples": N, "horizon": T, "sigma": 0.01}
    if "sigma" in params and params["sigma"].default == 0.0:
        del hp["sigma"]  # pathwise estimators: keep the plain (unsmoothed) gradient
    hp.update(over)
    return cls(**{k: v for k, v in hp.items() if k in params})


def compatible(estimator_name, system_name):
    """Pathwise estimators need a differentiable system (a class attribute of both)."""
    return (not estimators.ESTIMATORS.get(estimator_name).needs_grad
            or systems.SYSTEMS.get(system_name).differentiable)


def combinations(*, stagger=False):
    """``(estimator, system[, stagger])`` parameters, only the compatible ones: no test is
    collected just to be skipped. With ``stagger``, online estimators run both ways."""
    params = []
    for name in ESTIMATORS:
        online = estimators.ESTIMATORS.get(name).online
        for system_name in SYSTEMS:
            if not compatible(name, system_name):
                continue
            if not stagger:
                params.append(pytest.param(name, system_name, id=f"{name}-{system_name}"))
                continue
            for st in ((False, True) if online else (False,)):
                params.append(pytest.param(name, system_name, st,
                                           id=f"{name}-{system_name}{'-stagger' if st else ''}"))
    return params


def rows_per_estimate(est):
    n = getattr(est, "pairs", None) or est.samples
    return n, (2 * n if hasattr(est, "pairs") else n) * (K if est.online else T)


@pytest.fixture(params=SYSTEMS)
def system(request):
    return make_system(request.param)


@pytest.mark.parametrize("name, system_name", combinations())
def test_estimate_contract(name, system_name, device, dtype):
    system, est = make_system(system_name), make_estimator(name)
    theta = system.init_params(dtype=dtype, device=device)
    state = est.init(system, theta, seed=0)
    n, steps = rows_per_estimate(est)
    for _ in range(3):  # the third online window crosses the end of the first episode
        e, state = est.estimate(system, theta, state)
        assert e.grad.shape == (system.param_dim,) and e.grad.dtype == dtype
        assert e.grad.device.type == device.type
        assert e.samples.shape == (n - e.nonfinite, system.param_dim)
        assert e.loss.shape == () and e.steps == steps
        if e.ok:
            assert torch.equal(e.grad, e.samples.mean(0))
            assert torch.isfinite(e.grad).all()
    assert torch.equal(state.particle.cpu(), torch.arange(n)) and int(state.population) == n


@pytest.mark.parametrize("name, system_name, stagger", combinations(stagger=True))
def test_same_seed_bit_identical_and_state_round_trip(name, system_name, stagger):
    system = make_system(system_name)
    est = make_estimator(name, **({"stagger": True} if stagger else {}))
    theta = system.init_params(dtype=torch.float64)
    s1, s2 = est.init(system, theta, seed=4), est.init(system, theta, seed=4)
    for _ in range(2):
        e1, s1 = est.estimate(system, theta, s1)
        e2, s2 = est.estimate(system, theta, s2)
        assert torch.equal(e1.grad, e2.grad) and torch.equal(e1.samples, e2.samples)
    buf = io.BytesIO()
    torch.save(s1, buf)
    buf.seek(0)
    restored = torch.load(buf, weights_only=False)
    assert type(restored) is type(s1)
    e1, _ = est.estimate(system, theta, s1)
    e3, _ = est.estimate(system, theta, restored)
    assert torch.equal(e1.grad, e3.grad)
    other, _ = est.estimate(system, theta, est.init(system, theta, seed=5))
    if not est.needs_grad or uses_keys(system):  # a deterministic system's BPTT needs no seed
        assert not torch.equal(other.samples, e1.samples)


def uses_keys(system):
    """Whether trajectories depend on their episode keys (False for deterministic systems)."""
    theta = system.init_params(dtype=torch.float64).expand(2, -1)
    _, losses = rollout(system, theta, torch.tensor([1, 2]), T)
    return not torch.equal(losses[0], losses[1])


@pytest.mark.parametrize("name", ESTIMATORS)
def test_plugs_into_torch_optim(name):
    system = make_system("linear_quadratic")
    est = make_estimator(name)
    theta = torch.nn.Parameter(system.init_params())
    opt = torch.optim.SGD([theta], lr=0.01)
    state = est.init(system, theta, seed=0)
    for _ in range(3):
        e, state = est.estimate(system, theta, state)
        theta.grad = e.grad
        opt.step()
    assert torch.isfinite(theta).all() and not torch.equal(theta.detach(), system.init_params())


@pytest.mark.parametrize("name", ESTIMATORS)
def test_bad_theta_is_rejected_with_the_argument_named(name):
    system = make_system("linear_quadratic")
    est = make_estimator(name)
    good = system.init_params()
    state = est.init(system, good, seed=0)
    for bad, err in [(good[:-1], ValueError), (good.long(), TypeError), (good.tolist(), TypeError),
                     (torch.full_like(good, math.nan), ValueError),
                     (torch.full_like(good, math.inf), ValueError)]:
        with pytest.raises(err, match="theta"):
            est.estimate(system, bad, state)
        with pytest.raises(err, match="theta"):
            est.init(system, bad, seed=0)
    with pytest.raises(ValueError, match="seed"):
        est.init(system, good, seed=-1)
    with pytest.raises(TypeError, match="system"):
        est.init("linear_quadratic", good, seed=0)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_bad_hyper_parameters_are_rejected(name):
    cls = estimators.ESTIMATORS.get(name)
    params = inspect.signature(cls).parameters
    if "sigma" in params:
        for bad in ([-0.1, math.nan] if params["sigma"].default == 0.0 else [0.0, -0.1, math.inf]):
            with pytest.raises(ValueError, match="sigma"):
                make_estimator(name, sigma=bad)
    for arg in ("pairs", "samples", "truncation", "horizon"):
        if arg in params:
            with pytest.raises(ValueError, match=arg):
                make_estimator(name, **{arg: 0})
            with pytest.raises(TypeError, match=arg):
                make_estimator(name, **{arg: 2.5})
    if cls.online:
        with pytest.raises(ValueError, match="truncation"):
            make_estimator(name, truncation=10, horizon=5)
        est = make_estimator(name, truncation=30, horizon=None)
        lq = systems.make("linear_quadratic", horizon=20)
        with pytest.raises(ValueError, match="truncation"):
            est.init(lq, lq.init_params(), seed=0)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown estimator 'pez'.*pes"):
        estimators.make("pez")
    with pytest.raises(ValueError, match="unknown system 'logistic'.*logistic_map"):
        systems.make("logistic")


# ---- the System side of the contract, for every registered system ----

def rollout(system, theta_rows, keys, steps):
    state = system.init_state(theta_rows, keys)
    losses = []
    for t in range(steps):
        state, loss = system.step(theta_rows, state, torch.full_like(keys, t), keys)
        losses.append(loss)
    return state, torch.stack(losses, 1)


def test_system_contract(system, device, dtype):
    theta = system.init_params(dtype=dtype, device=device)
    assert theta.shape == (system.param_dim,) and theta.dtype == dtype
    assert system.param_dim >= 1 and system.horizon >= 1 and system.state_dim >= 1
    assert "regular" in system.regimes
    keys = torch.arange(4, dtype=torch.int64, device=device)
    state, losses = rollout(system, theta.expand(4, -1), keys, 5)
    assert losses.shape == (4, 5) and losses.dtype == dtype
    for leaf in tree_leaves(state):
        assert leaf.shape[0] == 4 and leaf.device.type == device.type
        if leaf.is_floating_point():  # a system may pin its state's dtype (MuJoCo: float64)
            assert leaf.dtype == (system.state_dtype or dtype)


def test_system_deterministic_and_batch_independent(system):
    theta = system.init_params(dtype=torch.float64)
    keys = torch.tensor([11, 3, 11, 7], dtype=torch.int64)
    rows = theta.expand(4, -1).clone()
    rows[1] += 0.01  # another row's theta must not matter either
    state, losses = rollout(system, rows, keys, 6)
    alone_state, alone = rollout(system, rows[2:3], keys[2:3], 6)
    assert torch.equal(losses[0], losses[2])
    torch.testing.assert_close(alone, losses[2:3], rtol=0, atol=1e-12)
    for a, b in zip(tree_leaves(alone_state), tree_leaves(tree_index(state, slice(2, 3)))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_every_regime_constructs(system):
    for kwargs in type(system).regimes.values():
        s = type(system)(**kwargs)
        assert s.init_params().shape == (s.param_dim,)

"""learned_optimizer_digits: fixed data split, (key, t) minibatches, the inner MLP's analytic
gradient, the MLP LOpt's features and step, inner training, clipping, finite differences."""
import math
import sys

import pytest
import torch

import systems
from systems import lopt
from systems.learned_optimizer_digits import (LOSS_CLIP, SIZES, DigitsState,
                                              LearnedOptimizerDigits, load_digits_split)
from tests.helpers import rollout

sklearn_datasets = pytest.importorskip("sklearn.datasets")
F64 = torch.float64


@pytest.fixture(scope="module")
def system():
    return LearnedOptimizerDigits()


def test_split_is_fixed_disjoint_and_covers_the_data():
    x_tr, y_tr, x_val, y_val = load_digits_split()
    data = sklearn_datasets.load_digits()
    x = torch.as_tensor(data.data, dtype=F64) / 16
    y = torch.as_tensor(data.target)
    val = torch.arange(1797) % 5 == 0
    assert (x_tr.shape, x_val.shape) == ((1437, 64), (360, 64))
    assert torch.equal(x_val, x[val]) and torch.equal(y_val, y[val])
    assert torch.equal(x_tr, x[~val]) and torch.equal(y_tr, y[~val])
    assert 0 <= x.min() and x.max() <= 1 and set(y_val.tolist()) == set(range(10))


def test_minibatch_is_a_function_of_key_and_step_only(system):
    keys, t = torch.tensor([4, 9, 4]), torch.tensor([0, 0, 7])
    x, y = system.minibatch(keys, t, F64)
    assert x.shape == (3, 128, 64) and y.shape == (3, 128) and y.dtype == torch.int64
    alone_x, alone_y = system.minibatch(keys[2:], t[2:], F64)
    assert torch.equal(alone_x, x[2:]) and torch.equal(alone_y, y[2:])
    again, _ = system.minibatch(torch.tensor([4]), torch.tensor([0]), F64)
    assert torch.equal(again[0], x[0])
    assert not torch.equal(x[0], x[1]) and not torch.equal(x[0], x[2])  # key and t both matter
    x_tr, y_tr, _, _ = load_digits_split()  # every example comes from the training split
    rows = (x[0][:, None, :] == x_tr[None]).all(-1)
    assert rows.any(1).all() and torch.equal(y_tr[rows.float().argmax(1)], y[0])


def test_analytic_inner_gradient_equals_autograd(system):
    keys = torch.arange(3)
    p = (system.init_inner(keys, F64) + 0.1 * torch.randn(3, system.inner_dim, dtype=F64,
         generator=torch.Generator().manual_seed(0))).requires_grad_()
    x, y = system.minibatch(keys, torch.zeros_like(keys), F64)
    loss, grad = system.loss_and_grad(p, x, y)
    w1, b1, w2, b2 = torch.split(p, SIZES, dim=1)
    logits = (torch.relu(x @ w1.reshape(3, 32, 64).transpose(1, 2) + b1[:, None])
              @ w2.reshape(3, 10, 32).transpose(1, 2) + b2[:, None])
    reference = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
    torch.testing.assert_close(loss, reference.mean(1), rtol=1e-13, atol=0)
    (auto,) = torch.autograd.grad(loss.sum(), p)
    torch.testing.assert_close(grad, auto, rtol=1e-12, atol=1e-15)


def sgd_theta(system):
    """The exact pass-through part of `MLPLOpt.init_params`, every other weight zero."""
    theta = torch.zeros(1, system.param_dim, dtype=F64)
    (w1, b1), (w2, b2), (w3, _) = lopt.split_layers(theta, system.lopt.sizes)  # views
    w1[0, 4, 0], w1[0, 4, 1] = 1.0, -1.0          # feature 4: m at decay 0.9
    w2[0, 0, 0] = w2[0, 1, 1] = 1.0
    b1[0, :2] = b2[0, :2] = 10.0                  # layer-2 units 0, 1: 20 + u_m, 20 - u_m
    w3[0, 0, 0], w3[0, 1, 0] = 0.5, -0.5
    return theta[0]


def normalised_momentum(system):
    gen = torch.Generator().manual_seed(2)
    p, g = (torch.randn(2, system.inner_dim, generator=gen, dtype=F64) for _ in range(2))
    m = lopt.update_momenta(torch.randn(2, system.inner_dim, 6, generator=gen, dtype=F64), g)
    expected = torch.cat([v / torch.sqrt(1e-5 + v.square().mean(1, keepdim=True))
                          for v in torch.split(m[..., 2], SIZES, dim=1)], 1)
    return (p, g, m, torch.tensor([0, 50]), SIZES), expected


def test_lopt_can_be_exactly_normalised_momentum_sgd(system):
    """Pass-through weights only: the step is step_mult * m_0.9 / sqrt(1e-5 + mean_W m_0.9^2),
    tensor by tensor, whatever the other features and the training step (while |u_m| < 10)."""
    args, expected = normalised_momentum(system)
    step = system.lopt.update(sgd_theta(system).expand(2, -1), *args)
    # (20 + u) - (20 - u) in float64: rounding of the shifted units, eps * 20 each, remains
    tol = 64 * torch.finfo(F64).eps * 20 * system.step_mult
    torch.testing.assert_close(step, system.step_mult * expected, rtol=0, atol=tol)


def test_init_params_is_close_to_normalised_momentum_sgd(system):
    """The small random weights of `init_params` change the step by about 1%."""
    theta = system.init_params(F64)
    args, expected = normalised_momentum(system)
    step = system.lopt.update(theta.expand(2, -1), *args) / system.step_mult
    assert ((step - expected).norm(dim=1) / expected.norm(dim=1) < 0.05).all()


def test_training_step_features():
    t = torch.tensor([0, 10, 1000])
    e = lopt.tanh_embedding(t, F64)
    tau = torch.tensor(lopt.TIMESCALES, dtype=F64)
    assert e.shape == (3, 11)
    torch.testing.assert_close(e, torch.tanh(t[:, None].to(F64) / tau - 1), rtol=0, atol=0)
    assert torch.allclose(e[0], torch.tanh(torch.tensor(-1.0, dtype=F64)))


def test_inner_training_lowers_the_loss(system):
    """60 inner steps with `init_params` (normalised SGD, momentum 0.9, lr 0.01) on 8 keys:
    the per-key drop of the training loss from step 0 to the mean of steps 50..59 is positive
    by > 4 standard errors, and validation accuracy rises from chance to above 80%."""
    keys = torch.arange(8)
    theta = system.init_params().expand(8, -1)
    before = system.evaluate(system.init_state(theta, keys))
    losses, state = rollout(system, theta, keys, 60)
    drop = losses[0] - losses[-10:].mean(0)
    assert drop.mean() > 4 * drop.std() / math.sqrt(8) and (drop > 0).all()
    after = system.evaluate(state)
    assert set(after) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert all(v.shape == (8,) for v in after.values())
    assert before["val_accuracy"].mean() < 0.3 < 0.8 < after["val_accuracy"].min()
    assert (after["val_loss"] < before["val_loss"]).all()


def test_loss_is_clipped_and_nan_safe(system):
    keys = torch.arange(3)
    theta = system.init_params(F64).expand(3, -1)
    state = system.init_state(theta, keys)
    params = state.params.clone()
    params[1] *= 1e4                # huge logits: cross-entropy far above the clip
    params[2] = math.nan
    _, loss = system.step(theta, DigitsState(params, state.momenta), torch.zeros_like(keys), keys)
    assert 0 < loss[0] < LOSS_CLIP and loss[1] == loss[2] == LOSS_CLIP == 1.5 * math.log(10)
    assert torch.isnan(system.evaluate(DigitsState(params, state.momenta))["val_loss"][2])


def test_trajectory_alone_equals_the_same_trajectory_in_a_batch(system):
    keys = torch.tensor([5, 9, 5])
    rows = system.init_params(F64).expand(3, -1).clone()
    rows[1] += 0.01
    losses, state = rollout(system, rows, keys, 4)
    alone, alone_state = rollout(system, rows[2:], keys[2:], 4)
    assert torch.equal(losses[:, 0], losses[:, 2])
    torch.testing.assert_close(alone, losses[:, 2:], rtol=0, atol=1e-12)
    torch.testing.assert_close(alone_state.params, state.params[2:], rtol=0, atol=1e-12)


def unroll_with_patterns(system, rows, keys, steps):
    """Per-step losses ``[steps, B]`` and the inner ReLU patterns of every step."""
    state, losses, patterns = system.init_state(rows, keys), [], []
    for t in range(steps):
        tt = torch.full_like(keys, t)
        patterns.append(system.active_units(state, tt, keys))
        state, loss = system.step(rows, state, tt, keys)
        losses.append(loss)
    return torch.stack(losses), torch.stack(patterns, 1)      # [steps, B], [B, steps, M, 32]


def test_autograd_matches_central_differences_between_jumps():
    """The meta-loss is piecewise smooth: it jumps where an inner ReLU pre-activation crosses 0
    (the inner gradient has relu'). Along 6 directions (3 coordinates: the pass-through momentum
    weight, a first-layer weight, the log-magnitude output bias; 3 random unit vectors) and 4
    keys (key 10 has a jump within h of theta), over 10 steps: wherever theta +- h u have the same ReLU patterns at every step,
    autograd equals central differences to 6 significant digits (the test_finite_differences
    criterion, |err| <= 1e-6 |grad| + rounding floor); most pairs are jump-free, and wherever
    a pattern differs the difference quotient is off by far more (a jump, not a wrong
    gradient), which shows the check can tell them apart."""
    system = LearnedOptimizerDigits(horizon=10)
    theta = system.init_params(F64)
    D, T, keys = system.param_dim, 10, torch.tensor([0, 1, 2, 10])  # 10: a jump within h
    rows = theta.expand(4, D).clone().requires_grad_()
    losses, _ = rollout(system, rows, keys, T)
    (grad,) = torch.autograd.grad(losses.mean(0).sum(), rows)
    dirs = torch.zeros(6, D, dtype=F64)
    dirs[0, 4 * 32], dirs[1, 7 * 32 + 5], dirs[2, D - 1] = 1.0, 1.0, 1.0
    rnd = torch.randn(3, D, dtype=F64, generator=torch.Generator().manual_seed(0))
    dirs[3:] = rnd / rnd.norm(dim=1, keepdim=True)
    h, n = torch.finfo(F64).eps ** (1 / 3), dirs.shape[0]
    k = keys.repeat_interleave(n)                       # key-major: [4 * n]
    with torch.no_grad():
        up, pat_up = unroll_with_patterns(system, (theta + h * dirs).repeat(4, 1), k, T)
        down, pat_down = unroll_with_patterns(system, (theta - h * dirs).repeat(4, 1), k, T)
    fd = (up.mean(0) - down.mean(0)).reshape(4, n) / (2 * h)
    exact = grad @ dirs.T                                # [4, n]
    smooth = (pat_up == pat_down).flatten(1).all(1).reshape(4, n)
    floor = 4 * torch.finfo(F64).eps * losses.mean(0).detach().abs()[:, None] / h
    ok = (fd - exact).abs() <= 1e-6 * exact.abs() + floor
    assert torch.isfinite(exact).all() and exact.abs().min() > 0
    assert 0.5 < smooth.float().mean() < 1, smooth
    assert ok[smooth].all(), ((fd - exact) / exact)[smooth]
    assert not ok[~smooth].any(), ((fd - exact) / exact)[~smooth]


@pytest.mark.slow
def test_regimes_by_lyapunov_exponent_and_bptt_growth():
    """The regime table of the module docstring: lambda_1 ~ 0 at "regular" and ~0.2 per
    step at "chaotic" (> 4 standard errors apart), and the BPTT spread's growth rate from T = 10
    to 40 is larger at "chaotic" by more than 0.1 per step (0.21 vs 0.03 measured)."""
    lam, slope = {}, {}
    for regime, kwargs in LearnedOptimizerDigits.regimes.items():
        system = LearnedOptimizerDigits(**kwargs)
        theta = system.init_params(F64)
        res = systems.lyapunov_exponents(system, theta, steps=100, burn_in=100, trajectories=8)
        lam[regime] = (res.per_step.item(), res.stderr.item())
        growth = systems.gradient_growth_rate(system, theta, horizons=[10, 20, 40], samples=8)
        assert growth.nonfinite.sum() == 0
        slope[regime] = growth.slope
    (reg, reg_se), (cha, cha_se) = lam["regular"], lam["chaotic"]
    assert abs(reg) < 0.01 and cha - reg > 4 * math.hypot(reg_se, cha_se), lam
    assert slope["chaotic"] - slope["regular"] > 0.1, slope


def test_missing_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    load_digits_split.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"chaosgrad\[digits\]") as err:
            LearnedOptimizerDigits()
        assert err.value.name == "sklearn"
    finally:
        load_digits_split.cache_clear()


@pytest.mark.parametrize("bad", [{"step_mult": 0.0}, {"step_mult": math.inf}, {"exp_mult": -1.0},
                                 {"horizon": 0}, {"batch_size": 2.5}, {"hidden": 1}])
def test_bad_hyper_parameters_are_rejected(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        LearnedOptimizerDigits(**bad)


def test_dimensions(system):
    assert system.inner_dim == 64 * 32 + 32 + 32 * 10 + 10 == 2410
    assert system.param_dim == 19 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2 == 1762
    assert system.state_dim == 7 * 2410

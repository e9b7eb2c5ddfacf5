import math

import pytest
import torch

from systems import check_system, noise, tree_leaves
from systems.continual_backprop import (_INIT, _REINIT, ACTIVATIONS, KAIMING_GAIN,
                                        ContinualBackprop, activate, bit_flipping_target,
                                        contribution_utility, replacement_mask)
from tests.helpers import rollout

F64 = torch.float64


def small(**kw):
    kw = {"hidden": 4, "n_bits": 6, "n_flipping": 3, "target_hidden": 8, "flip_every": 5,
          "horizon": 40, **kw}
    return ContinualBackprop(**kw)


def test_target_is_the_ltu_network_on_a_hand_case():
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=F64)                # m = 3 bits + bias
    v_in = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, -1.0, 1.0]]], dtype=F64)
    v_out = torch.tensor([[1.0, -1.0]], dtype=F64)
    # unit 0: 3 > 4 * 0.7 - 0 = 2.8 fires; unit 1: 1 - 1 + 1 = 1 > 2.8 - 2 = 0.8 fires
    assert bit_flipping_target(x, v_in, v_out, 0.7).item() == 0.0
    # beta = 0.9: unit 0: 3 > 3.6 no; unit 1: 1 > 1.6 no
    assert bit_flipping_target(x, v_in, v_out, 0.9).item() == 0.0
    x2 = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=F64)               # unit 0: 2 > 2.8 no; unit 1: 2 > 0.8
    assert bit_flipping_target(x2, v_in, v_out, 0.7).item() == -1.0


def test_target_from_signs_equals_target_from_plus_minus_one():
    system = small(n_bits=12, target_hidden=40)
    keys = torch.arange(64)
    v_in, v_out = system.target(keys)
    bits = noise.uniform(keys, 3, 0, (12,), F64) < 0.5
    x = torch.cat([bits, torch.ones(64, 1, dtype=torch.bool)], dim=1).to(F64)
    sign = lambda b: torch.where(b, 1.0, -1.0).to(F64)  # noqa: E731
    for beta in (0.3, 0.7):
        y = bit_flipping_target(x, v_in, v_out, beta)
        assert torch.equal(y, bit_flipping_target(x, sign(v_in), sign(v_out), beta))
        assert y.abs().max() > 0


def test_utility_update_in_a_step_matches_the_formula():
    system = small(maturity=1000)
    theta = system.init_params(dtype=F64).expand(3, -1)
    keys = torch.tensor([1, 2, 3])
    _, state = rollout(system, theta, keys, 7)
    t = torch.full_like(keys, 7)
    _, x = system.inputs(state.bits, keys, t, F64)
    h = torch.tanh(torch.einsum("bni,bi->bn", state.w_in, x))
    eta = 0.99
    nxt, _ = system.step(theta, state, t, keys)
    expect = eta * state.utility + (1 - eta) * h.abs() * state.w_out.abs()
    torch.testing.assert_close(nxt.utility, expect, rtol=1e-12, atol=0)
    torch.testing.assert_close(contribution_utility(state.utility, h, state.w_out, eta), expect)
    assert torch.equal(nxt.age, state.age + 1) and (nxt.utility > 0).all()


def test_replacement_mask_takes_the_lowest_mature_units():
    u = torch.tensor([[0.5, 0.1, 0.3, 0.2], [1.0, 2.0, 3.0, 4.0]])
    mature = torch.tensor([[True, False, True, True], [True, True, True, True]])
    mask = replacement_mask(u, mature, torch.tensor([2, 0]))
    assert mask.tolist() == [[False, False, True, True], [False] * 4]


def test_replacement_count_is_floor_of_rho_n_t():
    """rho n = 0.0625 * 4 = 0.25 exactly and every unit mature: floor(t / 4) replacements."""
    system = small(maturity=0)
    theta = system.init_params(dtype=F64)
    theta[1] = math.log(0.0625)
    assert torch.exp(theta[1]).item() == 0.0625                       # exact in float64
    rows, keys = theta.expand(2, -1), torch.tensor([4, 8])
    state, total = system.init_state(rows, keys), torch.zeros(2, dtype=torch.int64)
    for t in range(40):
        state, _ = system.step(rows, state, torch.full_like(keys, t), keys)
        total += (state.age == 0).sum(1)
        assert (total == (t + 1) // 4).all(), t


def test_replacements_wait_for_maturity():
    """rho n = 2 per step owed, maturity 3: nothing before age 4, then the owed count is paid
    up to the number of mature units."""
    system = small(maturity=3, hidden=2)
    theta = system.init_params(dtype=F64)
    theta[1] = 0.0                                                   # rho = 1, rho n = 2
    rows, keys = theta.expand(1, -1), torch.tensor([0])
    state = system.init_state(rows, keys)
    for t in range(3):
        state, _ = system.step(rows, state, torch.full_like(keys, t), keys)
        assert (state.age == t + 1).all() and state.accum.item() == 2 * (t + 1)
    state, _ = system.step(rows, state, torch.full_like(keys, 3), keys)
    assert (state.age == 0).all() and state.accum.item() == 8 - 2


def test_reinitialised_units_get_zero_output_and_fresh_input_weights():
    system = small(maturity=2)
    theta = system.init_params(dtype=F64)
    theta[1] = math.log(0.1)
    rows, keys = theta.expand(3, -1), torch.tensor([5, 6, 7])
    state, seen = system.init_state(rows, keys), 0
    for t in range(40):
        tt = torch.full_like(keys, t)
        nxt, _ = system.step(rows, state, tt, keys)
        new = nxt.age == 0
        if new.any():
            fresh = system.fresh_inputs(keys, tt, _REINIT, F64)
            assert torch.equal(nxt.w_in[new], fresh[new])
            assert (nxt.w_out[new] == 0).all() and (nxt.utility[new] == 0).all()
            assert (state.age[new] + 1 > 2).all()       # only mature units (age after the step)
            old = ~new
            assert not torch.equal(nxt.w_in[old], fresh[old])
            seen += int(new.sum())
        state = nxt
    assert seen > 0


def test_one_flipping_bit_flips_every_flip_every_steps():
    system = small(flip_every=5)
    theta = system.init_params(dtype=F64).expand(2, -1)
    keys = torch.tensor([0, 1])
    state = system.init_state(theta, keys)
    for t in range(30):
        prev = state.bits
        state, _ = system.step(theta, state, torch.full_like(keys, t), keys)
        changed = (state.bits != prev).sum(1)
        assert (changed == (1 if t > 0 and t % 5 == 0 else 0)).all()


def test_deterministic_and_batch_independent_with_replacements():
    system = small(maturity=1, **{"replacement_rate": 0.2})
    theta = system.init_params(dtype=F64)
    keys = torch.tensor([5, 9, 5, 2])
    rows = theta.expand(4, -1).clone()
    rows[1, 0] += 0.1
    (l1, s1), (l2, s2) = rollout(system, rows, keys, 30), rollout(system, rows, keys, 30)
    alone, alone_state = rollout(system, rows[2:3], keys[2:3], 30)
    assert torch.equal(l1, l2) and all(torch.equal(a, b) for a, b in
                                       zip(tree_leaves(s1), tree_leaves(s2)))
    assert torch.equal(l1[:, 0], l1[:, 2]) and not torch.equal(l1[:, 0], l1[:, 3])
    torch.testing.assert_close(alone, l1[:, 2:3], rtol=0, atol=1e-12)
    assert (s1.age < 30).any()                                      # replacements happened


def test_pathwise_gradient_sees_only_the_step_size():
    """rho and eta act through the discrete decisions only: their pathwise derivatives are 0."""
    system = small(maturity=1, replacement_rate=0.2)
    theta = system.init_params(dtype=F64).expand(2, -1).clone().requires_grad_()
    losses, _ = rollout(system, theta, torch.tensor([1, 2]), 30)
    (grad,) = torch.autograd.grad(losses.mean(), theta)
    assert (grad[:, 0] != 0).all() and (grad[:, 1:] == 0).all()


def test_check_system_passes_in_every_regime():
    for regime, kwargs in ContinualBackprop.regimes.items():
        report = check_system(ContinualBackprop(**kwargs, horizon=50))
        assert report.ok and report.differentiable, (regime, str(report))


def test_activations_and_their_derivatives_match_torch():
    z = torch.linspace(-3, 3, 13, dtype=F64).reshape(1, 13)           # includes z = 0
    reference = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
                 "leaky_relu": lambda v: torch.nn.functional.leaky_relu(v, 0.01)}
    for name in ACTIVATIONS:
        h, dh = activate(z, name)
        leaf = z.clone().requires_grad_()
        (grad,) = torch.autograd.grad(reference[name](leaf).sum(), leaf)
        torch.testing.assert_close(h, reference[name](z), rtol=1e-15, atol=0)
        torch.testing.assert_close(dh, grad, rtol=1e-12, atol=1e-15, msg=name)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_sgd_step_is_minus_alpha_times_the_regularised_gradient(activation, weight_decay):
    """W, w, c after a step (no replacement) = p - alpha grad_p [(yhat - y)^2 + lambda/2 |p|^2],
    the gradient by autograd through a plain forward pass (torch's own activation)."""
    system = small(maturity=1000, activation=activation, weight_decay=weight_decay,
                   init_gain=KAIMING_GAIN[activation])
    theta = system.init_params(dtype=F64).expand(3, -1)
    keys = torch.tensor([1, 2, 3])
    _, state = rollout(system, theta, keys, 9)
    state = state._replace(b_out=torch.tensor([0.3, -0.2, 0.1], dtype=F64))
    t = torch.full_like(keys, 9)
    nxt, loss = system.step(theta, state, t, keys)
    _, x = system.inputs(state.bits, keys, t, F64)
    sign = lambda b: torch.where(b, 1.0, -1.0).to(F64)  # noqa: E731
    y = bit_flipping_target(x, sign(state.v_in), sign(state.v_out), system.beta)
    phi = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
           "leaky_relu": lambda v: torch.nn.functional.leaky_relu(v, 0.01)}[activation]
    params = [p.clone().requires_grad_() for p in (state.w_in, state.w_out, state.b_out)]
    w_in, w_out, b_out = params
    yhat = (phi(torch.einsum("bni,bi->bn", w_in, x)) * w_out).sum(1) + b_out
    objective = ((yhat - y) ** 2).sum() + weight_decay / 2 * sum((p * p).sum() for p in params)
    grads = torch.autograd.grad(objective, params)
    torch.testing.assert_close(loss, ((yhat - y) ** 2).detach(), rtol=1e-13, atol=0)
    for new, old, g in zip((nxt.w_in, nxt.w_out, nxt.b_out), params, grads):
        torch.testing.assert_close(new, old.detach() - 0.01 * g, rtol=1e-13, atol=1e-15)


def test_init_gain_scales_the_initial_and_fresh_input_weights():
    keys, t = torch.tensor([3, 4]), torch.tensor([7, 7])
    one, two = small(), small(init_gain=2.5)
    for stream in (_INIT, _REINIT):
        torch.testing.assert_close(two.fresh_inputs(keys, t, stream, F64),
                                   2.5 * one.fresh_inputs(keys, t, stream, F64), rtol=1e-15, atol=0)
    theta = one.init_params(dtype=F64).expand(2, -1)
    torch.testing.assert_close(two.init_state(theta, keys).w_in,
                               2.5 * one.init_state(theta, keys).w_in, rtol=1e-15, atol=0)


def test_relu_learner_is_declared_piecewise_smooth():
    assert small().smooth and small(activation="sigmoid").smooth
    assert not small(activation="relu").smooth and not small(activation="leaky_relu").smooth


@pytest.mark.parametrize("bad", [{"step_size": 0.0}, {"replacement_rate": 0.0},
                                 {"decay": 1.0}, {"beta": 1.5}, {"n_flipping": 30},
                                 {"hidden": 0}, {"maturity": -1}, {"weight_decay": -1e-3},
                                 {"weight_decay": math.nan}, {"activation": "softplus"},
                                 {"init_gain": 0.0}])
def test_bad_arguments_are_rejected(bad):
    with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
        ContinualBackprop(**bad)

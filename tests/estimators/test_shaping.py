"""Fitness shaping of the ES family: the pure functions against hand-computed values (float64),
their invariances, and that each estimator applies its own formula to the shaped losses."""
import math

import pytest
import torch

import estimators
import systems
from estimators import antithetic_es, online_es, truncated_es
from estimators.antithetic_es import antithetic_samples
from estimators.base import perturbations
from estimators.distributed import ShardedEstimator
from estimators.online_es import split_window_samples
from estimators.shaping import (SHAPINGS, centered_ranks, check_shaping, shape_losses,
                                shape_split, standardized)

F64 = torch.float64
NAN = math.nan
ES_FAMILY = ["antithetic_es", "truncated_es", "pes", "nres"]


def t64(*values):
    return torch.tensor(values, dtype=F64)


# -- the pure functions ------------------------------------------------------------------------

def test_centered_ranks_by_hand_with_ties():
    # sorted 1, 2, 2, 3: ranks 0, (1 + 2)/2, 1.5, 3 over n - 1 = 3, minus 1/2
    assert torch.equal(centered_ranks(t64(3, 1, 2, 2)), t64(0.5, -0.5, 0, 0))
    # a block of three ties at ranks 1..3 shares rank 2: 2/4 - 1/2 = 0
    assert torch.equal(centered_ranks(t64(7, -1, 7, 9, 7)), t64(0, -0.5, 0, 0.5, 0))
    assert torch.equal(centered_ranks(t64(4, 4)), t64(0, 0))


def test_standardized_by_hand():
    # mean 3, deviations -3 -1 1 3, population variance 20/4 = 5
    assert torch.equal(standardized(t64(0, 2, 4, 6)), t64(-3, -1, 1, 3) / math.sqrt(5))
    assert torch.equal(standardized(t64(2.5, 2.5, 2.5)), t64(0, 0, 0))  # s = 0: no difference


def test_shape_losses_ranks_both_members_of_every_pair_together():
    # members 4, 1, 3 (+) and 2, 6, 3 (-): sorted 1 2 3 3 4 6, ranks 4 0 2.5 | 1 5 2.5 over 5
    u_pos, u_neg = shape_losses(t64(4, 1, 3), t64(2, 6, 3), "ranks")
    assert torch.equal(u_pos, t64(0.3, -0.5, 0.0)) and torch.equal(u_neg, t64(-0.3, 0.5, 0.0))
    # the tied pair (3, 3) contributes a zero difference
    assert u_pos[2] == u_neg[2]


def test_shape_losses_std_divides_every_difference_by_the_std_of_the_2n_members():
    pos, neg = t64(4, 1, 3), t64(2, 6, 3)
    s = torch.cat([pos, neg]).std(correction=0)  # of all 2N member losses
    u_pos, u_neg = shape_losses(pos, neg, "std")
    torch.testing.assert_close(u_pos - u_neg, (pos - neg) / s, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(float(s), math.sqrt(89) / 6, rtol=1e-15, atol=0)  # by hand


def test_shape_losses_none_returns_the_losses():
    pos, neg = t64(4, 1), t64(2, 6)
    u_pos, u_neg = shape_losses(pos, neg, None)
    assert u_pos is pos and u_neg is neg


@pytest.mark.parametrize("how", SHAPINGS)
def test_non_finite_pairs_get_nan_and_do_not_enter_the_population(how):
    pos, neg = t64(4, NAN, 1, 3), t64(2, 0, math.inf, 6)
    u_pos, u_neg = shape_losses(pos, neg, how)
    assert torch.isnan(u_pos[1:3]).all() and torch.isnan(u_neg[1:3]).all()
    kept_pos, kept_neg = shape_losses(t64(4, 3), t64(2, 6), how)  # the finite pairs alone
    assert torch.equal(u_pos[[0, 3]], kept_pos) and torch.equal(u_neg[[0, 3]], kept_neg)
    u_pos, u_neg = shape_losses(t64(NAN), t64(1), how)
    assert torch.isnan(u_pos).all() and torch.isnan(u_neg).all()


def test_ranks_ignore_offset_and_positive_scale_and_std_ignores_scale():
    x = t64(0.3, -1.2, 2.5, 0.7, 0.7, 5.0)
    pos, neg = x[:3], x[3:]
    ranks = shape_losses(pos, neg, "ranks")
    for a, b in [(3.7, 100.0), (1e-3, -4.0), (4.0, 0.0)]:
        moved = shape_losses(a * pos + b, a * neg + b, "ranks")
        assert torch.equal(moved[0], ranks[0]) and torch.equal(moved[1], ranks[1])
    flipped = shape_losses(-pos, -neg, "ranks")  # a negative scale reverses the order
    assert torch.equal(flipped[0], -ranks[0]) and torch.equal(flipped[1], -ranks[1])
    std = shape_losses(pos, neg, "std")
    scaled = shape_losses(4.0 * pos, 4.0 * neg, "std")  # a power of two scales exactly
    assert torch.equal(scaled[0], std[0]) and torch.equal(scaled[1], std[1])
    for a, b in [(3.7, 0.0), (3.7, 100.0)]:  # any positive scale, and (centred) any offset
        moved = shape_losses(a * pos + b, a * neg + b, "std")
        torch.testing.assert_close(moved, std, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("how", SHAPINGS)
def test_shape_split_without_restart_is_shape_losses_exactly(how):
    pre_pos, pre_neg = t64(0.5, 3.0, -1.0), t64(1.5, 2.0, 4.0)
    zero = torch.zeros(3, dtype=F64)
    out = shape_split(pre_pos, pre_neg, zero, zero, torch.tensor([4, 4, 4]), 4, how)
    u_pos, u_neg = shape_losses(pre_pos, pre_neg, how)
    assert torch.equal(out[0], u_pos) and torch.equal(out[1], u_neg)
    assert not out[2].any() and not out[3].any()


def test_shape_split_ranks_each_part_by_its_mean_per_step_loss():
    """K = 4. Pair 0 has no restart: pre (0.5, 1.5) over 4 steps. Pair 1 restarts after 1 step:
    pre (0.75, 0.5) over 1 step, post (0.75, 3.0) over 3 steps, per step (3, 2) and (1, 4).
    The six parts 0.5 3 1 | 1.5 2 4 rank 0 4 1 | 2 3 5, centered r/5 - 1/2, times the shares
    1, 1/4, 3/4."""
    out = shape_split(t64(0.5, 0.75), t64(1.5, 0.5), t64(0, 0.75), t64(0, 3.0),
                      torch.tensor([4, 1]), 4, "ranks")
    expected = (t64(-0.5, 0.3 * 0.25), t64(-0.1, 0.1 * 0.25), t64(0, -0.3 * 0.75),
                t64(0, 0.5 * 0.75))
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-15)


def test_shape_split_std_divides_every_part_by_the_std_of_the_window_losses():
    pre_pos, pre_neg = t64(0.5, 0.75, 2.0), t64(1.5, 0.5, -1.0)
    post_pos, post_neg = t64(0, 0.75, 0), t64(0, 3.0, 0)
    out = shape_split(pre_pos, pre_neg, post_pos, post_neg, torch.tensor([4, 1, 4]), 4, "std")
    total_pos, total_neg = pre_pos + post_pos, pre_neg + post_neg
    s = torch.cat([total_pos, total_neg]).std(correction=0)
    torch.testing.assert_close(out[0] - out[1], (pre_pos - pre_neg) / s, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(out[2] - out[3], (post_pos - post_neg) / s, rtol=1e-14, atol=1e-15)
    u_pos, u_neg = shape_losses(total_pos, total_neg, "std")
    torch.testing.assert_close(out[0] + out[2], u_pos, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(out[1] + out[3], u_neg, rtol=1e-14, atol=1e-15)


def test_shape_split_marks_pairs_with_a_non_finite_part():
    out = shape_split(t64(0.5, NAN), t64(1.5, 0.5), t64(0, 0.75), t64(0, 3.0),
                      torch.tensor([4, 1]), 4, "ranks")
    assert bool(torch.isfinite(torch.stack(out)[:, 0]).all())
    assert torch.isnan(out[0][1])  # the pair is dropped by the non-finite rule


def test_check_shaping_lists_the_choices():
    assert check_shaping(None) is None and check_shaping("ranks") == "ranks"
    for bad in ("rank", "centered_rank", 1, True):
        with pytest.raises(ValueError, match="shaping must be one of None, 'std', 'ranks'"):
            check_shaping(bad)


# -- each estimator passes it through ----------------------------------------------------------

def same(a, b) -> bool:
    """Element-wise bit equality of two sequences of tensors (and plain values)."""
    return len(a) == len(b) and all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
                                    for x, y in zip(a, b))


class Spy:
    """Wraps a module's shaping function, recording its inputs and outputs per call."""

    def __init__(self, monkeypatch, module, name):
        self.fn, self.calls = getattr(module, name), []
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args):
        out = self.fn(*args)
        self.calls.append((args, out))
        return out


@pytest.mark.parametrize("how", SHAPINGS)
@pytest.mark.parametrize("name", ["antithetic_es", "truncated_es"])
def test_full_and_truncated_es_apply_their_formula_to_the_shaped_losses(name, how, monkeypatch):
    lq = systems.LinearQuadratic(horizon=8)  # noisy: distinct losses per pair
    theta = t64(0.3, -0.2, 0.5)
    module = antithetic_es if name == "antithetic_es" else truncated_es
    hp = dict(pairs=5, sigma=0.1, horizon=8)
    if name == "truncated_es":
        hp["truncation"] = 3
    plain, shaped = estimators.make(name, **hp), estimators.make(name, shaping=how, **hp)
    p_state, s_state = plain.init(lq, theta, seed=4), shaped.init(lq, theta, seed=4)
    spy = Spy(monkeypatch, module, "shape_losses")
    for _ in range(3):
        eps = perturbations(s_state.seed, s_state.particle, s_state.count, 3, F64)
        e_plain, p_state = plain.estimate(lq, theta, p_state)
        e_shaped, s_state = shaped.estimate(lq, theta, s_state)
        (raw, _), (raw_shaped, (u_pos, u_neg)) = spy.calls[-2:]
        assert same(raw, (*raw_shaped[:2], None))  # both runs saw the same raw losses
        # the spied inputs are the member losses: the plain formula on them is the plain estimate
        assert torch.equal(e_plain.samples, antithetic_samples(raw[0], raw[1], eps, 0.1))
        assert torch.equal(e_shaped.samples, antithetic_samples(u_pos, u_neg, eps, 0.1))
        assert same((u_pos, u_neg), shape_losses(raw[0], raw[1], how))
        assert torch.equal(e_shaped.loss, e_plain.loss)  # the reported loss stays the raw one
        assert e_shaped.nonfinite == 0


@pytest.mark.parametrize("how", SHAPINGS)
@pytest.mark.parametrize("name,stagger", [("pes", False), ("nres", True)])
def test_pes_and_nres_apply_their_formula_to_the_shaped_parts(name, stagger, how, monkeypatch):
    """T = 7, K = 3: windows cross episode ends (and, staggered, each pair at its own step), so
    both the whole-window path (pre' = shape_losses) and the split path are exercised."""
    lq = systems.LinearQuadratic(horizon=7)
    theta = t64(0.3, -0.2, 0.5)
    hp = dict(pairs=4, sigma=0.1, horizon=7, truncation=3, stagger=stagger)
    plain, shaped = estimators.make(name, **hp), estimators.make(name, shaping=how, **hp)
    p_state, s_state = plain.init(lq, theta, seed=2), shaped.init(lq, theta, seed=2)
    spy = Spy(monkeypatch, online_es, "shape_split")
    split_windows = 0
    for _ in range(6):
        dirs = shaped.directions(s_state, s_state.particle, 3, F64)
        e_plain, p_state = plain.estimate(lq, theta, p_state)
        e_shaped, s_state = shaped.estimate(lq, theta, s_state)
        (raw, _), (raw_shaped, parts) = spy.calls[-2:]
        assert same(raw[:6], raw_shaped[:6]) and raw[6] is None and raw_shaped[6] == how
        pre_pos, pre_neg, post_pos, post_neg, pre_steps, K, _ = raw
        assert torch.equal(e_plain.samples, split_window_samples(
            pre_pos, pre_neg, dirs.w_pre, post_pos, post_neg, dirs.w_post, 0.1))
        assert torch.equal(e_shaped.samples, split_window_samples(
            parts[0], parts[1], dirs.w_pre, parts[2], parts[3], dirs.w_post, 0.1))
        assert same(parts, shape_split(*raw[:6], how))
        if bool((pre_steps == K).all()):  # no restart inside: the member losses, shaped
            u = shape_losses(pre_pos + post_pos, pre_neg + post_neg, how)
            assert torch.equal(parts[0], u[0]) and torch.equal(parts[1], u[1])
        else:
            split_windows += 1
    assert split_windows > 0


class NaNAbove(systems.LinearQuadratic):
    """LinearQuadratic whose loss is NaN for rows with theta_0 above a threshold."""

    def step(self, theta, state, t, keys):
        state, loss = super().step(theta, state, t, keys)
        return state, torch.where(theta[:, 0] > 0.35, torch.nan, loss)


@pytest.mark.parametrize("how", SHAPINGS)
@pytest.mark.parametrize("name", ES_FAMILY)
def test_non_finite_pairs_are_dropped_and_counted_as_without_shaping(name, how):
    system = NaNAbove(horizon=6)
    theta = t64(0.3, -0.2, 0.5)
    hp = dict(pairs=8, sigma=0.1, horizon=6)
    if name != "antithetic_es":
        hp["truncation"] = 3
    plain, shaped = estimators.make(name, **hp), estimators.make(name, shaping=how, **hp)
    e_plain, _ = plain.estimate(system, theta, plain.init(system, theta, seed=1))
    e_shaped, _ = shaped.estimate(system, theta, shaped.init(system, theta, seed=1))
    assert 0 < e_shaped.nonfinite == e_plain.nonfinite < 8
    assert e_shaped.samples.shape == e_plain.samples.shape
    assert bool(torch.isfinite(e_shaped.grad).all())


# -- construction --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ES_FAMILY)
def test_make_accepts_shaping_and_rejects_unknown_names(name):
    lq = systems.LinearQuadratic(horizon=6)
    theta = lq.init_params()
    est = estimators.make(name, shaping="ranks", pairs=3, sigma=0.1, horizon=6,
                          **({} if name == "antithetic_es" else {"truncation": 3}))
    assert est.shaping == "ranks" and "shaping=ranks" in repr(est)
    e, _ = est.estimate(lq, theta, est.init(lq, theta, seed=0))
    assert e.ok and e.samples.shape == (3, lq.param_dim)
    assert not est.separable  # the shaping couples the pairs: no sharding
    with pytest.raises(ValueError, match="cannot be sharded"):
        ShardedEstimator(est)
    assert estimators.make(name).shaping is None and estimators.make(name).separable
    with pytest.raises(ValueError, match="shaping must be one of None, 'std', 'ranks', got 'rank'"):
        estimators.make(name, shaping="rank")


@pytest.mark.parametrize("how", SHAPINGS)
def test_shaped_es_still_descends(how):
    """Shaped estimates are biased for grad L_sigma, but on a smooth loss they point downhill:
    the mean of g . grad L over 16 estimates exceeds 4 standard errors (seeded)."""
    lq = systems.LinearQuadratic(horizon=10, noise_std=0.0, init_std=0.0)
    theta = t64(0.3, -0.2, 0.5)
    truth = lq.exact_grad(theta)
    est = estimators.AntitheticES(pairs=8, sigma=0.1, shaping=how)
    state = est.init(lq, theta, seed=0)
    dots = []
    for _ in range(16):
        e, state = est.estimate(lq, theta, state)
        dots.append(float(e.grad @ truth))
    dots = torch.tensor(dots, dtype=F64)
    assert dots.mean() > 4 * dots.std() / math.sqrt(len(dots))

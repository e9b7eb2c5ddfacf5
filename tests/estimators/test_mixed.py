"""Mixed: exact parts, the mixing weight's formula, its limits, and MSE against its two parts."""
import math

import pytest
import torch

import estimators
import systems
from estimators import Mixed, mixed_samples, mixing_weight

F64 = torch.float64


def test_alpha_zero_is_antithetic_es_exactly():
    system = systems.make("logistic_map", r=3.9, horizon=12)
    theta = system.init_params(F64)
    mix, es = Mixed(pairs=6, sigma=0.01, alpha=0.0), estimators.AntitheticES(pairs=6, sigma=0.01)
    e1, _ = mix.estimate(system, theta, mix.init(system, theta, seed=3))
    e2, _ = es.estimate(system, theta, es.init(system, theta, seed=3))
    assert torch.equal(e1.samples, e2.samples) and e1.steps == e2.steps == 2 * 6 * 12


def test_alpha_one_is_the_antithetic_pathwise_mean():
    # LQ's gradient is affine in theta, so [grad L(theta + s e) + grad L(theta - s e)] / 2 is the
    # plain pathwise gradient of the pair's key: BPTT(sigma = 0) with the same keys.
    system = systems.make("linear_quadratic")
    theta = system.init_params(F64) + 0.1
    mix, bptt = Mixed(pairs=5, sigma=0.3, alpha=1.0), estimators.BPTT(samples=5)
    e1, _ = mix.estimate(system, theta, mix.init(system, theta, seed=1))
    e2, _ = bptt.estimate(system, theta, bptt.init(system, theta, seed=1))
    torch.testing.assert_close(e1.samples, e2.samples, rtol=1e-12, atol=1e-12)


def test_mixing_weight_formula():
    gen = torch.Generator().manual_seed(0)
    p, e = torch.randn(7, 3, generator=gen, dtype=F64), 3 * torch.randn(7, 3, generator=gen, dtype=F64)
    pc, ec = p - p.mean(0), e - e.mean(0)
    s_pp, s_ee, s_pe = (pc**2).sum() / 6, (ec**2).sum() / 6, (pc * ec).sum() / 6
    expected = (s_ee - s_pe) / (s_pp + s_ee - 2 * s_pe)
    torch.testing.assert_close(mixing_weight(p, e), expected.clamp(0, 1))
    # uncorrelated parts: the inverse-variance weight var_ES / (var_pathwise + var_ES)
    q = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=F64)
    r = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=F64)
    torch.testing.assert_close(mixing_weight(q, r), torch.tensor(8.0 / 10.0, dtype=F64))
    alpha = mixing_weight(q, r)
    torch.testing.assert_close(mixed_samples(q, r, alpha), alpha * q + (1 - alpha) * r)


def test_non_finite_pathwise_samples_give_alpha_zero_and_pure_es():
    p = torch.tensor([[1.0], [math.inf], [2.0]], dtype=F64)
    e = torch.tensor([[0.5], [0.1], [0.2]], dtype=F64)
    alpha = mixing_weight(p, e)
    assert alpha == 0 and torch.equal(mixed_samples(p, e, alpha), e)


def test_bias_test_rejects_a_biased_pathwise_part():
    gen = torch.Generator().manual_seed(1)
    e = torch.randn(64, 2, generator=gen, dtype=F64)
    p = 0.1 * torch.randn(64, 2, generator=gen, dtype=F64)
    assert mixing_weight(p, e, bias_test=True) > 0.9            # same mean: kept
    assert mixing_weight(p + 3.0, e, bias_test=True) == 0       # mean shifted by ~20 SE
    assert mixing_weight(p + 3.0, e) > 0.9                      # without the test: not noticed


def test_non_differentiable_system_falls_back_to_es():
    class Flagged(systems.LinearQuadratic):
        differentiable = False
    system = Flagged()
    theta = system.init_params(F64)
    mix, es = Mixed(pairs=4, sigma=0.1), estimators.AntitheticES(pairs=4, sigma=0.1)
    e1, state = mix.estimate(system, theta, mix.init(system, theta, seed=0))
    e2, _ = es.estimate(system, theta, es.init(system, theta, seed=0))
    assert state.alpha == 0 and torch.equal(e1.samples, e2.samples)


def test_bad_alpha_is_rejected():
    for bad in (-0.1, 1.5, math.nan, "half"):
        with pytest.raises(ValueError, match="alpha"):
            Mixed(alpha=bad)
    with pytest.raises(ValueError, match="pairs"):
        Mixed(pairs=1)


def mean_alpha(system, theta, sigma, T, pairs, calls, seed=0):
    est = Mixed(pairs=pairs, sigma=sigma, horizon=T)
    state = est.init(system, theta, seed=seed)
    alphas = []
    for _ in range(calls):
        _, state = est.estimate(system, theta, state)
        alphas.append(float(state.alpha))
    return alphas


def test_alpha_tends_to_one_on_a_smooth_system():
    # LQ: an ES pair's variance is about (D + 1) |g|^2 while the pathwise part only carries the
    # system noise (the antithetic mean cancels sigma exactly): the ratio is ~100 (see
    # test_mse_within_1p2_of_the_better_part for the measured variances).
    system = systems.make("linear_quadratic")
    alphas = mean_alpha(system, system.init_params(F64), 0.1, 20, 16, 10)
    assert min(alphas) > 0.9 and sum(alphas) / len(alphas) > 0.95


def test_alpha_tends_to_zero_in_chaos():
    # logistic map at r = 3.9 (lambda ~ 0.5): pathwise variance / ES variance ~ exp(2 lambda T),
    # so alpha shrinks geometrically with T and is ~ e^-40 at T = 40.
    system = systems.make("logistic_map", r=3.9)
    theta = system.init_params(F64)
    short, long_ = (sum(mean_alpha(system, theta, 0.01, T, 16, 10)) / 10 for T in (10, 40))
    assert long_ < 1e-6 < short


def reference(system, theta, sigma, T):
    if hasattr(system, "exact_grad"):
        return system.exact_grad(theta, sigma, T), 0.0
    est = estimators.AntitheticES(pairs=1 << 16, sigma=sigma, horizon=T)
    e, _ = est.estimate(system, theta, est.init(system, theta, seed=12345))
    return e.grad, (e.samples.var(0).sum() / e.samples.shape[0]).item()


# (system, regime, T, sigma): the logistic map across its pathwise -> ES crossover (T ~ 6-10),
# LQ (pathwise far better) and MetzSGDMomentum in transient chaos (ES far better).
CURVES = [("logistic_map", "chaotic", 4, 0.01), ("logistic_map", "chaotic", 8, 0.01),
          ("logistic_map", "chaotic", 16, 0.01), ("linear_quadratic", "regular", 10, 0.1),
          ("metz_sgd_momentum", "chaotic", 20, 0.1)]


@pytest.mark.parametrize("name, regime, T, sigma", CURVES)
def test_mse_within_1p2_of_the_better_part(name, regime, T, sigma):
    """MSE of one 64-pair estimate against grad L_sigma, over R replicates on common random
    numbers: the mix and its two parts (alpha fixed at 1 and 0) see the same trajectories, so
    the paired difference err_mix - 1.2 err_best has a small standard error."""
    cls = systems.SYSTEMS.get(name)
    system = cls(**cls.regimes[regime])
    theta = system.init_params(F64)
    g, ref_var = reference(system, theta, sigma, T)
    R, errs = 60, {}
    for label, alpha in (("mix", None), ("pathwise", 1.0), ("es", 0.0)):
        est = Mixed(pairs=64, sigma=sigma, horizon=T, alpha=alpha)
        state = est.init(system, theta, seed=7)
        out = []
        for _ in range(R):
            e, state = est.estimate(system, theta, state)
            out.append(((e.grad - g) ** 2).sum() - ref_var)
        errs[label] = torch.stack(out)
    best = min(("pathwise", "es"), key=lambda k: errs[k].mean())
    d = errs["mix"] - 1.2 * errs[best]
    assert d.mean() < 4 * d.std() / math.sqrt(R), (
        f"MSE mix {errs['mix'].mean():.3g}, pathwise {errs['pathwise'].mean():.3g}, "
        f"es {errs['es'].mean():.3g}")

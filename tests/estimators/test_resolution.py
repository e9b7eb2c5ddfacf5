"""A sigma below the working dtype's resolution at theta is rejected, naming the smallest usable
sigma (`estimators.resolution`)."""
import math
import re

import pytest
import torch

import estimators
import systems
from estimators.resolution import RESOLUTION_FACTOR, check_resolution, min_sigma

F32, F64 = torch.float32, torch.float64
# every estimator with a sigma > 0, with the hyper-parameters it needs on a T = 6 system
SMOOTHED = {"antithetic_es": {"pairs": 2}, "truncated_es": {"pairs": 2, "truncation": 3},
            "pes": {"pairs": 2, "truncation": 3},
            "nres": {"pairs": 2, "truncation": 3, "stagger": True}, "mixed": {"pairs": 2},
            "bptt": {"samples": 2}}


def make(name, sigma):
    return estimators.make(name, sigma=sigma, horizon=6, **SMOOTHED[name])


def suggested(message: str) -> float:
    return float(re.search(r"use sigma >= ([0-9.e+-]+)", message).group(1))


def test_min_sigma_is_k_machine_eps_times_the_largest_coordinate():
    assert min_sigma(1.5, F32) == RESOLUTION_FACTOR * 2.0**-23 * 1.5
    assert min_sigma(1.0, F64) == RESOLUTION_FACTOR * 2.0**-52
    assert min_sigma(0.0, F32) == RESOLUTION_FACTOR * 2.0**-23 * torch.finfo(F32).tiny


@pytest.mark.parametrize("absmax", [1.0, 1.5, 1.999, 0.3, 1000.0])
@pytest.mark.parametrize("dtype", [F32, F64, torch.bfloat16])
def test_the_rule_resolves_a_unit_perturbation_to_five_percent(absmax, dtype):
    """The derivation in `estimators.resolution`: at sigma_min a unit perturbation of the largest
    coordinate survives rounding within 1/(2k) = 5% of itself; a hundredth of sigma_min (below
    half the float spacing) rounds away entirely."""
    theta = torch.tensor(absmax, dtype=dtype)
    sigma = min_sigma(absmax, dtype)
    for e in (1.0, -1.0):
        moved = float((theta + sigma * torch.tensor(e, dtype=dtype)) - theta)
        assert abs(moved - sigma * e) <= sigma / (2 * RESOLUTION_FACTOR)
        assert theta + (sigma / 100) * torch.tensor(e, dtype=dtype) == theta


def test_float32_sigma_1e8_is_rejected_with_the_smallest_usable_sigma():
    with pytest.raises(ValueError) as err:
        check_resolution(1e-8, 1.5, F32)
    msg = str(err.value)
    assert msg == ("sigma=1e-08 is below float32 resolution at |theta|max=1.5 (spacing 1.2e-07 "
                   "there: theta_j + sigma*eps_j == theta_j unless |eps_j| > 6); use "
                   "sigma >= 1.8e-06 or float64")
    assert suggested(msg) >= min_sigma(1.5, F32)
    check_resolution(1e-8, 1.5, F64)  # float64 resolves it
    check_resolution(0.0, 1.5, F32)  # sigma = 0 (plain pathwise gradient) is not smoothing


@pytest.mark.parametrize("absmax", [1.5, 0.0123, 7e4])
def test_the_boundary_follows_the_formula(absmax):
    floor = min_sigma(absmax, F32)
    check_resolution(floor, absmax, F32)
    with pytest.raises(ValueError, match="float32 resolution") as err:
        check_resolution(math.nextafter(floor, 0.0), absmax, F32)
    check_resolution(suggested(str(err.value)), absmax, F32)  # the printed bound passes


@pytest.mark.parametrize("name", list(SMOOTHED))
def test_every_smoothed_estimator_checks_at_init_and_estimate(name):
    lq = systems.LinearQuadratic(horizon=6)
    theta64 = torch.tensor([1.5, -0.2, 0.5], dtype=F64)
    est = make(name, 1e-8)
    with pytest.raises(ValueError, match=r"sigma=1e-08 is below float32 .* use sigma >= 1\.8e-06"):
        est.init(lq, theta64.float(), seed=0)
    e, state = est.estimate(lq, theta64, est.init(lq, theta64, seed=0))  # float64 works
    assert e.ok
    big = torch.full((3,), 1e9, dtype=F64)  # theta moved so far that float64 loses 1e-8 too
    with pytest.raises(ValueError, match=r"below float64 resolution at \|theta\|max=1e\+09"):
        est.estimate(lq, big, state)


def test_pathwise_bptt_without_smoothing_is_not_checked():
    lq = systems.LinearQuadratic(horizon=6)
    theta = torch.tensor([1e6, 0.0, 0.0])
    est = estimators.make("bptt", samples=2, horizon=6)
    est.estimate(lq, theta, est.init(lq, theta, seed=0))


def test_strategies_check_the_initial_sigma():
    theta = torch.tensor([1.5, -0.2], dtype=F32)
    with pytest.raises(ValueError, match=r"sigma=1e-08 is below float32 .* or float64$"):
        estimators.make("cmaes", sigma=1e-8).init(theta, seed=0)
    estimators.make("cmaes", sigma=1e-8).init(theta.double(), seed=0)


def test_evosax_works_in_float32_whatever_theta_dtype():
    pytest.importorskip("evosax")
    strategy = estimators.make("evosax:SNES", sigma=1e-6, popsize=4)
    with pytest.raises(ValueError, match=r"below float32 resolution .* use sigma >= 1\.8e-06$"):
        strategy.init(torch.tensor([1.5, 0.2], dtype=F64), seed=0)

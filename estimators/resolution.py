"""The smallest perturbation scale sigma that the working dtype resolves at theta.

Every row an ES-family estimator, `Mixed` or smoothed `BPTT` simulates is theta + sigma eps,
computed in theta's dtype. Near a coordinate theta_j the floats are spaced
ulp(theta_j) <= eps_mach |theta_j| apart (eps_mach = ``torch.finfo(dtype).eps``, 2^-23 for
float32), and round-to-nearest moves theta_j + sigma e_j by up to ulp/2. So for every
coordinate, |theta_j| <= M = max_j |theta_j|:

    |fl(theta_j + sigma e_j) - (theta_j + sigma e_j)| <= eps_mach M / 2.

A perturbation sigma e_j smaller than that may be lost entirely (theta + sigma eps == theta,
and the ES gradient is exactly 0), and one a few times larger is resolved only coarsely (the
estimate weights the loss differences by eps, not by the perturbation the system saw). The rule:

    sigma >= sigma_min = k eps_mach max(M, tiny),    k = 10,

so that a unit perturbation (|e_j| = 1, the typical size of a standard normal draw) is
resolved to within 1/(2k) = 5% in every coordinate, and only draws with |e_j| < 1/(2k)
(4% of them) can be rounded away. ``tiny`` (``torch.finfo(dtype).tiny``) keeps the bound
positive at theta = 0. E.g. float32 at M = 1.5: sigma_min = 10 * 1.19e-7 * 1.5 = 1.8e-6;
float64 at M = 1: 2.2e-15.

`check_resolution` raises one ValueError naming the bound; estimators call it from
`Estimator.check` (every `init` and `estimate`, since theta moves during training) and the
ask/tell strategies from `init`.
"""
from __future__ import annotations

import math

import torch

__all__ = ["RESOLUTION_FACTOR", "min_sigma", "check_resolution"]

RESOLUTION_FACTOR = 10.0  # k: a unit perturbation resolved to within 1/(2k) of itself


def min_sigma(theta_absmax: float, dtype: torch.dtype) -> float:
    """sigma_min = k eps_mach(dtype) max(|theta|max, tiny(dtype)) with k = `RESOLUTION_FACTOR`.

    Args:
        theta_absmax: max_j |theta_j| (finite, >= 0).
        dtype: the floating dtype theta + sigma eps is computed in.
    """
    info = torch.finfo(dtype)
    return RESOLUTION_FACTOR * info.eps * max(float(theta_absmax), info.tiny)


def _round_up(x: float) -> float:
    """``x`` > 0 rounded up to two significant digits (a printed bound that passes)."""
    exp = math.floor(math.log10(x)) - 1
    digits = math.ceil(x / 10.0**exp)
    while float(f"{digits}e{exp}") < x:
        digits += 1
    return float(f"{digits}e{exp}")


def check_resolution(sigma: float, theta_absmax: float, dtype: torch.dtype,
                     name: str = "sigma", suggest_float64: bool = True) -> None:
    """Raise a ValueError if ``0 < sigma < min_sigma(theta_absmax, dtype)``.

    The message names sigma, the dtype, |theta|max and the smallest usable sigma (rounded up,
    so the printed value passes), e.g. "sigma=1e-08 is below float32 resolution at
    |theta|max=1.5 (spacing 1.2e-07 there: theta_j + sigma*eps_j == theta_j unless |eps_j| > 6);
    use sigma >= 1.8e-06 or float64" (theta_j: the largest coordinate). sigma = 0 (pathwise
    estimators) is not checked.

    Args:
        sigma: the perturbation scale (>= 0).
        theta_absmax: max_j |theta_j| of the theta the rows are built from.
        dtype: the dtype theta + sigma eps is computed in.
        name: the hyper-parameter's name in the message.
        suggest_float64: offer float64 theta as the other remedy (False where the dtype is a
            library's own, which theta's dtype does not change).
    """
    floor = min_sigma(theta_absmax, dtype)
    if not 0.0 < sigma < floor:
        return
    info = torch.finfo(dtype)
    spacing = info.eps * 2.0 ** math.floor(math.log2(max(float(theta_absmax), info.tiny)))
    dtype_name = str(dtype).removeprefix("torch.")
    wider = " or float64" if suggest_float64 and dtype != torch.float64 else ""
    lost = spacing / (2 * sigma)  # |eps_j| below which theta_j + sigma eps_j rounds to theta_j
    raise ValueError(f"{name}={sigma:.3g} is below {dtype_name} resolution at |theta|max="
                     f"{theta_absmax:.3g} (spacing {spacing:.2g} there: theta_j + {name}*eps_j "
                     f"== theta_j unless |eps_j| > {lost:.2g}); use {name} >= "
                     f"{_round_up(floor):.2g}{wider}")

"""The statistics every measurement shares: bias^2 with its standard error, per-pair moments,
least-squares slopes with standard errors, and logs of huge variances.

Bias against a reference g* with standard error s*_d, from M per-pair draws with mean m_d and
variance v_d (or any estimate b_d of the bias with variance s_d^2):

    b_d = m_d - g*_d,   s_d^2 = v_d / M + s*_d^2
    bias^2 = sum_d (b_d^2 - s_d^2)                    (unbiased; can dip below 0 by noise)
    SE(bias^2) = sqrt(sum_d 4 b_d^2 s_d^2 + 2 s_d^4),  chi^2 = sum_d b_d^2 / s_d^2
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

__all__ = ["Bias", "bias2", "PairStats", "pair_stats", "Fit", "ols", "log10_trace_cov",
           "log10_norm", "mean_se"]


class Bias(NamedTuple):
    """An unbiased bias^2 with its standard error and the chi^2 of the bias."""

    bias2: float
    se: float
    chi2: float


def bias2(b: torch.Tensor, s2: torch.Tensor) -> Bias:
    """bias^2 = sum_d (b_d^2 - s2_d), its SE and chi^2 (inf when some s2_d is 0).

    Args:
        b: ``[D]`` estimated bias (mean minus reference).
        s2: ``[D]`` variance of that estimate, reference noise included.
    """
    value = (b**2 - s2).sum().item()
    se = (4 * b**2 * s2 + 2 * s2**2).sum().sqrt().item()
    chi2 = (b**2 / s2).sum().item() if bool((s2 > 0).all()) else math.inf
    return Bias(value, se, chi2)


class PairStats(NamedTuple):
    """Moments of M per-pair draws against a reference (see `pair_stats`)."""

    mean: torch.Tensor       # [D]
    var: torch.Tensor        # [D] per-pair variance
    bias: Bias
    var_pair: float          # tr Cov of one pair's estimate
    var_pair_se: float       # its standard error (from the fourth moment)


def pair_stats(draws: torch.Tensor, g_ref: torch.Tensor, se_ref: torch.Tensor) -> PairStats:
    """Bias^2 (module docstring) and per-pair variance tr Cov with standard errors.

    Args:
        draws: ``[M, D]`` per-pair estimates, M >= 2.
        g_ref: ``[D]`` the reference gradient; se_ref: ``[D]`` its standard error.
    Returns:
        `PairStats`; SE(tr Cov) = sqrt(sum_d (m4_d - v_d^2) / M), m4 the fourth central moment.
    """
    M = draws.shape[0]
    mean, var = draws.mean(0), draws.var(0)
    m4 = ((draws - mean) ** 4).mean(0)
    bias = bias2(mean - g_ref, var / M + se_ref**2)
    var_pair_se = ((m4 - var**2).clamp_min(0) / M).sum().sqrt().item()
    return PairStats(mean, var, bias, var.sum().item(), var_pair_se)


class Fit(NamedTuple):
    """Least-squares line ``y = slope * x + intercept`` with the slope's standard error."""

    slope: float
    se: float
    intercept: float
    n: int


def ols(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """Ordinary least squares of ``ys`` on ``xs``; ``se`` is the residual-based standard error
    of the slope. NaN slope with fewer than two points or a single x; NaN ``se`` with two."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return Fit(math.nan, math.nan, math.nan, n)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    if n < 3:
        return Fit(slope, math.nan, intercept, n)
    rss = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return Fit(slope, math.sqrt(rss / (n - 2) / sxx), intercept, n)


def log10_trace_cov(samples: torch.Tensor) -> float:
    """log10 tr Cov of ``[N, D]`` samples, rescaled first so that values beyond 1e308 do not
    overflow (NaN with fewer than two samples or a non-finite one, -inf for zero variance)."""
    if samples.shape[0] < 2:
        return math.nan
    scale = samples.abs().max()
    if not bool(torch.isfinite(scale)):
        return math.nan
    if scale == 0:
        return -math.inf
    tr = (samples / scale).var(0).sum()
    return float(tr.log10() + 2 * scale.log10()) if tr > 0 else -math.inf


def log10_norm(v: torch.Tensor) -> float:
    """log10 of the Euclidean norm of ``v``, rescaled like `log10_trace_cov`."""
    scale = v.abs().max()
    if not bool(torch.isfinite(scale)) or scale == 0:
        return math.nan if not bool(torch.isfinite(scale)) else -math.inf
    return float((v / scale).norm().log10() + scale.log10())


def mean_se(x: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``x`` over ``dim`` (the runs: seeds, keys) and its standard error s / sqrt(n),
    s the sample standard deviation; NaN standard errors for a single run."""
    n = x.shape[dim]
    mean = x.mean(dim)
    if n < 2:
        return mean, torch.full_like(mean, math.nan)
    return mean, x.std(dim) / math.sqrt(n)

"""Mixing a pathwise and an ES gradient by inverse variance (the alpha-order batched gradient).

Suh, Simchowitz, Zhang & Tedrake (ICML 2022, "Do Differentiable Simulators Give Better Policy
Gradients?", AoBG); Parmas, Rasmussen, Peters & Doya (ICML 2018, "PIPPS", inverse-variance
weighting of pathwise and score-function gradients). Both parts come from the same N antithetic
pairs of full unrolls, rows theta +/- sigma eps_i with a shared episode key k_i:

    p_i = [grad L(theta + sigma eps_i; k_i) + grad L(theta - sigma eps_i; k_i)] / 2   (pathwise)
    e_i = eps_i [L(theta + sigma eps_i; k_i) - L(theta - sigma eps_i; k_i)] / (2 sigma)  (ES)
    m_i = alpha p_i + (1 - alpha) e_i,      g = (1/N) sum_i m_i

Both are unbiased for grad L_sigma when L is differentiable. The budget is not split: every one
of the 2N trajectories (2 N T simulated steps, the budget of ``AntitheticES(pairs=N)``) serves
both parts, ES through its loss and pathwise through one backward pass (extra wall time, no
extra simulated steps). Because the parts share trajectories they are correlated, so alpha
minimises the estimated tr Cov(m) including the cross term (S: per-pair sample covariances):

    alpha = (tr S_ee - tr S_pe) / (tr S_pp + tr S_ee - 2 tr S_pe),   clipped to [0, 1],

which is var_ES / (var_pathwise + var_ES) when the parts are uncorrelated. In chaos p_i
explodes (alpha -> 0); on a smooth system ES is the noisier part (alpha -> 1). If any pathwise
sample is non-finite where its ES sample is finite, alpha = 0; on a system that is not
``differentiable`` no backward pass is run and alpha = 0 (plain antithetic ES). With ``bias_test=True`` alpha is
also set to 0 when the pathwise mean differs from the ES mean by more than noise (the spirit of
Suh et al.'s robustness check: pathwise gradients are biased at discontinuities, ES is not):
chi2 = sum_d N dbar_d^2 / var_d of d_i = p_i - e_i, rejected when (chi2 - D) / sqrt(2D) > 3.
A fixed ``alpha`` (1: the pathwise part alone, 0: the ES part alone, from the same unrolls) is
for ablations and for comparing the mix with its parts on common random numbers.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from systems import System

from .antithetic_es import antithetic_samples
from .base import Estimate, Estimator, finite_estimate
from .full_horizon import full_unroll
from .registry import register

__all__ = ["Mixed", "MixedState", "mixing_weight", "mixed_samples"]

_BIAS_Z = 3.0  # standard deviations of the chi^2 statistic beyond which the pathwise part is biased


class MixedState(NamedTuple):
    """State of `Mixed` between calls: the seed, the call counter, the last alpha and the pairs
    it holds (population indices ``particle`` ``[N]`` and the population size)."""

    seed: Tensor        # int64 scalar
    count: Tensor       # int64 scalar, calls so far
    alpha: Tensor       # scalar weight of the pathwise part in the last estimate (NaN before)
    particle: Tensor    # [N] int64 population indices of the pairs
    population: Tensor  # int64 scalar, pairs in the whole population


def mixing_weight(pathwise: Tensor, es: Tensor, bias_test: bool = False) -> Tensor:
    """The pathwise weight alpha in [0, 1] from matched per-pair samples ``[N, D]`` (N >= 2).

    Rows whose ES sample is non-finite are ignored; a non-finite pathwise sample among the rest
    gives alpha = 0. Otherwise alpha minimises the sample trace of Cov(alpha p + (1-alpha) e).
    """
    ok = torch.isfinite(es).all(1)
    p, e = pathwise[ok], es[ok]
    zero = es.new_zeros(())
    if not bool(torch.isfinite(p).all()):
        return zero  # the pathwise part overflowed (chaos) or hit a singularity
    if p.shape[0] < 2:
        return es.new_full((), 0.5)  # no variance to compare
    pc, ec = p - p.mean(0), e - e.mean(0)
    n = p.shape[0] - 1
    s_pp, s_ee, s_pe = (pc**2).sum() / n, (ec**2).sum() / n, (pc * ec).sum() / n
    denom = s_pp + s_ee - 2 * s_pe
    if not bool(torch.isfinite(denom)):
        return zero
    alpha = ((s_ee - s_pe) / denom).clamp(0.0, 1.0) if denom > 0 else es.new_full((), 0.5)
    if bias_test:
        d = p - e
        var = d.var(0)
        D = d.shape[1]
        chi2 = (p.shape[0] * d.mean(0) ** 2 / var.clamp_min(torch.finfo(d.dtype).tiny)).sum()
        if (chi2 - D) / math.sqrt(2 * D) > _BIAS_Z:
            return zero
    return alpha


def mixed_samples(pathwise: Tensor, es: Tensor, alpha: Tensor) -> Tensor:
    """``[N, D]`` per-pair contributions alpha p_i + (1 - alpha) e_i (exactly e_i at alpha = 0,
    so an overflowing pathwise sample cannot turn 0 * inf into NaN)."""
    if float(alpha) == 0.0:
        return es
    return alpha * pathwise + (1 - alpha) * es


@register("mixed")
class Mixed(Estimator):
    """Inverse-variance mix of pathwise and antithetic ES gradients from the same unrolls (AoBG).

    With a measured alpha (the default) the weight depends on every pair of the estimate, so a
    block of pairs is not a block of the population's samples (``separable`` is False).
    """

    min_particles = 2  # alpha needs a variance: two pairs at least

    def __init__(self, pairs: int = 8, sigma: float = 0.1, horizon: int | None = None,
                 bias_test: bool = False, alpha: float | None = None):
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                  or not 0.0 <= alpha <= 1.0):
            raise ValueError(f"alpha must be None (measured) or a float in [0, 1], got {alpha!r}")
        super().__init__(horizon=horizon, pairs=pairs, sigma=sigma)
        self.alpha = None if alpha is None else float(alpha)
        self.bias_test = bool(bias_test)

    @property
    def separable(self) -> bool:
        """Whether blocks of pairs compose to the population's estimate (only with a fixed alpha)."""
        return self.alpha is not None

    def init(self, system: System, theta: Tensor, *, seed: int, offset: int = 0,
             population: int | None = None) -> MixedState:
        seed, particle, population = self.identity(self.check(system, theta), seed, offset,
                                                   population)
        return MixedState(seed, torch.zeros_like(seed),
                          torch.full((), math.nan, dtype=theta.dtype, device=theta.device),
                          particle, population)

    def estimate(self, system: System, theta: Tensor, state: MixedState) -> tuple[Estimate, MixedState]:
        theta = self.check(system, theta)
        self.particles(state)
        run = full_unroll(system, theta, state, self.sigma, self.horizon_for(system),
                          antithetic=True, pathwise=system.differentiable)
        loss_pos, loss_neg = run.losses.chunk(2)
        es = antithetic_samples(loss_pos, loss_neg, run.eps, self.sigma)
        if run.grads is not None:
            n = es.shape[0]
            pathwise = 0.5 * (run.grads[:n] + run.grads[n:])
            alpha = (mixing_weight(pathwise, es, self.bias_test) if self.alpha is None
                     else es.new_full((), self.alpha))
            samples = mixed_samples(pathwise, es, alpha)
        else:
            alpha, samples = es.new_zeros(()), es
        est = finite_estimate(samples, 0.5 * (loss_pos + loss_neg), run.steps)
        return est, state._replace(count=state.count + 1, alpha=alpha.to(theta.dtype))

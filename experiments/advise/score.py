"""The advisor's decision, as pure functions of the measurements (no simulation, no clock).

- `choose_sigma`: sigma* from the antithetic-ES draws at each sigma of the grid;
- `score_candidate`: bias^2, per-pair variance, MSE(C) and the rank of one estimator setting;
- `decide`: the usable candidate of smallest rank;
- `score`: `Measurements` -> `Advice` (candidates scored, the recommendation, its settings).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from experiments.core.stats import pair_stats

from .model import (F64, SIGMA_VARIANCE_FACTOR, UNBIASED, Advice, Candidate, Draws,
                    Measurements)

__all__ = ["choose_sigma", "score_candidate", "decide", "pairs_for", "score"]


def choose_sigma(grid: dict[float, tuple[torch.Tensor, int]]) -> tuple[float, list[dict]]:
    """sigma* and one row per measured sigma of the grid.

    ``grid`` maps each sigma to its antithetic-ES per-pair draws ``[M', D]`` and their non-finite
    count. sigma* is the smallest sigma whose per-pair variance tr Cov is within
    ``SIGMA_VARIANCE_FACTOR`` of the lowest among the sigmas with every draw finite. Each row
    has ``sigma``, ``nonfinite`` and, for finite sigmas, ``var_pair`` and ``smoothing_bias2`` =
    sum_d (m_sigma - m_min)_d^2 - noise against the smallest finite sigma.

    Raises:
        ValueError: when no sigma has at least two draws, all finite.
    """
    finite = {s: d for s, (d, bad) in grid.items() if bad == 0 and d.shape[0] >= 2}
    if not finite:
        raise ValueError(f"no ES draw could be measured at any sigma of {list(grid)}")
    s_min = min(finite)
    m0, v0 = finite[s_min].mean(0), finite[s_min].var(0)
    rows, scores = [], {}
    for s, (d, bad) in grid.items():
        row = {"sigma": s, "nonfinite": bad}
        if s in finite:
            b2 = (((d.mean(0) - m0) ** 2 - (d.var(0) + v0) / d.shape[0]).sum().item()
                  if s != s_min else 0.0)
            row.update({"smoothing_bias2": b2, "var_pair": d.var(0).sum().item()})
            scores[s] = row["var_pair"]
        rows.append(row)
    floor = SIGMA_VARIANCE_FACTOR * min(scores.values())
    return min(s for s, v in scores.items() if v <= floor), rows


def score_candidate(d: Draws, m: Measurements) -> Candidate:
    """One estimator setting's `Candidate`: bias^2 against the reference with its SE, per-pair
    variance, cost per pair in forward-step equivalents, MSE(C) and the rank `decide` uses.

    Estimators unbiased by construction (``UNBIASED``) count a measured bias only when it is
    significant (> 2 SE); those biased by design count max(bias^2, 0) and rank by MSE + 2 SE.
    """
    a, smoothed = m.advice, d.estimator in UNBIASED
    price = a.backward_factor if a.differentiable and math.isfinite(a.backward_factor) else 1.0
    c = Candidate(d.estimator, d.family, dict(d.settings), draws=d.samples.shape[0],
                  nonfinite=d.nonfinite, seconds=d.seconds,
                  cost_pair=d.steps / a.draws * (price if d.family == "pathwise" else 1.0))
    if d.samples.shape[0] < 2:
        return c
    st = pair_stats(d.samples.to(F64), m.g, m.se_ref)
    c.bias2, c.bias2_se = st.bias.bias2, st.bias.se
    c.var_pair, c.var_pair_se = st.var_pair, st.var_pair_se
    significant = c.bias2 > 2 * c.bias2_se
    B = max(c.bias2, 0.0) if not smoothed or significant else 0.0
    C = a.compute
    c.mse = B + c.var_pair * c.cost_pair / C
    c.mse_se = math.hypot(c.bias2_se if B else 0.0, c.var_pair_se * c.cost_pair / C)
    c.rank = c.mse + (0.0 if smoothed else 2 * c.bias2_se)
    return c


def decide(candidates: list[Candidate], differentiable: bool) -> Candidate | None:
    """The decision rule: the usable candidate with the smallest MSE(C) (pathwise ones only if
    ``differentiable``); None when nothing usable was measured."""
    ok = [c for c in candidates if c.usable and (differentiable or c.family != "pathwise")]
    return min(ok, key=lambda c: c.rank) if ok else None


def pairs_for(var_pair: float, g_norm2: float) -> int:
    """Power of two in [4, 1024] at or above var_pair / (0.25 |g|^2): one estimate's noise at
    most half the gradient's norm (1024 when that cannot be computed)."""
    if not (g_norm2 > 0 and math.isfinite(var_pair)):
        return 1024
    need = var_pair / (0.25 * g_norm2)
    n = 4
    while n < need and n < 1024:
        n *= 2
    return n


def score(m: Measurements) -> Advice:
    """The `Advice` of measurements ``m``: every candidate scored, the recommendation (the
    `decide` winner with its settings and the pairs `pairs_for` asks for). Evidence is left
    empty (`experiments.advise.render.evidence` writes it)."""
    candidates = [score_candidate(d, m) for d in m.candidates]
    best = decide(candidates, m.advice.differentiable)
    recommendation = {}
    if best is not None:
        settings = dict(best.settings)
        settings["pairs" if best.family == "es" else "samples"] = pairs_for(
            best.var_pair, m.g.norm().item() ** 2)
        recommendation = {"estimator": best.estimator, "family": best.family,
                          "settings": settings, "mse": best.mse}
    return replace(m.advice, candidates=candidates, recommendation=recommendation)

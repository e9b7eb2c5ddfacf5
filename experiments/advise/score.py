"""The advisor's decision, as pure functions of the measurements (no simulation, no clock).

- `choose_sigma`: sigma* from the antithetic-ES draws at each sigma of the grid;
- `score_candidate`: bias^2, per-pair variance, MSE(C) and the rank of one estimator setting;
- `ranked`: the candidates the rule may recommend, best first; `decide`: the first of them;
- `unresolved`: why the reference gradient cannot support a recommendation ("" when it can);
- `RULE`: the decision rule in words (the advisor prints it);
- `score`: `Measurements` -> `Advice` (candidates scored, the recommendation and its settings,
  or why it is withheld).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from experiments.core.stats import pair_stats

from .model import (F64, NONFINITE_SHARE, REFERENCE_Z, SIGMA_VARIANCE_FACTOR, UNBIASED, Advice,
                    Candidate, Draws, Measurements)

__all__ = ["choose_sigma", "score_candidate", "ranked", "decide", "unresolved", "pairs_for",
           "score", "RULE"]

RULE = ("rank = MSE(C) for estimators unbiased for grad L_sigma (BPTT at sigma*, antithetic ES, "
        "PES; a measured bias counts only when > 2 SE), MSE(C) + 2 SE(bias^2) for those biased "
        "by design (truncated BPTT: the upper end of their MSE); the smallest rank among "
        "candidates with every draw finite is recommended")


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


def ranked(candidates: list[Candidate], differentiable: bool) -> list[Candidate]:
    """The candidates the decision rule may recommend, by rank (smallest first): usable ones,
    pathwise ones only if ``differentiable``. The table's "x best" column, the verdict's
    "next best" and the figure's order all come from this list."""
    ok = [c for c in candidates if c.usable and (differentiable or c.family != "pathwise")]
    return sorted(ok, key=lambda c: c.rank)


def decide(candidates: list[Candidate], differentiable: bool) -> Candidate | None:
    """The decision rule (`RULE`): the first of `ranked`; None when nothing usable was
    measured."""
    order = ranked(candidates, differentiable)
    return order[0] if order else None


def unresolved(g_norm: float, se_norm: float, reference_nonfinite: int, reference_draws: int,
               candidates: list[Candidate]) -> str:
    """Why the reference gradient g* cannot support a recommendation, with what to change;
    ``""`` when it can.

    Unresolved when |g*| is not finite, when |g*| <= ``REFERENCE_Z`` SE(g*) (indistinguishable
    from zero: every bias^2 is then noise), or when non-finite draws are more than
    ``NONFINITE_SHARE`` of the reference's draws or of all the candidates' draws.
    """
    fix = ("try a smaller sigma (--set or a smaller grid), more budget (--budget / --time) or "
           "a shorter horizon (--horizon)")
    total = reference_nonfinite + reference_draws
    if total and reference_nonfinite > NONFINITE_SHARE * total:
        return (f"{reference_nonfinite} of {total} reference draws were non-finite; {fix}")
    bad = sum(c.nonfinite for c in candidates)
    drawn = bad + sum(c.draws for c in candidates)
    if drawn and bad > NONFINITE_SHARE * drawn:
        return f"{bad} of {drawn} candidate draws were non-finite; {fix}"
    if not math.isfinite(g_norm):
        return f"the reference gradient is not finite (|g| = {g_norm}); {fix}"
    if not g_norm > REFERENCE_Z * se_norm:
        return (f"the reference gradient is not resolved: |g| = {g_norm:.3g} is within "
                f"{REFERENCE_Z:g} standard errors ({se_norm:.2g}) of zero, so no bias can be "
                f"measured against it; {fix}")
    return ""


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
    `decide` winner with its settings and the pairs `pairs_for` asks for), or, when the
    reference is `unresolved`, none and ``withheld`` saying why. Evidence is left empty
    (`experiments.advise.render.evidence` writes it)."""
    candidates = [score_candidate(d, m) for d in m.candidates]
    ref = m.advice.reference
    withheld = unresolved(ref.get("grad_norm", m.g.norm().item()),
                          ref.get("se_norm", m.se_ref.norm().item()), ref.get("nonfinite", 0),
                          ref.get("pairs", 0), candidates)
    best = None if withheld else decide(candidates, m.advice.differentiable)
    recommendation = {}
    if best is not None:
        settings = dict(best.settings)
        settings["pairs" if best.family == "es" else "samples"] = pairs_for(
            best.var_pair, m.g.norm().item() ** 2)
        recommendation = {"estimator": best.estimator, "family": best.family,
                          "settings": settings, "mse": best.mse}
    return replace(m.advice, candidates=candidates, recommendation=recommendation,
                   withheld=withheld)

"""The advice for a reader: the evidence sentences, the terminal text, and the two figures
(the gradients' spread against T, the candidates' MSE).

The terminal table, the verdict (the last line) and the MSE figure agree by construction: all
three order and mark the candidates with `experiments.advise.score.ranked`, and print the rule
(`experiments.advise.score.RULE`) they rank by.
"""
from __future__ import annotations

import math
from pathlib import Path

from experiments.core.plotting import file_stem, new_figure, save_figure, text

from .model import PAIRS_YARDSTICK, SIGMA_VARIANCE_FACTOR, Advice, Candidate
from .score import RULE, ranked

__all__ = ["evidence", "format_advice", "plot"]


def _fmt_settings(settings: dict) -> str:
    return ", ".join(f"{k} = {v:g}" for k, v in settings.items())


def _short(theta: list) -> str:
    text = ", ".join(f"{x:.4g}" for x in theta[:6])
    return f"[{text}{', ...' if len(theta) > 6 else ''}]"


def _chaos(a: Advice) -> list[str]:
    """The Lyapunov exponent and the BPTT gradient's growth with T."""
    ev = []
    if a.lyapunov is not None:
        unit = (f" ({a.lyapunov_per_time:.3g} per unit time)" if a.lyapunov_per_time is not None
                else "")
        ev.append(f"lambda = {a.lyapunov:.3g} +/- {a.lyapunov_se:.2g} per step{unit}: leading "
                  f"finite-time Lyapunov exponent from t = 0 over the T = {a.horizon} steps")
    if not a.growth:
        return ev
    hs, ls, slope = a.growth["horizons"], a.growth["log_std"], a.growth["slope"]
    ok = [(h, x) for h, x in zip(hs, ls) if math.isfinite(x)]
    if math.isfinite(slope) and slope > 0 and len(ok) >= 2:
        ratio = math.exp(ok[-1][1] - ok[0][1])
        ev.append(f"the BPTT gradient's std grows by {slope:.3g} nats per step (doubles every "
                  f"{math.log(2) / slope:.3g} steps): {ratio:.3g}x larger at T = {ok[-1][0]} "
                  f"than at T = {ok[0][0]}")
    elif math.isfinite(slope):
        ev.append(f"the BPTT gradient's std does not grow with T (slope {slope:.3g} per step)")
    if sum(a.growth["nonfinite"]):
        ev.append(f"BPTT gradients overflowed (non-finite) at T = "
                  f"{[h for h, n in zip(hs, a.growth['nonfinite']) if n]}")
    return ev


def _pathwise(a: Advice) -> list[str]:
    """BPTT against the best ES-family candidate, and truncated BPTT's bias."""
    ev = []
    es = [c for c in a.candidates if c.family == "es" and c.usable]
    pw = [c for c in a.candidates if c.family == "pathwise"]
    best_es = min(es, key=lambda c: c.mse) if es else None
    for c in pw if best_es is not None else ():
        if c.estimator != "bptt":
            continue
        if not c.usable:
            ev.append(f"BPTT at T = {a.horizon}: {c.nonfinite} of {c.draws + c.nonfinite} "
                      "per-pair gradients were non-finite: unusable")
        else:
            ev.append(f"at T = {a.horizon} BPTT's MSE per step of compute is "
                      f"{c.mse / best_es.mse:.3g} times {best_es.label}'s ({c.mse:.3g} vs "
                      f"{best_es.mse:.3g} at the compute of {PAIRS_YARDSTICK} ES pairs)")
    tb = [c for c in pw if c.estimator == "truncated_bptt" and c.usable]
    if tb and a.reference.get("grad_norm", 0) > 0:
        g2 = a.reference["grad_norm"] ** 2
        parts = ", ".join(f"{c.bias2 / g2:.2g} +/- {c.bias2_se / g2:.1g} at K = {c.settings['K']}"
                          for c in tb)
        ev.append(f"TruncatedBPTT's bias^2 / |g|^2: {parts}")
    return ev


def _sigma(a: Advice) -> list[str]:
    if not a.sigma_grid:
        return []
    var = ", ".join(f"{r['var_pair']:.3g} at {r['sigma']:g}" for r in a.sigma_grid
                    if "var_pair" in r)
    return [f"sigma = {a.sigma:g}: the smallest sigma (least smoothing bias) whose ES "
            f"variance per pair is within {SIGMA_VARIANCE_FACTOR:g}x of the lowest ({var})"
            + "".join(f"; sigma = {r['sigma']:g} excluded ({r['nonfinite']} non-finite)"
                      for r in a.sigma_grid if r["nonfinite"])]


def _recommended(a: Advice) -> Candidate | None:
    """The candidate the recommendation names (None when withheld or nothing was usable)."""
    if a.withheld or not a.recommendation:
        return None
    order = ranked(a.candidates, a.differentiable)
    return order[0] if order else None


def _verdict(a: Advice) -> str:
    if a.withheld:
        return f"no recommendation: {a.withheld}"
    order = ranked(a.candidates, a.differentiable)
    if not order or not a.recommendation:
        return "no recommendation: no estimator could be measured within the budget"
    best = order[0]
    vs = (f"; next best {order[1].label} has {order[1].rank / best.rank:.3g}x its rank"
          if len(order) > 1 and best.rank > 0 else "")
    return (f"use {best.estimator} with {_fmt_settings(a.recommendation['settings'])} "
            f"(smallest rank at T = {a.horizon}{vs})")


def evidence(a: Advice) -> list[str]:
    """The sentences that explain the recommendation of a scored `Advice`, in reading order."""
    ev = []
    if not a.differentiable:
        ev.append(f"pathwise unavailable: {a.differentiable_reason}; only loss-based (ES-family) "
                  "estimators were measured")
    return [*ev, *_blind(a), *_chaos(a), *_pathwise(a), *_sigma(a), _verdict(a)]


def _blind(a: Advice) -> list[str]:
    """What pathwise estimators miss: the blind coordinates and the reference gradient there."""
    if not a.blind or not a.differentiable:
        return []
    g, se = a.reference.get("grad"), a.reference.get("se")
    seen = ""
    if g and se and all(d < len(g) for d in a.blind):
        seen = "; the reference gradient there: " + ", ".join(
            f"theta[{d}] {g[d]:.3g} +/- {se[d]:.2g}" for d in a.blind[:6])
    return [f"autograd is blind to theta[{', '.join(map(str, a.blind[:6]))}"
            f"{', ...' if len(a.blind) > 6 else ''}] (exactly zero pathwise derivative, yet the "
            "loss moves with them: discrete decisions): BPTT and truncated BPTT can never tune "
            f"them, and their bias^2 below includes those coordinates{seen}"]


def format_advice(a: Advice) -> str:
    """The advice as terminal text: checks, measurements with standard errors, evidence."""
    lines = [f"advice for {a.system} at theta = {_short(a.theta)}, horizon T = {a.horizon}",
             *("  " + c for c in a.checks),
             f"  => {'differentiable' if a.differentiable else 'pathwise unavailable'}: "
             f"{a.differentiable_reason}",
             f"cost: {a.step_seconds:.3g} s per forward trajectory-step"
             + (f", backward x{a.backward_factor:.2f}" if math.isfinite(a.backward_factor) else ""),
             f"reference grad L_sigma (sigma = {a.sigma:g}): {a.reference.get('method')}, "
             f"|g| = {a.reference.get('grad_norm', math.nan):.3g}, "
             f"SE {a.reference.get('se_norm', math.nan):.2g}",
             f"M = {a.draws} draws per estimator; MSE at the compute of {PAIRS_YARDSTICK} ES pairs "
             f"(C = {a.compute:.0f} forward steps), best rank first:",
             f"rule: {RULE}",
             f"    {'estimator':34s}{'bias^2':>11s}{'+/-':>9s}{'var/pair':>11s}{'cost/pair':>11s}"
             f"{'MSE(C)':>11s}{'+/-':>9s}{'rank':>11s}{'x best':>9s}"]
    order = ranked(a.candidates, a.differentiable)
    chosen = _recommended(a)
    best = order[0].rank if order else math.nan
    for c in order + [c for c in a.candidates if c not in order]:
        ratio = c.rank / best if c in order and best > 0 else math.nan
        tag = "" if c.usable else f"  ({c.nonfinite} non-finite)"
        mark = "=> " if c is chosen else "   "
        lines.append(f" {mark}{c.label:34s}{c.bias2:11.3g}{c.bias2_se:9.2g}{c.var_pair:11.3g}"
                     f"{c.cost_pair:11.4g}{c.mse:11.3g}{c.mse_se:9.2g}{c.rank:11.3g}{ratio:9.3g}"
                     f"{tag}{'  <- recommended' if c is chosen else ''}")
    if a.withheld:
        lines.append("    (no row is recommended: the reference gradient is not resolved)")
    lines.append("evidence:")
    lines += [f"  - {e}" for e in a.evidence]
    if a.unmeasured:
        lines.append("not measured within the budget:")
        lines += [f"  - {u}" for u in a.unmeasured]
    lines.append(f"({a.steps_used:,} simulated steps, {a.seconds:.1f} s)")
    return "\n".join(lines)


def _plot_growth(a: Advice, directory, stem: str) -> Path:
    hs = a.growth["horizons"]
    fig, axes = new_figure(1, 1, 6, 4, layout=None)
    ax = axes[0][0]
    ax.plot(hs, a.growth["log_std"], "o-", label="BPTT (pathwise, sigma = 0)")
    ax.plot(hs, a.growth["es_log_std"], "s--", label=f"antithetic ES, sigma = {a.sigma:g}")
    ax.set_xlabel("horizon T (steps)")
    ax.set_ylabel("log std of one per-pair gradient")
    ax.set_title(f"{text(a.name)}: gradient spread against T", fontsize=10)
    ax.legend()
    fig.tight_layout()
    caption = (f"Advisor, {a.system}: natural log of the standard deviation (sqrt of the trace of "
               f"the covariance) of one per-key BPTT gradient and of one antithetic-ES pair's "
               f"gradient against the horizon T, {a.growth['samples']} samples each, at theta = "
               f"{_short(a.theta)}. Fitted BPTT growth: {a.growth['slope']:.3g} per step.")
    return save_figure(fig, directory, f"{stem}_growth", ["T", "bptt_log_std", "es_log_std"],
                       list(zip(hs, a.growth["log_std"], a.growth["es_log_std"])), caption,
                       dpi=110)


def _plot_mse(a: Advice, directory, stem: str, cands: list[Candidate]) -> Path:
    order = ranked(a.candidates, a.differentiable)
    cands = [c for c in order if c in cands] + [c for c in cands if c not in order]
    chosen = _recommended(a)
    fig, axes = new_figure(1, 1, 7.5, 0.5 * len(cands) + 1.8, layout=None)
    ax = axes[0][0]
    y = list(range(len(cands)))[::-1]  # best rank at the top
    colors = ["tab:blue" if c.family == "pathwise" else "tab:orange" for c in cands]
    ax.barh(y, [c.mse for c in cands], xerr=[min(2 * c.mse_se, 0.99 * c.mse) for c in cands],
            color=colors, edgecolor=["black" if c is chosen else "none" for c in cands],
            linewidth=2)
    ranks = [(yi, c.rank) for yi, c in zip(y, cands) if c.rank != c.mse and math.isfinite(c.rank)]
    if ranks:
        ax.plot([r for _, r in ranks], [yi for yi, _ in ranks], "k|", ms=14, mew=2,
                label="rank (MSE + 2 SE of bias^2)")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(y, [text(("=> " if c is chosen else "") + c.label
                           + ("" if c in order else " (not ranked)")) for c in cands])
    for tick, c in zip(ax.get_yticklabels(), cands):
        if c is chosen:
            tick.set_fontweight("bold")
    ax.set_xscale("log")
    ax.set_xlabel(f"MSE of one estimate at the compute of {PAIRS_YARDSTICK} ES pairs")
    verdict = (f"recommended: {chosen.label}" if chosen is not None
               else "no recommendation (reference not resolved)" if a.withheld
               else "no recommendation")
    ax.set_title(f"{text(a.name)}, T = {a.horizon}: {text(verdict)}\n(blue: pathwise, "
                 "orange: ES family; best rank at the top)", fontsize=9)
    fig.tight_layout()
    rows = [[c.estimator, c.family, _fmt_settings(c.settings).replace(",", ";"), c.bias2,
             c.bias2_se, c.var_pair, c.var_pair_se, c.cost_pair, c.mse, c.mse_se, c.rank,
             c.nonfinite, int(c is chosen)] for c in cands]
    caption = (f"Advisor, {a.system} at T = {a.horizon}: MSE against grad L_sigma "
               f"({a.reference.get('method')}) of one estimate given the compute of "
               f"{PAIRS_YARDSTICK} antithetic ES pairs (pathwise steps priced x"
               f"{a.backward_factor:.2f} for the backward pass), error bars 2 standard errors, "
               f"best rank at the top, the recommended estimator outlined and marked =>. "
               f"Rule: {RULE}. " + " ".join(e + "." for e in a.evidence))
    return save_figure(fig, directory, f"{stem}_mse",
                       ["estimator", "family", "settings", "bias2", "bias2_se", "var_pair",
                        "var_pair_se", "cost_pair", "mse", "mse_se", "rank", "nonfinite",
                        "recommended"], rows, caption,
                       dpi=110)


def plot(a: Advice, directory: str | Path, tag: str = "") -> list[Path]:
    """``DIR/figures/advise_<name>[_<tag>]_{growth,mse}.png`` with CSV data and .txt captions
    (``tag`` tells apart advice on the same system: the regime and the settings, readable)."""
    stem = file_stem("advise", a.name, tag)
    paths = []
    if a.growth:
        paths.append(_plot_growth(a, directory, stem))
    cands = [c for c in a.candidates if c.draws >= 2 and math.isfinite(c.mse)]
    if cands:
        paths.append(_plot_mse(a, directory, stem, cands))
    return paths

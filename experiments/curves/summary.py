"""The curves' cells pooled over seeds (`summarize`), growth rates of their log-variance, and the
curves' section of the HTML report (registered with `experiments.core.report`)."""
from __future__ import annotations

import html
import math
from collections import defaultdict

import torch

from experiments.core.report import Section, html_table, register_section
from experiments.core.stats import bias2, ols
from experiments.core.store import ResultsStore

from .config import KIND, REF_KIND

__all__ = ["summarize", "slope_log_variance", "report_tables", "SECTION"]

_NAN_METRICS = ("bias2", "bias2_se", "bias_chi2", "bias_z", "variance", "variance_se",
                "variance_lo", "variance_hi", "mse", "mse_se", "cosine", "cosine_se")


def _std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _pooled(ok: list[dict], ref: dict) -> dict:
    """Bias pooled over the seeds' per-pair means, variance and cosine over seeds."""
    g = torch.tensor(ref["metrics"]["grad"], dtype=torch.float64)
    se_ref = torch.tensor(ref["metrics"]["se"], dtype=torch.float64)
    means = torch.tensor([m["mean"] for m in ok], dtype=torch.float64)
    var_m = torch.tensor([[v / m["draws_finite"] for v in m["var_pair"]] for m in ok],
                         dtype=torch.float64)
    bias = bias2(means.mean(0) - g, var_m.sum(0) / len(ok) ** 2 + se_ref**2)
    D = g.numel()
    variances = [m["variance"] for m in ok]
    cosines = [m["cosine"] for m in ok]
    if len(ok) >= 2:
        variance_se = _std(variances) / math.sqrt(len(ok))
        cosine_se = _std(cosines) / math.sqrt(len(ok))
    else:
        variance_se, cosine_se = ok[0]["variance_se"], ok[0]["cosine_se"]
    variance = sum(variances) / len(ok)
    return {"bias2": bias.bias2, "bias2_se": bias.se, "bias_chi2": bias.chi2,
            "bias_z": (bias.chi2 - D) / math.sqrt(2 * D) if D > 1 else math.sqrt(bias.chi2),
            "variance": variance, "variance_se": variance_se,
            "variance_lo": min(variances), "variance_hi": max(variances),
            "mse": bias.bias2 + variance, "mse_se": math.hypot(bias.se, variance_se),
            "cosine": sum(cosines) / len(ok), "cosine_se": cosine_se,
            "log_variances": [math.log(v) if v > 0 else math.nan for v in variances]}


def summarize(rows: list[dict], references: list[dict]) -> list[dict]:
    """One dict per (system, regime, estimator, T, K, sigma, N, M) setting, pooled over seeds.

    The bias is pooled (mean of the seeds' per-pair means against g*); ``variance`` is the mean
    over seeds with ``variance_lo``/``variance_hi`` its min/max; ``*_se`` are standard errors:
    across seeds (std / sqrt(S)) when S >= 2, else within the single seed.
    """
    refs = {(r["system"], r["params"]["regime"], r["params"]["T"], r["params"]["sigma"]): r
            for r in references}
    groups = defaultdict(list)
    for r in rows:
        p = r["params"]
        groups[(r["system"], p["regime"], r["estimator"], p["T"], p["K"], p["sigma"],
                p["pairs"], p["draws"], p.get("ref_pairs"))].append(r["metrics"])
    out = []
    for (system, regime, name, T, K, sigma, N, M, _), ms in groups.items():
        ref = refs.get((system, regime, T, sigma))
        S = len(ms)
        row = {"system": system, "regime": regime, "estimator": name, "T": T, "K": K,
               "sigma": sigma, "pairs": N, "draws": M, "seeds": S,
               "steps": ms[0]["steps"], "seconds": sorted(m["seconds"] for m in ms)[S // 2],
               "nonfinite": sum(m["nonfinite"] for m in ms),
               "nonfinite_fraction": sum(m["nonfinite"] for m in ms) / (S * M)}
        ok = [m for m in ms if m["draws_finite"] >= 2]
        row.update(_pooled(ok, ref) if ref is not None and ok
                   else dict.fromkeys(_NAN_METRICS, math.nan))
        out.append(row)
    return out


def slope_log_variance(summary: list[dict], regime: str, estimator: str = "bptt", *,
                       along: str = "T", at: int | None = None) -> tuple[float, float, int]:
    """OLS slope of ln(variance) against T (``along="T"``, rows with K == ``at``) or against K
    (``along="K"``, rows with T == ``at``), over every seed's point: (slope, SE, points); NaN
    with fewer than three points."""
    other = "K" if along == "T" else "T"
    xs, ys = [], []
    for r in summary:
        if r["regime"] == regime and r["estimator"] == estimator and r[other] == at \
                and r[along] is not None:
            for y in r.get("log_variances", []):
                if math.isfinite(y):
                    xs.append(float(r[along]))
                    ys.append(y)
    if len(xs) < 3:
        return math.nan, math.nan, len(xs)
    fit = ols(xs, ys)
    return fit.slope, fit.se, fit.n


_SUMMARY_HEADERS = ["regime", "estimator", "T", "K", "sigma", "N", "seeds", "bias^2", "± SE",
                    "bias z", "variance", "± SE", "MSE", "cosine", "± SE", "steps", "seconds",
                    "nonfinite"]
_SUMMARY_NOTE = (
    "<p class='muted'>One row per setting, pooled over seeds. bias^2 is unbiased (it can be "
    "negative by noise) with its standard error; variance is that of one estimate of N samples "
    "(with its standard error across seeds, or within the seed when there is one); cosine is the "
    "mean cosine of one estimate with the reference; steps and seconds are the cost of one "
    "N-sample full-horizon estimate; nonfinite counts per-sample draws dropped because they "
    "overflowed.</p>")


def _summary_tables(summary: list[dict]) -> list[str]:
    by_system = defaultdict(list)
    for r in summary:
        by_system[r["system"]].append(r)
    parts = []
    for system, rs in sorted(by_system.items()):
        rs.sort(key=lambda r: (r["regime"], r["estimator"], r["T"], r["K"] or 0, r["sigma"]))
        parts.append(f"<h3>{html.escape(system)}</h3>")
        parts.append(html_table(_SUMMARY_HEADERS, [
            [r["regime"], r["estimator"], r["T"], r["K"], r["sigma"], r["pairs"], r["seeds"],
             r["bias2"], r["bias2_se"], r.get("bias_z"), r["variance"], r["variance_se"],
             r["mse"], r["cosine"], r["cosine_se"], r["steps"], r["seconds"], r["nonfinite"]]
            for r in rs], left=2))
    return parts


def _reference_table(refs: list[dict]) -> str:
    refs = sorted(refs, key=lambda r: (r["system"], r["params"]["regime"], r["params"]["T"],
                                       r["params"]["sigma"]))
    return html_table(
        ["system", "regime", "T", "sigma", "method", "grad L_sigma", "SE", "|grad|", "|SE|",
         "seconds"],
        [[r["system"], r["params"]["regime"], r["params"]["T"], r["params"]["sigma"],
          r["metrics"]["method"], r["metrics"]["grad"], r["metrics"]["se"],
          r["metrics"]["grad_norm"], r["metrics"]["se_norm"], r["seconds"]] for r in refs],
        left=2)


def report_tables(store: ResultsStore) -> str:
    """The report's curves section: the summary per system and the reference gradients."""
    rows, refs = store.rows(KIND), store.rows(REF_KIND)
    if not rows and not refs:
        return ""
    parts = ["<h2>curves: bias<sup>2</sup>, variance, MSE, cosine and cost</h2>", _SUMMARY_NOTE,
             *_summary_tables(summarize(rows, refs))]
    if refs:
        parts += ["<h3>reference gradients (the common target, grad L_sigma)</h3>",
                  _reference_table(refs)]
    return "\n".join(parts)


SECTION = register_section(Section(kinds=(KIND, REF_KIND), tables=report_tables,
                                   figures="curves",
                                   figure_order=("_horizon", "_truncation", "_cost")))

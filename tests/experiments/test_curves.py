"""`chaosgrad curves` on its quick settings: the paper's qualitative results, against the SEs.

Metz et al. 2021: BPTT's log-variance grows linearly with T in chaos (slope ~ 2 lambda) and stays
bounded in a regular regime; ES-type variance does not explode; truncation trades bias for
variance; PES and NRES are unbiased. All checks compare against the measured standard errors.
"""
import math
from dataclasses import replace
from statistics import NormalDist

import pytest
import torch

import systems
from experiments import curves
from experiments.core.report import build_report
from experiments.core.store import ResultsStore

Q = curves.QUICK
T_MAX, K0 = max(Q.horizons), curves.truncation_for_horizons(Q)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("curves_quick")
    results = curves.run(Q, out, progress=False)
    figures = curves.plot(results, out)
    return {"results": results, "summary": results["summary"], "dir": out, "figures": figures,
            "report": build_report(out)}


def rows(summary, regime, estimator, **match):
    out = [r for r in summary if r["regime"] == regime and r["estimator"] == estimator
           and all(r[k] == v for k, v in match.items())]
    return out


def test_quick_covers_both_logistic_regimes_and_every_estimator(quick):
    s = quick["summary"]
    assert {r["regime"] for r in s} == {"regular", "chaotic"}
    assert {r["estimator"] for r in s} == set(curves.DEFAULT_ESTIMATORS)
    assert all(r["seeds"] == Q.seeds for r in s)
    for ref in quick["results"]["references"]:
        m = ref["metrics"]
        assert m["method"] == f"antithetic ES, {Q.ref_pairs} pairs, float64"
        assert 0 < m["se_norm"] < 0.05 * m["grad_norm"]


def test_bptt_log_variance_grows_linearly_in_chaos_and_stays_bounded_when_regular(quick):
    s = quick["summary"]
    chaos, se_c, n = curves.slope_log_variance(s, "chaotic")
    regular, se_r, _ = curves.slope_log_variance(s, "regular")
    assert n == len(Q.horizons) * Q.seeds
    assert chaos - regular > 8 * math.hypot(se_c, se_r)
    assert chaos > 10 * se_c                                # a clean straight line in T
    # the slope of ln Var is about 2 lambda (lambda: leading Lyapunov exponent per step)
    lam = systems.lyapunov_exponents(systems.make("logistic_map", r=3.9),
                                     torch.tensor([3.9], dtype=torch.float64), steps=1000,
                                     trajectories=16).per_step.item()
    assert abs(chaos - 2 * lam) < 0.25 * 2 * lam
    assert regular < chaos / 4


def test_es_family_variance_stays_within_a_factor_10_across_T(quick):
    s = quick["summary"]
    for regime in ("regular", "chaotic"):
        for name, K in (("antithetic_es", None), ("pes", K0), ("nres", K0)):
            v = [r["variance"] for r in rows(s, regime, name, K=K)]
            assert len(v) == len(Q.horizons)
            assert max(v) / min(v) < 10, (regime, name, v)


def test_truncated_bptt_bias_falls_and_variance_rises_with_K(quick):
    s = quick["summary"]
    for regime in ("regular", "chaotic"):
        rs = sorted(rows(s, regime, "truncated_bptt", T=T_MAX), key=lambda r: r["K"])
        assert [r["K"] for r in rs] == list(Q.truncations)
        first = rs[0]
        assert first["bias2"] > 10 * first["bias2_se"]             # short windows: biased
        for a, b in zip(rs, rs[1:]):                               # never significantly up
            assert b["bias2"] < a["bias2"] + 3 * math.hypot(a["bias2_se"], b["bias2_se"])
        # down to the largest K whose bias is still measurable (chaos: variance explodes)
        measurable = [r for r in rs if r["bias2_se"] < first["bias2"] / 10]
        last = measurable[-1]
        assert last["K"] >= 4 * first["K"]
        assert first["bias2"] - last["bias2"] > 4 * math.hypot(first["bias2_se"], last["bias2_se"])
    # variance rises with K: exponentially in chaos (more Jacobians multiplied per window)
    slope, se, _ = curves.slope_log_variance(s, "chaotic", "truncated_bptt", along="K", at=T_MAX)
    assert slope > 10 * se
    chaos = sorted(rows(s, "chaotic", "truncated_bptt", T=T_MAX), key=lambda r: r["K"])
    assert all(a["variance"] < b["variance"] for a, b in zip(chaos, chaos[1:]))


def test_pes_and_nres_bias_is_within_noise_of_zero(quick):
    s = quick["summary"]
    checked = [r for r in s if r["estimator"] in ("pes", "nres", "antithetic_es")]
    # family-wise: P(any |z| > z_crit) = 1e-3 for unbiased estimators (z = |bias| / SE, D = 1)
    z_crit = NormalDist().inv_cdf(1 - 0.0005 / len(checked))
    for r in checked:
        assert r["bias_z"] < z_crit, (r["regime"], r["estimator"], r["T"], r["K"], r["bias_z"])
    # ... with power to see a bias: truncated BPTT at the smallest K is many SE off
    for regime in ("regular", "chaotic"):
        tb = rows(s, regime, "truncated_bptt", T=T_MAX, K=min(Q.truncations))[0]
        assert tb["bias_z"] > 3 * z_crit


def test_figures_with_data_captions_and_a_self_contained_report(quick):
    figdir = quick["dir"] / "figures"
    names = [f"curves_logistic_map_{what}" for what in ("horizon", "truncation", "cost")]
    assert [p.name for p in quick["figures"]] == [f"{n}.png" for n in names]
    for n in names:
        assert (figdir / f"{n}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        header = (figdir / f"{n}.csv").read_text().splitlines()[0]
        assert header.startswith("system,regime,estimator,T,K")
        assert "reference" in (figdir / f"{n}.txt").read_text()
    html = quick["report"].read_text()
    assert html.count("data:image/png;base64,") == 3
    assert 'src="http' not in html and 'src="figures' not in html
    for text in ("antithetic ES, 131072 pairs, float64", "truncated_bptt", "bias^2", "nres"):
        assert text in html


def test_rerun_reuses_every_cell(quick):
    again = curves.run(Q, quick["dir"], progress=False)
    assert again["new"] == 0
    assert [r["key"] for r in again["rows"]] == [r["key"] for r in quick["results"]["rows"]]


TINY = curves.Config(estimators=("bptt", "pes"), horizons=(4, 8), truncations=(4, 8), draws=64,
                     ref_pairs=512, seeds=1)


def test_changed_settings_compute_only_the_new_cells(tmp_path):
    first = curves.run(TINY, tmp_path, progress=False)
    n_refs, n_cells = len(first["references"]), len(first["rows"])
    assert first["new"] == n_refs + n_cells
    more_seeds = curves.run(replace(TINY, seeds=2), tmp_path, progress=False)
    assert more_seeds["new"] == n_cells                      # seed 1 only, references reused
    other_sigma = curves.run(replace(TINY, sigma=0.02), tmp_path, progress=False)
    assert other_sigma["new"] == n_refs + n_cells
    with ResultsStore(tmp_path) as store:
        assert len(store.rows("curves")) == 3 * n_cells


def test_closed_form_reference_and_several_parameters(tmp_path):
    cfg = replace(TINY, system="linear", regimes=("regular",), estimators=("antithetic_es", "nres"),
                  horizons=(5, 10), truncations=(5, 10), draws=256)
    res = curves.run(cfg, tmp_path, progress=False)
    assert {r["metrics"]["method"] for r in res["references"]} == {"closed form (exact_grad)"}
    for r in res["summary"]:
        assert r["bias_z"] < 4 and r["variance"] > 0 and -1 <= r["cosine"] <= 1


def test_overflowing_samples_are_counted_not_fatal(tmp_path):
    # BPTT through 2000 chaotic steps: the pathwise gradient ~ exp(0.49 T) overflows float64
    cfg = replace(TINY, regimes=("chaotic",), estimators=("bptt",), horizons=(2000,),
                  truncations=(2000,), draws=8, pairs=2, ref_pairs=64)
    res = curves.run(cfg, tmp_path, progress=False)
    (row,) = res["summary"]
    assert row["nonfinite"] >= 6 and row["nonfinite_fraction"] == row["nonfinite"] / 8
    assert math.isnan(row["variance"]) or row["variance"] > 0
    curves.plot(res, tmp_path)                                # figures still come out
    assert (tmp_path / "figures" / "curves_logistic_map_horizon.png").exists()


def test_one_regime_figures_are_wide_enough_for_their_labels():
    from experiments.curves.plot import _width
    assert _width(1) == 9.0            # one column: title, labels and legend stay inside
    assert _width(2) == 10.4 and _width(3) == pytest.approx(15.6)

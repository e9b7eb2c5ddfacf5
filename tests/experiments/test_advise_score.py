"""The advisor's scoring step on its own: pure functions of hand-made measurements, checked
against formulas derived here (float64, exact), without simulating anything."""
import math

import pytest
import torch

from experiments.advise import Advice, Draws, Measurements, choose_sigma, decide, pairs_for
from experiments.advise import score_candidate
from experiments.advise.score import score

F64 = torch.float64


def pm(*values):
    """``[2k, 1]`` draws +v, -v for each v: mean 0, unbiased variance 2 sum v^2 / (2k - 1)."""
    return torch.tensor([[s * v] for v in values for s in (1.0, -1.0)], dtype=F64)


def test_sigma_is_the_smallest_within_a_factor_4_of_the_lowest_finite_variance():
    grid = {0.3: (pm(1.0), 0), 0.1: (pm(1.2), 0), 0.03: (pm(1.9), 0), 0.01: (pm(0.1), 5)}
    sigma, rows = choose_sigma(grid)
    # variances 2, 2.88, 7.22 (0.01 excluded: non-finite); 4 x 2 = 8 admits 0.03
    assert sigma == 0.03
    assert [r["sigma"] for r in rows] == [0.3, 0.1, 0.03, 0.01]
    assert [r["var_pair"] for r in rows[:3]] == pytest.approx([2.0, 2.88, 7.22])
    assert rows[3] == {"sigma": 0.01, "nonfinite": 5}
    # smoothing bias^2 against the smallest finite sigma (0.03): (m - m0)^2 - (v + v0) / n
    assert rows[2]["smoothing_bias2"] == 0.0
    assert rows[0]["smoothing_bias2"] == pytest.approx(0.0 - (2.0 + 7.22) / 2)


def test_a_sigma_grid_without_finite_draws_is_an_error():
    with pytest.raises(ValueError, match="no ES draw"):
        choose_sigma({0.1: (pm(1.0), 2), 0.01: (pm(1.0)[:1], 0)})


def measurements(*draws, differentiable=True, backward=2.0, M=2, T=10):
    advice = Advice("Toy()", "toy", [0.0], T, [], differentiable, "test", draws=M,
                    compute=float(2 * 64 * T), backward_factor=backward)
    return Measurements(advice, list(draws), torch.tensor([0.5], dtype=F64),
                        torch.tensor([0.1], dtype=F64))


def test_an_unbiased_candidate_counts_only_its_variance_times_its_cost():
    # draws 0.5 +- 1: b = 0, s^2 = v / M + se^2 = 2 / 2 + 0.01
    d = Draws("antithetic_es", "es", {"sigma": 0.1}, pm(1.0) + 0.5, 0, 2 * 2 * 10, 0.0)
    c = score_candidate(d, measurements(d))
    s2 = 1.0 + 0.01
    assert c.bias2 == pytest.approx(-s2) and c.bias2_se == pytest.approx(math.sqrt(2) * s2)
    assert c.var_pair == pytest.approx(2.0) and c.cost_pair == 20.0   # ES: not priced x c_bwd
    assert c.mse == pytest.approx(2.0 * 20.0 / 1280.0) and c.rank == c.mse
    assert c.usable and c.label == "antithetic_es(sigma = 0.1)"


def test_a_biased_candidate_pays_its_bias_and_ranks_at_its_upper_end():
    # draws 3.5 +- 1 against g = 0.5: b = 3, s^2 = 1.01
    d = Draws("truncated_bptt", "pathwise", {"K": 5}, pm(1.0) + 3.5, 0, 2 * 10, 0.0)
    c = score_candidate(d, measurements(d))
    b2, s2 = 9.0, 1.01
    assert c.bias2 == pytest.approx(b2 - s2)
    assert c.bias2_se == pytest.approx(math.sqrt(4 * b2 * s2 + 2 * s2**2))
    assert c.cost_pair == 20.0 / 2 * 2.0                               # pathwise: x c_bwd
    assert c.mse == pytest.approx(b2 - s2 + 2.0 * 20.0 / 1280.0)
    assert c.rank == pytest.approx(c.mse + 2 * c.bias2_se)


def test_score_recommends_the_smallest_rank_and_sizes_its_population():
    es = Draws("antithetic_es", "es", {"sigma": 0.1}, pm(1.0) + 0.5, 0, 40, 0.0)
    bptt = Draws("bptt", "pathwise", {"sigma": 0.1}, pm(0.1) + 0.5, 0, 20, 0.0)
    wild = Draws("bptt", "pathwise", {}, pm(1.0)[:0], 2, 20, 0.0)
    m = measurements(es, bptt, wild)
    a = score(m)
    assert [c.estimator for c in a.candidates] == ["antithetic_es", "bptt", "bptt"]
    assert not a.candidates[2].usable
    # bptt: var_pair 0.02 -> pairs_for(0.02, 0.25) = 4
    assert a.recommendation == {"estimator": "bptt", "family": "pathwise",
                                "settings": {"sigma": 0.1, "samples": 4},
                                "mse": a.candidates[1].mse}
    assert m.advice.candidates == [] and m.advice.recommendation == {}   # m is not modified
    assert score(m).recommendation == a.recommendation
    off = score(measurements(es, bptt, differentiable=False))
    assert off.recommendation["estimator"] == "antithetic_es"
    assert off.recommendation["settings"] == {"sigma": 0.1, "pairs": 32}  # 2 / 0.0625 = 32


def test_decide_and_pairs_for_edge_cases():
    assert decide([], True) is None
    assert pairs_for(1.0, 1.0) == 4 and pairs_for(10.0, 1.0) == 64
    assert pairs_for(1e9, 1.0) == 1024 and pairs_for(math.nan, 1.0) == 1024
    assert pairs_for(1.0, 0.0) == 1024


# --- the rule in words, an unresolved reference, agreement of table, verdict and figure -----

from experiments.advise import format_advice, plot                       # noqa: E402
from experiments.advise.render import evidence                            # noqa: E402
from experiments.advise.score import RULE, ranked, unresolved             # noqa: E402


def scored(g, se, *draws, reference_nonfinite=0, reference_pairs=4096):
    m = measurements(*draws)
    m.g, m.se_ref = torch.tensor([g], dtype=F64), torch.tensor([se], dtype=F64)
    m.advice.reference = {"method": "test", "grad_norm": abs(g), "se_norm": se,
                          "nonfinite": reference_nonfinite, "pairs": reference_pairs}
    a = score(m)
    a.evidence = evidence(a)
    return a


def test_a_reference_within_a_few_standard_errors_of_zero_withholds_the_recommendation():
    es = Draws("antithetic_es", "es", {"sigma": 0.1}, pm(1.0) + 0.5, 0, 40, 0.0)
    a = scored(1.34e51, 1.3e51, es)              # the issue's Henon map at a = 1.4
    assert a.recommendation == {} and "not resolved" in a.withheld
    for change in ("smaller sigma", "more budget", "shorter horizon"):
        assert change in a.withheld
    text = format_advice(a)
    assert "<- recommended" not in text
    assert not any(line.startswith(" => ") for line in text.splitlines())   # no row marked
    assert a.evidence[-1].startswith("no recommendation: the reference gradient is not resolved")
    # |g| = 3 SE is still noise; 3.1 SE is resolved
    assert unresolved(3.0, 1.0, 0, 100, []) and not unresolved(3.1, 1.0, 0, 100, [])


def test_dominating_non_finite_draws_withhold_the_recommendation():
    ok = Draws("antithetic_es", "es", {"sigma": 0.1}, pm(1.0) + 0.5, 0, 40, 0.0)
    wild = Draws("bptt", "pathwise", {"sigma": 0.1}, pm(1.0)[:0], 3, 20, 0.0)
    a = scored(0.5, 0.01, ok, wild)
    assert a.withheld.startswith("3 of 5 candidate draws were non-finite")
    a = scored(0.5, 0.01, ok, reference_nonfinite=3000, reference_pairs=1000)
    assert a.withheld.startswith("3000 of 4000 reference draws were non-finite")
    assert not scored(0.5, 0.01, ok, reference_nonfinite=10).withheld


def issue_case():
    """The issue's a = 1.3 disagreement: truncated BPTT had the smallest MSE(C) but not the
    smallest rank (its bias is barely resolved), so by the rule antithetic ES wins."""
    es = Draws("antithetic_es", "es", {"sigma": 0.01}, pm(1.0) + 0.5, 0, 40, 0.0)
    tb = Draws("truncated_bptt", "pathwise", {"K": 8}, pm(0.05) + 0.6, 0, 20, 0.0)
    return scored(0.5, 0.1, es, tb)


def test_the_table_the_verdict_and_the_figure_agree(tmp_path):
    a = issue_case()
    es, tb = a.candidates
    assert tb.mse < es.mse and tb.rank > es.rank          # the case that used to disagree
    assert [c.estimator for c in ranked(a.candidates, True)] == ["antithetic_es",
                                                                 "truncated_bptt"]
    text = format_advice(a)
    assert f"rule: {RULE}" in text
    rows = [line for line in text.splitlines() if "(sigma = 0.01)" in line or "(K = 8)" in line]
    assert rows[0].lstrip().startswith("=> antithetic_es") and "<- recommended" in rows[0]
    assert "<- recommended" not in rows[1]
    ratio = tb.rank / es.rank
    assert a.evidence[-1] == (f"use antithetic_es with sigma = 0.01, pairs = "
                              f"{a.recommendation['settings']['pairs']} (smallest rank at T = 10; "
                              f"next best truncated_bptt(K = 8) has {ratio:.3g}x its rank)")
    paths = plot(a, tmp_path, "chaotic_a1.3")
    assert [p.name for p in paths] == ["advise_toy_chaotic_a1.3_mse.png"]
    csv = (tmp_path / "figures" / "advise_toy_chaotic_a1.3_mse.csv").read_text().splitlines()
    assert csv[0].endswith(",rank,nonfinite,recommended")
    assert csv[1].startswith("antithetic_es,") and csv[1].endswith(",1")
    assert csv[2].startswith("truncated_bptt,") and csv[2].endswith(",0")
    caption = (tmp_path / "figures" / "advise_toy_chaotic_a1.3_mse.txt").read_text()
    assert "Rule: rank = MSE(C)" in caption and "marked =>" in caption


def test_the_evidence_names_blind_coordinates_with_the_reference_gradient_there():
    from experiments.advise import evidence
    es = Draws("antithetic_es", "es", {"sigma": 0.1}, pm(1.0) + 0.5, 0, 40, 0.0)
    m = measurements(es)
    m.advice.blind = [0]
    m.advice.reference = {"grad": [0.5], "se": [0.1], "grad_norm": 0.5}
    lines = evidence(score(m))
    blind = [line for line in lines if "blind" in line]
    assert len(blind) == 1 and "theta[0]" in blind[0] and "0.5 +/- 0.1" in blind[0]
    m.advice.blind = []
    assert not any("blind" in line for line in evidence(score(m)))

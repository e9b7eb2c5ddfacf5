"""The experiments' core on its own: statistics against formulas derived here (float64, exact),
the episode-loss loop against a plain loop, name resolution, report sections, saved figures and
the command discovery of the CLI."""
import math

import pytest
import torch

import systems
from experiments import cli
from experiments.core import report as report_module
from experiments.core.command import Command
from experiments.core.measure import episode_estimates, episode_losses, estimator_kwargs
from experiments.core.plotting import new_figure, save_figure
from experiments.core.report import Section, build_report
from experiments.core.resolve import make_system, resolve_device, resolve_system
from experiments.core.stats import bias2, log10_norm, log10_trace_cov, ols, pair_stats
from experiments.core.store import Cell, ResultsStore

F64 = torch.float64


def test_bias2_and_its_standard_error_follow_the_formula():
    b = torch.tensor([3.0, -1.0], dtype=F64)
    s2 = torch.tensor([1.0, 0.5], dtype=F64)
    got = bias2(b, s2)
    assert got.bias2 == (9 - 1) + (1 - 0.5)
    assert got.se == pytest.approx(math.sqrt(4 * 9 * 1 + 2 * 1 + 4 * 1 * 0.5 + 2 * 0.25))
    assert got.chi2 == 9 / 1 + 1 / 0.5
    assert bias2(b, torch.tensor([1.0, 0.0], dtype=F64)).chi2 == math.inf


def test_pair_stats_of_hand_made_draws():
    draws = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 1.0]], dtype=F64)  # means 3, 1
    st = pair_stats(draws, torch.tensor([2.0, 1.0], dtype=F64), torch.zeros(2, dtype=F64))
    assert st.mean.tolist() == [3.0, 1.0] and st.var.tolist() == [4.0, 1.0]
    # b = (1, 0), s^2 = var / 3
    assert st.bias.bias2 == pytest.approx((1 - 4 / 3) + (0 - 1 / 3))
    assert st.var_pair == 5.0
    # fourth central moments: (16 + 0 + 16) / 3 and (1 + 1 + 0) / 3
    m4 = torch.tensor([32 / 3, 2 / 3], dtype=F64)
    assert st.var_pair_se == pytest.approx(((m4 - st.var**2).clamp_min(0) / 3).sum().sqrt().item())


def test_ols_recovers_a_line_and_its_standard_error():
    xs = [0.0, 1.0, 2.0, 3.0]
    exact = ols(xs, [1 + 2 * x for x in xs])
    assert (exact.slope, exact.intercept, exact.se, exact.n) == (2.0, 1.0, 0.0, 4)
    ys = [1.0, 3.5, 4.5, 7.0]  # residuals about the fit give SE = sqrt(rss / (n-2) / sxx)
    fit = ols(xs, ys)
    slope = sum((x - 1.5) * (y - 4.0) for x, y in zip(xs, ys)) / 5.0
    rss = sum((y - (4.0 - 1.5 * slope) - slope * x) ** 2 for x, y in zip(xs, ys))
    assert fit.slope == pytest.approx(slope) and fit.se == pytest.approx(math.sqrt(rss / 2 / 5))
    assert math.isnan(ols([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).slope)
    two = ols([0.0, 1.0], [0.0, 2.0])
    assert two.slope == 2.0 and math.isnan(two.se)


def test_logs_of_huge_variances_do_not_overflow():
    samples = torch.tensor([[1e200], [-1e200], [3e200]], dtype=F64)  # var = 4e400
    assert log10_trace_cov(samples) == pytest.approx(400 + math.log10(4))
    assert log10_norm(torch.tensor([3e300, 4e300], dtype=F64)) == pytest.approx(
        300 + math.log10(5))
    assert math.isnan(log10_trace_cov(samples[:1]))
    assert log10_trace_cov(torch.zeros(3, 1, dtype=F64)) == -math.inf


def test_episode_losses_is_the_mean_loss_of_a_plain_unroll():
    system = systems.make("logistic_map", r=3.9)
    theta = torch.tensor([[3.9], [3.7], [3.5]], dtype=F64)
    keys = torch.tensor([4, 5, 6])
    state, total = system.init_state(theta, keys), torch.zeros(3, dtype=F64)
    for t in range(12):
        state, loss = system.step(theta, state, torch.full_like(keys, t), keys)
        total = total + loss
    assert torch.equal(episode_losses(system, theta, keys, 12), total / 12)


def test_estimator_kwargs_keeps_what_the_constructor_takes():
    assert estimator_kwargs("bptt", horizon=10, n=4, truncation=2) == {"horizon": 10,
                                                                        "samples": 4}
    assert estimator_kwargs("pes", horizon=10, n=4, truncation=2, sigma=0.1, popsize=3) == {
        "horizon": 10, "truncation": 2, "sigma": 0.1, "pairs": 4}
    with pytest.raises(ValueError, match="unknown estimator"):
        estimator_kwargs("sgd", n=4)


def test_episode_estimates_average_an_online_estimator_over_its_windows():
    """NRES in lockstep sums its windows to exactly the full-horizon antithetic ES estimate."""
    system = systems.make("logistic_map", r=3.6)
    theta = system.init_params(dtype=F64)
    nres = episode_estimates("nres", estimator_kwargs("nres", horizon=12, n=5, truncation=4,
                                                      sigma=0.01), system, theta, seed=3)
    es = episode_estimates("antithetic_es", estimator_kwargs("antithetic_es", horizon=12, n=5,
                                                             sigma=0.01), system, theta, seed=3)
    assert nres.samples.shape == (5, 1) and nres.steps == es.steps == 2 * 5 * 12
    torch.testing.assert_close(nres.samples, es.samples, rtol=1e-12, atol=1e-12)
    assert nres.loss == pytest.approx(es.loss, rel=1e-12)


def test_make_system_applies_regime_and_overrides_with_clear_errors():
    assert resolve_system("logistic") == "logistic_map"
    assert make_system("logistic", "chaotic").r == 3.9
    assert make_system("logistic", "regular", {"r": 3.3}).r == 3.3
    with pytest.raises(ValueError, match="unknown regime 'stormy' of logistic_map"):
        make_system("logistic", "stormy")
    with pytest.raises(ValueError, match="cannot build logistic_map"):
        make_system("logistic", None, {"nope": 1})
    with pytest.raises(ValueError, match="unknown system 'l'"):
        resolve_system("l")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")


def test_a_registered_report_section_renders_its_kinds(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "SECTIONS", list(report_module.SECTIONS))
    with ResultsStore(tmp_path) as store:
        store.put(Cell("toy_kind", "logistic_map", params={"x": 1}), {"y": 2.0}, steps=1,
                  seconds=0.0)
        store.put(Cell("other_kind", "logistic_map", params={"x": 1}), {"y": 3.0}, steps=1,
                  seconds=0.0)
    (tmp_path / "figures").mkdir()
    for name in ("other_a", "toy_b"):
        fig, _ = new_figure(1, 1, 1, 1)
        save_figure(fig, tmp_path, name, ["x"], [[1], [2]], f"caption  of\n{name}")
    assert (tmp_path / "figures" / "toy_b.txt").read_text() == "caption of toy_b\n"
    report_module.register_section(Section(
        kinds=("toy_kind",), tables=lambda store: f"<h2>TOY {len(store.rows('toy_kind'))}</h2>",
        figures="toy"))
    html = build_report(tmp_path).read_text()
    assert "<h2>TOY 1</h2>" in html and "<h2>toy_kind</h2>" not in html  # the section's table
    assert "<h2>other_kind</h2>" in html                                 # generic table
    assert html.index("<h3>toy</h3>") < html.index("<h3>other</h3>")     # its figures first


def test_the_cli_finds_every_command_module():
    names = [c.name for c in cli.commands()]
    assert names == ["list", "table", "curves", "reproduce", "report", "advise", "train",
                     "compare", "evaluate-lopt"]
    assert all(isinstance(c, Command) and c.help and callable(c.main) for c in cli.commands())

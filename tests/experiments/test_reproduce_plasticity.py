"""`chaosgrad reproduce plasticity`: the loss-of-plasticity figure on Bit-Flipping.

A tiny configuration runs end to end through `run_plasticity` and `plot_plasticity` (store,
PNG, CSV, caption; a rerun computes nothing) and checks what holds exactly at its length: the
methods share their keys, so continual backprop equals backprop bit for bit until its first
replacement. The statistics (binned means, paired standard errors) are checked against their
formulas. Marked slow, the ``--quick`` figure through the CLI checks the claim that its
measurement resolves (continual backprop's late error below backprop's by more than 3 standard
errors over keys); backprop's own rise needs the full figure's length (module docstring).
"""
import csv
import math

import pytest
import torch

from experiments import cli
from experiments.core.store import ResultsStore
from experiments.reproduce import FIGURES
from experiments.reproduce.plasticity import (METHODS, PlasticityConfig, cells, errors, gap,
                                              mean_se, online_errors, rise, run_plasticity,
                                              plot_plasticity)

# 3 bins of 800 steps; continual backprop (rho n = 5e-4) replaces its first unit at t ~ 2000
TINY = PlasticityConfig(steps=2400, bin_steps=800, keys=4, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("plasticity_tiny")
    with ResultsStore(directory) as store:
        results = run_plasticity(TINY, store, progress=False)
        pngs = plot_plasticity(results, directory)
        again = run_plasticity(TINY, store, progress=False)
        return directory, results["rows"], pngs, again["rows"], len(store.rows())


def test_registered_outside_all():
    from experiments.reproduce.command import ALL
    assert FIGURES["plasticity"].config is PlasticityConfig and "plasticity" not in ALL


def test_tiny_figure_is_written_with_its_data_and_caption(tiny):
    directory, rows, pngs, again, stored = tiny
    assert [p.name for p in pngs] == ["plasticity_online_error.png"] and pngs[0].exists()
    assert stored == len(METHODS) and again == rows          # the rerun computed nothing
    bins = TINY.steps // TINY.bin_steps
    for m in METHODS:
        e = errors(rows, m)
        assert e.shape == (bins, TINY.keys) and torch.isfinite(e).all() and (e > 0).all()
    with open(directory / "figures" / "plasticity_online_error.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(METHODS) * bins
    first = errors(rows, "backprop")[0]
    assert float(table[0]["mean_error"]) == pytest.approx(float(first.mean()), rel=1e-12)
    caption = (directory / "figures" / "plasticity_online_error.txt").read_text()
    assert "continual backprop" in caption and f"over {TINY.keys} episode keys" in caption


def test_methods_share_the_episode_keys_and_differ_only_in_their_setting(tiny):
    """Same keys, same stream, same initial weights: continual backprop equals backprop
    bitwise until its first replacement (after 1 / (rho n) = 2000 steps), L2 differs from the
    first update on."""
    _, rows, *_ = tiny
    keyed = {c.estimator: c for c in cells(TINY)}
    assert "weight_decay" in keyed["l2"].params and "weight_decay" not in keyed["backprop"].params
    assert {c.seed for c in keyed.values()} == {TINY.seed}
    bp, cbp, l2 = (errors(rows, m) for m in ("backprop", "continual_backprop", "l2"))
    assert torch.equal(bp[0], cbp[0]) and not torch.equal(bp[-1], cbp[-1])
    assert not torch.equal(bp[0], l2[0])


def test_online_errors_are_the_bin_means_of_the_step_losses():
    from experiments.reproduce.plasticity import learner
    cfg = PlasticityConfig(steps=30, bin_steps=10, keys=2)
    system, theta = learner(cells(cfg)[2].params, "continual_backprop")
    theta, keys = theta.to(torch.float64).expand(2, -1), torch.tensor([4, 5])
    got = online_errors(system, theta, keys, 30, 10)
    state, losses = system.init_state(theta, keys), []
    for t in range(30):
        state, loss = system.step(theta, state, torch.full_like(keys, t), keys)
        losses.append(loss)
    expect = torch.stack(losses).reshape(3, 10, 2).mean(1)
    torch.testing.assert_close(got, expect, rtol=1e-13, atol=0)


def test_mean_se_rise_and_gap_are_the_paired_formulas():
    x = torch.tensor([[1.0, 2.0, 4.0], [2.0, 2.0, 7.0]], dtype=torch.float64)
    m, s = mean_se(x)
    assert m.tolist() == pytest.approx([7 / 3, 11 / 3])
    assert s[0].item() == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                   + (4 - 7 / 3) ** 2) / 2 / 3))
    rows = [{"kind": "plasticity", "system": "continual_backprop", "estimator": name, "seed": 0,
             "params": {}, "metrics": {"errors": e}}
            for name, e in (("backprop", x.tolist()), ("continual_backprop", (x / 2).tolist()))]
    d = x[1] - x[0]                                          # per key: 1, 0, 3
    assert rise(rows, "backprop") == pytest.approx((4 / 3, float(d.std()) / math.sqrt(3)))
    assert gap(rows, "backprop", "continual_backprop")[0] == pytest.approx(11 / 6)


def test_bad_settings_are_one_clear_error():
    with pytest.raises(ValueError, match="bin_steps"):
        PlasticityConfig(steps=100, bin_steps=30)
    with pytest.raises(ValueError, match="unknown method"):
        PlasticityConfig(methods=("adam",))


@pytest.mark.slow
def test_quick_figure_continual_backprop_stays_below_backprop(tmp_path):
    """``chaosgrad reproduce plasticity --quick`` (about a minute): measured 0.302 +- 0.077
    (3.9 SE). Backprop's own rise (0.22 +- 0.18) and L2's gap (0.12 +- 0.10) are not resolved at
    this length, so they are not claimed here; the full figure resolves both (module docstring)."""
    argv = ["reproduce", "plasticity", "--quick", "--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(argv) == 0
    with ResultsStore(tmp_path) as store:
        rows = store.rows()
    m, se = gap(rows, "backprop", "continual_backprop")
    assert m > 3 * se > 0
    bp, cbp = errors(rows, "backprop"), errors(rows, "continual_backprop")
    assert torch.equal(bp[0], cbp[0])              # the same learner until the first replacement
    assert rise(rows, "backprop")[0] > rise(rows, "continual_backprop")[0]

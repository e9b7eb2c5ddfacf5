"""`chaosgrad reproduce`: the paper's qualitative claims, checked on stored data.

Every claim is a function of a figure's stored rows and its config, checked on two runs:
``tiny``, a small configuration of every figure run through the same `run_fig*` and `plot_fig*`
(about 20 s on 2 CPU cores; figure 1 on the mass-spring walker alone, whose BPTT unroll is the
cheaper one, at three horizons), and, marked slow, the ``--quick`` run of ``chaosgrad reproduce
all`` (both policy rollouts, six horizons; about 2 minutes). Claims are checked against standard errors (least-squares slope SEs, SEs over
seeds), not tolerances tuned to the data; "within a factor 10" is the issue's own yardstick.
"""
import math
from typing import NamedTuple

import pytest

from experiments import cli, reproduce
from experiments.core.store import ResultsStore
from experiments.reproduce import (FIGURES, Fig1Config, Fig2Config, Fig3Config, Fig4Config,
                                   Rollout, fig2, fit_log_variance, variance_table)

FIGURE_FILES = ["fig1_loss_slices", "fig1_gradient_variance", "fig2_lr_sweep", "fig3_energy_vs_D",
                "fig3_gradient_variance", "fig4_jacobian_spectra", "fig4_lyapunov_vs_growth"]

TINY = {
    "fig1": Fig1Config(rollouts=(Rollout("mass_spring_walker", (100, 550, 1000), 100, 0.3,
                                         (100, 1000), 0.5),),
                       samples=16, seeds=(0, 1), slice_points=31, slice_keys=2),
    "fig2": Fig2Config(horizons=(10, 300), learning_rates=(1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0),
                       samples=32),
    "fig3": Fig3Config(diameters=tuple(round(0.8 + 0.05 * i, 4) for i in range(21)),
                       energy_steps=(25, 200), energy_seeds=(0, 1), steps=(10, 100, 200),
                       samples=16, seeds=(0, 1, 2)),
    "fig4": Fig4Config(spectra=(("metz_sgd_momentum", (0, 10, 20, 30, 40)),
                                ("learned_optimizer", (0, 10, 20, 30, 40))),
                       trajectories=4, r_values=tuple(round(2.8 + 0.05 * i, 4) for i in range(25)),
                       lyapunov_steps=300, samples=32, attractor_r=101),
}


class Run(NamedTuple):
    """A results directory, the config of each figure in it, and its stored rows."""

    directory: object
    configs: dict
    rows: list


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reproduce_tiny")
    with ResultsStore(directory) as store:
        for name, cfg in TINY.items():
            FIGURES[name].plot(FIGURES[name].run(cfg, store, progress=False), directory)
        return Run(directory, TINY, store.rows())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reproduce_quick")
    argv = ["reproduce", "all", "--quick", "--out", str(directory), "--device", "cpu"]
    assert cli.main(argv) == 0
    with ResultsStore(directory) as store:
        return Run(directory, {name: f.config.quick() for name, f in FIGURES.items()},
                   store.rows())


@pytest.fixture(params=["tiny", pytest.param("quick", marks=pytest.mark.slow)])
def run(request):
    return request.getfixturevalue(request.param)


def _sel(rows, kind, **match):
    return reproduce.select_rows(rows, kind=kind, **match)


def _fit(rows, system, regime, estimator):
    return fit_log_variance(_sel(rows, "fig1_variance", system=system, regime=regime,
                                 estimator=estimator))


def _table(rows, system, regime, estimator):
    return variance_table(_sel(rows, "fig1_variance", system=system, regime=regime,
                               estimator=estimator))


def _decade_span(rows, system, regime, estimator):
    """(max - min) over T of the seed-mean log10 variance, and the SE of that difference."""
    table = _table(rows, system, regime, estimator)
    hi = max(table, key=lambda r: r[1])
    lo = min(table, key=lambda r: r[1])
    return hi[1] - lo[1], math.hypot(hi[2], lo[2])


def _growth(rows, system, regime, estimator):
    """Largest rise over the shortest T of the seed-mean log10 variance (decades), and its SE."""
    table = _table(rows, system, regime, estimator)
    hi = max(table, key=lambda r: r[1])
    return hi[1] - table[0][1], math.hypot(hi[2], table[0][2])


# ----------------------------------------------------------------------------- figure 1

def test_bptt_log_variance_grows_linearly_with_T_when_chaotic(run):
    cfg = run.configs["fig1"]
    for ro in cfg.rollouts:
        bptt = _fit(run.rows, ro.system, "chaotic", "bptt")
        assert bptt.n == len(ro.horizons) * len(cfg.seeds), ro.system  # nothing non-finite
        assert bptt.slope > 5 * bptt.se > 0, ro.system
        for other in ("antithetic_es", "pes"):
            fit = _fit(run.rows, ro.system, "chaotic", other)
            assert bptt.slope - fit.slope > 5 * math.hypot(bptt.se, fit.se), (ro.system, other)
        # exponential, not just increasing: several decades over the T range
        span, _ = _decade_span(run.rows, ro.system, "chaotic", "bptt")
        assert span > 3, ro.system


def test_bptt_variance_stays_bounded_when_regular(run):
    for ro in run.configs["fig1"].rollouts:
        regular = _fit(run.rows, ro.system, "regular", "bptt")
        chaotic = _fit(run.rows, ro.system, "chaotic", "bptt")
        assert chaotic.slope - regular.slope > 5 * math.hypot(chaotic.se, regular.se)
        rise, se = _growth(run.rows, ro.system, "regular", "bptt")
        assert rise + 2 * se < 1  # never more than a factor 10 above its value at the shortest T


def test_es_variance_stays_within_a_factor_10_across_T_on_the_walker(run):
    for regime in run.configs["fig1"].regimes:
        span, se = _decade_span(run.rows, "mass_spring_walker", regime, "antithetic_es")
        assert span + 2 * se < 1, regime


def test_loss_slices_are_rugged_for_long_T_only(run):
    def roughness(r):  # total variation of the second differences, per unit of loss range
        y = r["metrics"]["loss"]
        d2 = [y[i + 1] - 2 * y[i] + y[i - 1] for i in range(1, len(y) - 1)]
        return sum(abs(v) for v in d2) / (max(y) - min(y))
    for ro in run.configs["fig1"].rollouts:
        short, long_ = (_sel(run.rows, "fig1_slice", system=ro.system, T=T)[0]
                        for T in (ro.slice_horizons[0], ro.slice_horizons[-1]))
        assert roughness(long_) > 5 * roughness(short), ro.system


# ----------------------------------------------------------------------------- figures 2-4

def test_metz_meta_gradient_explodes_only_at_large_learning_rates(run):
    cfg = run.configs["fig2"]
    T = max(cfg.horizons)
    sweep = {(r["estimator"], r["params"]["eta"]): r["metrics"]
             for r in _sel(run.rows, "fig2_sweep", T=T)}
    small = [eta for eta in cfg.learning_rates if eta <= 1e-3]
    large = [eta for eta in cfg.learning_rates if eta >= 0.1]
    assert small and large
    for eta in large:  # tens of orders of magnitude above ES
        assert sweep["bptt", eta]["log10_var"] > sweep["antithetic_es", eta]["log10_var"] + 10
    for eta in small:  # regular: BPTT no noisier than ES
        assert sweep["bptt", eta]["log10_var"] < sweep["antithetic_es", eta]["log10_var"]
    losses = [m["loss"] for (name, _), m in sweep.items() if name == "bptt"]
    assert all(math.isfinite(x) and 0 < x < 10 for x in losses)  # the meta-loss stays bounded


def test_disk_packing_pathwise_variance_peaks_above_es(run):
    def table(estimator):
        sel = _sel(run.rows, "fig3_variance", estimator=estimator)
        return {k: (m, s) for k, m, s, _ in variance_table(sel)}
    bptt, es = table("bptt"), table("antithetic_es")
    K = max(bptt, key=lambda k: bptt[k][0])
    assert bptt[K][0] - es[K][0] > 3 * math.hypot(bptt[K][1], es[K][1])
    assert bptt[K][0] - bptt[min(bptt)][0] > 3 * math.hypot(bptt[K][1], bptt[min(bptt)][1])


def test_jacobian_spectra_expand_more_when_chaotic(run):
    for name, _ in run.configs["fig4"].spectra:
        radius = {r["params"]["regime"]: r["metrics"]["mean_log_radius"]
                  for r in _sel(run.rows, "fig4_eigenvalues", system=name)}
        assert radius["chaotic"] > radius["regular"] + 0.1, name


def _ols(xs, ys):
    """Least-squares slope of ys on xs and its residual standard error."""
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    rss = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return slope, math.sqrt(rss / (n - 2) / sxx)


def test_gradient_growth_rate_follows_the_lyapunov_exponent(run):
    horizons = list(run.configs["fig4"].horizons)
    # log std of the gradient of a *mean* loss carries a -ln T term (systems.diagnostics): a
    # known systematic shift of the fitted slope, as large as the slope of ln T over the horizons
    shift = abs(_ols(horizons, [math.log(T) for T in horizons])[0])
    lyap = {r["params"]["r"]: r["metrics"] for r in _sel(run.rows, "fig4_lyapunov")}
    growth = {r["params"]["r"]: _ols(horizons, r["metrics"]["log_std"])
              for r in _sel(run.rows, "fig4_growth")}
    chaotic = [r for r, m in lyap.items() if m["lambda_early"] - 3 * m["lambda_early_se"] > 0.2]
    regular = [r for r, m in lyap.items() if m["lambda_early"] + 3 * m["lambda_early_se"] < -0.1]
    assert len(chaotic) >= 5 and len(regular) >= 5
    for r in chaotic:  # grows, at the finite-time Lyapunov exponent of the same steps
        slope, se = growth[r]
        lam, lam_se = lyap[r]["lambda_early"], lyap[r]["lambda_early_se"]
        assert slope > 5 * se, r
        assert abs(slope - lam) < 4 * math.hypot(se, lam_se) + shift, r
    for r in regular:  # does not grow
        slope, se = growth[r]
        assert slope < 4 * se + shift, r


# ----------------------------------------------------------------------------- outputs, CLI

def test_every_figure_has_png_csv_and_caption(run):
    out = run.directory
    for name in FIGURE_FILES:
        for ext in ("png", "csv", "txt"):
            path = out / "figures" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len((out / "figures" / f"{name}.csv").read_text().splitlines()) > 2
    assert (out / "results.sqlite").is_file()


def test_cli_rerun_computes_nothing_new(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Fig2Config, "quick", classmethod(lambda cls: TINY["fig2"]))
    argv = ["reproduce", "fig2", "--quick", "--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(argv) == 0
    with ResultsStore(tmp_path) as store:
        before = {r["key"]: r["created"] for r in store.rows()}
    n = len(fig2.cells(TINY["fig2"]))
    assert len(before) == n
    assert cli.main(argv) == 0
    with ResultsStore(tmp_path) as store:
        after = {r["key"]: r["created"] for r in store.rows()}
        assert [r["command"] for r in store.runs()] == [" ".join(["chaosgrad", *argv])] * 2
    assert after == before
    text = capsys.readouterr()
    assert f"{n} cells, {n} computed now" in text.err and f"{n} cells, 0 computed now" in text.err
    assert f"results: {tmp_path / 'results.sqlite'}" in text.out and "figures:" in text.out
    assert f"report:  {tmp_path / 'report.html'}" in text.out
    assert (tmp_path / "report.html").is_file()


def test_interrupted_run_keeps_finished_cells(tmp_path, monkeypatch):
    cfg = reproduce.Fig2Config(horizons=(10,), learning_rates=(1e-3, 1e-2, 1e-1), samples=8)
    real, calls = fig2.compute, []

    def flaky(cell, device):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(cell.key)
        return real(cell, device)
    monkeypatch.setattr(fig2, "compute", flaky)
    with ResultsStore(tmp_path) as store, pytest.raises(KeyboardInterrupt):
        reproduce.run_fig2(cfg, store, progress=False)
    with ResultsStore(tmp_path) as store:
        assert {r["key"] for r in store.rows()} == set(calls)  # only the cell in flight is lost
        monkeypatch.setattr(fig2, "compute", real)
        done = reproduce.run_fig2(cfg, store, progress=False)["rows"]
        assert len(done) == 6 and len(store.rows()) == 6


@pytest.mark.parametrize("argv", [["reproduce", "fig9"], ["reproduce", "fig1", "--bogus"],
                                  ["reproduce", "--device", "tpu"]])
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_bad_output_directory_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert cli.main(["reproduce", "fig2", "--quick", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("chaosgrad: error:")

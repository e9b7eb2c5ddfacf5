"""`chaosgrad reproduce --quick`: the paper's qualitative claims, checked on the stored quick data.

One quick run of all four figures (module fixture, ~2.5 minutes on 2 CPU cores) feeds every test.
Claims are checked against standard errors (least-squares slope SEs, SEs over seeds), not
tolerances tuned to the data; "within a factor 10" is the issue's own yardstick.
"""
import math

import pytest

from experiments import cli, reproduce
from experiments.reproduce import fig2
from experiments.reproduce import Fig1Config, fit_log_variance, variance_table
from experiments.core.store import ResultsStore

FIG1 = Fig1Config.quick()
FIGURE_FILES = ["fig1_loss_slices", "fig1_gradient_variance", "fig2_lr_sweep", "fig3_energy_vs_D",
                "fig3_gradient_variance", "fig4_jacobian_spectra", "fig4_lyapunov_vs_growth"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reproduce")
    argv = ["reproduce", "all", "--quick", "--out", str(directory), "--device", "cpu"]
    assert cli.main(argv) == 0
    return directory


@pytest.fixture(scope="module")
def rows(out):
    with ResultsStore(out) as store:
        return store.rows()


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

@pytest.mark.parametrize("rollout", FIG1.rollouts, ids=lambda r: r.system)
def test_bptt_log_variance_grows_linearly_with_T_when_chaotic(rows, rollout):
    system = rollout.system
    bptt = _fit(rows, system, "chaotic", "bptt")
    assert bptt.n == len(rollout.horizons) * len(FIG1.seeds)  # nothing non-finite
    assert bptt.slope > 5 * bptt.se > 0
    for other in ("antithetic_es", "pes"):
        fit = _fit(rows, system, "chaotic", other)
        assert bptt.slope - fit.slope > 5 * math.hypot(bptt.se, fit.se), other
    # exponential, not just increasing: several decades over the T range
    span, _ = _decade_span(rows, system, "chaotic", "bptt")
    assert span > 3


@pytest.mark.parametrize("system", [r.system for r in FIG1.rollouts])
def test_bptt_variance_stays_bounded_when_regular(rows, system):
    regular, chaotic = _fit(rows, system, "regular", "bptt"), _fit(rows, system, "chaotic", "bptt")
    assert chaotic.slope - regular.slope > 5 * math.hypot(chaotic.se, regular.se)
    rise, se = _growth(rows, system, "regular", "bptt")
    assert rise + 2 * se < 1  # never more than a factor 10 above its value at the shortest T


@pytest.mark.parametrize("regime", FIG1.regimes)
def test_es_variance_stays_within_a_factor_10_across_T_on_the_walker(rows, regime):
    span, se = _decade_span(rows, "mass_spring_walker", regime, "antithetic_es")
    assert span + 2 * se < 1


def test_loss_slices_are_rugged_for_long_T_only(rows):
    def roughness(r):  # total variation of the second differences, per unit of loss range
        y = r["metrics"]["loss"]
        d2 = [y[i + 1] - 2 * y[i] + y[i - 1] for i in range(1, len(y) - 1)]
        return sum(abs(v) for v in d2) / (max(y) - min(y))
    for ro in FIG1.rollouts:
        short, long_ = (_sel(rows, "fig1_slice", system=ro.system, T=T)[0]
                        for T in (ro.slice_horizons[0], ro.slice_horizons[-1]))
        assert roughness(long_) > 5 * roughness(short)


# ----------------------------------------------------------------------------- figures 2-4

def test_metz_meta_gradient_explodes_only_at_large_learning_rates(rows):
    cfg = reproduce.Fig2Config.quick()
    T = max(cfg.horizons)
    sweep = {(r["estimator"], r["params"]["eta"]): r["metrics"]
             for r in _sel(rows, "fig2_sweep", T=T)}
    small = [eta for eta in cfg.learning_rates if eta <= 1e-3]
    large = [eta for eta in cfg.learning_rates if eta >= 0.1]
    for eta in large:  # tens of orders of magnitude above ES
        assert sweep["bptt", eta]["log10_var"] > sweep["antithetic_es", eta]["log10_var"] + 10
    for eta in small:  # regular: BPTT no noisier than ES
        assert sweep["bptt", eta]["log10_var"] < sweep["antithetic_es", eta]["log10_var"]
    losses = [m["loss"] for (name, _), m in sweep.items() if name == "bptt"]
    assert all(math.isfinite(x) and 0 < x < 10 for x in losses)  # the meta-loss stays bounded


def test_disk_packing_pathwise_variance_peaks_above_es(rows):
    def table(estimator):
        sel = _sel(rows, "fig3_variance", estimator=estimator)
        return {k: (m, s) for k, m, s, _ in variance_table(sel)}
    bptt, es = table("bptt"), table("antithetic_es")
    K = max(bptt, key=lambda k: bptt[k][0])
    assert bptt[K][0] - es[K][0] > 3 * math.hypot(bptt[K][1], es[K][1])
    assert bptt[K][0] - bptt[min(bptt)][0] > 3 * math.hypot(bptt[K][1], bptt[min(bptt)][1])


def test_jacobian_spectra_expand_more_when_chaotic(rows):
    for name, _ in reproduce.Fig4Config.quick().spectra:
        radius = {r["params"]["regime"]: r["metrics"]["mean_log_radius"]
                  for r in _sel(rows, "fig4_eigenvalues", system=name)}
        assert radius["chaotic"] > radius["regular"] + 0.1, name


def _ols(xs, ys):
    """Least-squares slope of ys on xs and its residual standard error."""
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    rss = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return slope, math.sqrt(rss / (n - 2) / sxx)


def test_gradient_growth_rate_follows_the_lyapunov_exponent(rows):
    horizons = list(reproduce.Fig4Config.quick().horizons)
    # log std of the gradient of a *mean* loss carries a -ln T term (systems.diagnostics): a
    # known systematic shift of the fitted slope, as large as the slope of ln T over the horizons
    shift = abs(_ols(horizons, [math.log(T) for T in horizons])[0])
    lyap = {r["params"]["r"]: r["metrics"] for r in _sel(rows, "fig4_lyapunov")}
    growth = {r["params"]["r"]: _ols(horizons, r["metrics"]["log_std"])
              for r in _sel(rows, "fig4_growth")}
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

def test_every_figure_has_png_csv_and_caption(out):
    for name in FIGURE_FILES:
        for ext in ("png", "csv", "txt"):
            path = out / "figures" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len((out / "figures" / f"{name}.csv").read_text().splitlines()) > 2
    assert (out / "results.sqlite").is_file()


def test_rerun_computes_nothing_new(out, rows, capsys):
    with ResultsStore(out) as store:
        before = {r["key"]: r["created"] for r in store.rows()}
    assert cli.main(["reproduce", "all", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    with ResultsStore(out) as store:
        after = {r["key"]: r["created"] for r in store.rows()}
        assert len(store.runs()) >= 2
    assert after == before and len(before) == len(rows)
    text = capsys.readouterr().out
    assert f"results: {out / 'results.sqlite'}" in text and "figures:" in text and "report:" in text


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

"""Experiments on MuJoCo robots: the robot figure's claims against standard errors, a
``mujoco:path/to/model.xml`` through the CLI's resolver, and compare's ``--shaping`` and
``--method-sigma`` reaching the estimators.

The figure's claims are checked on a tiny configuration (about 10 s) and, marked slow, on the
``--quick`` run of ``chaosgrad reproduce robot`` (about a minute on 2 cores).
"""
import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("gymnasium")

import estimators  # noqa: E402
from experiments import cli, train  # noqa: E402
from experiments.core.resolve import load_target, make_system, resolve_system  # noqa: E402
from experiments.core.store import ResultsStore  # noqa: E402
from experiments.reproduce import FIGURES, select_rows  # noqa: E402
from experiments.reproduce import robot  # noqa: E402
from experiments.reproduce.robot import RobotConfig, growth  # noqa: E402
from experiments.train.run import hyper  # noqa: E402

TINY = RobotConfig(scan_scales=(0.1, 1.0), scan_horizons=(10, 20, 30), horizons=(10, 20, 30),
                   truncation=10, samples=4, seeds=(0, 1))
FILES = ("robot_regime_scan", "robot_gradient_variance")


class Run(NamedTuple):
    directory: Path
    config: RobotConfig
    rows: list


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("robot_tiny")
    spec = FIGURES["robot"]
    with ResultsStore(directory) as store:
        spec.plot(spec.run(TINY, store, progress=False), directory)
        return Run(directory, TINY, store.rows())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    directory = tmp_path_factory.mktemp("robot_quick")
    argv = ["reproduce", "robot", "--quick", "--out", str(directory), "--device", "cpu"]
    assert cli.main(argv) == 0
    with ResultsStore(directory) as store:
        return Run(directory, RobotConfig.quick(), store.rows())


@pytest.fixture(params=["tiny", pytest.param("quick", marks=pytest.mark.slow)])
def run(request):
    return request.getfixturevalue(request.param)


def _growth(run, regime, name):
    return growth(select_rows(run.rows, kind="robot_variance", regime=regime, estimator=name))


def test_bptt_variance_grows_exponentially_only_in_the_chaotic_regime(run):
    chaotic = _growth(run, "chaotic", "bptt")
    regular = _growth(run, "regular", "bptt")
    assert chaotic.slope > 5 * chaotic.se, chaotic
    assert regular.slope < 4 * regular.se, regular
    assert chaotic.slope - regular.slope > 4 * math.hypot(chaotic.se, regular.se)


def test_es_and_pes_variance_grows_far_more_slowly_than_bptt_when_chaotic(run):
    bptt = _growth(run, "chaotic", "bptt")
    for name in ("antithetic_es", "pes"):
        fit = _growth(run, "chaotic", name)
        assert bptt.slope - fit.slope > 4 * math.hypot(bptt.se, fit.se), (name, fit, bptt)


def test_regime_scan_tells_the_regimes_apart(run):
    """The scan's rate at the smallest scale does not grow, at |theta| = 1 it grows."""
    small = growth(select_rows(run.rows, kind="robot_scan", scale=run.config.scan_scales[0]))
    chaotic = growth(select_rows(run.rows, kind="robot_scan", scale=1.0))
    assert small.slope < 4 * small.se, small
    assert chaotic.slope > 4 * chaotic.se, chaotic


def test_every_cell_is_finite_and_counted(run):
    assert len(run.rows) == len(robot.cells(run.config))
    for r in run.rows:
        assert r["metrics"]["nonfinite"] == 0 and r["metrics"]["n"] == run.config.samples, r
        assert math.isfinite(r["metrics"]["log10_var"]) and r["steps"] > 0


def test_robot_figures_have_png_csv_and_caption(run):
    for name in FILES:
        for ext in ("png", "csv", "txt"):
            path = run.directory / "figures" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
    caption = (run.directory / "figures" / "robot_gradient_variance.txt").read_text()
    assert "chaotic bptt:" in caption and "decades per 100 steps" in caption


def test_reproduce_all_leaves_the_robot_out_and_the_report_shows_it(tmp_path, monkeypatch):
    """``all`` is the paper's four figures (no mujoco needed); ``robot`` by name, stored and in
    the HTML report."""
    from experiments.reproduce import command
    assert "robot" in command.FIGURES and "robot" not in command.ALL
    monkeypatch.setattr(RobotConfig, "quick", classmethod(lambda cls: dataclasses.replace(
        TINY, scan_scales=(1.0,), scan_horizons=(5, 10), horizons=(5, 10), truncation=5,
        samples=2, seeds=(0,))))
    argv = ["reproduce", "robot", "--quick", "--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(argv) == 0
    html = (tmp_path / "report.html").read_text()
    assert 'id="robot_gradient_variance"' in html and 'id="robot_regime_scan"' in html
    with ResultsStore(tmp_path) as store:
        assert set(store.kinds()) == {"robot_scan", "robot_variance"}


# ----------------------------------------------------------------------------- resolve

def _asset(name: str) -> str:
    import gymnasium
    return str(Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / name)


def test_a_model_file_of_the_mujoco_family_resolves_before_file_py_attr():
    name = f"mujoco:{_asset('half_cheetah.xml')}"
    assert resolve_system(name) == name
    system = make_system(name, "regular", {"horizon": 7})
    assert system.horizon == 7 and system.param_dim == 17 * 6
    assert load_target(name).param_dim == 17 * 6
    with pytest.raises(ValueError, match="does not load"):
        load_target("mujoco:/no/such/model.xml")
    with pytest.raises(ValueError, match="unknown regime 'chaotic'"):
        make_system(name, "chaotic")


def test_cli_says_which_extra_brings_mujoco():
    assert cli._EXTRAS["mujoco"] == "mujoco" and cli._EXTRAS["gymnasium"] == "mujoco"


# ----------------------------------------------------------------------------- compare options

def _config(*argv):
    return train.config_from_args(cli.build_parser().parse_args(["compare", *argv]))


def test_shaping_and_method_sigma_reach_the_es_family_only():
    cfg = _config("mujoco:swimmer", "--methods", "antithetic_es", "truncated_es", "pes", "nres",
                  "cmaes", "--sigma", "0.3", "--method-sigma", "truncated_es=0.1",
                  "--shaping", "std", "--truncation", "100", "--pairs", "10")
    assert cfg.method_sigma == (("truncated_es", 0.1),) and cfg.shaping == "std"
    for m in ("antithetic_es", "truncated_es", "pes", "nres"):
        hp = hyper(cfg, m, 1000)
        assert hp["shaping"] == "std" and hp["sigma"] == (0.1 if m == "truncated_es" else 0.3)
        made = estimators.make(m, **hp)
        assert made.shaping == "std" and made.sigma == hp["sigma"]
    assert "shaping" not in hyper(cfg, "cmaes", 1000)
    plain = _config("mujoco:swimmer", "--methods", "pes")
    assert plain.shaping is None and "shaping" not in hyper(plain, "pes", 1000)
    cells = {c.estimator: c.params for c in train.cells(cfg)}
    assert cells["truncated_es"]["sigma"] == 0.1 and cells["pes"]["shaping"] == "std"


@pytest.mark.parametrize("argv, match", [
    (["--methods", "pes", "--method-sigma", "nres=0.1"], "not one of the methods"),
    (["--methods", "pes", "--method-sigma", "pes"], "METHOD=SIGMA"),
    (["--methods", "pes", "--method-sigma", "pes=-1"], "SIGMA > 0"),
    (["--methods", "pes", "--method-sigma", "pes=abc"], "METHOD=SIGMA"),
])
def test_bad_method_sigma_is_one_clear_error(argv, match):
    with pytest.raises(ValueError, match=match):
        _config("linear", *argv)


def test_bad_shaping_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "linear", "--shaping", "nope"])
    assert exit_.value.code == 2 and "'std', 'ranks'" in capsys.readouterr().err

"""The command line of curves and report: bad arguments give one line and exit code 2."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import cli

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--estimators", "bptt", "pes", "--horizons", "4", "8", "--truncations", "4", "8",
        "--draws", "64", "--ref-pairs", "512", "--seeds", "1"]


def blocked(tmp_path) -> str:
    """A path that cannot be a directory (its parent is a file), even for root."""
    f = tmp_path / "a_file"
    f.write_text("")
    return str(f / "out")


BAD = {
    "unknown system": (["curves", "no_such_system"], "unknown system"),
    "unknown estimator": (["curves", "logistic", "--estimators", "sgd"], "unknown estimator"),
    "unknown regime": (["curves", "logistic", "--regime", "turbulent"], "unknown regime"),
    "K > T": (["curves", "logistic", "--horizons", "8", "--truncations", "16"], "exceeds"),
    "K does not divide T": (["curves", "logistic", "--horizons", "8", "--truncations", "3"],
                            "does not divide"),
    "negative sigma": (["curves", "logistic", "--sigma", "-0.1"], "sigma must be > 0"),
    "zero sigma": (["curves", "logistic", "--sigma", "0"], "sigma must be > 0"),
    "nan sigma": (["curves", "logistic", "--sigma", "nan"], "sigma must be > 0"),
    "zero pairs": (["curves", "logistic", "--pairs", "0"], "pairs must be"),
    "zero seeds": (["curves", "logistic", "--seeds", "0"], "seeds must be"),
    "bad device": (["curves", "logistic", "--device", "tpu"], "device must be"),
    "non-integer horizon": (["curves", "logistic", "--horizons", "ten"], "invalid int value"),
    "unknown flag": (["curves", "logistic", "--frobnicate"], "unrecognized arguments"),
}


def run_cli(argv: list[str]) -> int:
    """Exit code of ``chaosgrad argv`` (argparse's own errors exit through SystemExit)."""
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_give_one_line_and_exit_code_2(case, capsys, tmp_path):
    argv, message = BAD[case]
    assert run_cli(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()          # validated before anything is written


def test_unwritable_out_is_one_line_exit_2(capsys, tmp_path):
    assert cli.main(["curves", "logistic", "--out", blocked(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_without_a_gpu_is_a_clear_error(capsys, tmp_path):
    assert cli.main(["curves", "logistic", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_report_of_a_directory_without_results(capsys, tmp_path):
    assert cli.main(["report", str(tmp_path / "nothing_here")]) == 2
    assert "not a results directory" in capsys.readouterr().err


def test_no_traceback_from_a_real_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", "curves", "logistic",
                           "--horizons", "8", "--truncations", "16", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("chaosgrad: error: truncation K=16 exceeds the largest "
                                   "horizon T=8")


def test_curves_then_report_print_where_everything_went(capsys, tmp_path):
    out = tmp_path / "res"
    assert cli.main(["curves", "logistic", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"results: {out / 'results.sqlite'}" in printed
    assert f"{out / 'figures' / 'curves_logistic_map_horizon.png'}" in printed
    assert f"report:  {out / 'report.html'}" in printed
    html = (out / "report.html").read_text()
    assert "chaosgrad curves logistic_map --regime regular chaotic" in html   # the command
    assert "torch " + torch.__version__ in html                             # the versions
    (out / "report.html").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    assert (out / "report.html").exists()


def test_report_groups_any_figures_by_prefix_and_tables_any_kind(capsys, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.core.store import Cell, ResultsStore

    with ResultsStore(tmp_path) as store:
        store.put(Cell("fig1_variance", "logistic_map", "bptt", {"T": 8, "grid": [1, 2]}),
                  {"log10_var": 3.5, "curve": [1.0, 2.0]}, steps=80, seconds=0.1)
        store.log_run(["chaosgrad", "reproduce", "fig1", "--quick"])
    (tmp_path / "figures").mkdir()
    for name in ("fig1_variance", "fig2_loss_surface"):
        fig = plt.figure(figsize=(1, 1))
        fig.savefig(tmp_path / "figures" / f"{name}.png")
        plt.close(fig)
    (tmp_path / "figures" / "fig1_variance.txt").write_text("Variance <grows> with T.")
    assert cli.main(["report", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "<h3>fig1</h3>" in html and "<h3>fig2</h3>" in html
    assert html.count("data:image/png;base64,") == 2
    assert "Variance &lt;grows&gt; with T." in html                 # captions, escaped
    assert "<h2>fig1_variance</h2>" in html and "log10_var" in html  # any kind gets a table
    assert "chaosgrad reproduce fig1 --quick" in html


def test_missing_optional_dependency_names_its_extra(monkeypatch, capsys):
    import experiments.train.command

    def needs_cma(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'cma'", name="cma")

    monkeypatch.setattr(experiments.train.command, "config_from_args", needs_cma)
    assert cli.main(["compare", "metz", "--methods", "cmaes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the default install includes it" in err[0]  # cma is a dependency

    def needs_ray(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'ray'", name="ray")

    monkeypatch.setattr(experiments.train.command, "config_from_args", needs_ray)
    assert cli.main(["compare", "metz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "chaosgrad[ray]" in err[0]

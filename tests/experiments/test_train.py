"""Meta-training on equal compute (`chaosgrad train` / `compare`): curves, the store, the CLI."""
import argparse
import dataclasses
import math
import time

import pytest

from experiments import cli, train
from experiments.core.store import ResultsStore

pytest.importorskip("cma")

TINY = train.Config(system="metz_sgd_momentum", regime="chaotic", methods=("bptt", "pes", "cmaes"),
                    budget=3000, seeds=2, checkpoints=3, eval_episodes=16)


def test_curves_are_stored_once_and_measured_at_the_checkpoints(tmp_path):
    results = train.run(TINY, tmp_path, progress=False)
    assert results["new"] == 6 and len(results["rows"]) == 6
    for row in results["rows"]:
        m = row["metrics"]
        assert len(m["steps"]) == len(m["loss"]) == len(m["seconds"]) == TINY.checkpoints + 1
        assert m["steps"][0] == 0 and m["steps"] == sorted(m["steps"])
        assert m["steps"][-1] >= TINY.budget and row["steps"] == m["steps"][-1]
        # the checkpoint of each step count is the first update that reaches it
        assert all(s >= TINY.budget * k // TINY.checkpoints for k, s in enumerate(m["steps"]))
        assert all(math.isfinite(x) for x in m["loss"]) and m["final_loss"] == m["loss"][-1]
    # every method starts from the same theta, evaluated on the same fixed episodes
    assert len({r["metrics"]["loss"][0] for r in results["rows"]}) == 1
    start = time.perf_counter()
    again = train.run(TINY, tmp_path, progress=False)
    assert again["new"] == 0 and time.perf_counter() - start < 5
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in results["rows"]]
    s = again["summary"]["pes"]
    assert s["seeds"] == 2 and s["q25"][-1] <= s["median"][-1] <= s["q75"][-1]
    paths = train.plot(again, tmp_path)
    for png in paths:
        assert png.exists() and png.with_suffix(".csv").exists() and png.with_suffix(".txt").exists()
        assert png.name.startswith("compare_metz_sgd_momentum_")


def test_same_seed_same_curve_other_seed_other_curve():
    a = train.train_curve(TINY, "pes", 0).metrics
    b = train.train_curve(TINY, "pes", 0).metrics
    c = train.train_curve(TINY, "pes", 1).metrics
    assert a["loss"] == b["loss"] and a["loss"] != c["loss"]


def test_cli_compare_and_train(tmp_path, capsys):
    args = ["--budget", "2000", "--seeds", "1", "--checkpoints", "2", "--eval-episodes", "8",
            "--out", str(tmp_path)]
    assert cli.main(["compare", "linear", "--methods", "bptt", "cmaes", *args]) == 0
    out = capsys.readouterr().out
    assert "results:" in out and "figures:" in out and "report:" in out
    assert (tmp_path / "figures" / "compare_linear_quadratic_steps.png").exists()
    assert cli.main(["train", "linear", "--method", "bptt", *args]) == 0
    assert "(0 computed now)" in capsys.readouterr().out  # the compare run stored this curve
    with ResultsStore(tmp_path) as store:
        assert len(store.rows("train")) == 2 and len(store.runs()) == 2
    assert cli.main(["train", "linear", "--method", "bptt", "pes", *args]) == 2
    assert cli.main(["compare", "linear", "--methods", "nope", *args]) == 2
    assert cli.main(["compare", "linear", "--methods", "cmaes", "--budget", "0", "--out", str(tmp_path)]) == 2
    assert "budget" in capsys.readouterr().err


COMPILED = train.Config(system="linear_quadratic", regime="regular", methods=("pes",),
                        budget=1200, seeds=1, checkpoints=2, eval_episodes=8, lr=0.05,
                        compile=True)


def test_compiled_curves_match_eager_and_report_compile_time():
    """--compile changes how the steps run, not what they compute: the same curve up to float32
    rounding, stored as a cell of its own, with the compile time apart from the wall time."""
    eager_cfg = dataclasses.replace(COMPILED, compile=False)
    assert {c.key for c in train.cells(COMPILED)}.isdisjoint(c.key for c in train.cells(eager_cfg))
    eager = train.train_curve(eager_cfg, "pes", 0).metrics
    comp = train.train_curve(COMPILED, "pes", 0).metrics
    assert comp["steps"] == eager["steps"] and "compile_seconds" not in eager
    assert comp["compile_seconds"] > 0 and comp["compile_fallback"] is None
    for a, b in zip(comp["loss"], eager["loss"]):
        assert a == pytest.approx(b, rel=1e-4)
    rows = [{"estimator": "pes", "metrics": comp}]
    table = train.format_summary({"config": COMPILED, "summary": train.summarize(COMPILED, rows)})
    assert "compile s" in table.splitlines()[1]


@pytest.mark.slow
def test_cli_compare_compiled(tmp_path, capsys):
    args = ["compare", "linear", "--regime", "regular", "--methods", "pes", "--budget", "600",
            "--seeds", "1", "--checkpoints", "1", "--eval-episodes", "8", "--compile",
            "--out", str(tmp_path)]
    assert cli.main(args) == 0
    assert "compile s" in capsys.readouterr().out


def test_every_config_option_of_the_command_line_reaches_the_config():
    """Each `--option` named after a `Config` field sets that field (a flag that parses but is
    dropped on the way would silently run the defaults)."""
    parser = cli.build_parser()
    fields = {f.name for f in dataclasses.fields(train.Config)}
    values = {"methods": ["pes", "cmaes"], "budget": 1234, "seeds": 3, "regime": "regular",
              "horizon": 30, "truncation": 5, "sigma": 0.2, "pairs": 4, "popsize": 6,
              "strategy_sigma": 0.5, "optimizer": "sgd", "lr": 0.3, "checkpoints": 4,
              "eval_episodes": 12, "device": "cpu", "compile": True, "shaping": "ranks",
              "method_sigma": ["pes=0.05"], "checkpoint_every": 7.5}
    parsed = {"method_sigma": (("pes", 0.05),)}  # METHOD=SIGMA items as (name, sigma) pairs
    compare = argparse.ArgumentParser()
    train.add_arguments(compare)
    options = {a.dest for a in compare._actions}
    assert set(values) == (options & fields) - {"system"}
    argv = ["compare", "metz"]
    for name, v in values.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if v is True else [flag, *map(str, v if isinstance(v, list) else [v])]
    cfg = train.config_from_args(parser.parse_args(argv))
    for name, v in values.items():
        want = parsed.get(name, tuple(v) if isinstance(v, list) else v)
        assert getattr(cfg, name) == want, name
        if name != "device":  # cpu is the only device every machine has
            assert getattr(cfg, name) != getattr(train.Config(), name), name
    cmaes = [c for c in train.cells(cfg) if c.estimator == "cmaes"][0]
    assert cmaes.params["sigma"] == 0.5


@pytest.mark.slow
def test_quick_compare_runs_in_under_three_minutes(tmp_path):
    start = time.perf_counter()
    assert cli.main(["compare", "metz", "--quick", "--out", str(tmp_path)]) == 0
    assert time.perf_counter() - start < 180

"""A ``chaosgrad train`` killed with SIGKILL resumes from its checkpoint to the same curve."""
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import cli, train
from experiments.train import checkpoint

ROOT = Path(__file__).resolve().parents[2]
run_module = importlib.import_module("experiments.train.run")  # the module, not train.run
# (method, budget): cmaes generations cost P T steps each, so it needs a larger budget to last
CASES = [("pes", 6_000), pytest.param("cmaes", 20_000, marks=pytest.mark.skipif(
    not importlib.util.find_spec("cma"), reason="needs cma"))]


def _argv(method: str, budget: int, out: Path) -> list[str]:
    return ["train", "metz_sgd_momentum", "--method", method, "--budget", str(budget),
            "--seeds", "1", "--checkpoints", "4", "--eval-episodes", "4", "--pairs", "4",
            "--popsize", "8", "--checkpoint-every", "0", "--out", str(out)]


def _kill_part_way(argv: list[str], out: Path) -> dict:
    """Run the CLI in a subprocess, SIGKILL it once a checkpoint shows a curve half done."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = out.parent / f"{out.name}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", *argv], cwd=ROOT,
                                env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            files = list((out / "checkpoints").glob("*.pt"))
            saved = checkpoint.load(files[0]) if files else None
            if saved is not None and 2 <= saved["k"] < 5:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return saved
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pytest.fail(f"the run ended before it was killed (rc {proc.returncode}): "
                f"{log.read_text()[-500:]}")


def _counting(monkeypatch, cls) -> list[int]:
    calls = [0]
    original = cls.__call__

    def counted(self):
        calls[0] += 1
        return original(self)
    monkeypatch.setattr(cls, "__call__", counted)
    return calls


@pytest.mark.parametrize("method,budget", CASES)
def test_a_killed_run_resumes_to_the_uninterrupted_curve(tmp_path, monkeypatch, method, budget):
    argv = _argv(method, budget, tmp_path / "killed")
    saved = _kill_part_way(argv, tmp_path / "killed")
    cls = run_module._StrategyStepper if method == "cmaes" else run_module._EstimatorStepper
    calls = _counting(monkeypatch, cls)
    assert cli.main(argv) == 0
    resumed_updates = calls[0]
    calls[0] = 0
    cfg = train.config_from_args(cli.build_parser().parse_args(argv))
    whole = train.run(cfg, tmp_path / "whole", progress=False)["rows"][0]["metrics"]
    # the rerun did only the updates the killed run had not checkpointed
    assert 0 < resumed_updates < calls[0]
    assert saved["steps"] > 0
    resumed = train.run(cfg, tmp_path / "killed", progress=False)["rows"][0]["metrics"]
    for name in ("steps", "loss", "theta", "final_loss"):
        assert resumed[name] == whole[name], name  # bit-identical, not close
    ckpt = checkpoint.load(next((tmp_path / "killed" / "checkpoints").glob("*.pt")))
    assert ckpt["k"] == cfg.checkpoints + 1  # the last checkpoint is the finished curve
    assert torch.equal(ckpt["theta"], torch.tensor(whole["theta"], dtype=ckpt["theta"].dtype))


def test_a_corrupt_or_partial_checkpoint_is_one_line(tmp_path, capsys):
    argv = _argv("pes", 400, tmp_path)
    assert cli.main(argv) == 0
    path = next((tmp_path / "checkpoints").glob("*.pt"))
    (tmp_path / "results.sqlite").unlink()  # forget the finished curve, keep its checkpoint
    data = path.read_bytes()
    capsys.readouterr()
    for broken in (data[: len(data) // 2], b"not a checkpoint"):
        path.write_bytes(broken)
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "partial or corrupt" in err and path.name in err


def test_a_checkpoint_from_other_settings_is_refused(tmp_path):
    cfg = train.Config(system="metz_sgd_momentum", methods=("pes",), budget=200, seeds=1,
                       checkpoints=2, eval_episodes=4, pairs=4, checkpoint_every=0.0)
    path = tmp_path / "c.pt"
    train.train_curve(cfg, "pes", 0, path)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit"):
        train.train_curve(cfg.__class__(**{**cfg.__dict__, "pairs": 3}), "pes", 0, path)


def test_strategy_state_round_trips_through_weights_only(tmp_path):
    np = pytest.importorskip("numpy")
    state = {"a": np.arange(3, dtype=np.uint32), "b": ("MT19937", np.ones(2), 3, 0.5),
             "c": b"bytes", "d": torch.float64, "e": [np.float64(1.5), None]}

    class Fake:
        def state_dict(self):
            return state
    checkpoint.save(tmp_path / "s.pt", {"s": checkpoint.pack_strategy(Fake(), "fake")})
    back = checkpoint.unpack_strategy(checkpoint.load(tmp_path / "s.pt")["s"])
    assert back["a"].dtype == np.uint32 and back["a"].tolist() == [0, 1, 2]
    assert back["b"][0] == "MT19937" and back["b"][1].tolist() == [1.0, 1.0]
    assert back["b"][2:] == (3, 0.5) and back["c"] == b"bytes" and back["d"] is torch.float64
    assert back["e"] == [1.5, None]

    class Opaque:
        def state_dict(self):
            return {"x": object()}
    with pytest.raises(checkpoint.CheckpointError, match="weights_only"):
        checkpoint.pack_strategy(Opaque(), "opaque")

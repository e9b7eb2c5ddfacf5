"""A user's own system in every command (``file.py:attr`` and ``package.module:attr``, with
``--regime`` / ``--set``), and what a user sees when their code fails: one line naming their
file and line, exit code 2, ``--debug`` / CHAOSGRAD_DEBUG=1 for the traceback, nothing left in
``--out``. The CLI cases run ``python -m experiments.cli`` in a subprocess once per feature
(exit code, no traceback), the variations in-process through `experiments.cli.main` (what the
subprocess runs, without paying an interpreter start each)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments import cli
from experiments.core.resolve import load_target, make_system, system_regimes

ROOT = Path(__file__).resolve().parents[2]

HENON = textwrap.dedent('''
    import torch
    from systems import System, noise


    class Henon(System):
        """x' = 1 - a x^2 + y + s z, y' = b x; loss x'^2 (theta = (a, b))."""
        param_dim = 2
        state_dim = 2
        regimes = {"regular": {"a": 0.9}, "chaotic": {"a": 1.3}}

        def __init__(self, a=1.3, b=0.3, horizon=8, noise_std=0.001):
            self.a, self.b, self.horizon, self.noise_std = float(a), float(b), horizon, noise_std

        def init_params(self, dtype=torch.float32, device=None):
            return torch.tensor([self.a, self.b], dtype=dtype, device=device)

        def init_state(self, theta, keys):
            return 0.1 * noise.uniform(keys, 0, stream=0, shape=(2,), dtype=theta.dtype)

        def step(self, theta, state, t, keys):
            z = noise.normal(keys, t, stream=1, shape=(1,), dtype=theta.dtype)[:, 0]
            x, y = state[:, 0], state[:, 1]
            nx = 1.0 - theta[:, 0] * x**2 + y + self.noise_std * z
            return torch.stack([nx, theta[:, 1] * x], dim=1), nx**2


    class LargeBatchFails(Henon):
        """Passes the contract checks (small batches), fails on batches over 16 rows."""
        regimes = {}

        def step(self, theta, state, t, keys):
            if theta.shape[0] > 16:
                raise RuntimeError("only small batches")
            return super().step(theta, state, t, keys)


    class ExitsInStep(Henon):
        regimes = {}

        def step(self, theta, state, t, keys):
            if theta.shape[0] > 16:
                raise SystemExit(0)
            return super().step(theta, state, t, keys)


    class RunsOutOfMemory(Henon):
        regimes = {}

        def step(self, theta, state, t, keys):
            if theta.shape[0] > 16:
                raise MemoryError()
            return super().step(theta, state, t, keys)


    def make():
        return Henon(a=1.2)
''')

TINY_CURVES = ["--estimators", "bptt", "pes", "--horizons", "4", "8", "--truncations", "4", "8",
               "--draws", "32", "--ref-pairs", "256", "--seeds", "1"]
TINY_TRAIN = ["--budget", "600", "--seeds", "1", "--checkpoints", "2", "--eval-episodes", "4",
              "--pairs", "2", "--truncation", "4"]


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "henon.py").write_text(HENON)
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "dyn.py").write_text(HENON)
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\n")
    return tmp_path


def chaosgrad(argv, cwd, **env):
    """``python -m experiments.cli argv`` in ``cwd``: (exit code, stdout, stderr)."""
    environ = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{cwd}", OMP_NUM_THREADS="1",
                   MPLBACKEND="Agg", **env)
    environ.pop("CHAOSGRAD_DEBUG", None) if "CHAOSGRAD_DEBUG" not in env else None
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", *argv], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def in_process(argv, cwd, capsys, monkeypatch):
    """``chaosgrad argv`` in-process from ``cwd``: (exit code, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    code = cli.main(argv)
    got = capsys.readouterr()
    return code, got.out, got.err


def one_line_error(code, err, *words):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err


# --- one resolver --------------------------------------------------------------------------

def test_file_and_module_targets_resolve_the_same_way(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir))
    by_file = make_system(str(user_dir / "henon.py") + ":Henon", "regular", {"b": 0.2})
    by_module = make_system("mypkg.dyn:Henon", "regular", {"b": 0.2})
    assert (by_file.a, by_file.b) == (by_module.a, by_module.b) == (0.9, 0.2)
    assert system_regimes("mypkg.dyn:Henon") == {"regular": {"a": 0.9}, "chaotic": {"a": 1.3}}
    assert system_regimes(str(user_dir / "henon.py") + ":LargeBatchFails") == {"default": {}}
    assert load_target("mypkg.dyn:make").a == 1.2
    with pytest.raises(ValueError, match="unknown regime 'turbulent'"):
        make_system("mypkg.dyn:Henon", "turbulent")
    with pytest.raises(ValueError, match="no module named 'nopkg'"):
        make_system("nopkg.dyn:Henon")


def test_curves_train_compare_and_table_take_a_user_file(user_dir, capsys, monkeypatch):
    code, out, err = in_process(["curves", "henon.py:Henon", "--regime", "chaotic", "--set",
                                 "b=0.25", *TINY_CURVES, "--out", "c"], user_dir, capsys,
                                monkeypatch)
    assert code == 0 and "Traceback" not in err, err
    figures = sorted(p.name for p in (user_dir / "c" / "figures").glob("*.png"))
    assert figures == ["curves_henon_Henon_cost.png", "curves_henon_Henon_horizon.png",
                       "curves_henon_Henon_truncation.png"]
    code, out, err = chaosgrad(["train", "henon.py:Henon", "--regime", "regular", "--set",
                                "a=0.8", "--method", "antithetic_es", *TINY_TRAIN, "--out", "t"],
                               user_dir)
    assert code == 0 and "Traceback" not in err, err
    assert "'overrides': (('a', 0.8),)" in out and "'regime': 'regular'" in out
    assert (user_dir / "t" / "figures" / "train_antithetic_es_henon_Henon_steps.png").exists()
    code, out, err = in_process(["compare", "mypkg.dyn:Henon", "--method", "pes", "bptt",
                                 *TINY_TRAIN, "--out", "m"], user_dir, capsys, monkeypatch)
    assert code == 0 and "Traceback" not in err, err
    assert "'regime': 'chaotic'" in out
    code, out, err = in_process(["table", "--systems", "henon.py:Henon", "--regime", "regular",
                                 "--set", "b=0.2", "--estimators", "bptt", "antithetic_es",
                                 "--horizon", "4", "--truncation", "2", "--draws", "64"],
                                user_dir, capsys, monkeypatch)
    assert code == 0 and "Traceback" not in err, err
    assert "henon.py:Henon (regular)" in err + out and "theta = [0.9, 0.2]" in err + out


def test_unknown_names_say_how_to_name_a_file(user_dir, capsys, monkeypatch):
    code, _, err = in_process(["curves", "henon_map"], user_dir, capsys, monkeypatch)
    one_line_error(code, err, "unknown system", "path/to/file.py:attr")


# --- errors from user code -----------------------------------------------------------------

def test_an_error_in_the_users_step_names_the_file_and_line(user_dir, capsys, monkeypatch):
    argv = ["train", "henon.py:LargeBatchFails", "--method", "antithetic_es", *TINY_TRAIN,
            "--pairs", "16", "--out", "out"]
    code, _, err = chaosgrad(argv, user_dir)
    one_line_error(code, err, "RuntimeError: only small batches", "henon.py:", "in step")
    assert not (user_dir / "out").exists()        # nothing stored: nothing left behind
    monkeypatch.delenv("CHAOSGRAD_DEBUG", raising=False)
    code, _, err = in_process([*argv, "--debug"], user_dir, capsys, monkeypatch)
    assert code == 2 and "Traceback" in err and "only small batches" in err
    monkeypatch.setenv("CHAOSGRAD_DEBUG", "1")
    code, _, err = in_process(argv, user_dir, capsys, monkeypatch)
    assert code == 2 and "Traceback" in err


def test_system_exit_from_user_code_is_an_error(user_dir, capsys, monkeypatch):
    code, out, err = chaosgrad(["advise", "exits.py:anything"], user_dir)
    one_line_error(code, err, "SystemExit(0)", "exits.py:2")
    code, _, err = in_process(["train", "henon.py:ExitsInStep", "--method", "antithetic_es",
                               *TINY_TRAIN, "--pairs", "16", "--out", "out"], user_dir, capsys,
                              monkeypatch)
    one_line_error(code, err, "SystemExit(0)", "henon.py:", "in step")


def test_out_of_memory_is_one_line_with_what_to_reduce(user_dir, capsys):
    argv = ["train", str(user_dir / "henon.py") + ":RunsOutOfMemory", "--method",
            "antithetic_es", *TINY_TRAIN, "--pairs", "16", "--out", str(user_dir / "o")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "out of memory" in err and "fewer pairs" in err and len(err.strip().splitlines()) == 1


def test_a_rejected_command_leaves_no_out_directory(user_dir, capsys, monkeypatch):
    code, _, err = in_process(["train", "henon.py:Henon", "--method", "antithetic_es",
                               "--sigma", "1e-9", *TINY_TRAIN, "--out", "out"], user_dir, capsys,
                              monkeypatch)
    one_line_error(code, err, "below float32 resolution")
    assert not (user_dir / "out").exists()
    code, _, err = in_process(["curves", "henon.py:Henon", "--sigma", "1e-17", *TINY_CURVES,
                               "--out", "out"], user_dir, capsys, monkeypatch)
    one_line_error(code, err, "below float64 resolution")
    assert not (user_dir / "out").exists()

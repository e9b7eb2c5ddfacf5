"""Wall time of the quick commands against their targets, each in a fresh temporary directory.

    python -m experiments.bench.commands                 # curves and reproduce
    python -m experiments.bench.commands --only curves

Runs ``chaosgrad curves logistic --quick`` (target 2 minutes) and ``chaosgrad reproduce all
--quick`` (target 10 minutes) as separate processes, so the wall time includes starting Python
and importing torch, and prints a table.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["BENCHMARKS", "bench", "main"]

ROOT = Path(__file__).resolve().parents[2]  # the repository (experiments/bench/ is two below)

# name -> (chaosgrad arguments, target seconds)
BENCHMARKS = {
    "curves": (["curves", "logistic", "--quick"], 120.0),
    "reproduce": (["reproduce", "all", "--quick"], 600.0),
}


def bench(args: list[str], timeout: float) -> tuple[float, int, str]:
    """(wall seconds, exit code, last line of output) of ``chaosgrad args --out <fresh dir>``."""
    with tempfile.TemporaryDirectory(prefix="chaosgrad-bench-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "experiments.cli", *args, "--out",
                                   str(Path(tmp) / "results")], capture_output=True, text=True,
                                  env=env, cwd=tmp, timeout=timeout)
        except subprocess.TimeoutExpired:
            return time.perf_counter() - start, 124, f"timed out after {timeout:.0f} s"
        seconds = time.perf_counter() - start
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        return seconds, proc.returncode, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.bench.commands [--only NAME ...]``: time each command, print the table;
    exit code 1 when one failed or missed its target."""
    p = argparse.ArgumentParser(prog="python -m experiments.bench.commands",
                                description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = p.parse_args(argv)
    print(f"{platform.node()}: {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{'command':42s}{'wall s':>9s}{'target s':>10s}  result")
    failed = False
    for name in args.only:
        cmd, target = BENCHMARKS[name]
        line = "chaosgrad " + " ".join(cmd)
        seconds, code, last = bench(cmd, timeout=3 * target)
        ok = code == 0 and seconds <= target
        failed |= not ok
        verdict = "ok" if ok else ("over target" if code == 0 else f"exit code {code}: {last}")
        print(f"{line:42s}{seconds:9.1f}{target:10.0f}  {verdict}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

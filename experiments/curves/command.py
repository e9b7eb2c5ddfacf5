"""``chaosgrad curves SYSTEM``: validate the settings, measure the missing cells, plot, report."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from experiments.core.command import (Command, add_device_argument, add_out_argument,
                                      check_writable)
from experiments.core.report import build_report
from experiments.core.resolve import parse_overrides
from experiments.core.store import ResultsStore, environment
from experiments.core.sweep import add_backend_arguments, backend_options

from .cells import run
from .config import QUICK, Config, validate
from .plot import plot

__all__ = ["command_line", "add_arguments", "config_from_args", "main", "COMMANDS"]


def command_line(cfg: Config, directory: str | Path) -> list[str]:
    """The explicit command that reproduces ``cfg`` into ``directory``."""
    return (["chaosgrad", "curves", cfg.system, "--regime", *cfg.regimes,
             *[a for k, v in cfg.overrides for a in ("--set", f"{k}={v!r}")], "--estimators", *cfg.estimators, "--horizons", *map(str, cfg.horizons),
             "--truncations", *map(str, cfg.truncations), "--sigma", f"{cfg.sigma:g}",
             "--pairs", str(cfg.pairs), "--draws", str(cfg.draws), "--ref-pairs",
             str(cfg.ref_pairs), "--seeds", str(cfg.seeds), "--device", cfg.device,
             "--out", str(directory)])


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``chaosgrad curves``."""
    d, q = Config(), QUICK
    p.add_argument("system", help="registered system or an unambiguous prefix (logistic), "
                   "path/to/file.py:attr or package.module:attr")
    p.add_argument("--regime", nargs="+", default=None,
                   help="regimes of the system (default: all of them, side by side)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor override, repeatable (e.g. --set r=3.7)")
    p.add_argument("--estimators", nargs="+", default=None,
                   help=f"default: {' '.join(d.estimators)}")
    p.add_argument("--horizons", nargs="+", type=int, default=None,
                   help=f"the T sweep (default {' '.join(map(str, d.horizons))}; quick "
                        f"{' '.join(map(str, q.horizons))})")
    p.add_argument("--truncations", nargs="+", type=int, default=None,
                   help=f"the K sweep at the largest T, each dividing it (default "
                        f"{' '.join(map(str, d.truncations))}; "
                        f"quick {' '.join(map(str, q.truncations))})")
    p.add_argument("--sigma", type=float, default=None, help=f"smoothing scale (default {d.sigma})")
    p.add_argument("--pairs", type=int, default=None,
                   help=f"N samples per estimate (default {d.pairs})")
    p.add_argument("--draws", type=int, default=None,
                   help=f"M per-pair draws per cell (default {d.draws}; quick {q.draws})")
    p.add_argument("--ref-pairs", type=int, default=None,
                   help=f"pairs of the ES reference (default {d.ref_pairs}; quick {q.ref_pairs})")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"independent repeats (default {d.seeds}; quick {q.seeds})")
    add_out_argument(p)
    add_device_argument(p, "cpu")
    p.add_argument("--quick", action="store_true", help="small, fast settings (a smoke run)")
    add_backend_arguments(p)


def config_from_args(args: argparse.Namespace) -> Config:
    """The validated `Config` of parsed ``chaosgrad curves`` arguments."""
    base = QUICK if args.quick else Config()
    given = {"regimes": args.regime, "estimators": args.estimators, "horizons": args.horizons,
             "truncations": args.truncations, "sigma": args.sigma, "pairs": args.pairs,
             "draws": args.draws, "ref_pairs": args.ref_pairs, "seeds": args.seeds}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}
    overrides = tuple(parse_overrides(args.set).items())
    return validate(replace(base, system=args.system, device=args.device, overrides=overrides,
                            **given))


def _print_summary(cfg: Config, results: dict, figures: list[Path], report: Path,
                   seconds: float) -> None:
    total = len(results["rows"]) + len(results["references"])
    print(f"curves {cfg.system}: {total} cells ({results['new']} computed now, "
          f"{total - results['new']} reused) in {seconds:.1f} s")
    for ref in results["references"]:
        m = ref["metrics"]
        print(f"  reference {ref['params']['regime']:>8s} T={ref['params']['T']:<4d} "
              f"|grad L_sigma| = {m['grad_norm']:.4g}  SE {m['se_norm']:.2g}  ({m['method']})")
    print(f"results: {results['store']}")
    print(f"figures: {', '.join(str(p) for p in figures)} (+ .csv data, .txt captions)")
    print(f"report:  {report}")


def main(args: argparse.Namespace) -> int:
    """``chaosgrad curves``: validate, measure the missing cells, plot, build the report."""
    cfg = config_from_args(args)
    out = Path(args.out)
    check_writable(out)
    with ResultsStore(out) as store:
        store.log_run(command_line(cfg, out), environment())
    start = time.perf_counter()
    results = run(cfg, out, **backend_options(args))
    figures = plot(results, out)
    report = build_report(out)
    _print_summary(cfg, results, figures, report, time.perf_counter() - start)
    return 0


COMMANDS = (Command("curves", "bias^2, variance, MSE vs horizon T, truncation K and cost, into a "
                    "results dir", add_arguments, main),)

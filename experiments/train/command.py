"""``chaosgrad train`` (one method) and ``chaosgrad compare`` (several): learning curves on equal
compute into a results directory, their figures and the report."""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import estimators
import systems
from experiments.core.command import (Command, add_device_argument, add_out_argument,
                                      recorded_command)
from experiments.core.report import build_report
from experiments.core.resolve import (parse_overrides, resolve_device, resolve_system,
                                      system_regimes)
from experiments.core.store import ResultsStore
from experiments.core.sweep import add_backend_arguments, backend_options

from .checkpoint import parse_every
from .plot import plot
from .run import DEFAULT_METHODS, QUICK, Config, format_summary, hyper, run, system_of

__all__ = ["add_arguments", "config_from_args", "main", "COMMANDS"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``chaosgrad train`` and ``chaosgrad compare``."""
    d = Config()
    p.add_argument("system", help="registered system or an unambiguous prefix (metz), "
                   "path/to/file.py:attr or package.module:attr")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor override, repeatable (e.g. --set r=3.7)")
    add_backend_arguments(p)
    p.add_argument("--method", "--methods", dest="methods", nargs="+", default=None,
                   help=f"estimators and/or strategies (compare default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--budget", type=int, default=None, help=f"simulated steps per curve (default {d.budget})")
    p.add_argument("--seeds", type=int, default=None, help=f"seeds per method (default {d.seeds})")
    p.add_argument("--regime", default=None, help="the system's regime to start in (default: chaotic "
                   "where the system has one, else regular)")
    p.add_argument("--horizon", type=int, default=None, help="T (default: the system's)")
    p.add_argument("--truncation", type=int, default=None, help=f"K (default {d.truncation})")
    p.add_argument("--sigma", type=float, default=None, help=f"default {d.sigma}")
    p.add_argument("--method-sigma", nargs="+", default=None, metavar="METHOD=SIGMA",
                   help="a method's own sigma (truncated_es=0.1), overriding --sigma for it")
    p.add_argument("--shaping", choices=("std", "ranks"), default=None,
                   help="fitness shaping of the ES family (antithetic_es, truncated_es, pes, "
                        "nres): returns divided by their std, or centered ranks; a shaped "
                        "estimate is not an unbiased gradient of L_sigma (default: none)")
    p.add_argument("--pairs", type=int, default=None, help=f"N pairs / keys (default {d.pairs})")
    p.add_argument("--popsize", type=int, default=None, help=f"strategies' P (default {d.popsize})")
    p.add_argument("--strategy-sigma", type=float, default=None,
                   help="strategies' initial step size (default: --sigma)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=None)
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    p.add_argument("--checkpoints", type=int, default=None, help=f"default {d.checkpoints}")
    p.add_argument("--eval-episodes", type=int, default=None, help=f"default {d.eval_episodes}")
    add_out_argument(p)
    add_device_argument(p, "cpu")
    p.add_argument("--compile", action="store_true",
                   help="run the system's step through torch.compile (estimators.rollout.compiled;"
                        " eager fallback with a warning); wall times exclude compilation, which "
                        "is reported apart")
    p.add_argument("--quick", action="store_true", help="small, fast settings (a smoke run)")
    p.add_argument("--checkpoint-every", default=None, metavar="SECONDS",
                   help=f"save each curve's state (theta, optimizer, estimator or strategy, "
                        f"curve so far) to DIR/checkpoints every SECONDS of work and at the end; "
                        f"a rerun resumes from it; 0 = after every update, off = never "
                        f"(default {d.checkpoint_every:g})")


def _method_sigma(items: list[str] | None, methods: tuple[str, ...]) -> tuple:
    """``["truncated_es=0.1"]`` -> ``(("truncated_es", 0.1),)``; ValueError for a malformed
    item, a non-positive sigma or a method that is not compared."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            sigma = float(value) if sep else math.nan
        except ValueError:
            sigma = math.nan
        if not sigma > 0 or not math.isfinite(sigma):
            raise ValueError(f"--method-sigma expects METHOD=SIGMA with SIGMA > 0, got {item!r}")
        if name not in methods:
            raise ValueError(f"--method-sigma {item!r}: {name!r} is not one of the methods "
                             f"({', '.join(methods)})")
        out[name] = sigma
    return tuple(out.items())


def config_from_args(args: argparse.Namespace) -> Config:
    """The validated `Config` of parsed ``train`` / ``compare`` arguments."""
    system = resolve_system(args.system)
    if args.command == "train" and (not args.methods or len(args.methods) != 1):
        raise ValueError("train takes exactly one --method (compare takes several)")
    regimes = system_regimes(system)
    regime = args.regime or next((r for r in ("chaotic", "regular") if r in regimes),
                                 next(iter(regimes)))
    given = {"methods": tuple(args.methods) if args.methods else None, "budget": args.budget,
             "seeds": args.seeds, "horizon": args.horizon, "truncation": args.truncation,
             "sigma": args.sigma, "pairs": args.pairs, "popsize": args.popsize,
             "strategy_sigma": args.strategy_sigma,
             "optimizer": args.optimizer, "lr": args.lr, "checkpoints": args.checkpoints,
             "eval_episodes": args.eval_episodes, "shaping": args.shaping,
             "overrides": tuple(parse_overrides(args.set).items()) or None}
    base = QUICK if args.quick else Config()
    cfg = replace(base, system=system, regime=regime, device=resolve_device(args.device),
                  compile=args.compile, **{k: v for k, v in given.items() if v is not None})
    cfg = replace(cfg, method_sigma=_method_sigma(args.method_sigma, cfg.methods))
    if args.checkpoint_every is not None:  # "off" is None: not a default to fill in
        cfg = replace(cfg, checkpoint_every=parse_every(args.checkpoint_every))
    for name in ("budget", "seeds", "checkpoints", "eval_episodes"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    T = system_of(cfg).horizon
    for m in cfg.methods:
        estimators.make(m, **hyper(cfg, m, T))  # bad names / values fail now
    return cfg


def main(args: argparse.Namespace) -> int:
    """``chaosgrad train`` / ``compare``: run the learning curves, plot them, build the report."""
    cfg = config_from_args(args)
    out = Path(args.out)
    with ResultsStore(out) as store:
        store.log_run(recorded_command(args))
    start = time.perf_counter()
    results = run(cfg, out, **backend_options(args))
    prefix = "compare" if args.command == "compare" else f"train_{cfg.methods[0].replace(':', '-')}"
    figures = plot(results, out, prefix=prefix)
    print(format_summary(results))
    print(f"{len(results['rows'])} curves ({results['new']} computed now) in "
          f"{time.perf_counter() - start:.1f} s; config {asdict(cfg)}")
    print(f"results: {results['store']}")
    print(f"figures: {', '.join(str(p) for p in figures)} (+ .csv data, .txt captions)")
    print(f"report:  {build_report(out)}")
    return 0


COMMANDS = (
    Command("train", "meta-train a system with one estimator or strategy on a budget of steps",
            add_arguments, main),
    Command("compare", "learning curves of several methods on equal compute, into a results dir",
            add_arguments, main),
)

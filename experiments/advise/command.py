"""``chaosgrad advise TARGET``: check the system, measure, print and store the advice, plot it."""
from __future__ import annotations

import argparse
from dataclasses import asdict

import torch

from experiments.core.command import Command, add_out_argument
from experiments.core.report import build_report
from experiments.core.resolve import NO_REGIME, load_target, parse_overrides
from experiments.core.store import Cell, ResultsStore

from .advisor import advise
from .model import F64, Advice
from .render import format_advice, plot

__all__ = ["command_line", "figure_tag", "add_arguments", "main", "COMMANDS"]


def _cell(a: Advice, args: argparse.Namespace) -> Cell:
    return Cell("advise", a.name, "-",
                {"target": args.target, "regime": args.regime, "set": list(args.set),
                 "theta": a.theta, "T": a.horizon, "budget": args.budget, "time": args.time},
                args.seed)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``chaosgrad advise``."""
    p.add_argument("target", help="registered system (or prefix), path/to/file.py:attr or "
                   "package.module:attr (a System instance, subclass or zero-argument factory)")
    p.add_argument("--regime", default=None, help="named regime of a registered system")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor override, repeatable (e.g. --set r=3.7)")
    p.add_argument("--theta", nargs="+", type=float, default=None,
                   help="parameters (default: the system's init_params)")
    p.add_argument("--horizon", type=int, default=None, help="T (default: the system's horizon)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=int, default=None, help="simulated steps to spend")
    budget.add_argument("--time", type=float, default=None, help="seconds to spend")
    add_out_argument(p)
    p.add_argument("--seed", type=int, default=0)


def command_line(args: argparse.Namespace) -> list[str]:
    """The ``chaosgrad advise`` command that reproduces ``args`` (recorded in the store)."""
    argv = ["chaosgrad", "advise", args.target]
    if args.regime is not None:
        argv += ["--regime", args.regime]
    for item in args.set:
        argv += ["--set", item]
    if args.theta is not None:
        argv += ["--theta", *map(repr, args.theta)]
    for flag, value in (("--horizon", args.horizon), ("--budget", args.budget),
                        ("--time", args.time)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + ["--out", str(args.out), "--seed", str(args.seed)]


def figure_tag(args: argparse.Namespace) -> str:
    """What tells apart advice on one system in figure names, readable: the regime (or
    ``default``), each ``--set`` item, ``T<horizon>`` and ``theta`` when given
    (``chaotic_a1.3_T80``)."""
    parts = [args.regime or NO_REGIME, *(item.replace("=", "") for item in args.set)]
    if args.horizon is not None:
        parts.append(f"T{args.horizon}")
    if args.theta is not None:
        parts.append("theta" + "_".join(f"{x:g}" for x in args.theta))
    return "_".join(parts)


def main(args: argparse.Namespace) -> int:
    """``chaosgrad advise``: check the system, measure, print and store the advice."""
    if args.seed < 0:
        raise ValueError(f"seed must be >= 0, got {args.seed}")
    system = load_target(args.target, regime=args.regime, overrides=parse_overrides(args.set))
    theta = None if args.theta is None else torch.tensor(args.theta, dtype=F64)
    advice = advise(system, theta, horizon=args.horizon, budget_steps=args.budget,
                    time_limit=args.time, seed=args.seed)
    print(format_advice(advice))
    with ResultsStore(args.out) as store:
        store.log_run(command_line(args))
        cell = _cell(advice, args)
        store.put(cell, asdict(advice), steps=advice.steps_used, seconds=advice.seconds)
    plot(advice, args.out, figure_tag(args))
    print(f"report: {build_report(args.out)}")
    return 0


COMMANDS = (Command("advise", "check a system (yours or a registered one) and recommend an "
                    "estimator, with evidence", add_arguments, main),)

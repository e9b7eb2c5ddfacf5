"""``chaosgrad reproduce [FIGURE ...]``: measure and plot the chosen figures, build the report."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from experiments.core.command import (Command, add_device_argument, add_out_argument,
                                      recorded_command)
from experiments.core.report import build_report
from experiments.core.resolve import (parse_overrides, resolve_device, resolve_system,
                                      system_regimes)
from experiments.core.store import STORE_FILE, ResultsStore
from experiments.core.sweep import add_backend_arguments, backend_options

from . import fig1, fig2, fig3, fig4, forgetting, plasticity, robot

__all__ = ["FIGURES", "add_arguments", "main", "COMMANDS"]

FIGURES = {"fig1": fig1.FIGURE, "fig2": fig2.FIGURE, "fig3": fig3.FIGURE, "fig4": fig4.FIGURE,
           "robot": robot.FIGURE, "plasticity": plasticity.FIGURE,
           "forgetting": forgetting.FIGURE}
ALL = ("fig1", "fig2", "fig3", "fig4")  # "all": the paper's figures (robot needs the mujoco extra)


def _figure_name(name: str) -> str:
    if name not in (*FIGURES, "all"):
        raise argparse.ArgumentTypeError(f"unknown figure {name!r}; choose from "
                                         f"{', '.join([*FIGURES, 'all'])}")
    return name


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``chaosgrad reproduce``: FIGURE..., ``--quick``, ``--out``, ``--device``."""
    # validated by `_figure_name`, not `choices`: argparse < 3.12 checks an empty '*' default
    # against the choices and rejects it
    p.add_argument("figures", nargs="*", default=[], type=_figure_name,
                   metavar="FIGURE", help="fig1, fig2, fig3, fig4, all (these four; the "
                   "default), robot (figure 1 on MuJoCo's HalfCheetah, the mujoco extra), "
                   "plasticity (loss of plasticity on Bit-Flipping: backprop, L2, continual "
                   "backprop), forgetting (permuted digits: MLP vs active dendrites + k-WTA)")
    p.add_argument("--quick", action="store_true",
                   help="small settings (a few minutes on a CPU); default: publication settings")
    p.add_argument("--system", default=None, metavar="NAME",
                   help="fig1 and fig4 on this system instead of the paper's: a registered "
                        "name, path/to/file.py:attr or package.module:attr (--set horizon=... "
                        "scales fig1's horizons)")
    p.add_argument("--regime", nargs="+", default=None,
                   help="regimes of --system (default: all of them)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor override of --system, repeatable (e.g. --set a=1.3)")
    add_out_argument(p)
    add_device_argument(p, "auto")
    add_backend_arguments(p)


def _swapped(names: list[str], args: argparse.Namespace):
    """``config -> config`` putting ``--system`` (with ``--regime``/``--set``) into a figure, or
    None without ``--system``; ValueError for a figure whose system is fixed."""
    system = getattr(args, "system", None)
    if system is None:
        if getattr(args, "regime", None) or getattr(args, "set", None):
            raise ValueError("--regime/--set apply to --system; name one "
                             "(e.g. --system path/to/file.py:attr)")
        return None
    fixed = [n for n in names if FIGURES[n].swap is None]
    if fixed:
        can = ", ".join(n for n in FIGURES if FIGURES[n].swap is not None)
        raise ValueError(f"--system: figure {', '.join(fixed)} has fixed systems "
                         f"({'; '.join(FIGURES[n].title for n in fixed)}); --system applies to "
                         f"{can} (e.g. chaosgrad reproduce fig1 --system {system})")
    system = resolve_system(system)
    overrides = parse_overrides(args.set)
    known = system_regimes(system)
    regimes = tuple(args.regime or known)
    for regime in regimes:
        if regime not in known:
            raise ValueError(f"unknown regime {regime!r} of {system}; available: "
                             f"{', '.join(known)}")
    return lambda spec, cfg: spec.swap(cfg, system, regimes, overrides)


def main(args: argparse.Namespace) -> int:
    """``chaosgrad reproduce``: measure and plot the chosen figures, build the report; exit code.

    With ``--system`` the chosen figures (fig1, fig4) run on that system in its regimes; every
    check happens before ``--out`` is created."""
    chosen = args.figures or (["fig1", "fig4"] if getattr(args, "system", None) else ["all"])
    names = list(dict.fromkeys(n for c in chosen for n in (ALL if c == "all" else [c])))
    device = resolve_device(args.device)
    swap = _swapped(names, args)
    configs = {}
    for name in names:
        spec = FIGURES[name]
        cfg = replace(spec.config.quick() if args.quick else spec.config.full(), device=device)
        configs[name] = swap(spec, cfg) if swap else cfg
    backend = backend_options(args)
    directory = Path(args.out)
    written, total = [], time.perf_counter()
    with ResultsStore(directory) as store:
        store.log_run(recorded_command(args))
        for name in names:
            spec = FIGURES[name]
            cfg = configs[name]
            before, start = len(store.rows()), time.perf_counter()
            results = spec.run(cfg, store, **backend)
            written += spec.plot(results, directory)
            print(f"{name} ({spec.title}): {len(results['rows'])} cells, "
                  f"{len(store.rows()) - before} computed now, "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    report = build_report(directory)
    print(f"results: {directory / STORE_FILE}")
    print(f"figures: {directory / 'figures'} ({', '.join(p.name for p in written)}, "
          "each with .csv data and .txt caption)")
    print(f"report:  {report}")
    print(f"total time: {time.perf_counter() - total:.1f} s", file=sys.stderr)
    return 0


COMMANDS = (Command("reproduce", "the paper's chaos-failure figures (fig1..fig4 or all)",
                    add_arguments, main),)

"""The ``chaosgrad`` command line.

Each subcommand lives in its own module of `experiments` with ``add_arguments(parser)`` and
``main(args) -> int``; this file only wires them up and turns bad input into a one-line error
with exit code 2 (never a traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys

import estimators
import systems

__all__ = ["main", "build_parser", "resolve_system"]

# subcommand -> (module of `experiments`, one-line help)
COMMANDS = {
    "table": ("table", "bias^2 / variance / MSE of every estimator at fixed theta, printed"),
    "curves": ("curves", "bias^2, variance, MSE vs horizon T, truncation K and cost, into a results dir"),
    "reproduce": ("reproduce", "the paper's chaos-failure figures (fig1..fig4 or all)"),
    "report": ("report", "(re)build the HTML report of a results directory"),
    "advise": ("advise", "check a system (yours or a registered one) and recommend an estimator, with evidence"),
    "train": ("train", "meta-train a system with one estimator or strategy on a budget of steps"),
    "compare": ("train", "learning curves of several methods on equal compute, into a results dir"),
}


# optional dependencies -> the pyproject extra that installs them
_EXTRAS = {"cma": "blackbox", "nevergrad": "blackbox", "evosax": "blackbox", "jax": "blackbox",
           "jaxlib": "blackbox", "ray": "ray"}


def resolve_system(name: str) -> str:
    """A registered system name from ``name`` or an unambiguous prefix ("logistic")."""
    names = list(systems.available())
    if name in names:
        return name
    hits = [n for n in names if n.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    raise ValueError(f"unknown system {name!r}; available: {', '.join(names)}")


def _list(_: argparse.Namespace) -> int:
    print("systems:")
    for name, doc in systems.available().items():
        print(f"  {name:22s} {doc}")
    print("estimators:")
    for name, doc in estimators.available().items():
        print(f"  {name:22s} {doc}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``chaosgrad`` parser with one subparser per subcommand whose module imports."""
    p = _Parser(prog="chaosgrad", description="Compare gradient estimators on iterated "
                "dynamical systems (BPTT, truncated BPTT, ES, PES, NRES).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="registered systems and estimators").set_defaults(func=_list)
    for command, (module, help_) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"experiments.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"experiments.{module}":
                raise
            continue  # a subcommand not written yet
        s = sub.add_parser(command, help=help_, description=help_)
        mod.add_arguments(s)
        s.set_defaults(func=mod.main)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``chaosgrad ARGV`` (default ``sys.argv[1:]``); returns the exit code (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:  # bad input: one line, exit code 2, no traceback
        print(f"chaosgrad: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an optional dependency: say which extra brings it
        top = (err.name or "").split(".")[0]
        extra = _EXTRAS.get(top)
        if extra is None:
            raise
        print(f"chaosgrad: error: {top} is not installed; it comes with the {extra!r} extra: "
              f"pip install 'chaosgrad[{extra}]' (or pip install -e '.[{extra}]')",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chaosgrad: interrupted; finished cells are saved, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

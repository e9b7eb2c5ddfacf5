"""The ``chaosgrad`` command line.

Every module or package of `experiments` outside the core and the benchmarks that declares
``COMMANDS`` (a tuple of `experiments.core.command.Command`) is a subcommand: this file finds
them, gives each a subparser, and turns bad input into a one-line error with exit code 2 (never
a traceback). Adding a command is adding its module; nothing here names it.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import experiments
from experiments.core.command import Command

__all__ = ["main", "build_parser", "commands"]

# packages of `experiments` that hold no command
_NOT_COMMANDS = {"cli", "core", "bench"}
# `chaosgrad --help` lists these first, in this order; any other command follows by name
_HELP_ORDER = ("list", "table", "curves", "reproduce", "report", "advise", "train", "compare")
# optional dependencies -> the pyproject extra that installs them
_EXTRAS = {"cma": "blackbox", "nevergrad": "blackbox", "evosax": "blackbox", "jax": "blackbox",
           "jaxlib": "blackbox", "ray": "ray", "mujoco": "mujoco", "gymnasium": "mujoco",
           "sklearn": "digits"}


def commands() -> list[Command]:
    """Every `Command` declared by a module of `experiments`, in help order."""
    found = []
    for info in pkgutil.iter_modules(experiments.__path__):
        if info.name in _NOT_COMMANDS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"experiments.{info.name}")
        found += list(getattr(module, "COMMANDS", ()))
    rank = {name: i for i, name in enumerate(_HELP_ORDER)}
    return sorted(found, key=lambda c: (rank.get(c.name, len(rank)), c.name))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``chaosgrad`` parser with one subparser per command."""
    p = _Parser(prog="chaosgrad", description="Compare gradient estimators on iterated "
                "dynamical systems (BPTT, truncated BPTT, ES, PES, NRES).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in commands():
        s = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(s)
        s.set_defaults(func=command.main)
    return p


def _missing_extra(err: ModuleNotFoundError) -> str | None:
    top = (err.name or "").split(".")[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return None
    return (f"{top} is not installed; it comes with the {extra!r} extra: "
            f"pip install 'chaosgrad[{extra}]' (or pip install -e '.[{extra}]')")


def main(argv: list[str] | None = None) -> int:
    """Run ``chaosgrad ARGV`` (default ``sys.argv[1:]``); returns the exit code (2 on bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what commands record as their command line
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:  # bad input: one line, exit code 2, no traceback
        print(f"chaosgrad: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an optional dependency: say which extra brings it
        message = _missing_extra(err)
        if message is None:
            raise
        print(f"chaosgrad: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chaosgrad: interrupted; finished cells are saved, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``chaosgrad`` command line.

Every module or package of `experiments` outside the core and the benchmarks that declares
``COMMANDS`` (a tuple of `experiments.core.command.Command`) is a subcommand: this file finds
them, gives each a subparser, and turns bad input into a one-line error with exit code 2 (never
a traceback). Adding a command is adding its module; nothing here names it.

Any exception that escapes a command is one line and exit code 2: bad input as it is, an error
raised by the user's own system with its file and line, running out of memory with what to
reduce, a ``SystemExit`` from user code as an error (`experiments.core.errors.describe`).
``--debug`` (or ``CHAOSGRAD_DEBUG=1``) shows the full traceback instead. A command that fails
before storing anything leaves no ``--out`` directory it created behind.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shutil
import sqlite3
import sys
import traceback
from contextlib import closing
from pathlib import Path

import experiments
from experiments.core.command import Command
from experiments.core.errors import DEBUG_ENV, describe, location
from experiments.core.store import STORE_FILE

__all__ = ["main", "build_parser", "commands"]

# packages of `experiments` that hold no command
_NOT_COMMANDS = {"cli", "core", "bench"}
# `chaosgrad --help` lists these first, in this order; any other command follows by name
_HELP_ORDER = ("list", "table", "curves", "reproduce", "report", "advise", "train", "compare")
# optional dependencies -> the pyproject extra that installs them
# (None: a package of the default install, so a broken or partial install)
_EXTRAS = {"cma": None, "nevergrad": None, "evosax": None, "jax": "bench", "jaxlib": "bench",
           "ray": "ray", "mujoco": "mujoco", "gymnasium": "mujoco", "sklearn": "digits"}


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
    p.add_argument("--debug", action="store_true",
                   help=f"show the full traceback of an error (also: {DEBUG_ENV}=1)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in commands():
        s = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(s)
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=f"show the full traceback of an error (also: {DEBUG_ENV}=1)")
        s.set_defaults(func=command.main)
    return p


def _missing_extra(err: ModuleNotFoundError) -> str | None:
    top = (err.name or "").split(".")[0]
    if top not in _EXTRAS:
        return None
    extra = _EXTRAS[top]
    if extra is None:
        return (f"{top} is not installed, but the default install includes it: "
                "pip install -e . (or pip install chaosgrad) again")
    return (f"{top} is not installed; it comes with the {extra!r} extra: "
            f"pip install 'chaosgrad[{extra}]' (or pip install -e '.[{extra}]')")


def _stored_nothing(directory: Path) -> bool:
    """Whether ``directory`` holds nothing but an empty results store (and empty folders)."""
    for path in directory.rglob("*"):
        if path.is_dir():
            continue
        if not path.name.startswith(STORE_FILE):
            return False
    store = directory / STORE_FILE
    if not store.exists():
        return True
    try:
        with closing(sqlite3.connect(store, timeout=5)) as conn:
            return conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 0
    except sqlite3.Error:
        return False


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _error(message: str) -> int:
    print(f"chaosgrad: error: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:  # bad input: one line, exit code 2, no traceback
        if _debug(args):
            traceback.print_exc()
        # a bad value names itself; one raised by the user's code also says where
        message, where = str(err), location(err)
        file_line = where.removeprefix(" (at ").split(" in ")[0]
        return _error(message if file_line in message else message + where)
    except ModuleNotFoundError as err:  # an optional dependency: say which extra brings it
        if _debug(args):
            traceback.print_exc()
        return _error(_missing_extra(err) or describe(err))
    except KeyboardInterrupt:
        print("chaosgrad: interrupted; finished cells are saved, rerun to resume", file=sys.stderr)
        return 130
    except (Exception, SystemExit) as err:  # noqa: BLE001 -- every escape is one line
        if _debug(args):
            traceback.print_exc()
        return _error(describe(err) + ("" if _debug(args) else
                                       f" (--debug or {DEBUG_ENV}=1 for the traceback)"))


def main(argv: list[str] | None = None) -> int:
    """Run ``chaosgrad ARGV`` (default ``sys.argv[1:]``); returns the exit code (2 on bad input
    and on any error, 130 when interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = [a for a in argv if a != "--debug"]  # what commands record as their command line
    out = Path(args.out) if getattr(args, "out", None) else None
    fresh = out is not None and not out.exists()
    code = _run(args)
    if code != 0 and fresh and out.is_dir() and _stored_nothing(out):
        shutil.rmtree(out, ignore_errors=True)  # a rejected command leaves nothing behind
    return code


if __name__ == "__main__":
    sys.exit(main())

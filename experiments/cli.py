"""The ``chaosgrad`` command line: ``list`` and ``table`` (more subcommands come with the experiments)."""
from __future__ import annotations

import argparse
import sys

import estimators
import systems

from . import table

__all__ = ["main"]


def _list(_: argparse.Namespace) -> int:
    print("systems:")
    for name, doc in systems.available().items():
        print(f"  {name:22s} {doc}")
    print("estimators:")
    for name, doc in estimators.available().items():
        print(f"  {name:22s} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaosgrad", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered systems and estimators").set_defaults(func=_list)
    t = sub.add_parser("table", help="bias^2 / variance / MSE of every estimator at fixed theta")
    table.add_arguments(t)
    t.set_defaults(func=table.main)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:  # bad input: one line, exit code 2, no traceback
        print(f"chaosgrad: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

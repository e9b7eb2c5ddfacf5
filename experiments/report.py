"""``chaosgrad report DIR``: rebuild the HTML report of a results directory
(`experiments.core.report.build_report`)."""
from __future__ import annotations

import argparse

from experiments.core.command import Command
from experiments.core.report import build_report

__all__ = ["add_arguments", "main", "COMMANDS"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``chaosgrad report``: the results directory (default ``results``)."""
    p.add_argument("directory", nargs="?", default="results",
                   help="results directory (default: results)")


def main(args: argparse.Namespace) -> int:
    """Rebuild ``DIR/report.html``; exit code."""
    print(f"report: {build_report(args.directory)}")
    return 0


COMMANDS = (Command("report", "(re)build the HTML report of a results directory", add_arguments,
                    main),)

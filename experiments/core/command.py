"""How a ``chaosgrad`` subcommand is declared, and the options several commands share.

A command module (or package) of `experiments` declares ``COMMANDS``, a tuple of `Command`;
`experiments.cli` finds every such module, adds one subparser per command with its options from
``add_arguments(parser)``, and calls ``main(args) -> exit code``. Bad input raises ValueError or
TypeError with a one-line message, which the CLI prints with exit code 2. So a new command is
one new file under ``experiments/``:

    def add_arguments(p): p.add_argument("system"); add_out_argument(p)
    def main(args): ...; return 0
    COMMANDS = (Command("mine", "what it does, in one line", add_arguments, main),)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, NamedTuple

from .resolve import DEVICES

__all__ = ["Command", "add_out_argument", "add_device_argument", "check_writable",
           "recorded_command"]


class Command(NamedTuple):
    """One subcommand: its name, one-line help, how it adds its options, and what it runs."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]


def add_out_argument(p: argparse.ArgumentParser) -> None:
    """``--out DIR``: the results directory (default ``results``)."""
    p.add_argument("--out", default="results", metavar="DIR",
                   help="results directory: results.sqlite, figures/, report.html "
                        "(default: results)")


def _device_name(text: str) -> str:
    if text not in DEVICES:
        raise argparse.ArgumentTypeError(f"device must be auto, cpu or cuda, got {text!r}")
    return text


def add_device_argument(p: argparse.ArgumentParser, default: str) -> None:
    """``--device {auto,cpu,cuda}`` (auto: cuda when available); resolve it with
    `experiments.core.resolve.resolve_device`."""
    p.add_argument("--device", default=default, type=_device_name, metavar="{auto,cpu,cuda}",
                   help=f"where to simulate: auto (cuda when available), cpu or cuda "
                        f"(default: {default})")


def check_writable(directory: str | Path) -> None:
    """Create ``DIR/figures`` and check that a file can be written there (ValueError if not),
    before any measurement starts."""
    directory = Path(directory)
    try:
        (directory / "figures").mkdir(parents=True, exist_ok=True)
        probe = directory / "figures" / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write to --out {str(directory)!r}: "
                         f"{err.strerror or err}") from None


def recorded_command(args: argparse.Namespace) -> list[str]:
    """The command line that produced ``args`` as the CLI received it (``chaosgrad ...``),
    recorded in the results store by commands that have no more explicit one."""
    return ["chaosgrad", *getattr(args, "argv", [args.command])]

"""``chaosgrad list``: the registered systems and estimators, one line each."""
from __future__ import annotations

import argparse

import estimators
import systems
from experiments.core.command import Command

__all__ = ["add_arguments", "main", "COMMANDS"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``chaosgrad list`` takes no options."""


def main(args: argparse.Namespace) -> int:
    """Print every registered system and estimator with the first line of its docstring."""
    print("systems:")
    for name, doc in systems.available().items():
        print(f"  {name:22s} {doc}")
    print("estimators:")
    for name, doc in estimators.available().items():
        print(f"  {name:22s} {doc}")
    return 0


COMMANDS = (Command("list", "registered systems and estimators", add_arguments, main),)

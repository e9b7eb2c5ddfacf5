"""Meta-training on equal compute: every estimator (with Adam or SGD) and every ask/tell strategy
gets the same budget of simulated steps; learning curves of the loss of the current theta.

    chaosgrad train metz --method pes --budget 200000 --seeds 5
    chaosgrad compare metz --methods bptt pes nres cmaes --budget 200000 --quick

A gradient estimator updates theta after every estimate, so online estimators (TruncatedBPTT,
PES, NRES) update it every window of K steps, as in the PES paper's meta-training; a strategy
(CMA-ES, evosax, nevergrad) evaluates its P candidates on one full episode each (common episode
key per generation) and its mean is the current theta. Each update's cost is the simulated steps
it reports (2 N K for a PES window, P T for a generation).

The loss on the curves is measured honestly and for free: at ``checkpoints`` evenly spaced step
counts, L(theta) is the mean per-step loss over ``eval_episodes`` full episodes with fixed
evaluation keys (their own seed), not counted in the budget nor in the wall time. Each
(method, seed) curve is one cell (kind "train") of the results store, so reruns skip it.

Each curve keeps a checkpoint in ``DIR/checkpoints`` (every ``checkpoint_every`` seconds of work
and at its end), and a rerun after a kill resumes it to the same curve (`checkpoint`).

Modules: `run` (settings, one curve, the summary), `checkpoint` (atomic save, weights_only
load), `plot` (the figures), `command` (the two subcommands).
"""
from . import command, lopt_eval
from .command import add_arguments, config_from_args, main
from .plot import plot
from .run import (DEFAULT_METHODS, QUICK, Config, cells, format_summary, hyper, run, summarize,
                  system_of, train_curve)

__all__ = ["Config", "QUICK", "DEFAULT_METHODS", "run", "summarize", "plot", "train_curve",
           "cells", "hyper", "system_of", "format_summary", "config_from_args", "add_arguments",
           "main", "COMMANDS"]

COMMANDS = command.COMMANDS + lopt_eval.COMMANDS

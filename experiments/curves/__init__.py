"""Bias^2, variance, MSE and cosine of gradient estimators against the horizon T, the truncation K
and the cost, at fixed theta, against one target: grad L_sigma, the gradient of the smoothed
full-horizon loss (Metz, Freeman, Schoenholz, Kachman 2021, "Gradients are Not All You Need").

A cell is (system, regime, estimator, T, K, sigma, N pairs, seed). For each cell we draw M
independent per-pair estimates of the full-horizon gradient: a full-horizon estimator's
``samples``; an online estimator's per-pair average of its T/K window contributions over one
lockstep episode (K must divide T). Against the reference g* of the same (system, regime, T,
sigma), itself a cached cell (the closed form where the system has ``exact_grad``, else
antithetic ES with ``ref_pairs`` pairs in float64, whose standard error s*_d is reported):

    b_d      = mean_d - g*_d,     s_d^2 = var_d / M + s*_d^2
    bias^2   = sum_d (b_d^2 - s_d^2)                      (unbiased; can dip below 0 by noise)
    variance = sum_d var_d / N                            (of one estimate with N pairs)
    MSE      = bias^2 + variance
    cosine   = E cos(g_N, g*) over disjoint groups of N draws (one estimate's direction)
    cost     = simulated steps and wall-clock seconds of one N-pair full-horizon estimate,

with SE(bias^2) = sqrt(sum_d 4 b_d^2 s_d^2 + 2 s_d^4) and z = |b| / s (D = 1; else the chi^2
of b normalised). BPTT is smoothed with the same sigma (reparameterised), so it targets the same
gradient; truncated BPTT and truncated ES are biased by construction. PES is unbiased for a loss
smoothed with an independent perturbation per window, which equals L_sigma only for losses
quadratic in theta: in the logistic map's chaotic regime the default settings resolve a PES
bias at T = 160 (bias^2 from 4e-4 at K = 80 to 3e-2 at K = 1, 4 to 7 standard errors, against
|g*|^2 = 0.28); the quick settings cannot.

With several seeds the bias is pooled over seeds and the spread of the variance over seeds is
reported. The T sweep runs online estimators at one K (the largest given K dividing every T);
the K sweep runs them at the largest T.

    python -m experiments.curves logistic_map --quick       # or: chaosgrad curves logistic --quick

Modules: `config` (settings and their validation), `cells` (the grid, what each cell computes,
`run`), `summary` (pooling over seeds, growth rates, the report's section), `plot` (the three
figures), `command` (the command line).
"""
from .cells import cell_metrics, cells, reference_cell, run
from .command import COMMANDS, add_arguments, command_line, config_from_args, main
from .config import (DEFAULT_ESTIMATORS, KIND, QUICK, REF_KIND, Config, truncation_for_horizons,
                     validate)
from .plot import plot
from .summary import slope_log_variance, summarize

__all__ = ["Config", "QUICK", "DEFAULT_ESTIMATORS", "KIND", "REF_KIND", "run", "plot",
           "summarize", "validate", "cells", "reference_cell", "cell_metrics",
           "truncation_for_horizons", "slope_log_variance", "command_line", "config_from_args",
           "add_arguments", "main", "COMMANDS"]

"""`chaosgrad reproduce`: the chaos-failure figures of Metz, Freeman, Schoenholz, Kachman 2021.

"Gradients are Not All You Need" (arXiv 2111.05803) shows that backpropagation through a
chaotic unroll gives gradients whose variance grows like exp(2 lambda T), while black-box
estimators of the smoothed loss (ES, PES) keep a bounded variance. Four figures, each measured
cell by cell into the results store of the output directory (a rerun skips finished cells):

1. policy rollouts (mass_spring_walker, double_pendulum): the loss along a 1-D slice of theta
   for several T, and the per-sample gradient variance tr Cov vs T for BPTT, ES and PES;
2. learned-optimizer unrolls (metz_sgd_momentum): meta-loss vs learning rate for several T, and
   the BPTT gradient's magnitude and variance across the same sweep against ES;
3. disk packing: energy after K FIRE steps vs the diameter D over seeds, and the variance of
   dE/dD vs K for BPTT and ES;
4. Jacobian spectra of the per-step state Jacobian (regular vs chaotic), and on the logistic map
   the Lyapunov exponent vs r beside the measured growth rate of log std(BPTT gradient).

Each figure is a module (`fig1` .. `fig4`) with a ``Config`` (``quick()`` and ``full()``), its
``cells(config)``, ``compute(cell, device)``, ``run(config, store) -> results``, one plot function
per drawn figure and ``plot(results, directory) -> [png paths]``, and a `Figure` entry ``FIGURE``
that `command.FIGURES` lists; `common` holds what they share. A figure whose system can be
swapped (fig1, fig4) gives its ``FIGURE`` a ``swap(config, system, regimes, overrides)``, which
``--system NAME [--regime ...] [--set ...]`` calls (names resolved by `experiments.core.resolve`,
the same path as every other command; a user's system's cells carry its file's content hash). Figures go to
``DIR/figures/<name>.png`` with their data (``.csv``) and a caption (``.txt``).

Variance is the trace of the covariance of the per-sample contributions
(``Estimate.samples``), i.e. the variance of a one-sample estimate; it is computed in float64
and stored as log10 so that values beyond 1e308 do not overflow. Non-finite samples are
counted, not fatal.
"""
from .command import COMMANDS, FIGURES, add_arguments, main
from .common import (Figure, episode_keys, fit_log_variance, measure_estimator, select_rows,
                     variance_table)
from .fig1 import Fig1Config, Rollout, plot_fig1, run_fig1
from .fig2 import Fig2Config, plot_fig2, run_fig2
from .fig3 import Fig3Config, plot_fig3, run_fig3
from .fig4 import Fig4Config, plot_fig4, run_fig4

__all__ = ["Fig1Config", "Fig2Config", "Fig3Config", "Fig4Config", "Rollout", "Figure", "FIGURES",
           "run_fig1", "run_fig2", "run_fig3", "run_fig4", "plot_fig1", "plot_fig2",
           "plot_fig3", "plot_fig4", "fit_log_variance", "variance_table", "select_rows",
           "measure_estimator", "episode_keys", "add_arguments", "main", "COMMANDS"]

"""The shared core of the experiments: what every command uses, and nothing that one command owns.

- `store`: the SQLite results store of an output directory (`Cell`, `ResultsStore`);
- `sweep`: running a grid of cells into a store, locally or on Ray (`run_cells`, `CellResult`);
- `measure`: estimator hyper-parameters from settings, per-pair full-horizon draws, episode
  losses (`estimator_kwargs`, `episode_estimates`, `episode_losses`);
- `stats`: bias^2 with its standard error, per-pair moments, least-squares slopes (`pair_stats`,
  `bias2`, `ols`);
- `resolve`: system names and prefixes, regimes and ``--set`` overrides, ``file.py:attr``
  targets, devices (`make_system`, `load_target`, `resolve_device`);
- `report`: the HTML report, with the sections commands register (`build_report`,
  `register_section`);
- `plotting`: figures with their CSV data and captions, estimator colours, log axes, error bars;
- `command`: how a subcommand is declared (`Command`) and the options commands share.

Imports go one way: commands (`experiments.curves`, `.reproduce`, ...) import the core; the core
imports only `systems`, `estimators` and its own modules, never a command.
"""
from .command import Command
from .measure import EpisodeEstimates, episode_estimates, episode_losses, estimator_kwargs
from .report import Section, build_report, register_section
from .resolve import load_target, make_system, resolve_device, resolve_system
from .stats import Fit, PairStats, bias2, ols, pair_stats
from .store import Cell, ResultsStore
from .sweep import CellResult, run_cells

__all__ = ["Cell", "ResultsStore", "CellResult", "run_cells", "estimator_kwargs",
           "EpisodeEstimates", "episode_estimates", "episode_losses", "bias2", "pair_stats",
           "PairStats", "ols", "Fit", "resolve_system", "make_system", "load_target",
           "resolve_device", "build_report", "Section", "register_section", "Command"]

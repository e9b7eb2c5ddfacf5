"""Figure "plasticity": loss of plasticity on Bit-Flipping, backprop against backprop with L2
and continual backprop (Dohare, Mahmood, Sutton 2021, arXiv 2108.06325, Figs. 2 and 4; Dohare
et al. 2024, Nature 632, Extended Data Fig. 2).

The ``continual_backprop`` system is trained online on one stream per episode key; the online
error l_t = (yhat_t - y_t)^2 (before each step's update) is averaged over bins of ``bin_steps``
steps, for three learners on the same keys (the same target networks and input streams, so the
comparisons are paired):

* ``backprop``: plain SGD (replacement rate 1e-12: no unit is replaced within the stream);
* ``l2``: SGD with weight decay lambda = ``weight_decay`` (p <- p - alpha (grad + lambda p));
* ``continual_backprop``: SGD with generate-and-test at rate ``replacement_rate``.

Each method is one cell of the results store, holding the ``[bins][keys]`` binned errors, so an
interrupted run resumes at the next method. The claims the paper makes and this figure checks
with standard errors over keys: backprop's error rises over the stream (its late error, the mean
over the last quarter of the bins, minus its first bin > 0), and continual backprop's late error
is below backprop's (paired difference > 0). `rise` and `gap` compute both.

The learner follows the authors' code (github.com/shibhansh/loss-of-plasticity,
``lop/slowly_changing_regression``): 5 ReLU units with Kaiming-scaled input weights, SGD step
0.01, replacement rate 1e-4, decay 0.99, maturity 100, their L2 being SGD's ``weight_decay`` on
every parameter (they sweep it over 1e-6 .. 1; 1e-2 here: 1e-3, the other value tried, stayed
within 0.02 +- 0.06 of backprop after 6e4 steps). Differences: the utility is the Nature paper's
contribution utility (eq. 1 in the system), not the code's mean-corrected "adaptable
contribution" with its output-bias correction on replacement, and replacements are counted by
an accumulator, not drawn with probability rho n. What is scaled down, to fit a CPU in minutes:
one bit flips every 1000 steps, not 10,000, and the stream is 2e5 steps, not 10^6 (so 200 flips,
twice the paper's 100, in a fifth of its updates).

Measured, ``chaosgrad reproduce plasticity`` (the `PlasticityConfig.full` settings: 2e5 steps,
bins of 1e4, 32 keys from seed 0, compiled steps; 595 s on 2 busy CPU cores), mean +- SE over
keys; late = mean over the last 5 bins (150k-200k steps):

    method                first bin      late           rise (late - first)
    backprop              1.17 +- 0.06   1.46 +- 0.04   +0.285 +- 0.065   (4.4 SE)
    backprop + L2 (1e-2)  1.15 +- 0.06   1.20 +- 0.03   +0.047 +- 0.066
    continual backprop    1.14 +- 0.05   1.08 +- 0.03   -0.054 +- 0.063

and, paired over the keys, the late error of backprop minus L2 0.257 +- 0.027 (9.5 SE), minus
continual backprop 0.377 +- 0.032 (11.8 SE). Backprop's binned error climbs from 1.17 to 1.64
(last bin) while continual backprop's stays at 1.0-1.2 and L2's at 1.1-1.3: the paper's
headline (backprop loses plasticity, continual backprop keeps it, L2 eases the loss)
reproduces in direction; its size over 10^6 steps with T_flip = 10,000 was not measured here.
The tanh learner at unit initial gain (the system's default) shows no such separation by 2e4
steps (the system's docstring).

``--quick`` (20,000 steps, bins of 2000, 16 keys, step size 0.03 so that units die sooner;
70 s eager): backprop rise 0.22 +- 0.18 (not resolved), late error of backprop minus
continual backprop 0.302 +- 0.077 (3.9 SE), minus L2 0.121 +- 0.098 (1.2 SE). The slow test
checks the claim that holds there (continual backprop below backprop by > 3 SE).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

import systems
from estimators.rollout import compiled as compiled_system
from experiments.core.plotting import new_figure, save_figure
from experiments.core import stats
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult

from .common import Figure, episode_keys, fmt, measure_cells, select_rows

__all__ = ["PlasticityConfig", "METHODS", "cells", "learner", "online_errors", "compute",
           "errors", "mean_se", "late", "rise", "gap", "run_plasticity", "plot_plasticity",
           "FIGURE"]

METHODS = ("backprop", "l2", "continual_backprop")
"""The learners of the figure, in the paper's order."""
_NO_REPLACEMENT = 1e-12  # 1/(rho n) = 2e11 steps: no replacement in any affordable stream
_STYLE = {"backprop": ("backprop", "tab:red"),
          "l2": ("backprop + L2", "tab:blue"),
          "continual_backprop": ("continual backprop", "tab:green")}


@dataclass(frozen=True)
class PlasticityConfig:
    """Settings of the plasticity figure: the stream (``steps`` long, one of the 15 flipping
    bits flipped every ``flip_every`` steps), the learner (``hidden`` units of ``activation``,
    input weights at the activation's Kaiming gain, SGD ``step_size``), each method's setting
    (``weight_decay`` of ``l2``; ``replacement_rate``, ``decay``, ``maturity`` of
    ``continual_backprop``), ``keys`` episode keys from ``seed``, the error bin length
    ``bin_steps`` (divides ``steps``), and ``compile`` (`estimators.rollout.compiled` steps:
    1-2 minutes of compilation, shared by methods whose step graph is the same, then ~2.5x
    faster on a CPU)."""

    steps: int = 20_000
    flip_every: int = 1000
    bin_steps: int = 2000
    step_size: float = 0.01
    activation: str = "relu"
    hidden: int = 5
    weight_decay: float = 1e-2
    replacement_rate: float = 1e-4
    decay: float = 0.99
    maturity: int = 100
    keys: int = 16
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    compile: bool = False
    device: str = "cpu"

    def __post_init__(self):
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
        if self.bin_steps <= 0 or self.steps % self.bin_steps:
            raise ValueError(f"bin_steps = {self.bin_steps} must divide steps = {self.steps}")
        if self.keys < 2:
            raise ValueError(f"keys must be >= 2 for a standard error, got {self.keys}")

    @classmethod
    def quick(cls) -> "PlasticityConfig":
        """The ``--quick`` settings (about a minute on a CPU): 20,000 steps at step size 0.03,
        where units die, and plasticity goes, sooner than at the paper's 0.01."""
        return cls(step_size=0.03)

    @classmethod
    def full(cls) -> "PlasticityConfig":
        """The default of ``chaosgrad reproduce plasticity``: 2e5 steps, 32 keys, compiled
        (10 minutes measured on 2 busy CPU cores, compilation included)."""
        return cls(steps=200_000, bin_steps=10_000, keys=32, compile=True)


def _params(cfg: PlasticityConfig, method: str) -> dict:
    """A cell's params: the stream and learner, and only the setting its method uses."""
    p = {"steps": cfg.steps, "flip_every": cfg.flip_every, "bin_steps": cfg.bin_steps,
         "step_size": cfg.step_size, "activation": cfg.activation, "hidden": cfg.hidden,
         "keys": cfg.keys}
    if method == "l2":
        p["weight_decay"] = cfg.weight_decay
    if method == "continual_backprop":
        p.update(replacement_rate=cfg.replacement_rate, decay=cfg.decay, maturity=cfg.maturity)
    return p


def cells(cfg: PlasticityConfig) -> list[Cell]:
    """One cell per method; its seed is the config's (the episode keys derive from it)."""
    return [Cell("plasticity", "continual_backprop", m, _params(cfg, m), cfg.seed)
            for m in cfg.methods]


def learner(params: dict, method: str) -> tuple[systems.System, torch.Tensor]:
    """The system and its theta ``[3]`` (float32) for ``method`` with a cell's ``params``."""
    kw = {"flip_every": params["flip_every"], "hidden": params["hidden"],
          "activation": params["activation"], "step_size": params["step_size"],
          "init_gain": systems.continual_backprop.KAIMING_GAIN[params["activation"]],
          "horizon": params["steps"]}
    if method == "continual_backprop":
        kw.update(replacement_rate=params["replacement_rate"], decay=params["decay"],
                  maturity=params["maturity"])
    else:
        kw["replacement_rate"] = _NO_REPLACEMENT
        if method == "l2":
            kw["weight_decay"] = params["weight_decay"]
    system = systems.make("continual_backprop", **kw)
    return system, system.init_params()


def _steps_bar(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", unit_scale=True, leave=False,
                disable=not sys.stderr.isatty(), dynamic_ncols=True)


@contextmanager
def _one_thread():
    """torch on one intra-op thread inside the block (restored after). The learner's tensors
    are tiny (B x 5 x 21), so more threads only add synchronisation: 2 threads made a step 10x
    slower (12 ms against 1.2 ms) on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def online_errors(system: systems.System, theta: torch.Tensor, keys: torch.Tensor, steps: int,
                  bin_steps: int, desc: str = "") -> torch.Tensor:
    """Binned online errors ``[steps // bin_steps, B]`` (float64) of one unroll.

    Bin j holds (1 / bin_steps) sum over t in [j bin_steps, (j + 1) bin_steps) of l_t for each
    of the ``B`` rows of ``theta`` ``[B, 3]`` and ``keys`` ``[B]``; no gradient is recorded,
    torch runs on one thread, and a progress bar over the steps shows on a terminal.
    """
    bins = torch.zeros(steps // bin_steps, keys.shape[0], dtype=torch.float64,
                       device=keys.device)
    with torch.no_grad(), _one_thread(), _steps_bar(steps, desc) as bar:
        state = system.init_state(theta, keys)
        for j in range(bins.shape[0]):
            acc = torch.zeros(keys.shape[0], dtype=torch.float64, device=keys.device)
            for t in range(j * bin_steps, (j + 1) * bin_steps):
                state, loss = system.step(theta, state, torch.full_like(keys, t), keys)
                acc += loss
            bins[j] = acc / bin_steps
            bar.update(bin_steps)
    return bins


def compute(cell: Cell, device, compile_steps: bool = False) -> CellResult:
    """One method's binned online errors over the cell's episode keys.

    Metrics: ``errors`` (``[bins][keys]`` nested lists), ``nonfinite`` (count of non-finite
    bins)."""
    p = cell.params
    system, theta = learner(p, cell.estimator)
    if compile_steps:
        system = compiled_system(system)
    keys = episode_keys(cell.seed, p["keys"], device)
    theta = theta.to(device).expand(p["keys"], -1).contiguous()
    got = online_errors(system, theta, keys, p["steps"], p["bin_steps"], cell.estimator)
    metrics = {"errors": got.tolist(), "nonfinite": int((~torch.isfinite(got)).sum())}
    return CellResult(metrics, p["steps"] * p["keys"], str(device))


def run_plasticity(cfg: PlasticityConfig, store: ResultsStore, progress: bool | None = None,
                   **backend) -> dict:
    """Measure the plasticity figure's cells not in ``store`` yet; returns config and rows."""
    return measure_cells(cfg, store, cells(cfg), lambda c: compute(c, cfg.device, cfg.compile),
                         "plasticity (Bit-Flipping)", progress, **backend)


def errors(rows: Sequence[dict], method: str) -> torch.Tensor:
    """The stored ``[bins, keys]`` binned errors of ``method`` (float64)."""
    (row,) = select_rows(rows, kind="plasticity", estimator=method)
    return torch.tensor(row["metrics"]["errors"], dtype=torch.float64)


def mean_se(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the last axis (keys) and its standard error (`experiments.core.stats.mean_se`)."""
    return stats.mean_se(x, dim=-1)


def late(e: torch.Tensor) -> torch.Tensor:
    """Each key's mean error over the last quarter of the bins (at least one), ``[keys]``, of
    ``e`` ``[bins, keys]``: the late error of the claims, less noisy than the last bin alone."""
    return e[-max(1, e.shape[0] // 4):].mean(0)


def rise(rows: Sequence[dict], method: str) -> tuple[float, float]:
    """Late error (`late`) minus first-bin error of ``method``: mean over keys and its standard
    error. Positive: the error grew over the stream (lost plasticity)."""
    e = errors(rows, method)
    m, s = mean_se(late(e) - e[0])
    return float(m), float(s)


def gap(rows: Sequence[dict], worse: str, better: str) -> tuple[float, float]:
    """Late error (`late`) of ``worse`` minus that of ``better``, paired over the shared keys:
    mean and standard error."""
    m, s = mean_se(late(errors(rows, worse)) - late(errors(rows, better)))
    return float(m), float(s)


def _caption(cfg: PlasticityConfig, rows: Sequence[dict]) -> str:
    def pm(pair):
        return f"{fmt(float(pair[0]), 3)} +- {fmt(float(pair[1]), 2)}"
    methods = [m for m in METHODS if m in cfg.methods]
    parts = [f"{_STYLE[m][0]}: first bin {pm(mean_se(errors(rows, m)[0]))}, late "
             f"{pm(mean_se(late(errors(rows, m))))}, rise {pm(rise(rows, m))}" for m in methods]
    gaps = [f"late error of backprop minus {_STYLE[m][0]} {pm(gap(rows, 'backprop', m))}"
            for m in methods if m != "backprop" and "backprop" in methods]
    return (
        "Loss of plasticity on Bit-Flipping (Dohare, Mahmood, Sutton 2021; Dohare et al. 2024, "
        f"Extended Data Fig. 2): online squared error, mean over {cfg.steps // cfg.bin_steps} "
        f"bins of {cfg.bin_steps} steps, over {cfg.steps} steps with one of 15 input bits "
        f"flipped every {cfg.flip_every} steps (the paper: 10,000 steps over 10^6), a learner "
        f"of {cfg.hidden} {cfg.activation} units, SGD step {cfg.step_size}; L2 weight decay "
        f"{cfg.weight_decay}; continual backprop replacement rate {cfg.replacement_rate}, "
        f"decay {cfg.decay}, maturity {cfg.maturity}. Mean +- one standard error over "
        f"{cfg.keys} episode keys (bands), the same keys for every method; late: the mean over "
        "the last quarter of the bins; rise: late minus first bin. "
        + "; ".join(parts + gaps) + ". Look for: backprop's error rising over the stream as "
        "it loses plasticity, continual backprop's staying low (the paper's headline); the "
        "numbers above say how much of it these lengths show. The CSV holds the plotted means "
        "and standard errors per bin.")


def plot_plasticity(results: dict, directory: Path) -> list[Path]:
    """Draw ``DIR/figures/plasticity_online_error.png`` (with ``.csv`` data and ``.txt``
    caption) from `run_plasticity`'s results; returns the PNG paths."""
    cfg: PlasticityConfig = results["config"]
    rows = results["rows"]
    fig, axes = new_figure(1, 1, 7.5, 4.6)
    ax = axes[0][0]
    data = []
    for m in (m for m in METHODS if m in cfg.methods):
        mean, se = mean_se(errors(rows, m))
        ends = [(j + 1) * cfg.bin_steps for j in range(mean.shape[0])]
        label, color = _STYLE[m]
        ax.plot(ends, mean.tolist(), color=color, marker="o", ms=3, label=label)
        ax.fill_between(ends, (mean - se).tolist(), (mean + se).tolist(), color=color,
                        alpha=0.25, lw=0)
        data += [[m, j, end - cfg.bin_steps, end, float(mean[j]), float(se[j]), cfg.keys]
                 for j, end in enumerate(ends)]
    ax.set_xlabel(f"step (one bit flipped every {cfg.flip_every} steps)")
    ax.set_ylabel(f"online squared error, mean over {cfg.bin_steps}-step bins")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=f"mean +- SE over {cfg.keys} keys", title_fontsize=8)
    ax.set_title(f"Bit-Flipping, {cfg.hidden} {cfg.activation} units, step size "
                 f"{cfg.step_size}", fontsize=10)
    return [save_figure(fig, directory, "plasticity_online_error",
                        ["method", "bin", "step_from", "step_to", "mean_error", "se", "keys"],
                        data, _caption(cfg, rows))]


FIGURE = Figure(PlasticityConfig, run_plasticity, plot_plasticity,
                "loss of plasticity on Bit-Flipping")

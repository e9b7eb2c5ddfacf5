"""The learning-curve figures of ``chaosgrad train`` / ``compare``: L(theta) against simulated
steps and against wall time, median and interquartile band over seeds."""
from __future__ import annotations

import math
from pathlib import Path

from experiments.core.plotting import file_stem, new_figure, save_figure, text

from .run import system_of

__all__ = ["plot"]


def _caption(cfg, label: str) -> str:
    return (
        f"Loss of the current theta of {cfg.system} ({cfg.regime} regime, T = "
        f"{system_of(cfg).horizon}) against {label}, for every method on the same budget of "
        f"{cfg.budget:,} simulated steps: median (line) and interquartile band over "
        f"{cfg.seeds} seeds. L(theta) is the mean per-step loss over {cfg.eval_episodes} "
        f"fixed evaluation episodes, not counted in the budget or the time. Gradient "
        f"estimators step {cfg.optimizer} (lr {cfg.lr:g}) after every estimate (online ones "
        f"every K = {cfg.truncation} steps) with N = {cfg.pairs} pairs/keys and sigma = "
        f"{cfg.sigma:g}; strategies (P = {cfg.popsize or 'default'}, initial step "
        f"{cfg.strategy_sigma or cfg.sigma:g}) evaluate each candidate on one full episode "
        f"and report their mean."
        + (" Steps ran through torch.compile; the wall time excludes compilation."
           if cfg.compile else ""))


def plot(results: dict, directory: str | Path = "results", prefix: str = "compare") -> list[Path]:
    """``DIR/figures/<prefix>_<system>_{steps,time}.png`` with ``.csv`` data and ``.txt`` caption."""
    cfg, summary = results["config"], results["summary"]
    positive = all(v > 0 for s in summary.values() for v in s["q25"] if math.isfinite(v))
    paths = []
    for axis, label, suffix in (("steps", "simulated steps", "steps"),
                                ("seconds", "wall time excluding evaluation (s)", "time")):
        fig, axes = new_figure(1, 1, 6.4, 4.2, layout=None)
        ax = axes[0][0]
        data = []
        for m, s in summary.items():
            x = s[axis]
            (line,) = ax.plot(x, s["median"], marker=".", label=m)
            ax.fill_between(x, s["q25"], s["q75"], color=line.get_color(), alpha=0.2, lw=0)
            data += [[m, i, f"{s['steps'][i]:.0f}", f"{s['seconds'][i]:.4g}", f"{s['q25'][i]:.6g}",
                      f"{s['median'][i]:.6g}", f"{s['q75'][i]:.6g}", s["seeds"]]
                     for i in range(len(x))]
        ax.set(xlabel=label, ylabel="L(theta), fixed evaluation episodes",
               title=f"{text(cfg.system)} ({cfg.regime}): meta-training on {cfg.budget:,} steps")
        if positive:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(save_figure(fig, directory, file_stem(prefix, cfg.system, suffix),
                                 ["method", "checkpoint", "steps", "seconds", "loss_q25",
                                  "loss_median", "loss_q75", "seeds"], data,
                                 _caption(cfg, label), dpi=110))
    return paths

"""What the four figures share: per-sample statistics of one estimate, keys of the loss curves,
selecting stored rows, the variance-vs-T table and its fitted growth rate, labels and styles."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch

import systems
from experiments.core.measure import episode_estimates, estimator_kwargs
from experiments.core.plotting import estimator_color
from experiments.core.resolve import make_system, source_digest, system_regimes
from experiments.core.stats import Fit, log10_norm, log10_trace_cov, ols
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult, run_cells

__all__ = ["F64", "Figure", "measure_cells", "system_params", "build", "episode_keys", "hyper",
           "measure_estimator",
           "fit_log_variance", "variance_table", "select_rows", "ESTIMATOR_STYLE",
           "regime_label", "dt_note", "fmt", "decades"]

F64 = torch.float64
_SLICE_SALT = 0x511CE  # episode keys of the loss slices and energy curves


class Figure(NamedTuple):
    """One figure of ``chaosgrad reproduce``: its config class (with ``quick()`` and
    ``full()``), ``run(config, store, progress, **backend) -> results``,
    ``plot(results, directory) -> [png paths]``, a title for the progress lines, and for a
    figure whose system can be swapped ``swap(config, system, regimes, overrides) -> config``
    (None: the figure's systems are fixed)."""

    config: type
    run: Callable
    plot: Callable
    title: str
    swap: Callable | None = None


def system_params(system: str, overrides: dict | None = None) -> dict:
    """What a cell's params add for a swapped-in system: ``{"set": overrides}`` when there are
    ``--set`` overrides, ``{"source": digest}`` for a user's file or module (`source_digest`,
    so an edited file gives new cells); ``{}`` for a registered system without overrides (the
    paper's cells keep their keys)."""
    out: dict = {}
    if overrides:
        out["set"] = dict(overrides)
    digest = source_digest(system)
    if digest:
        out["source"] = digest
    return out


def build(cell: Cell, regime: str | None = None) -> systems.System:
    """The system of ``cell`` in ``regime`` (default: its params' regime) with its ``--set``
    overrides (`experiments.core.resolve.make_system`)."""
    p = cell.params
    return make_system(cell.system, regime if regime is not None else p.get("regime"),
                       p.get("set"))


def measure_cells(cfg, store: ResultsStore, cells: list[Cell],
                  compute: Callable[[Cell], CellResult], desc: str,
                  progress: bool | None = None, **backend) -> dict:
    """Compute the ``cells`` not in ``store`` yet (`run_cells`); ``{"config", "rows"}``."""
    rows = run_cells(store, cells, compute, desc=desc, progress=progress, **backend)
    return {"config": cfg, "rows": rows}


def episode_keys(seed: int, n: int, device) -> torch.Tensor:
    """``[n]`` episode keys as a pure function of ``seed`` (common across thetas)."""
    seeds = torch.full((n,), int(seed), dtype=torch.int64, device=device)
    return systems.noise.fold(seeds, torch.arange(n, device=device), _SLICE_SALT)


def hyper(name: str, p: dict) -> dict:
    """Estimator constructor arguments from a cell's params (T, N, and sigma, K when given)."""
    return estimator_kwargs(name, horizon=p["T"], n=p["N"], sigma=p.get("sigma"),
                            truncation=p.get("K"))


def measure_estimator(system, name: str, hyper: dict, seed: int, device) -> CellResult:
    """Per-sample statistics of one full-horizon gradient estimate at ``system.init_params()``.

    Full-horizon estimators use one call; online ones (PES) the per-pair average of their T/K
    window contributions over one lockstep episode (`experiments.core.measure.episode_estimates`).
    Metrics: ``log10_var`` (log10 tr Cov of the samples), ``log10_grad_norm`` (of their mean),
    ``grad`` (the mean), ``loss``, ``n`` finite samples, ``nonfinite`` dropped ones.
    """
    theta = system.init_params(dtype=F64, device=device)
    got = episode_estimates(name, hyper, system, theta, seed)
    samples = got.samples.to(F64)
    mean = samples.mean(0) if samples.shape[0] else torch.full_like(theta, math.nan)
    metrics = {"log10_var": log10_trace_cov(samples), "log10_grad_norm": log10_norm(mean),
               "grad": mean.tolist(), "loss": got.loss, "n": int(samples.shape[0]),
               "nonfinite": int(got.nonfinite)}
    return CellResult(metrics, got.steps, str(device))


def fit_log_variance(rows: Sequence[dict]) -> Fit:
    """OLS of the natural log of the variance against ``params["T"]`` over finite rows.

    Every (T, seed) cell is one point; ``se`` is the usual residual-based standard error of the
    slope (NaN with fewer than three points or a single T).
    """
    pts = [(r["params"]["T"], r["metrics"]["log10_var"] * math.log(10)) for r in rows
           if math.isfinite(r["metrics"]["log10_var"])]
    return ols([x for x, _ in pts], [y for _, y in pts])


def variance_table(rows: Sequence[dict], key: str = "T") -> list[tuple[float, float, float, int]]:
    """``(x, mean log10 var, its standard error over seeds, seeds)`` per value of ``params[key]``.

    Non-finite variances are left out of the mean (their count is in the CSV's nonfinite column).
    """
    by: dict[float, list[float]] = {}
    for r in rows:
        by.setdefault(r["params"][key], [])
        if math.isfinite(r["metrics"]["log10_var"]):
            by[r["params"][key]].append(r["metrics"]["log10_var"])
    out = []
    for x in sorted(by):
        v = by[x]
        if not v:
            out.append((x, math.nan, math.nan, 0))
            continue
        m = sum(v) / len(v)
        se = (math.sqrt(sum((y - m) ** 2 for y in v) / (len(v) - 1) / len(v))
              if len(v) > 1 else math.nan)
        out.append((x, m, se, len(v)))
    return out


def select_rows(rows: Sequence[dict], **match) -> list[dict]:
    """Rows whose kind/system/estimator/seed columns or params equal ``match``."""
    columns = ("kind", "system", "estimator", "seed")
    return [r for r in rows
            if all((r[k] if k in columns else r["params"].get(k)) == v for k, v in match.items())]


ESTIMATOR_STYLE = {  # label, colour, marker
    "bptt": ("BPTT (pathwise, sigma = 0)", estimator_color("bptt"), "o"),
    "antithetic_es": ("antithetic ES", estimator_color("antithetic_es"), "s"),
    "pes": ("PES (full-horizon mean of windows)", estimator_color("pes"), "^"),
}


def fmt(x: float, digits: int = 2) -> str:
    """``x`` to ``digits`` significant digits ("nan" when not finite)."""
    return "nan" if not math.isfinite(x) else f"{x:.{digits}g}"


def decades(x: float) -> float:
    """A natural-log slope in decades (log10 units)."""
    return x / math.log(10)


def regime_label(system: str, regime: str) -> str:
    """``"chaotic (r = 3.9)"``: a regime with its constructor settings."""
    settings = system_regimes(system).get(regime, {})
    if not settings:
        return regime
    return f"{regime} ({', '.join(f'{k} = {fmt(v, 3)}' for k, v in settings.items())})"


def dt_note(system: str) -> str:
    """`` (steps of dt = 10 ms)`` for systems with a time step, else ""."""
    dt = getattr(make_system(system), "dt", None)
    return f" (steps of dt = {dt * 1000:g} ms)" if isinstance(dt, (int, float)) and dt else ""

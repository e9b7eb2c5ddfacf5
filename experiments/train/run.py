"""Learning curves on a budget of simulated steps: the settings, one curve per (method, seed),
and their summary over seeds."""
from __future__ import annotations

import inspect
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

import estimators
import systems
from estimators.rollout import compiled
from experiments.core.measure import episode_losses, estimator_kwargs
from experiments.core.resolve import make_system
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult, run_cells

from . import checkpoint

__all__ = ["Config", "QUICK", "DEFAULT_METHODS", "system_of", "hyper", "cells", "train_curve",
           "run", "summarize", "format_summary"]

DEFAULT_METHODS = ("bptt", "truncated_bptt", "pes", "nres", "cmaes")
_TRAIN_KEYS, _EVAL_KEYS = 0x7A1, 0xE7A1  # key streams of strategy episodes / evaluation


@dataclass(frozen=True)
class Config:
    """Settings of one `compare` run: the system, the methods, the budget and the evaluation."""

    system: str = "metz_sgd_momentum"
    regime: str = "chaotic"
    methods: tuple[str, ...] = DEFAULT_METHODS
    budget: int = 200_000        # simulated steps per (method, seed)
    seeds: int = 5
    horizon: int | None = None   # T (the system's default if None)
    truncation: int = 10         # K of the online estimators
    sigma: float = 0.1           # ES smoothing / strategy initial step size
    method_sigma: tuple[tuple[str, float], ...] = ()  # per-method sigma overriding ``sigma``
    shaping: str | None = None   # fitness shaping of the ES family: None, "std" or "ranks"
    pairs: int = 8               # N (pairs of the ES family, keys of BPTT)
    popsize: int | None = 16     # P of the strategies (the library's default if None)
    strategy_sigma: float | None = None  # strategies' initial step size (sigma if None)
    optimizer: str = "adam"      # for gradient estimators: adam or sgd
    lr: float = 0.02
    checkpoints: int = 20
    eval_episodes: int = 256
    eval_seed: int = 1_000_003
    device: str = "cpu"
    compile: bool = False        # run the system's step through estimators.rollout.compiled
    overrides: tuple[tuple[str, object], ...] = ()  # --set key=value: constructor arguments
    checkpoint_every: float | None = 300.0  # seconds of work between checkpoints; None: none


QUICK = Config(budget=30_000, seeds=2, checkpoints=6, eval_episodes=64)


def system_of(cfg: Config) -> systems.System:
    """The config's system in its regime (with ``horizon`` when set)."""
    overrides = {**dict(cfg.overrides), **({} if cfg.horizon is None else {"horizon": cfg.horizon})}
    return make_system(cfg.system, cfg.regime, overrides)


def _unsmoothed(method: str) -> bool:
    """Pathwise estimators whose default sigma is 0: trained on the plain gradient."""
    params = inspect.signature(estimators.ESTIMATORS.get(method)).parameters
    return "sigma" in params and params["sigma"].default == 0.0


def hyper(cfg: Config, method: str, T: int) -> dict:
    """The method's hyper-parameters from the config (only those its constructor takes).

    sigma: the method's entry of ``method_sigma`` if it has one, else ``strategy_sigma`` (or
    ``sigma``) for strategies, none for pathwise estimators and ``sigma`` for the rest;
    ``shaping`` reaches the estimators that take it (the ES family)."""
    sigma = (cfg.strategy_sigma or cfg.sigma) if estimators.is_strategy(method) else cfg.sigma
    if _unsmoothed(method):
        sigma = None  # pathwise estimators: the plain, unsmoothed gradient
    sigma = dict(cfg.method_sigma).get(method, sigma)
    return estimator_kwargs(method, n=cfg.pairs, truncation=cfg.truncation, sigma=sigma,
                            popsize=cfg.popsize, budget=max(2, cfg.budget // T),
                            shaping=cfg.shaping)


def cells(cfg: Config) -> list[Cell]:
    """One cell of kind "train" per (method, seed)."""
    T = system_of(cfg).horizon
    shared = {"regime": cfg.regime, "T": T, "budget": cfg.budget, "checkpoints": cfg.checkpoints,
              "eval_episodes": cfg.eval_episodes, "eval_seed": cfg.eval_seed}
    out = []
    for m in cfg.methods:
        params = {**shared, **hyper(cfg, m, T)}
        if not estimators.is_strategy(m):
            params.update(optimizer=cfg.optimizer, lr=cfg.lr)
        if cfg.compile:  # same losses up to rounding, other wall times: a cell of its own
            params["compile"] = True
        if cfg.overrides:  # only when given, so plain runs keep their cell keys
            params["set"] = dict(cfg.overrides)
        out += [Cell("train", cfg.system, m, params, seed) for seed in range(cfg.seeds)]
    return out


class _StrategyStepper:
    """One generation of an ask/tell strategy; its state is the strategy's and a key counter."""

    def __init__(self, strategy, system, device, seed: int, T: int):
        self.strategy, self.system, self.T = strategy, system, T
        self.base = torch.tensor([seed], dtype=torch.int64, device=device)
        self.count = 0

    def __call__(self):
        x = self.strategy.ask()
        keys = systems.noise.fold(self.base, _TRAIN_KEYS, self.count).expand(x.shape[0])
        self.count += 1
        with torch.no_grad():
            losses = episode_losses(self.system, x, keys, self.T)
        self.strategy.tell(losses)
        return self.strategy.mean, x.shape[0] * self.T

    def state_dict(self, name: str) -> dict:
        return {"count": self.count, "strategy": checkpoint.pack_strategy(self.strategy, name)}

    def load_state_dict(self, saved: dict) -> None:
        self.count = saved["count"]
        self.strategy.load_state_dict(checkpoint.unpack_strategy(saved["strategy"]))


class _EstimatorStepper:
    """One ``torch.optim`` step on an estimate; its state is theta, the optimizer's state and
    the estimator's (e.g. PES's particles)."""

    def __init__(self, cfg: Config, est, system, theta0: torch.Tensor, seed: int):
        self.est, self.system = est, system
        self.theta = torch.nn.Parameter(theta0.clone())
        self.opt = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer](
            [self.theta], lr=cfg.lr)
        self.state = est.init(system, self.theta.detach(), seed=seed)

    def __call__(self):
        e, self.state = self.est.estimate(self.system, self.theta.detach(), self.state)
        if e.ok and bool(torch.isfinite(e.grad).all()):  # an all-non-finite estimate: no step
            self.opt.zero_grad()
            self.theta.grad = e.grad.to(self.theta.dtype)
            self.opt.step()
        return self.theta.detach(), e.steps

    def state_dict(self, name: str) -> dict:
        return {"theta": self.theta.detach().clone(), "optimizer": self.opt.state_dict(),
                "estimator": checkpoint.pack_state(self.state)}

    def load_state_dict(self, saved: dict) -> None:
        with torch.no_grad():
            self.theta.copy_(saved["theta"])
        self.opt.load_state_dict(saved["optimizer"])
        self.state = checkpoint.unpack_state(saved["estimator"], self.state)


def _stepper(cfg: Config, method: str, system, theta0: torch.Tensor, seed: int, T: int):
    """A callable doing one update (returns theta after it and the steps it simulated), with
    ``state_dict(name)`` / ``load_state_dict`` for checkpoints."""
    made = estimators.make(method, **hyper(cfg, method, T))
    if estimators.is_strategy(method):
        return _StrategyStepper(made.init(theta0, seed=seed), system, theta0.device, seed, T)
    return _EstimatorStepper(cfg, made, system, theta0, seed)


def _evaluator(cfg: Config, system):
    """theta ``[D]`` -> the mean loss over ``cfg.eval_episodes`` fixed evaluation episodes."""
    keys = systems.noise.fold(torch.arange(cfg.eval_episodes, device=cfg.device), _EVAL_KEYS,
                              cfg.eval_seed)

    @torch.no_grad()
    def evaluate(th):
        return float(episode_losses(system, th.expand(len(keys), -1), keys, system.horizon).mean())
    return evaluate


def _usable_checkpoint(cfg: Config, step, method: str, checkpoint_file):
    """``checkpoint_file``, or None when checkpoints are off or this method's state cannot be
    saved (said now, with a warning, not after the work)."""
    if cfg.checkpoint_every is None or checkpoint_file is None:
        return None
    try:
        step.state_dict(method)
    except checkpoint.CheckpointError as err:
        warnings.warn(f"{err}: this curve runs without checkpoints (killed, it restarts "
                      f"from the beginning)", stacklevel=3)
        return None
    return checkpoint_file


def train_curve(cfg: Config, method: str, seed: int,
                checkpoint_file: str | Path | None = None) -> CellResult:
    """One learning curve: L(theta) at evenly spaced step counts up to ``cfg.budget``.

    With ``checkpoint_file``, the curve resumes from the checkpoint there (if any) and saves
    one every ``cfg.checkpoint_every`` seconds of work and at the end (`checkpoint`)."""
    torch.manual_seed(seed)  # nothing draws from it; fixed in case a library does
    system = system_of(cfg)
    T = system.horizon
    theta = system.init_params(device=cfg.device)
    evaluate = _evaluator(cfg, system)
    grid = [cfg.budget * k // cfg.checkpoints for k in range(cfg.checkpoints + 1)]
    # the updates run on the compiled step; evaluation (untimed) stays eager: one compile less
    runner = compiled(system) if cfg.compile else system
    step = _stepper(cfg, method, runner, theta, seed, T)
    curve = {"steps": [], "seconds": [], "loss": []}
    steps, seconds, compiling, k = 0, 0.0, 0.0, 0
    checkpoint_file = _usable_checkpoint(cfg, step, method, checkpoint_file)
    if checkpoint_file is not None:
        saved = checkpoint.load(checkpoint_file, cfg.device)
        if saved is not None:
            step.load_state_dict(saved["stepper"])
            steps, seconds, compiling, k = (saved[n] for n in ("steps", "seconds",
                                                              "compiling", "k"))
            curve, theta = saved["curve"], saved["theta"].to(theta.dtype)

    def save():
        checkpoint.save(checkpoint_file, {"steps": steps, "seconds": seconds, "k": k,
                                          "compiling": compiling, "curve": curve,
                                          "theta": theta.detach().clone(),
                                          "stepper": step.state_dict(method)})
    last_save = time.perf_counter()
    while k < len(grid):
        while k < len(grid) and steps >= grid[k]:
            for name, v in zip(curve, (steps, seconds, evaluate(theta))):
                curve[name].append(v)
            k += 1
        if k < len(grid):
            before = getattr(runner, "compile_seconds", 0.0)
            start = time.perf_counter()
            theta, used = step()
            # compilation is a one-off cost, reported apart rather than charged to the curve
            spent = getattr(runner, "compile_seconds", 0.0) - before
            seconds += time.perf_counter() - start - spent
            compiling += spent
            steps += used
            due = time.perf_counter() - last_save >= (cfg.checkpoint_every or 0.0)
            if checkpoint_file is not None and due:
                save()
                last_save = time.perf_counter()
    if checkpoint_file is not None:
        save()
    curve.update(theta=theta.tolist(), final_loss=curve["loss"][-1])
    if cfg.compile:
        curve.update(compile_seconds=compiling, compile_fallback=runner.fallback)
    return CellResult(curve, steps, cfg.device)


def run(cfg: Config, directory: str | Path = "results", progress: bool | None = None,
        **backend) -> dict:
    """Compute the missing curves into ``DIR/results.sqlite``; returns the rows and a summary.

    ``backend``/``address`` as in `run_cells` (curves run as Ray tasks with ``backend="ray"``)."""
    todo = cells(cfg)
    with ResultsStore(directory) as store:
        new = sum(not store.done(c) for c in todo)
        rows = run_cells(store, todo, lambda c: train_curve(
            cfg, c.estimator, c.seed, checkpoint.checkpoint_path(directory, c)),
                         desc=f"train {cfg.system}", progress=progress, **backend)
        path = store.path
    return {"config": cfg, "rows": rows, "new": new, "summary": summarize(cfg, rows),
            "store": path}


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    q = torch.tensor(values, dtype=torch.float64).nanquantile(
        torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return tuple(q.tolist())


def summarize(cfg: Config, rows: list[dict]) -> dict[str, dict]:
    """Per method: median steps / seconds and loss quartiles over seeds at each checkpoint."""
    out = {}
    for m in cfg.methods:
        curves = [r["metrics"] for r in rows if r["estimator"] == m]
        n = min(len(c["loss"]) for c in curves)
        loss = [_quantiles([c["loss"][i] for c in curves]) for i in range(n)]
        out[m] = {"steps": [_quantiles([c["steps"][i] for c in curves])[1] for i in range(n)],
                  "seconds": [_quantiles([c["seconds"][i] for c in curves])[1] for i in range(n)],
                  "q25": [q[0] for q in loss], "median": [q[1] for q in loss],
                  "q75": [q[2] for q in loss], "seeds": len(curves),
                  "compile_seconds": _quantiles([c.get("compile_seconds", 0.0) for c in curves])[1]}
    return out


def format_summary(results: dict) -> str:
    """`run`'s summary as a text table: L(theta) at the start and the end per method."""
    cfg, summary = results["config"], results["summary"]
    lines = [f"{cfg.system} ({cfg.regime}), budget {cfg.budget:,} steps, {cfg.seeds} seeds: "
             f"L(theta) at the start and the end (median [IQR])",
             f"{'method':24s}{'start':>10s}{'final median':>14s}{'IQR':>22s}{'wall s':>9s}"
             + (f"{'compile s':>11s}" if cfg.compile else "")]
    for m, s in sorted(summary.items(), key=lambda kv: kv[1]["median"][-1]):
        iqr = f"[{s['q25'][-1]:.4g}, {s['q75'][-1]:.4g}]"
        lines.append(f"{m:24s}{s['median'][0]:10.4g}{s['median'][-1]:14.4g}{iqr:>22s}"
                     f"{s['seconds'][-1]:9.1f}"
                     + (f"{s['compile_seconds']:11.1f}" if cfg.compile else ""))
    return "\n".join(lines)

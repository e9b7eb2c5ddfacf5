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
"""
from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

import estimators
import systems
from estimators.rollout import compiled
from experiments.store import Cell, ResultsStore
from experiments.sweep import CellResult, add_backend_arguments, backend_options, run_cells

__all__ = ["Config", "QUICK", "run", "summarize", "plot", "train_curve", "add_arguments", "main"]

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


QUICK = Config(budget=30_000, seeds=2, checkpoints=6, eval_episodes=64)


def make_system(cfg: Config) -> systems.System:
    cls = systems.SYSTEMS.get(cfg.system)
    if cfg.regime not in cls.regimes:
        raise ValueError(f"unknown regime {cfg.regime!r} of {cfg.system}; available: {', '.join(cls.regimes)}")
    kw = dict(cls.regimes[cfg.regime])
    if cfg.horizon is not None:
        kw["horizon"] = cfg.horizon
    return cls(**kw)


def hyper(cfg: Config, method: str, T: int) -> dict:
    """The method's hyper-parameters from the config (only those its constructor takes)."""
    params = inspect.signature(estimators.ESTIMATORS.get(method)).parameters
    strategy = estimators.is_strategy(method)
    hp = {"truncation": cfg.truncation, "pairs": cfg.pairs, "samples": cfg.pairs,
          "sigma": (cfg.strategy_sigma or cfg.sigma) if strategy else cfg.sigma,
          "popsize": cfg.popsize, "budget": max(2, cfg.budget // T)}
    if "sigma" in params and params["sigma"].default == 0.0:
        del hp["sigma"]  # pathwise estimators: the plain, unsmoothed gradient
    return {k: v for k, v in hp.items() if k in params and v is not None}


def cells(cfg: Config) -> list[Cell]:
    T = make_system(cfg).horizon
    shared = {"regime": cfg.regime, "T": T, "budget": cfg.budget, "checkpoints": cfg.checkpoints,
              "eval_episodes": cfg.eval_episodes, "eval_seed": cfg.eval_seed}
    out = []
    for m in cfg.methods:
        params = {**shared, **hyper(cfg, m, T)}
        if not estimators.is_strategy(m):
            params.update(optimizer=cfg.optimizer, lr=cfg.lr)
        if cfg.compile:  # same losses up to rounding, other wall times: a cell of its own
            params["compile"] = True
        out += [Cell("train", cfg.system, m, params, seed) for seed in range(cfg.seeds)]
    return out


def episode_losses(system, rows: torch.Tensor, keys: torch.Tensor, T: int) -> torch.Tensor:
    """``[B]`` mean per-step loss of full episodes of ``rows`` ``[B, D]`` with ``keys`` ``[B]``."""
    with torch.no_grad():
        state, total = system.init_state(rows, keys), rows.new_zeros(rows.shape[0])
        for t in range(T):
            state, loss = system.step(rows, state, torch.full_like(keys, t), keys)
            total = total + loss
    return total / T


def _stepper(cfg: Config, method: str, system, theta0: torch.Tensor, seed: int, T: int):
    """A function doing one update: returns (theta after it, steps it simulated)."""
    hp = hyper(cfg, method, T)
    if estimators.is_strategy(method):
        strategy = estimators.make(method, **hp).init(theta0, seed=seed)
        base = torch.tensor([seed], dtype=torch.int64, device=theta0.device)
        count = [0]

        def generation():
            x = strategy.ask()
            keys = systems.noise.fold(base, _TRAIN_KEYS, count[0]).expand(x.shape[0])
            count[0] += 1
            strategy.tell(episode_losses(system, x, keys, T))
            return strategy.mean, x.shape[0] * T
        return generation
    est = estimators.make(method, **hp)
    theta = torch.nn.Parameter(theta0.clone())
    opt = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer]([theta], lr=cfg.lr)
    state = [est.init(system, theta.detach(), seed=seed)]

    def update():
        e, state[0] = est.estimate(system, theta.detach(), state[0])
        if e.ok and bool(torch.isfinite(e.grad).all()):  # an all-non-finite estimate: no step
            opt.zero_grad()
            theta.grad = e.grad.to(theta.dtype)
            opt.step()
        return theta.detach(), e.steps
    return update


def train_curve(cfg: Config, method: str, seed: int) -> CellResult:
    """One learning curve: L(theta) at evenly spaced step counts up to ``cfg.budget``."""
    torch.manual_seed(seed)  # nothing draws from it; fixed in case a library does
    system = make_system(cfg)
    T = system.horizon
    theta = system.init_params(device=cfg.device)
    keys = systems.noise.fold(torch.arange(cfg.eval_episodes, device=cfg.device), _EVAL_KEYS,
                              cfg.eval_seed)
    evaluate = lambda th: float(episode_losses(system, th.expand(len(keys), -1), keys, T).mean())  # noqa: E731
    grid = [cfg.budget * k // cfg.checkpoints for k in range(cfg.checkpoints + 1)]
    # the updates run on the compiled step; evaluation (untimed) stays eager: one compile less
    runner = compiled(system) if cfg.compile else system
    step = _stepper(cfg, method, runner, theta, seed, T)
    curve = {"steps": [], "seconds": [], "loss": []}
    steps, seconds, compiling, k = 0, 0.0, 0.0, 0
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
        rows = run_cells(store, todo, lambda c: train_curve(cfg, c.estimator, c.seed),
                         desc=f"train {cfg.system}", progress=progress, **backend)
    return {"config": cfg, "rows": rows, "new": new, "summary": summarize(cfg, rows),
            "store": Path(directory) / "results.sqlite"}


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    q = torch.tensor(values, dtype=torch.float64).nanquantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
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


def plot(results: dict, directory: str | Path = "results", prefix: str = "compare") -> list[Path]:
    """``DIR/figures/<prefix>_<system>_{steps,time}.png`` with ``.csv`` data and ``.txt`` caption."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, summary = results["config"], results["summary"]
    figdir = Path(directory) / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    positive = all(v > 0 for s in summary.values() for v in s["q25"] if math.isfinite(v))
    paths = []
    for axis, label in (("steps", "simulated steps"), ("seconds", "wall time excluding evaluation (s)")):
        stem = figdir / f"{prefix}_{cfg.system}_{'steps' if axis == 'steps' else 'time'}"
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        lines = ["method,checkpoint,steps,seconds,loss_q25,loss_median,loss_q75,seeds"]
        for m, s in summary.items():
            x = s[axis]
            (line,) = ax.plot(x, s["median"], marker=".", label=m)
            ax.fill_between(x, s["q25"], s["q75"], color=line.get_color(), alpha=0.2, lw=0)
            lines += [f"{m},{i},{s['steps'][i]:.0f},{s['seconds'][i]:.4g},{s['q25'][i]:.6g},"
                      f"{s['median'][i]:.6g},{s['q75'][i]:.6g},{s['seeds']}" for i in range(len(x))]
        ax.set(xlabel=label, ylabel="L(theta), fixed evaluation episodes",
               title=f"{cfg.system} ({cfg.regime}): meta-training on {cfg.budget:,} steps")
        if positive:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=110)
        plt.close(fig)
        stem.with_suffix(".csv").write_text("\n".join(lines) + "\n")
        stem.with_suffix(".txt").write_text(
            f"Loss of the current theta of {cfg.system} ({cfg.regime} regime, T = "
            f"{make_system(cfg).horizon}) against {label}, for every method on the same budget of "
            f"{cfg.budget:,} simulated steps: median (line) and interquartile band over "
            f"{cfg.seeds} seeds. L(theta) is the mean per-step loss over {cfg.eval_episodes} "
            f"fixed evaluation episodes, not counted in the budget or the time. Gradient "
            f"estimators step {cfg.optimizer} (lr {cfg.lr:g}) after every estimate (online ones "
            f"every K = {cfg.truncation} steps) with N = {cfg.pairs} pairs/keys and sigma = "
            f"{cfg.sigma:g}; strategies (P = {cfg.popsize or 'default'}, initial step "
            f"{cfg.strategy_sigma or cfg.sigma:g}) evaluate each candidate on one full episode "
            f"and report their mean."
            + (" Steps ran through torch.compile; the wall time excludes compilation."
               if cfg.compile else "") + "\n")
        paths.append(stem.with_suffix(".png"))
    return paths


def format_summary(results: dict) -> str:
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``chaosgrad train`` and ``chaosgrad compare``."""
    d = Config()
    p.add_argument("system", help="registered system or an unambiguous prefix (metz)")
    add_backend_arguments(p)
    p.add_argument("--method", "--methods", dest="methods", nargs="+", default=None,
                   help=f"estimators and/or strategies (compare default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--budget", type=int, default=None, help=f"simulated steps per curve (default {d.budget})")
    p.add_argument("--seeds", type=int, default=None, help=f"seeds per method (default {d.seeds})")
    p.add_argument("--regime", default=None, help="the system's regime to start in (default: chaotic "
                   "where the system has one, else regular)")
    p.add_argument("--horizon", type=int, default=None, help="T (default: the system's)")
    p.add_argument("--truncation", type=int, default=None, help=f"K (default {d.truncation})")
    p.add_argument("--sigma", type=float, default=None, help=f"default {d.sigma}")
    p.add_argument("--pairs", type=int, default=None, help=f"N pairs / keys (default {d.pairs})")
    p.add_argument("--popsize", type=int, default=None, help=f"strategies' P (default {d.popsize})")
    p.add_argument("--strategy-sigma", type=float, default=None,
                   help="strategies' initial step size (default: --sigma)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=None)
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    p.add_argument("--checkpoints", type=int, default=None, help=f"default {d.checkpoints}")
    p.add_argument("--eval-episodes", type=int, default=None, help=f"default {d.eval_episodes}")
    p.add_argument("--out", default="results", help="results directory (default: results)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--compile", action="store_true",
                   help="run the system's step through torch.compile (estimators.rollout.compiled;"
                        " eager fallback with a warning); wall times exclude compilation, which "
                        "is reported apart")
    p.add_argument("--quick", action="store_true", help="small, fast settings (a smoke run)")


def config_from_args(args: argparse.Namespace) -> Config:
    from experiments.cli import resolve_system
    system = resolve_system(args.system)
    if args.command == "train" and (not args.methods or len(args.methods) != 1):
        raise ValueError("train takes exactly one --method (compare takes several)")
    regimes = systems.SYSTEMS.get(system).regimes
    regime = args.regime or ("chaotic" if "chaotic" in regimes else "regular")
    given = {"methods": tuple(args.methods) if args.methods else None, "budget": args.budget,
             "seeds": args.seeds, "horizon": args.horizon, "truncation": args.truncation,
             "sigma": args.sigma, "pairs": args.pairs, "popsize": args.popsize,
             "strategy_sigma": args.strategy_sigma,
             "optimizer": args.optimizer, "lr": args.lr, "checkpoints": args.checkpoints,
             "eval_episodes": args.eval_episodes}
    base = QUICK if args.quick else Config()
    cfg = replace(base, system=system, regime=regime, device=args.device, compile=args.compile,
                  **{k: v for k, v in given.items() if v is not None})
    for name in ("budget", "seeds", "checkpoints", "eval_episodes"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for m in cfg.methods:
        estimators.make(m, **hyper(cfg, m, make_system(cfg).horizon))  # bad names / values fail now
    return cfg


def main(args: argparse.Namespace) -> int:
    """``chaosgrad train`` / ``compare``: run the learning curves, plot them, build the report."""
    cfg = config_from_args(args)
    out = Path(args.out)
    with ResultsStore(out) as store:
        store.log_run(sys.argv)
    start = time.perf_counter()
    results = run(cfg, out, **backend_options(args))
    prefix = "compare" if args.command == "compare" else f"train_{cfg.methods[0].replace(':', '-')}"
    figures = plot(results, out, prefix=prefix)
    print(format_summary(results))
    print(f"{len(results['rows'])} curves ({results['new']} computed now) in "
          f"{time.perf_counter() - start:.1f} s; config {asdict(cfg)}")
    print(f"results: {results['store']}")
    print(f"figures: {', '.join(str(p) for p in figures)} (+ .csv data, .txt captions)")
    try:
        from experiments.report import build_report
    except ModuleNotFoundError as err:
        if err.name != "experiments.report":
            raise
        print("report:  not built (experiments.report is not available in this checkout)")
    else:
        print(f"report:  {build_report(out)}")
    return 0

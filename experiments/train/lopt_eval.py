"""``chaosgrad evaluate-lopt DIR``: the learned optimizers meta-trained by ``compare`` on
``learned_optimizer_digits`` against Adam and SGD with momentum, each with its learning rate
tuned on a grid, on held-out inner initialisations, at the meta-training horizon T and at 2T, 4T.

Every optimizer trains the same inner MLP 64-32-10 from the same initialisations on the same
minibatches (both are functions of the episode key and the step, `LearnedOptimizerDigits`),
batched over trajectories (one tensor row per (optimizer, episode), no Python loop over them).
Episode keys come from two streams of their own, never used in meta-training: "tuning" keys
choose each baseline's learning rate (lowest median validation loss after H steps, separately
for each horizon H), "held-out" keys give every number reported. The learned optimizer's
step features depend on t alone, not on T, so one unroll of 4T steps read at T, 2T and 4T is
the same as three unrolls of those lengths.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import Tensor

import systems
from experiments.core.command import Command, add_out_argument
from experiments.core.plotting import save_figure
from experiments.core.resolve import make_system
from experiments.core.store import ResultsStore

__all__ = ["adam_step", "sgd_momentum_step", "baseline_curves", "lopt_curves", "evaluate",
           "format_table", "COMMANDS"]

_HELD_OUT, _TUNING = 0x4E1D, 0x70E  # key streams of their own (meta-training uses others)
ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SGD_LRS = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def adam_step(p: Tensor, m: Tensor, v: Tensor, g: Tensor, t: int, lr: Tensor,
              b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """Adam on a batch: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
    p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps); all ``[B, P]``, lr ``[B, 1]``, t >= 1."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    return p, m, v


def sgd_momentum_step(p: Tensor, buf: Tensor, g: Tensor, lr: Tensor, mu: float = 0.9):
    """SGD with (heavy-ball) momentum on a batch: buf = mu buf + g, p -= lr buf; ``[B, P]``."""
    buf = mu * buf + g
    return p - lr * buf, buf


def _record(system, p: Tensor, out: dict, t: int) -> None:
    ev = system.evaluate(systems.learned_optimizer_digits.DigitsState(p, p.new_zeros(0)))
    out["step"].append(t)
    for name in ("val_loss", "val_accuracy"):
        out[name].append(torch.nan_to_num(ev[name], nan=math.inf))


def _stack(out: dict) -> dict:
    return {"step": out["step"], **{k: torch.stack(out[k], 1) for k in ("val_loss", "val_accuracy")}}


@torch.no_grad()
def baseline_curves(system, name: str, lr: Tensor, keys: Tensor, steps: int, every: int) -> dict:
    """Validation curves of Adam (``name="adam"``) or SGD-momentum (``"sgd"``) on the inner MLP.

    Args:
        lr: ``[B]`` learning rate of each trajectory; keys: ``[B]`` episode keys.
    Returns:
        ``{"step": [S], "val_loss": [B, S], "val_accuracy": [B, S]}`` at t = 0, every, ...
    """
    p = system.init_inner(keys)
    m, v, lr = torch.zeros_like(p), torch.zeros_like(p), lr[:, None].to(p.dtype)
    out = {"step": [], "val_loss": [], "val_accuracy": []}
    _record(system, p, out, 0)
    for t in range(steps):
        x, y = system.minibatch(keys, torch.full_like(keys, t), p.dtype)
        _, g = system.loss_and_grad(p, x, y)
        if name == "adam":
            p, m, v = adam_step(p, m, v, g, t + 1, lr)
        else:
            p, m = sgd_momentum_step(p, m, g, lr)
        if (t + 1) % every == 0:
            _record(system, p, out, t + 1)
    return _stack(out)


@torch.no_grad()
def lopt_curves(system, theta: Tensor, keys: Tensor, steps: int, every: int) -> dict:
    """Validation curves of learned optimizers ``theta [B, D]`` (one per trajectory), as above."""
    state = system.init_state(theta, keys)
    out = {"step": [], "val_loss": [], "val_accuracy": []}
    _record(system, state.params, out, 0)
    for t in range(steps):
        state, _ = system.step(theta, state, torch.full_like(keys, t), keys)
        if (t + 1) % every == 0:
            _record(system, state.params, out, t + 1)
    return _stack(out)


def _keys(stream: int, n: int) -> Tensor:
    return systems.noise.fold(torch.arange(n), stream, 0)


def _tuned(system, name: str, grid: tuple, episodes: int, horizons: list[int], every: int):
    """Per horizon H: the grid's lr with the lowest median tuning validation loss at H, and
    the held-out curves of every lr (one batch: lr-major, tuning keys then held-out keys)."""
    keys = torch.cat([_keys(_TUNING, episodes), _keys(_HELD_OUT, episodes)])
    lr = torch.tensor(grid).repeat_interleave(2 * episodes)
    c = baseline_curves(system, name, lr, keys.repeat(len(grid)), max(horizons), every)
    loss = c["val_loss"].reshape(len(grid), 2, episodes, -1)
    acc = c["val_accuracy"].reshape(len(grid), 2, episodes, -1)
    best = {H: int(loss[:, 0, :, c["step"].index(H)].median(1).values.argmin()) for H in horizons}
    return c["step"], best, loss[:, 1], acc[:, 1]


def _quartiles(x: Tensor) -> list[float]:
    q = torch.tensor([0.25, 0.5, 0.75], dtype=x.dtype)
    return x.float().nanquantile(q.float()).tolist()


def evaluate(directory: str | Path, episodes: int = 16, every: int = 25) -> dict:
    """Held-out validation curves of every meta-trained theta in ``DIR``'s store, of the starting
    optimizer and of tuned Adam / SGD-momentum; the numbers at T, 2T and 4T."""
    with ResultsStore(directory) as store:
        rows = [r for r in store.rows("train") if r["system"] == "learned_optimizer_digits"]
    if not rows:
        raise ValueError(f"{str(directory)!r} holds no learned_optimizer_digits curves; run "
                         f"chaosgrad compare learned_optimizer_digits --out DIR first")
    regimes = {r["params"]["regime"] for r in rows}
    Ts = {r["params"]["T"] for r in rows}
    if len(regimes) != 1 or len(Ts) != 1:
        raise ValueError(f"{directory} mixes regimes {sorted(regimes)} / horizons {sorted(Ts)}")
    regime, T = regimes.pop(), Ts.pop()
    system = make_system("learned_optimizer_digits", regime, {"horizon": T})
    horizons = [T, 2 * T, 4 * T]
    every = math.gcd(every, T)
    held = _keys(_HELD_OUT, episodes)
    thetas = {"lopt (start)": [system.init_params()]}
    for r in sorted(rows, key=lambda r: (r["estimator"], r["seed"])):
        thetas.setdefault(r["estimator"], []).append(torch.tensor(r["metrics"]["theta"]))
    names = list(thetas)
    theta = torch.cat([torch.stack(thetas[n]).repeat_interleave(episodes, 0) for n in names])
    keys = held.repeat(sum(len(thetas[n]) for n in names))
    c = lopt_curves(system, theta, keys, 4 * T, every)
    steps = c["step"]
    result = {"T": T, "regime": regime, "episodes": episodes, "steps": steps, "methods": {}}
    start = 0
    for n in names:
        rows_n = len(thetas[n]) * episodes
        loss, acc = c["val_loss"][start:start + rows_n], c["val_accuracy"][start:start + rows_n]
        start += rows_n
        result["methods"][n] = {
            "seeds": len(thetas[n]),
            "curve_loss": loss.median(0).values.tolist(), "curve_acc": acc.median(0).values.tolist(),
            "at": {H: {"val_loss": _quartiles(loss[:, steps.index(H)]),
                       "val_accuracy": _quartiles(acc[:, steps.index(H)])} for H in horizons}}
    for name, grid in (("adam", ADAM_LRS), ("sgd", SGD_LRS)):
        steps_b, best, loss, acc = _tuned(system, name, grid, episodes, horizons, every)
        result["methods"][f"{name} (tuned)"] = {
            "seeds": 1, "lr": {H: grid[best[H]] for H in horizons},
            "curves_loss": {H: loss[best[H]].median(0).values.tolist() for H in horizons},
            "curves_acc": {H: acc[best[H]].median(0).values.tolist() for H in horizons},
            "at": {H: {"val_loss": _quartiles(loss[best[H], :, steps_b.index(H)]),
                       "val_accuracy": _quartiles(acc[best[H], :, steps_b.index(H)])}
                   for H in horizons}}
    return result


def format_table(result: dict) -> str:
    """Held-out validation loss / accuracy, median [IQR] over seeds x episodes, at T, 2T, 4T."""
    T = result["T"]
    lines = [f"held-out validation of learned_optimizer_digits ({result['regime']}, T = {T}, "
             f"{result['episodes']} held-out inits): median [IQR] over seeds x inits",
             f"{'optimizer':22s}" + "".join(f"{f'loss @ {k}T [IQR]':>31s}{'acc':>7s}" for k in (1, 2, 4))]
    for name, m in result["methods"].items():
        cells = []
        for H in (T, 2 * T, 4 * T):
            lo, med, hi = m["at"][H]["val_loss"]
            cells.append(f"{med:.4g} [{lo:.4g}, {hi:.4g}] {m['at'][H]['val_accuracy'][1]:6.3f}")
        lr = f"  lr {m['lr'][T]:g}/{m['lr'][2 * T]:g}/{m['lr'][4 * T]:g}" if "lr" in m else ""
        lines.append(f"{name:22s}" + "".join(f" {c:>36s}" for c in cells) + lr)
    return "\n".join(lines)


def plot(result: dict, directory: str | Path) -> list[Path]:
    """Validation loss and accuracy against inner steps up to 4T, one column per horizon (the
    baselines at the learning rate tuned for it)."""
    import matplotlib.pyplot as plt
    T, steps = result["T"], result["steps"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey="row")
    rows = []
    for j, H in enumerate((T, 2 * T, 4 * T)):
        n = steps.index(H) + 1
        for name, m in result["methods"].items():
            loss = m["curves_loss"][H] if "curves_loss" in m else m["curve_loss"]
            acc = m["curves_acc"][H] if "curves_acc" in m else m["curve_acc"]
            label = name + (f" lr {m['lr'][H]:g}" if "lr" in m else f" ({m['seeds']} seeds)")
            axes[0, j].plot(steps[:n], loss[:n], label=label)
            axes[1, j].plot(steps[:n], acc[:n], label=label)
            rows += [[H, name, s, a, b] for s, a, b in zip(steps[:n], loss[:n], acc[:n])]
        axes[0, j].set(title=f"horizon {H} ({H // T}T)", yscale="log")
        axes[1, j].set(xlabel="inner step")
        axes[0, j].legend(fontsize=7)
    axes[0, 0].set_ylabel("validation loss (median)")
    axes[1, 0].set_ylabel("validation accuracy (median)")
    fig.tight_layout()
    caption = (f"Held-out inner initialisations ({result['episodes']}): median validation "
               f"loss and accuracy of the inner MLP trained by each meta-trained learned "
               f"optimizer (median over seeds and inits), the starting optimizer, and Adam / "
               f"SGD-momentum with the learning rate tuned for each horizon on other inits. "
               f"Made by: chaosgrad evaluate-lopt DIR.")
    png = save_figure(fig, directory, f"lopt_eval_T{T}", ["horizon", "optimizer", "step",
                                                          "val_loss", "val_accuracy"], rows, caption)
    plt.close(fig)
    return [png]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``chaosgrad evaluate-lopt``."""
    p.add_argument("directory", help="results directory of a compare on learned_optimizer_digits")
    p.add_argument("--episodes", type=int, default=16, help="held-out (and tuning) inits (16)")
    p.add_argument("--every", type=int, default=25, help="inner steps between evaluations (25)")
    add_out_argument(p)


def main(args: argparse.Namespace) -> int:
    """``chaosgrad evaluate-lopt``: evaluate, print the table, write JSON and the figure."""
    for name in ("episodes", "every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    result = evaluate(args.directory, args.episodes, args.every)
    out = Path(args.directory if args.out == "results" else args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lopt_eval.json").write_text(json.dumps(result, default=str, indent=1))
    print(format_table(result))
    print(f"figures: {', '.join(map(str, plot(result, out)))} (+ .csv, .txt)")
    return 0


COMMANDS = (Command("evaluate-lopt", "meta-trained digits learned optimizers vs tuned Adam and "
                    "SGD-momentum on held-out inits at T, 2T, 4T", add_arguments, main),)

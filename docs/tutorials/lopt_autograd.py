"""Tutorial: meta-train a learned optimizer from a plain PyTorch loop, PES inside autograd.

The learned optimizer of ``learned_optimizer_digits`` (a per-parameter MLP, 1762 weights) is an
``nn.Module``; `estimators.unrolled_loss` turns each PES estimate into a loss whose
``backward()`` fills the module's ``.grad`` by the chain rule, and ``torch.optim.Adam`` steps.
Run it with ``python docs/tutorials/lopt_autograd.py`` (about 10 s on one core); the page
docs/tutorials/lopt_autograd.md walks through it.
"""
import torch

import estimators
from systems.learned_optimizer_digits import LearnedOptimizerDigits


# --8<-- [start:module]
class LearnedOptimizer(torch.nn.Module):
    """The MLP optimizer's weights theta [D], and one learning-rate knob shared by all of them.

    theta = weights, with the output layer (the last 2 (H + 1) entries: step direction and
    log-magnitude) scaled by exp(log_lr): theta is a differentiable function of both.
    """

    def __init__(self, theta0: torch.Tensor, hidden: int = 32):
        super().__init__()
        self.weights = torch.nn.Parameter(theta0.clone())
        self.log_lr = torch.nn.Parameter(torch.zeros(()))
        out = torch.zeros_like(theta0)
        out[-2 * (hidden + 1):] = 1.0
        self.register_buffer("out", out)

    def forward(self) -> torch.Tensor:
        return self.weights * torch.exp(self.log_lr * self.out)      # [D]
# --8<-- [end:module]


def held_out_loss(system, theta: torch.Tensor, steps: int = 100, n: int = 8) -> torch.Tensor:
    """Per-key mean inner training loss over ``steps`` steps on keys never used in training."""
    keys = torch.arange(10_000, 10_000 + n)
    rows = theta.detach().expand(n, -1)
    state, total = system.init_state(rows, keys), torch.zeros(n)
    with torch.no_grad():
        for t in range(steps):
            state, loss = system.step(rows, state, torch.full_like(keys, t), keys)
            total += loss
    return total / steps


def main() -> None:
    # --8<-- [start:loop]
    system = LearnedOptimizerDigits(step_mult=0.003)    # its steps are too small
    lopt = LearnedOptimizer(system.init_params())
    opt = torch.optim.Adam([{"params": [lopt.weights], "lr": 3e-3},
                            {"params": [lopt.log_lr], "lr": 0.05}])
    est = estimators.make("pes", sigma=0.01, truncation=10, pairs=8)
    state = est.init(system, lopt().detach(), seed=0)

    before = held_out_loss(system, lopt())
    for it in range(40):                              # 40 windows of 10 inner steps
        loss, state = estimators.unrolled_loss(system, lopt(), est, state)
        opt.zero_grad()
        loss.backward()                               # PES gradient -> weights and log_lr
        opt.step()
        if it % 10 == 9:
            print(f"window {it + 1:3d}  PES window loss {loss.item():.3f}  "
                  f"lr scale {lopt.log_lr.exp().item():.2f}")
    after = held_out_loss(system, lopt())
    # --8<-- [end:loop]
    drop = before - after
    print(f"held-out meta-loss (mean training loss over 100 inner steps, 8 new keys): "
          f"before {before.mean():.3f} after {after.mean():.3f}  "
          f"drop {drop.mean():.3f} +- {drop.std() / len(drop) ** 0.5:.3f}")


if __name__ == "__main__":
    main()

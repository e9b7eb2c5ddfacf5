"""Tutorial: bring your own system.

Define a `systems.System` subclass, check it against the contract, look at its chaos
diagnostics, estimate a gradient with two estimators and ask the advisor which one to use.
Run it with ``python docs/tutorials/own_system.py`` (about 10 s on one CPU core); the page
docs/tutorials/own_system.md walks through it.
"""
# --8<-- [start:system]
import torch

import estimators
import systems
from systems import System, noise


class NoisyRicker(System):
    """Ricker population model with multiplicative noise, theta = (r,).

        x_0     = 0.5 + u(key),                  u ~ U(0, 1)
        x_{t+1} = x_t exp(r (1 - x_t) + s z_t),  z_t ~ N(0, 1) from (key, t)
        l_t     = x_{t+1}

    A stable equilibrium for r < 2, period doubling up to r ~ 2.69, chaos beyond.
    """

    param_dim = 1                 # D: theta = (r,)
    state_dim = 1                 # one coordinate per trajectory (for the diagnostics)
    regimes = {"regular": {"r": 1.8}, "chaotic": {"r": 3.0}}

    def __init__(self, r: float = 3.0, horizon: int = 50, noise_std: float = 0.01):
        self.r, self.horizon, self.noise_std = float(r), horizon, noise_std

    def init_params(self, dtype=torch.float32, device=None):
        return torch.tensor([self.r], dtype=dtype, device=device)          # [D]

    def init_state(self, theta, keys):
        # theta [B, D], keys [B] int64 -> state [B, 1]; randomness from the key only
        return 0.5 + noise.uniform(keys, 0, stream=0, shape=(1,), dtype=theta.dtype)

    def step(self, theta, state, t, keys):
        # t [B]: each trajectory's own step index, so the noise is a function of (key, t)
        z = noise.normal(keys, t, stream=1, shape=(1,), dtype=theta.dtype)
        nxt = state * torch.exp(theta[:, :1] * (1.0 - state) + self.noise_std * z)
        return nxt, nxt[:, 0]                                               # state, loss [B]
# --8<-- [end:system]


def main() -> None:
    # --8<-- [start:check]
    system = NoisyRicker(r=3.0)
    report = systems.check_system(system)
    print(report)
    assert report.ok and report.differentiable
    # --8<-- [end:check]

    # --8<-- [start:diagnostics]
    theta = system.init_params(dtype=torch.float64)
    lyap = systems.lyapunov_exponents(system, theta, steps=200, trajectories=16)
    growth = systems.gradient_growth_rate(system, theta, horizons=[5, 10, 15, 20])
    print(f"leading Lyapunov exponent {lyap.per_step[0]:.3f} +/- {lyap.stderr[0]:.3f} per step; "
          f"log std of the BPTT gradient grows {growth.slope:.3f} per step")
    # --8<-- [end:diagnostics]

    # --8<-- [start:estimate]
    for name, hp in [("bptt", {"samples": 16}),
                     ("pes", {"truncation": 10, "pairs": 16, "sigma": 0.05})]:
        est = estimators.make(name, **hp)
        e, _ = est.estimate(system, theta, est.init(system, theta, seed=0))
        var = e.samples.var(0).sum() / len(e.samples)       # variance of this estimate
        print(f"{name:5s} grad {e.grad.item():+.3g}  variance {var.item():.3g}  "
              f"steps {e.steps}  non-finite {e.nonfinite}")
    # --8<-- [end:estimate]

    # --8<-- [start:advise]
    from experiments.advise import advise, format_advice

    advice = advise(system, budget_steps=400_000, seed=0)
    print(format_advice(advice))
    print("recommended:", advice.recommendation)
    # --8<-- [end:advise]


if __name__ == "__main__":
    main()

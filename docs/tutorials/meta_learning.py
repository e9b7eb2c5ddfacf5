"""Tutorial: use an estimator from your own meta-learning code.

A plain ``torch.optim`` loop that steps theta after every window of K steps, with online PES as
the gradient, on the PES paper's influence-balancing task; the same loop with truncated BPTT
(K = 10) walks the wrong way. Run it with ``python docs/tutorials/meta_learning.py`` (a few
seconds); the page docs/tutorials/meta_learning.md walks through it.
"""
import torch

import estimators
import systems


# --8<-- [start:loop]
def meta_train(name: str, steps: int = 600, **hyper) -> float:
    """Meta-train theta of influence_balancing with an online estimator; returns theta."""
    system = systems.make("influence_balancing")          # or your own systems.System
    theta = torch.nn.Parameter(system.init_params(dtype=torch.float64))   # [D] = [1], 0.5
    opt = torch.optim.SGD([theta], lr=5e-4)

    est = estimators.make(name, **hyper)
    state = est.init(system, theta, seed=0)
    for _ in range(steps):
        e, state = est.estimate(system, theta, state)     # one window of K steps
        if not e.ok:                                      # every sample overflowed
            raise FloatingPointError(f"{name}: no finite sample")
        opt.zero_grad()
        theta.grad = e.grad                               # [D], plugs into any torch.optim
        opt.step()
    return theta.item()
# --8<-- [end:loop]


def main() -> None:
    # --8<-- [start:run]
    optimum = systems.make("influence_balancing").exact_optimum()      # -0.1465 at T = 1000
    pes = meta_train("pes", sigma=0.01, truncation=10, pairs=32)
    tbptt = meta_train("truncated_bptt", steps=100, truncation=10, samples=1)
    print(f"optimum {optimum:+.4f}   start +0.5000")
    print(f"PES (K = 10)            theta {pes:+.4f}")
    print(f"TruncatedBPTT (K = 10)  theta {tbptt:+.4f}   after 100 windows: the wrong way")
    # --8<-- [end:run]


if __name__ == "__main__":
    main()

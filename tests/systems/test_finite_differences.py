"""Autograd through every differentiable registered system matches central finite differences.

Each system is built in its ``"regular"`` regime with a short horizon and run in float64; the
gradient of the mean per-step loss of each episode key (per row of theta) is compared with
central differences coordinate by coordinate, to 6 significant digits. All 2 D perturbed rows
of all keys run in one batch, which the contract's batch independence makes legitimate.

The step h balances the two errors of a central difference: truncation h^2 |L'''| / 6 and
rounding ~ eps |L| / h, optimal at h ~ eps^(1/3) ~ 6e-6 (relative to |theta_i| when larger);
in a regular regime both stay below 1e-6 of the gradient. A system registered later (for
example ``mass_spring_walker``) is picked up automatically.
"""
import inspect

import pytest
import torch

import systems

F64 = torch.float64
T = 20          # short horizon: "regular" stays regular, FD stays cheap
KEYS = (0, 1, 2)
REL = 1e-6      # 6 significant digits
EPS64 = torch.finfo(F64).eps


def build(name):
    cls = systems.SYSTEMS.get(name)
    kwargs = dict(cls.regimes["regular"])
    if "horizon" in inspect.signature(cls).parameters:
        kwargs["horizon"] = T
    return cls(**kwargs)


# Systems that declare ``smooth = False`` (MuJoCo's contact stiffness leaves a 20-step central
# difference itself off by ~1e-5; learned_optimizer_digits' inner ReLU makes its loss jump within
# h along a third of the directions) check their gradient in their own tests, between the jumps.
DIFFERENTIABLE = [n for n in systems.available() if (s := build(n)).differentiable and s.smooth]


def mean_losses(system, rows, keys):
    """Mean per-step loss over T steps, ``[B]``, for theta rows ``[B, D]``."""
    state = system.init_state(rows, keys)
    total = torch.zeros(rows.shape[0], dtype=rows.dtype)
    for t in range(T):
        state, loss = system.step(rows, state, torch.full_like(keys, t), keys)
        total = total + loss
    return total / T


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_autograd_matches_central_differences(name):
    system = build(name)
    theta = system.init_params(dtype=F64)
    D, n = theta.shape[0], len(KEYS)
    keys = torch.tensor(KEYS, dtype=torch.int64)

    rows = theta.expand(n, D).clone().requires_grad_()
    losses = mean_losses(system, rows, keys)
    (grad,) = torch.autograd.grad(losses.sum(), rows)       # [n, D], row i from key i only

    h = EPS64 ** (1 / 3) * theta.abs().clamp(min=1.0)        # [D]
    step = torch.diag(h)                                      # [D, D]
    plus = (theta + step).repeat(n, 1)                        # [n * D, D], key-major
    minus = (theta - step).repeat(n, 1)
    k = keys.repeat_interleave(D)
    with torch.no_grad():
        fd = (mean_losses(system, plus, k) - mean_losses(system, minus, k)).reshape(n, D) / (2 * h)

    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    err = (fd - grad).abs()
    # Rounding of L in the difference, eps |L| / h, bounds what any step can resolve; it is far
    # below REL |grad| except for a coordinate whose derivative is (near) zero.
    floor = 4 * EPS64 * losses.detach().abs()[:, None] / h
    bad = err > REL * grad.abs() + floor
    assert not bad.any(), (f"{name}: autograd vs central differences differ at "
                           f"{bad.nonzero().tolist()}: max rel err "
                           f"{(err / grad.abs().clamp(min=1e-300)).max().item():.2e}")

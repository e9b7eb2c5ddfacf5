"""Per-pair full-horizon estimates: the draws behind every bias / variance measurement.

An estimator's ``samples`` are independent per-pair (per-key) contributions. For a full-horizon
estimator one call gives them; an online estimator's per-pair estimate of the full-horizon
gradient is the mean of that pair's T/K window contributions over one lockstep episode (pairs
stay aligned across windows only while no row is dropped as non-finite).
"""
from __future__ import annotations

import inspect

import torch

import estimators

__all__ = ["estimator_kwargs", "episode_estimates"]


def estimator_kwargs(name: str, *, horizon: int, n: int, truncation: int | None = None,
                     sigma: float | None = None) -> dict:
    """The shared hyper-parameters that estimator ``name`` accepts: ``horizon``, ``truncation``
    and ``sigma`` (when not None), and ``n`` as its ``samples`` or ``pairs``."""
    params = inspect.signature(estimators.ESTIMATORS.get(name)).parameters
    hp = {"horizon": horizon, "truncation": truncation, "sigma": sigma, "samples": n, "pairs": n}
    return {k: v for k, v in hp.items() if k in params and v is not None}


def episode_estimates(name: str, hp: dict, system, theta: torch.Tensor,
                      seed: int) -> tuple[torch.Tensor, int, int]:
    """``(per-pair full-horizon estimates [N', D], non-finite count, simulated steps)``.

    Online estimators run ``horizon // truncation`` windows; if any window dropped a row the
    rows no longer align, so no estimate is returned (``[0, D]``) and the count is the largest
    number of rows a window dropped.
    """
    est = estimators.make(name, **hp)
    state = est.init(system, theta, seed=seed)
    if not est.online:
        e, _ = est.estimate(system, theta, state)
        return e.samples, e.nonfinite, e.steps
    windows, steps, bad = [], 0, 0
    for _ in range(hp["horizon"] // hp["truncation"]):
        e, state = est.estimate(system, theta, state)
        steps, bad = steps + e.steps, max(bad, e.nonfinite)
        windows.append(e.samples)
    if bad:
        return windows[0][:0], bad, steps
    return torch.stack(windows).mean(0), 0, steps

"""Per-pair full-horizon estimates and episode losses: the draws behind every measurement.

An estimator's ``samples`` are independent per-pair (per-key) contributions. For a full-horizon
estimator one call gives them; an online estimator's per-pair estimate of the full-horizon
gradient is the mean of that pair's T/K window contributions over one lockstep episode (pairs
stay aligned across windows only while no row is dropped as non-finite).

    hp = estimator_kwargs("pes", horizon=100, n=64, truncation=10, sigma=0.01)
    draws = episode_estimates("pes", hp, system, theta, seed=0)     # draws.samples [64, D]
    losses = episode_losses(system, rows, keys, horizon=100)        # [B] mean per-step losses
"""
from __future__ import annotations

import inspect
from typing import NamedTuple

import torch

import estimators
from estimators.rollout import unroll

__all__ = ["estimator_kwargs", "EpisodeEstimates", "episode_estimates", "episode_losses"]


def estimator_kwargs(name: str, *, horizon: int | None = None, n: int | None = None,
                     truncation: int | None = None, sigma: float | None = None,
                     **extra) -> dict:
    """The hyper-parameters that estimator (or strategy) ``name``'s constructor accepts.

    Candidates: ``horizon``, ``truncation``, ``sigma``, ``n`` as its ``samples`` or ``pairs``,
    and any ``extra`` keyword (``popsize=16``); those given as None are left out, so a caller
    that passes no ``sigma`` gets the estimator's default (for BPTT: the plain gradient).

    Raises:
        ValueError: for an unknown name (the registry's message lists the choices).
    """
    params = inspect.signature(estimators.ESTIMATORS.get(name)).parameters
    hp = {"horizon": horizon, "truncation": truncation, "sigma": sigma, "samples": n, "pairs": n,
          **extra}
    return {k: v for k, v in hp.items() if k in params and v is not None}


class EpisodeEstimates(NamedTuple):
    """Per-pair full-horizon estimates of one estimator at one theta.

    ``samples [N', D]`` (N' = N minus the dropped pairs; ``[0, D]`` when an online estimator
    dropped rows, since its windows no longer align), ``nonfinite`` (pairs dropped; for an
    online estimator the largest number one window dropped), ``steps`` simulated and ``loss``,
    the mean per-step loss (online: the mean of the windows' losses).
    """

    samples: torch.Tensor
    nonfinite: int
    steps: int
    loss: float


def episode_estimates(name: str, hp: dict, system, theta: torch.Tensor,
                      seed: int) -> EpisodeEstimates:
    """One full-horizon estimate of estimator ``name`` (``estimators.make(name, **hp)``) at
    ``theta [D]`` with ``seed``, as per-pair draws.

    Online estimators run ``T // K`` lockstep windows (T = the estimator's horizon for
    ``system``) and each pair's estimate is the mean of its window contributions.
    """
    est = estimators.make(name, **hp)
    state = est.init(system, theta, seed=seed)
    if not est.online:
        e, _ = est.estimate(system, theta, state)
        return EpisodeEstimates(e.samples, e.nonfinite, e.steps, float(e.loss))
    windows, losses, steps, bad = [], [], 0, 0
    for _ in range(est.horizon_for(system) // est.truncation):
        e, state = est.estimate(system, theta, state)
        steps, bad = steps + e.steps, max(bad, e.nonfinite)
        windows.append(e.samples)
        losses.append(float(e.loss))
    loss = sum(losses) / len(losses)
    if bad:
        return EpisodeEstimates(windows[0][:0], bad, steps, loss)
    return EpisodeEstimates(torch.stack(windows).mean(0), 0, steps, loss)


def episode_losses(system, theta: torch.Tensor, keys: torch.Tensor,
                   horizon: int) -> torch.Tensor:
    """``[B]`` mean per-step loss (1/T) sum_t l_t of B full episodes from `init_state`.

    Args:
        theta: ``[B, D]`` parameters, one row per episode.
        keys: ``[B]`` int64 episode keys.
        horizon: T, the steps of each episode.
    The unroll is `estimators.rollout.unroll` (so a `compiled` system runs its compiled step);
    gradients flow to ``theta`` unless the caller disables them.
    """
    state = system.init_state(theta, keys)
    t = torch.zeros_like(keys)
    seg = unroll(system, theta, state, t, t, lambda _: keys, horizon, horizon)
    return seg.loss_pre / horizon

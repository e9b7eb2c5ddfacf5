"""`advise`: measure -> score -> evidence, the advisor as one call."""
from __future__ import annotations

import math

import torch

import systems

from .measure import measure
from .model import F64, SIGMAS, Advice
from .render import evidence
from .score import score

__all__ = ["advise"]


def _theta(system: systems.System, theta) -> torch.Tensor:
    th = (system.init_params(dtype=F64) if theta is None else torch.as_tensor(theta)).detach()
    if not th.is_floating_point() or th.shape != (system.param_dim,):
        raise ValueError(f"theta must be {system.param_dim} floats, got shape {list(th.shape)}")
    return th.to(F64)


def advise(system: systems.System, theta: torch.Tensor | None = None, *, horizon: int | None = None,
           budget_steps: int | None = None, time_limit: float | None = None, seed: int = 0,
           sigmas: tuple[float, ...] = SIGMAS, draws: int | None = None) -> Advice:
    """Measure the estimators on ``system`` at ``theta`` and horizon T; recommend one.

    Args:
        system: any `System`; it is first checked with `systems.check_system`.
        theta: ``[D]`` (default ``init_params``), used in float64.
        horizon: T (default the system's ``horizon``).
        budget_steps: simulated trajectory-steps the measurements may use (sets the number of
            draws M per candidate; phases that no longer fit are skipped and listed).
        time_limit: seconds; phases that would overrun are skipped and listed.
        seed: fixes every key and perturbation.
        sigmas: the ES smoothing grid.
        draws: M per candidate (default from the budget, else 128).
    Returns:
        An `Advice`: `experiments.advise.measure.measure`, scored by
        `experiments.advise.score.score`, explained by `experiments.advise.render.evidence`.
    Raises:
        ValueError: when the system fails the contract (one line listing the failures), or on
            bad arguments.
    """
    if not isinstance(system, systems.System):
        raise ValueError(f"not a systems.System: {type(system).__name__}")
    T = system.horizon if horizon is None else horizon
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {T!r}")
    for label, v in (("budget", budget_steps), ("time", time_limit)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{label} must be > 0, got {v!r}")
    if not sigmas or any(not (math.isfinite(s) and s > 0) for s in sigmas):
        raise ValueError(f"every sigma must be > 0, got {list(sigmas)}")
    m = measure(system, _theta(system, theta), T, budget_steps=budget_steps,
                time_limit=time_limit, seed=seed, sigmas=sigmas, draws=draws)
    advice = score(m)
    advice.evidence = evidence(advice)
    return advice

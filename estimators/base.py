"""The Estimator contract, the Estimate it returns, input validation and the non-finite rule."""
from __future__ import annotations

import abc
import contextlib
import contextvars
import math
from typing import Any, Iterator, NamedTuple

import torch
from torch import Tensor

from systems import System, noise

__all__ = ["Estimate", "Estimator", "finite_estimate", "episode_keys", "perturbations",
           "particle_block"]

# Streams of the estimators' own noise (systems use small stream numbers with episode keys).
_PERTURB = 0x5EED

# (offset, total) of the block of particles the current estimator call simulates; (0, None)
# outside `particle_block`. Internal: lets a shard of a population (estimators.distributed)
# reproduce exactly the keys, perturbations and stagger offsets its particles have in the
# single-process run, without a hyper-parameter on every estimator.
_BLOCK: contextvars.ContextVar[tuple[int, int | None]] = contextvars.ContextVar(
    "particle_block", default=(0, None))


@contextlib.contextmanager
def particle_block(offset: int, total: int) -> Iterator[None]:
    """Make estimator calls inside act as particles ``offset .. offset + n - 1`` of ``total``.

    Inside the block, particle index i of an estimator with n particles derives its episode
    keys and perturbations as particle ``offset + i``, and staggered offsets are spread over
    ``total`` particles; so contiguous shards of a population reproduce the single-process run.
    """
    token = _BLOCK.set((int(offset), int(total)))
    try:
        yield
    finally:
        _BLOCK.reset(token)


class Estimate(NamedTuple):
    """One gradient estimate.

    Attributes:
        grad: ``[D]``, the mean of ``samples`` (NaN when no sample was finite).
        loss: scalar, mean per-step loss of the finite samples' trajectories.
        samples: ``[N', D]`` independent per-sample contributions, non-finite ones dropped,
            so ``grad == samples.mean(0)`` and the variance is ``samples.var(0) / N'``.
        steps: trajectory-steps simulated for this estimate.
        nonfinite: number of samples dropped because their gradient or loss was NaN or inf.
    """

    grad: Tensor
    loss: Tensor
    samples: Tensor
    steps: int
    nonfinite: int

    @property
    def ok(self) -> bool:
        """False when every sample was non-finite (then ``grad`` is NaN)."""
        return self.samples.shape[0] > 0


def finite_estimate(samples: Tensor, losses: Tensor, steps: int) -> Estimate:
    """Apply the non-finite rule and package an `Estimate`.

    A sample is dropped when any entry of its gradient contribution or its loss is NaN or inf;
    ``grad`` is the mean of the rest and ``nonfinite`` counts the dropped ones. If nothing is
    left, ``grad`` and ``loss`` are NaN, ``samples`` is empty and ``nonfinite`` equals N, so a
    training loop that ignores the flag fails loudly rather than silently.

    Args:
        samples: ``[N, D]`` per-sample gradient contributions.
        losses: ``[N]`` per-sample mean per-step losses.
        steps: trajectory-steps simulated.
    """
    keep = torch.isfinite(samples).all(dim=1) & torch.isfinite(losses)
    kept = samples[keep]
    n = kept.shape[0]
    if n:
        grad, loss = kept.mean(0), losses[keep].mean()
    else:
        grad = torch.full_like(samples[0], math.nan)
        loss = torch.full_like(losses[0], math.nan)
    return Estimate(grad, loss, kept, int(steps), samples.shape[0] - n)


def episode_keys(seed: Tensor, particle: Tensor, episode: Tensor) -> Tensor:
    """Episode keys ``[B]`` as a pure function of (seed, particle index, episode counter)."""
    particle = particle + _BLOCK.get()[0]
    return noise.fold(seed.expand(particle.shape), particle, episode)


def perturbations(seed: Tensor, particle: Tensor, counter: Tensor | int, dim: int,
                  dtype: torch.dtype) -> Tensor:
    """Gaussian perturbation directions eps ``[B, dim]`` for (seed, particle, counter)."""
    particle = particle + _BLOCK.get()[0]
    keys = noise.fold(seed.expand(particle.shape), particle, _PERTURB)
    return noise.normal(keys, counter, stream=_PERTURB, shape=(dim,), dtype=dtype)


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _check_sigma(sigma: Any, allow_zero: bool) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a float, got {type(sigma).__name__}")
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0 or (sigma == 0 and not allow_zero):
        raise ValueError(f"sigma must be {'>= 0' if allow_zero else '> 0'} and finite, got {sigma}")
    return sigma


class Estimator(abc.ABC):
    """A gradient estimator for ``L(theta)`` of a `System`.

    Hyper-parameters are validated in the constructor and not changed afterwards; everything
    that changes between calls lives in the state returned by `init` and `estimate`.

    Example::

        est = estimators.make("pes", sigma=0.1, truncation=10, pairs=64)
        state = est.init(system, theta, seed=0)
        e, state = est.estimate(system, theta, state)
        theta.grad = e.grad
    """

    name: str = ""
    online: bool = False  # True for estimators that advance `truncation` steps per call
    needs_grad: bool = False  # True for pathwise estimators

    def __init__(self, *, horizon: int | None = None, truncation: int | None = None):
        self.horizon = None if horizon is None else _check_int("horizon", horizon)
        self.truncation = None if truncation is None else _check_int("truncation", truncation)
        if self.horizon is not None and self.truncation is not None and self.truncation > self.horizon:
            raise ValueError(f"truncation K={self.truncation} exceeds horizon T={self.horizon}")

    @abc.abstractmethod
    def init(self, system: System, theta: Tensor, *, seed: int) -> Any:
        """The state before the first call; runs staggered burn-in for online estimators."""

    @abc.abstractmethod
    def estimate(self, system: System, theta: Tensor, state: Any) -> tuple[Estimate, Any]:
        """One estimate of the gradient at ``theta`` ``[D]`` and the next state."""

    def horizon_for(self, system: System) -> int:
        """T: the ``horizon`` hyper-parameter if given, else the system's default."""
        T = self.horizon if self.horizon is not None else system.horizon
        if self.truncation is not None and self.truncation > T:
            raise ValueError(f"truncation K={self.truncation} exceeds horizon T={T} of {system.name}")
        return T

    def check(self, system: System, theta: Tensor) -> Tensor:
        """Validate the system and ``theta`` and return ``theta`` detached."""
        if not isinstance(system, System):
            raise TypeError(f"system must be a systems.System, got {type(system).__name__}")
        if self.needs_grad and not system.differentiable:
            raise ValueError(f"{self.name} needs a differentiable system; {system.name} is not")
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
        if not theta.is_floating_point():
            raise TypeError(f"theta must have a floating dtype, got {theta.dtype}")
        if theta.shape != (system.param_dim,):
            raise ValueError(f"theta must have shape [{system.param_dim}] for {system.name}, "
                             f"got {list(theta.shape)}")
        if not bool(torch.isfinite(theta).all()):
            raise ValueError("theta contains NaN or inf")
        self.horizon_for(system)
        return theta.detach()

    def seed_tensor(self, seed: Any, theta: Tensor) -> Tensor:
        """The seed as an int64 scalar on theta's device (TypeError for a non-int)."""
        return torch.tensor(_check_int("seed", seed, low=0), dtype=torch.int64, device=theta.device)

    def __repr__(self) -> str:
        hp = {k: v for k, v in vars(self).items() if v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in hp.items())})"

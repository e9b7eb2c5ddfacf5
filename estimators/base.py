"""The Estimator contract, the Estimate it returns, particle identity and the non-finite rule.

Particle identity travels with the state. Every estimator state records its ``seed``, the
population indices ``particle`` ``[n]`` of the particles it holds (``offset .. offset + n - 1``)
and the ``population`` size, all set by `Estimator.init`. Episode keys, perturbations and stagger
offsets are pure functions of these, so a contiguous block of a population (a shard on another
process, see `estimators.distributed`) is an ordinary state, and its samples are exactly those
rows of the single-process estimate.
"""
from __future__ import annotations

import abc
import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from systems import System, noise
from systems.validation import check_int, check_sigma

from .resolution import check_resolution

__all__ = ["Estimate", "Estimator", "finite_estimate", "episode_keys", "perturbations",
           "block_of"]

# Streams of the estimators' own noise (systems use small stream numbers with episode keys).
_PERTURB = 0x5EED


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
    """Episode keys ``[B]`` as a pure function of (seed, population index, episode counter).

    ``particle`` holds population indices (a state's ``particle``, repeated for the two members
    of antithetic pairs), so particle i of a block draws the keys of particle i of the population.
    """
    return noise.fold(seed.expand(particle.shape), particle, episode)


def perturbations(seed: Tensor, particle: Tensor, counter: Tensor | int, dim: int,
                  dtype: torch.dtype) -> Tensor:
    """Gaussian perturbation directions eps ``[B, dim]`` for (seed, population index, counter)."""
    keys = noise.fold(seed.expand(particle.shape), particle, _PERTURB)
    return noise.normal(keys, counter, stream=_PERTURB, shape=(dim,), dtype=dtype)


def block_of(state: Any) -> tuple[int, int, int]:
    """``(offset, n, population)`` of the particles a state holds (one host read).

    The state holds particles ``offset .. offset + n - 1`` of a population of ``population``.
    """
    n = state.particle.shape[0]
    offset = int(state.particle[0]) if n else 0
    return offset, n, int(state.population)


class Estimator(abc.ABC):
    """A gradient estimator for ``L(theta)`` of a `System`.

    Hyper-parameters are validated in the constructor and not changed afterwards; everything
    that changes between calls lives in the state returned by `init` and `estimate`. The
    constructor validates the shared hyper-parameters it is given (``pairs`` or ``samples``: the
    n particles of one estimate, ``sigma``, ``truncation``, ``horizon``, ``stagger``); a name
    that is not given is not an attribute of the estimator.

    Example::

        est = estimators.make("pes", sigma=0.1, truncation=10, pairs=64)
        state = est.init(system, theta, seed=0)
        e, state = est.estimate(system, theta, state)
        theta.grad = e.grad
    """

    name: str = ""
    online: bool = False  # True for estimators that advance `truncation` steps per call
    needs_grad: bool = False  # True for pathwise estimators
    particles_attr: str = "pairs"  # the hyper-parameter that holds n ("pairs" or "samples")
    min_particles: int = 1  # smallest n
    sigma_may_be_zero: bool = False  # sigma = 0 allowed (pathwise estimators: no smoothing)

    def __init__(self, *, horizon: int | None = None, truncation: int | None = None,
                 pairs: int | None = None, samples: int | None = None,
                 sigma: float | None = None, stagger: bool | None = None):
        self.horizon = None if horizon is None else check_int("horizon", horizon)
        self.truncation = None if truncation is None else check_int("truncation", truncation)
        if self.horizon is not None and self.truncation is not None and self.truncation > self.horizon:
            raise ValueError(f"truncation K={self.truncation} exceeds horizon T={self.horizon}")
        for attr, value in (("pairs", pairs), ("samples", samples)):
            if value is not None:
                setattr(self, attr, check_int(attr, value, low=self.min_particles))
        if sigma is not None:
            self.sigma = check_sigma(sigma, allow_zero=self.sigma_may_be_zero)
        if stagger is not None:
            self.stagger = bool(stagger)

    @abc.abstractmethod
    def init(self, system: System, theta: Tensor, *, seed: int, offset: int = 0,
             population: int | None = None) -> Any:
        """The state before the first call; runs staggered burn-in for online estimators.

        The state holds this estimator's n particles as particles ``offset .. offset + n - 1``
        of a population of ``population`` (default ``offset + n``: the whole population).
        """

    @abc.abstractmethod
    def estimate(self, system: System, theta: Tensor, state: Any) -> tuple[Estimate, Any]:
        """One estimate of the gradient at ``theta`` ``[D]`` and the next state."""

    @property
    def separable(self) -> bool:
        """Whether a block's samples are those rows of the population's estimate (False for a
        fitness-shaped ES estimator: the shaping couples every pair of the estimate)."""
        return getattr(self, "shaping", None) is None

    def horizon_for(self, system: System) -> int:
        """T: the ``horizon`` hyper-parameter if given, else the system's default."""
        T = self.horizon if self.horizon is not None else system.horizon
        if self.truncation is not None and self.truncation > T:
            raise ValueError(f"truncation K={self.truncation} exceeds horizon T={T} of {system.name}")
        return T

    def check(self, system: System, theta: Tensor) -> Tensor:
        """Validate the system and ``theta`` and return ``theta`` detached.

        With a ``sigma`` > 0, also that theta + sigma eps is resolved in theta's dtype
        (`estimators.resolution.check_resolution`: ValueError naming the smallest usable
        sigma); checked on every call, because theta moves during training.
        """
        if not isinstance(system, System):
            raise TypeError(f"system must be a systems.System, got {type(system).__name__}")
        if self.needs_grad and not system.differentiable:
            why = getattr(system, "nondifferentiable_reason", None)
            raise ValueError(f"{self.name} needs a differentiable system; pathwise unavailable "
                             f"on {system.name}" + (f": {why}" if why else ""))
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
        if not theta.is_floating_point():
            raise TypeError(f"theta must have a floating dtype, got {theta.dtype}")
        if theta.shape != (system.param_dim,):
            raise ValueError(f"theta must have shape [{system.param_dim}] for {system.name}, "
                             f"got {list(theta.shape)}")
        theta = theta.detach()
        # one host read for both checks: max |theta| is NaN or inf iff an entry is
        absmax = float(theta.abs().amax()) if theta.numel() else 0.0
        if not math.isfinite(absmax):
            raise ValueError("theta contains NaN or inf")
        check_resolution(getattr(self, "sigma", 0.0), absmax, theta.dtype)
        self.horizon_for(system)
        return theta

    def seed_tensor(self, seed: Any, theta: Tensor) -> Tensor:
        """The seed as an int64 scalar on theta's device (TypeError for a non-int)."""
        return torch.tensor(check_int("seed", seed, low=0), dtype=torch.int64, device=theta.device)

    def identity(self, theta: Tensor, seed: Any, offset: Any = 0,
                 population: Any = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(seed, particle, population)`` of a new state, int64 on theta's device.

        ``particle`` ``[n]`` is ``offset .. offset + n - 1`` for this estimator's n particles;
        ``population`` defaults to ``offset + n``. ValueError/TypeError naming a bad value.
        """
        n = getattr(self, self.particles_attr)
        offset = check_int("offset", offset, low=0)
        population = offset + n if population is None else check_int("population", population)
        if offset + n > population:
            raise ValueError(f"particles {offset}..{offset + n - 1} ({self.particles_attr}={n} "
                             f"from offset={offset}) do not fit in population={population}")
        device = theta.device
        return (self.seed_tensor(seed, theta),
                torch.arange(offset, offset + n, dtype=torch.int64, device=device),
                torch.tensor(population, dtype=torch.int64, device=device))

    def particles(self, state: Any) -> Tensor:
        """The population indices ``[n]`` of ``state``'s particles.

        Raises ValueError when the state holds another number of particles than this
        estimator's n: a block's state is stepped by the estimator of that block only.
        """
        n = getattr(self, self.particles_attr)
        if state.particle.shape[0] != n:
            offset, held, population = block_of(state)
            raise ValueError(f"the state holds particles {offset}..{offset + held - 1} of a "
                             f"population of {population}, but this {type(self).__name__} has "
                             f"{self.particles_attr}={n}: step a state with an estimator of "
                             "its own block")
        return state.particle

    def __repr__(self) -> str:
        hp = {k: v for k, v in vars(self).items() if v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in hp.items())})"

"""The ask/tell `Strategy` contract of black-box optimizers that search theta directly.

A gradient `Estimator` feeds a ``torch.optim`` optimizer; a `Strategy` is the optimizer:

    strategy = estimators.make("cmaes", sigma=0.1, popsize=16).init(theta, seed=0)
    for generation in range(G):
        candidates = strategy.ask()                  # [P, D]
        metrics = strategy.tell(loss(candidates))    # fitness [P], lower is better
    theta = strategy.mean                            # [D]

The wrapped libraries (pycma, evosax, nevergrad) are stateful, so unlike an Estimator a Strategy
holds its state; ``state_dict()`` / ``load_state_dict()`` checkpoint it, and every random draw
follows from the ``seed`` given to ``init``.
"""
from __future__ import annotations

import abc
import contextlib
import math
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from systems.validation import check_int, check_sigma

from ..resolution import check_resolution

__all__ = ["Strategy", "default_popsize", "isolated_numpy_rng"]


def default_popsize(dim: int, even: bool = False) -> int:
    """pycma's default population size 4 + floor(3 ln D), rounded up to even if asked."""
    p = 4 + int(3 * math.log(dim))
    return p + (p % 2) if even else p


@contextlib.contextmanager
def isolated_numpy_rng(holder: Any) -> Iterator[None]:
    """Run a block with ``holder._np_state`` as numpy's global RNG, then restore the caller's.

    pycma and some nevergrad optimizers draw from (and pycma reseeds) ``np.random``; swapping a
    private state in and out keeps them reproducible and leaves the user's global RNG untouched.
    """
    outer = np.random.get_state()
    if getattr(holder, "_np_state", None) is not None:
        np.random.set_state(holder._np_state)
    try:
        yield
    finally:
        holder._np_state = np.random.get_state()
        np.random.set_state(outer)


class Strategy(abc.ABC):
    """An ask/tell black-box optimizer of theta ``[D]`` (minimises the told fitness).

    Args:
        sigma: initial search scale (> 0), in units of theta.
        popsize: candidates per generation P (>= 2); None picks the library's default.
    """

    name: str = ""
    online = False       # registry-wide flags shared with `Estimator`
    needs_grad = False
    antithetic = False   # True where P must be even (mirrored halves)
    working_dtype = torch.float64  # the dtype the library draws candidates in

    def __init__(self, sigma: float = 0.1, popsize: int | None = None):
        self.sigma = check_sigma(sigma, allow_zero=False)
        self.popsize = None if popsize is None else check_int("popsize", popsize, low=2)
        if self.antithetic and self.popsize is not None and self.popsize % 2:
            raise ValueError(f"popsize must be even for {type(self).__name__}, got {self.popsize}")
        self._started = False

    # -- what an adapter implements --------------------------------------------------------
    @abc.abstractmethod
    def _start(self, theta: Tensor, popsize: int, seed: int) -> None:
        """Start the search at ``theta`` (float64 CPU ``[D]``) with P = ``popsize``."""

    @abc.abstractmethod
    def _ask(self) -> Tensor:
        """``[P, D]`` candidates (any float dtype, CPU)."""

    @abc.abstractmethod
    def _tell(self, fitness: Tensor) -> dict:
        """Update with float64 finite fitness ``[P]``; library-specific metrics."""

    @abc.abstractmethod
    def _mean(self) -> Tensor:
        """``[D]`` the current search mean (or the library's recommendation)."""

    @abc.abstractmethod
    def _state(self) -> dict:
        """Everything `_load` needs to continue the search identically."""

    @abc.abstractmethod
    def _load(self, state: dict) -> None:
        """Restore `_state`'s output (the strategy's hyper-parameters are already set)."""

    # -- the public ask/tell surface -------------------------------------------------------
    def init(self, theta: Tensor, *, seed: int) -> "Strategy":
        """Start (or restart) the search at ``theta`` ``[D]``; returns ``self``.

        Raises a ValueError when the initial ``sigma`` is below the resolution of theta's dtype
        (or the library's ``working_dtype``, if coarser) at theta
        (`estimators.resolution.check_resolution`).
        """
        if not isinstance(theta, Tensor) or not theta.is_floating_point() or theta.ndim != 1:
            raise TypeError(f"theta must be a 1-D floating torch.Tensor, got {theta!r:.60}")
        absmax = float(theta.detach().abs().amax()) if theta.numel() else 0.0
        if not math.isfinite(absmax):
            raise ValueError("theta contains NaN or inf")
        coarser = max((theta.dtype, self.working_dtype), key=lambda d: torch.finfo(d).eps)
        check_resolution(self.sigma, absmax, coarser,
                         suggest_float64=self.working_dtype == torch.float64)
        seed = check_int("seed", seed, low=0)
        self.dim, self.dtype, self.device = theta.shape[0], theta.dtype, theta.device
        self.P = self.popsize or default_popsize(self.dim, even=self.antithetic)
        self.generation, self.best_fitness, self._pending = 0, math.inf, False
        self._np_state = None
        self._start(theta.detach().to("cpu", torch.float64), self.P, seed)
        self._started = True
        return self

    def ask(self) -> Tensor:
        """``[P, D]`` candidates to evaluate (a fresh tensor: writing into it changes nothing)."""
        self._require()
        out = self._ask().to(self.device, self.dtype)
        self._pending = True
        return out

    def tell(self, fitness: Tensor) -> dict:
        """Update the search with the losses ``[P]`` of the last `ask`'s candidates, in order.

        A non-finite fitness counts as the worst finite one of its generation (0 if none is).

        Returns:
            ``{"generation", "best_fitness", "generation_best", "nonfinite"}`` plus the
            library's own metrics (e.g. ``sigma``).
        """
        self._require()
        if not self._pending:
            raise RuntimeError("tell() must follow an ask()")
        fitness = torch.as_tensor(fitness).detach().to("cpu", torch.float64)
        if fitness.shape != (self.P,):
            raise ValueError(f"fitness must have shape [{self.P}], got {list(fitness.shape)}")
        finite = torch.isfinite(fitness)
        worst = fitness[finite].max() if bool(finite.any()) else fitness.new_zeros(())
        fitness = torch.where(finite, fitness, worst)
        metrics = self._tell(fitness)
        self._pending = False
        self.generation += 1
        self.best_fitness = min(self.best_fitness, float(fitness.min()))
        return {"generation": self.generation, "best_fitness": self.best_fitness,
                "generation_best": float(fitness.min()), "nonfinite": int((~finite).sum()),
                **metrics}

    @property
    def mean(self) -> Tensor:
        """``[D]`` the search distribution's mean: the strategy's current theta."""
        self._require()
        return self._mean().to(self.device, self.dtype)

    def state_dict(self) -> dict:
        """A picklable snapshot (``torch.save``-able) of the search."""
        self._require()
        return {"dim": self.dim, "P": self.P, "dtype": self.dtype, "generation": self.generation,
                "best_fitness": self.best_fitness, "pending": self._pending,
                "np_state": self._np_state, "impl": self._state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict`'s snapshot (the same hyper-parameters are assumed)."""
        self.dim, self.P, self.dtype = state["dim"], state["P"], state["dtype"]
        self.device = torch.device("cpu")
        self.generation, self.best_fitness = state["generation"], state["best_fitness"]
        self._pending, self._np_state = state["pending"], state["np_state"]
        self._load(state["impl"])
        self._started = True

    def _require(self) -> None:
        if not self._started:
            raise RuntimeError(f"call {type(self).__name__}.init(theta, seed=...) first")

    def __repr__(self) -> str:
        hp = {k: v for k, v in vars(self).items() if not k.startswith("_") and v is not None
              and k not in ("dim", "dtype", "device", "P", "generation", "best_fitness")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in hp.items())})"

"""evosax 0.3 strategies (JAX) behind the torch `Strategy` interface (Lange 2022, arXiv 2212.04180).

``Evosax("SNES", sigma=0.1, popsize=64)`` or ``estimators.make("evosax:SNES", ...)``. Candidates
cross from JAX to torch through DLPack and are copied (JAX buffers are immutable, so nothing
writes into them); fitness enters as an uncommitted host array. evosax jits ``ask``/``tell``
with the algorithm object as a static argument, so the object is cached per configuration and
jit compiles once however many `Evosax` instances share it. jax is imported on first use.

evosax minimises. Its ES gradients, for P = 2N mirrored candidates (z_1..z_N, -z_1..-z_N):
Open_ES ``f @ z / (P sigma)``, PersistentES ``f @ xi_accum / (P sigma)``, NoiseReuseES
``f @ z_episode / (P sigma)``: the project's antithetic, PES and NRES formulas with raw fitness.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Strategy

__all__ = ["Evosax"]

SHAPINGS = ("identity", "centered_rank", "standardize", "normalize", "weights")


def _jax():
    outer = np.random.get_state()
    try:
        import jax
        import jax.numpy as jnp
    finally:
        np.random.set_state(outer)  # importing jax draws from numpy's global RNG
    return jax, jnp


def _canonical(tree):
    """Strongly typed, committed leaves, as ``tell`` returns them, so ``ask`` compiles once."""
    jax, jnp = _jax()
    device = jax.devices()[0]
    return jax.tree.map(lambda x: jax.device_put(jnp.array(x, dtype=jnp.asarray(x).dtype), device), tree)


def algorithm_names() -> list[str]:
    """evosax's algorithm names (imports evosax)."""
    _jax()
    from evosax.algorithms import algorithms
    return sorted(algorithms)


@functools.lru_cache(maxsize=64)
def _algorithm(name: str, popsize: int, dim: int, sigma: float, shaping: str | None,
               optimizer: Any, lr: float | None):
    """One evosax algorithm object per configuration (the jit cache is keyed on it)."""
    import inspect

    import optax
    from evosax.algorithms import algorithms
    from evosax.core import fitness_shaping
    _, jnp = _jax()
    cls = algorithms[name]
    accepts = inspect.signature(cls).parameters
    kw: dict = {}
    if shaping is not None:
        kw["fitness_shaping_fn"] = getattr(fitness_shaping, f"{shaping}_fitness_shaping_fn")
    if "std_schedule" in accepts:
        kw["std_schedule"] = optax.constant_schedule(sigma)
    if isinstance(optimizer, str):
        kw["optimizer"] = getattr(optax, optimizer)(1e-3 if lr is None else lr)
    elif optimizer is not None:
        kw["optimizer"] = optimizer
    if "optimizer" in kw and "optimizer" not in accepts:
        raise ValueError(f"optimizer: evosax {name} has no optimizer to set")
    return cls(population_size=popsize, solution=jnp.zeros(dim, dtype=jnp.float32), **kw)


class Evosax(Strategy):
    """An evosax 0.3 strategy (JAX): Open_ES, CMA_ES, Sep_CMA_ES, SNES, PersistentES, ...

    Args:
        name: evosax algorithm name, e.g. ``"SNES"`` (`algorithm_names()` lists them).
        sigma: initial search scale (``std_init`` or a constant ``std_schedule``).
        popsize: P (even for the mirrored ES family); None is 4 + floor(3 ln D), made even.
        shaping: fitness shaping (``"identity"`` = raw fitness, ``"centered_rank"``, ...);
            None keeps the algorithm's default.
        optimizer: ``"sgd"`` / ``"adam"`` / an optax transformation for the gradient ESs' mean.
        lr: its learning rate (default 1e-3).
        params: overrides of the algorithm's default params, e.g. ``{"T": 50, "K": 10}``.
    """

    working_dtype = torch.float32  # evosax draws in JAX's default float32

    def __init__(self, name: str, sigma: float = 0.1, popsize: int | None = None,
                 shaping: str | None = None, optimizer: Any = None, lr: float | None = None,
                 params: dict | None = None):
        names = algorithm_names()
        if name not in names:
            raise ValueError(f"name: unknown evosax strategy {name!r}; available: {', '.join(names)}")
        if shaping is not None and shaping not in SHAPINGS:
            raise ValueError(f"shaping must be one of {SHAPINGS} or None, got {shaping!r}")
        if isinstance(optimizer, str) and optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd', 'adam' or an optax transformation, got {optimizer!r}")
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.antithetic = name in ("Open_ES", "PersistentES", "NoiseReuseES")
        super().__init__(sigma, popsize)
        self.strategy, self.shaping, self.optimizer, self.lr = name, shaping, optimizer, lr
        self.params = dict(params or {})

    @property
    def algorithm(self):
        """The cached evosax object (after `init`)."""
        return _algorithm(self.strategy, self.P, self.dim, self.sigma, self.shaping,
                          self.optimizer, self.lr)

    def _start(self, theta: Tensor, popsize: int, seed: int) -> None:
        jax, _ = _jax()
        alg = self.algorithm
        self._params = alg.default_params
        if hasattr(self._params, "std_init"):
            self._params = self._params.replace(std_init=self.sigma)
        try:
            self._params = self._params.replace(**self.params)
        except TypeError as err:
            raise ValueError(f"params: {err}") from None
        self._params = _canonical(self._params)
        key, sub = jax.random.split(jax.random.key(seed))
        mean = jax.dlpack.from_dlpack(theta.to(torch.float32).contiguous())
        self._key, self._state_ = key, _canonical(alg.init(sub, mean, self._params))
        self._population = None

    def _ask(self) -> Tensor:
        jax, _ = _jax()
        self._key, sub = jax.random.split(self._key)
        self._population, self._state_ = self.algorithm.ask(sub, self._state_, self._params)
        return torch.from_dlpack(self._population).clone()

    def _tell(self, fitness: Tensor) -> dict:
        jax, jnp = _jax()
        self._key, sub = jax.random.split(self._key)
        f = jnp.asarray(fitness.to(torch.float32).numpy())
        self._state_, _ = self.algorithm.tell(sub, self._population, f, self._state_, self._params)
        return {}

    def _mean(self) -> Tensor:
        mean = getattr(self._state_, "mean", None)
        return torch.from_dlpack(self._state_.best_solution if mean is None else mean).clone()

    def _state(self) -> dict:
        jax, _ = _jax()
        return {"state": [np.array(x) for x in jax.tree.leaves(self._state_)],
                "key": np.array(jax.random.key_data(self._key)), "params": self._params,
                "population": None if self._population is None else np.array(self._population)}

    def _load(self, state: dict) -> None:
        jax, jnp = _jax()
        self._start(torch.zeros(self.dim, dtype=torch.float64), self.P, 0)
        treedef = jax.tree.structure(self._state_)
        self._state_ = _canonical(jax.tree.unflatten(treedef, list(state["state"])))
        self._key = jax.random.wrap_key_data(jnp.asarray(state["key"]))
        self._params = _canonical(state["params"])
        pop = state["population"]
        self._population = None if pop is None else _canonical(pop)

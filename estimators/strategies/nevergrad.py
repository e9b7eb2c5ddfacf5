"""nevergrad optimizers behind the torch `Strategy` interface (Rapin & Teytaud 2018).

``Nevergrad("ParametrizedCMA", sigma=0.1, popsize=16)`` or ``estimators.make("nevergrad:NGOpt")``.
theta is an ``ng.p.Array`` with mutation scale ``sigma``, seeded through its ``random_state``;
a generation asks P candidates (``num_workers = P``) and tells them back in the order asked.
``ParametrizedCMA``, ``TwoPointsDE`` and ``TBPSA`` are configured with exactly P; other names come
from nevergrad's registry, whose own population sizes may differ from P. ``mean`` is the
optimizer's recommendation (the distribution mean for CMA). nevergrad is imported on first use.
"""
from __future__ import annotations

import contextlib
import pickle
import warnings
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from systems.validation import check_int

from .base import Strategy, isolated_numpy_rng

__all__ = ["Nevergrad"]


def _configured(ng, name: str, popsize: int, dim: int):
    """The optimizer class for ``name``, with population size P where nevergrad allows it."""
    fam = ng.families
    exact = {
        "ParametrizedCMA": lambda: fam.ParametrizedCMA(popsize=popsize, diagonal=dim > 1000),
        "TwoPointsDE": lambda: fam.DifferentialEvolution(crossover="twopoints", popsize=popsize),
        "TBPSA": lambda: fam.ParametrizedTBPSA(naive=False, initial_popsize=popsize),
    }
    return exact[name]() if name in exact else ng.optimizers.registry[name]


@contextlib.contextmanager
def _quiet(holder) -> Iterator[None]:
    """nevergrad's advisory warnings (budget None, settings hints) are not errors here."""
    import nevergrad as ng
    with isolated_numpy_rng(holder), warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.errors.NevergradWarning)
        yield


class Nevergrad(Strategy):
    """A nevergrad optimizer: ParametrizedCMA, TBPSA, NGOpt, TwoPointsDE, ...

    Args:
        name: ``"ParametrizedCMA"``, ``"TwoPointsDE"``, ``"TBPSA"`` or any name in
            ``nevergrad.optimizers.registry``.
        sigma: the parametrization's mutation scale (> 0).
        popsize: candidates asked per generation P (>= 2); None is 4 + floor(3 ln D).
        budget: evaluations the optimizer plans for (NGOpt picks its algorithm from it);
            None is 100 generations, 100 P.
    """

    def __init__(self, name: str, sigma: float = 0.1, popsize: int | None = None,
                 budget: int | None = None):
        import nevergrad as ng
        if name not in ("ParametrizedCMA", "TwoPointsDE", "TBPSA") and name not in ng.optimizers.registry:
            raise ValueError(f"name: unknown nevergrad optimizer {name!r}; e.g. ParametrizedCMA, "
                             "TBPSA, NGOpt, TwoPointsDE (see nevergrad.optimizers.registry)")
        super().__init__(sigma, popsize)
        self.optimizer = name
        self.budget = None if budget is None else check_int("budget", budget)

    def _start(self, theta: Tensor, popsize: int, seed: int) -> None:
        import nevergrad as ng
        self._np_state = np.random.RandomState(seed).get_state()  # for optimizers using np.random
        with _quiet(self):
            param = ng.p.Array(init=theta.numpy()).set_mutation(sigma=self.sigma)
            param.random_state = np.random.RandomState(seed)
            opt_cls = _configured(ng, self.optimizer, popsize, self.dim)
            budget = self.budget or 100 * popsize
            self._opt = opt_cls(parametrization=param, budget=budget, num_workers=popsize)
        self._asked: list = []

    def _ask(self) -> Tensor:
        with _quiet(self):
            self._asked = [self._opt.ask() for _ in range(self.P)]
        return torch.from_numpy(np.stack([np.asarray(c.value, dtype=np.float64) for c in self._asked]))

    def _tell(self, fitness: Tensor) -> dict:
        with _quiet(self):
            for cand, f in zip(self._asked, fitness.tolist()):
                self._opt.tell(cand, f)
        return {}

    def _mean(self) -> Tensor:
        with _quiet(self):
            rec = self._opt.provide_recommendation()
        return torch.from_numpy(np.array(rec.value, dtype=np.float64))

    def _state(self) -> dict:
        return {"opt": pickle.dumps((self._opt, self._asked))}

    def _load(self, state: dict) -> None:
        self._opt, self._asked = pickle.loads(state["opt"])

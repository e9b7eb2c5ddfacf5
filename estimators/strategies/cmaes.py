"""CMA-ES through pycma (Hansen & Ostermeier 2001; Ros & Hansen 2008 for the diagonal variant).

Full covariance below ``diagonal_above`` dimensions (default 1000), where its O(D^2) memory and
O(D^3)-per-update cost are affordable; diagonal (sep-CMA-ES) above.

By default pycma draws from numpy's *global* RNG, which its ``seed`` option reseeds (and seed 0
means "from the clock"). Here its ``randn`` option is a private ``RandomState(seed)`` (pickled
with the strategy, so a checkpoint continues the same draws) and its seed option is off; the
calls still run under `isolated_numpy_rng`, so the caller's ``np.random`` state is untouched.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch
from torch import Tensor

from systems.validation import check_int

from ..registry import register
from .base import Strategy, isolated_numpy_rng

__all__ = ["CMAES"]


@register("cmaes")
class CMAES(Strategy):
    """CMA-ES (pycma): full covariance up to 1000 dims, diagonal (sep-CMA) above.

    Args:
        sigma: initial step size sigma_0 (> 0).
        popsize: lambda; None is pycma's 4 + floor(3 ln D).
        diagonal_above: use the diagonal covariance when D exceeds this.
        options: further pycma options (e.g. ``{"CMA_elitist": True}``).
    """

    def __init__(self, sigma: float = 0.1, popsize: int | None = None,
                 diagonal_above: int = 1000, options: dict | None = None):
        super().__init__(sigma, popsize)
        self.diagonal_above = check_int("diagonal_above", diagonal_above, low=0)
        self.options = dict(options or {})

    def _start(self, theta: Tensor, popsize: int, seed: int) -> None:
        import cma
        rng = np.random.RandomState(seed)
        opts = {"popsize": popsize, "seed": np.nan, "randn": rng.randn, "verbose": -9, "verb_log": 0,
                "verb_disp": 0, "CMA_diagonal": self.dim > self.diagonal_above, **self.options}
        self._np_state = np.random.RandomState(seed + 1).get_state()  # for pycma's other draws
        with isolated_numpy_rng(self):
            self._es = cma.CMAEvolutionStrategy(theta.numpy(), self.sigma, opts)
        self._asked = None

    def _ask(self) -> Tensor:
        with isolated_numpy_rng(self):
            self._asked = self._es.ask()
        return torch.from_numpy(np.stack(self._asked))

    def _tell(self, fitness: Tensor) -> dict:
        with isolated_numpy_rng(self):
            self._es.tell(self._asked, fitness.tolist())
        return {"sigma": float(self._es.sigma)}

    def _mean(self) -> Tensor:
        return torch.from_numpy(np.array(self._es.mean, dtype=np.float64))

    def _state(self) -> dict:
        return {"es": pickle.dumps(self._es), "asked": self._asked}

    def _load(self, state: dict) -> None:
        self._es, self._asked = pickle.loads(state["es"]), state["asked"]

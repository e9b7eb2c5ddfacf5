"""Gradient estimators for iterated systems behind one contract (`Estimator` -> `Estimate`).

    >>> import estimators, systems
    >>> system = systems.make("logistic_map", r=3.9)
    >>> est = estimators.make("pes", sigma=0.01, truncation=10, pairs=64)
    >>> cma = estimators.make("cmaes", sigma=0.1)   # ask/tell strategies share the registry
"""
from .antithetic_es import AntitheticES, AntitheticESState, antithetic_samples
from .autograd import unrolled_loss
from .base import Estimate, Estimator, finite_estimate
from .bptt import BPTT, BPTTState, pathwise_samples
from .mixed import Mixed, MixedState, mixed_samples, mixing_weight
from .nres import NRES, NRESState
from .online_es import OnlineES
from .pes import PES, PESState, pes_samples
from .registry import ESTIMATORS, available, make, register
from .strategies import CMAES, Evosax, Nevergrad, Strategy, is_strategy, strategies
from .truncated_bptt import TruncatedBPTT, TruncatedBPTTState
from .truncated_es import TruncatedES, TruncatedESState

__all__ = [
    "Estimate", "Estimator", "finite_estimate", "make", "available", "register", "ESTIMATORS",
    "BPTT", "BPTTState", "TruncatedBPTT", "TruncatedBPTTState", "AntitheticES",
    "AntitheticESState", "TruncatedES",
    "TruncatedESState", "OnlineES", "PES", "PESState", "NRES", "NRESState",
    "antithetic_samples", "pes_samples", "pathwise_samples",
    "Mixed", "MixedState", "mixing_weight", "mixed_samples",
    "Strategy", "CMAES", "Evosax", "Nevergrad", "strategies", "is_strategy",
    "unrolled_loss",
]

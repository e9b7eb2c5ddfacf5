"""Black-box optimizers behind one ask/tell `Strategy` interface, registered beside the estimators.

    >>> import estimators
    >>> cma = estimators.make("cmaes", sigma=0.1, popsize=16)
    >>> snes = estimators.make("evosax:SNES", sigma=0.1, popsize=64)       # needs evosax
    >>> ngo = estimators.make("nevergrad:NGOpt", sigma=0.1, popsize=16)     # needs nevergrad

pycma, evosax (JAX) and nevergrad are the optional ``chaosgrad[blackbox]`` extra, imported only
when a strategy is made.
"""
from ..registry import ESTIMATORS
from .base import Strategy, default_popsize
from .cmaes import CMAES
from .evosax import Evosax
from .nevergrad import Nevergrad

__all__ = ["Strategy", "CMAES", "Evosax", "Nevergrad", "strategies", "is_strategy",
           "default_popsize"]

ESTIMATORS.register_family("evosax", Evosax, example="evosax:SNES")
ESTIMATORS.register_family("nevergrad", Nevergrad, example="nevergrad:NGOpt")


def is_strategy(name: str) -> bool:
    """Whether the registry name (``"cmaes"``, ``"evosax:SNES"``, ...) is an ask/tell `Strategy`."""
    factory = ESTIMATORS.get(name)
    return isinstance(factory, type) and issubclass(factory, Strategy)


def strategies() -> dict[str, str]:
    """The registry entries that are ask/tell strategies, with their one-line docs."""
    return {n: doc for n, doc in ESTIMATORS.available().items() if is_strategy(n)}

"""The estimator registry: ``make("pes", sigma=0.1, truncation=10, pairs=64)``."""
from systems.registry import Registry

__all__ = ["ESTIMATORS", "register", "make", "available"]

ESTIMATORS: Registry = Registry("estimator")
register = ESTIMATORS.register
make = ESTIMATORS.make
available = ESTIMATORS.available

"""Iterated dynamical systems behind one contract (`System`), with a registry.

    >>> from systems import make, available
    >>> system = make("logistic_map", r=3.9)
"""
from . import noise
from .base import System
from .influence_balancing import InfluenceBalancing
from .linear_quadratic import LinearQuadratic
from .logistic_map import LogisticMap
from .registry import SYSTEMS, Registry, available, make, register
from .tree import tree_cat, tree_index, tree_leaves, tree_map, tree_where

__all__ = [
    "System", "make", "available", "register", "noise", "Registry", "SYSTEMS",
    "LinearQuadratic", "LogisticMap", "InfluenceBalancing",
    "tree_map", "tree_where", "tree_cat", "tree_index", "tree_leaves",
]

"""Iterated dynamical systems behind one contract (`System`), with a registry.

    >>> from systems import make, available
    >>> system = make("logistic_map", r=3.9)
"""
from . import noise
from .active_dendrites import ActiveDendrites
from .ball_wall import BallWall
from .base import System
from .check import Check, CheckReport, check_system
from .continual_backprop import ContinualBackprop
from .diagnostics import (GradientGrowth, LyapunovExponents, gradient_growth_rate,
                          jacobian_eigenvalues, lyapunov_exponents)
from .disk_packing import DiskPacking
from .double_pendulum import DoublePendulum
from .influence_balancing import InfluenceBalancing
from .learned_optimizer import LearnedOptimizer
from .learned_optimizer_digits import LearnedOptimizerDigits
from .linear_quadratic import LinearQuadratic
from .logistic_map import LogisticMap
from .lorenz_fit import LorenzFit
from .lr_schedule_toy import LRScheduleToy
from .mass_spring_walker import MassSpringWalker
from .metz_sgd_momentum import MetzSGDMomentum
from .mujoco import MujocoSystem, make_mujoco
from .mujoco import MEMBERS as _MUJOCO_MEMBERS
from .registry import SYSTEMS, Registry, available, make, register
from .tree import tree_cat, tree_index, tree_leaves, tree_map, tree_where
from .validation import check_int, check_sigma

SYSTEMS.register_family("mujoco", make_mujoco, example="mujoco:ant", members=_MUJOCO_MEMBERS)

__all__ = [
    "System", "make", "available", "register", "noise", "Registry", "SYSTEMS",
    "LinearQuadratic", "LogisticMap", "InfluenceBalancing", "DoublePendulum", "MetzSGDMomentum",
    "LRScheduleToy", "LearnedOptimizer", "DiskPacking", "LorenzFit", "BallWall",
    "MassSpringWalker", "LearnedOptimizerDigits", "ActiveDendrites", "MujocoSystem",
    "ContinualBackprop",
    "lyapunov_exponents", "jacobian_eigenvalues", "gradient_growth_rate", "LyapunovExponents",
    "GradientGrowth",
    "check_system", "CheckReport", "Check", "check_int", "check_sigma",
    "tree_map", "tree_where", "tree_cat", "tree_index", "tree_leaves",
]

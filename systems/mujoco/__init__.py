"""MuJoCo robots as systems: ``systems.make("mujoco:ant")``, ``"mujoco:path/to/model.xml"``.

Gymnasium's v5 locomotion tasks (Swimmer, HalfCheetah, Hopper, Ant, from the model files that
ship inside gymnasium) with theta = the weights of a policy on the v5 observation and the loss
= minus the v5 reward, stepped in MuJoCo's multithreaded batch, with pathwise gradients from
MuJoCo's transition Jacobians (Vicol et al. 2021, "Unbiased Gradient Estimation in Unrolled
Computation Graphs with Persistent Evolution Strategies", ICML, train a linear Swimmer policy;
Metz et al. 2021, "Gradients are Not All You Need", arXiv 2111.05803, show BPTT's variance on
an Ant). `mujoco` and `gymnasium` are imported when a system is built, not with this package.

Modules: `models` (model files, observations, rewards), `simulator` (the batched step and its
Jacobians), `autograd` (the step as a torch.autograd.Function), `policies`, `system`.
"""
from .autograd import mujoco_step
from .models import MODELS, ModelSpec
from .policies import MLP, POLICIES, Linear, Policy, make_policy
from .simulator import Simulator
from .system import (MEMBERS, Ant, HalfCheetah, Hopper, MujocoState, MujocoSystem, Swimmer,
                     make_mujoco)

__all__ = ["MujocoSystem", "MujocoState", "Swimmer", "HalfCheetah", "Hopper", "Ant", "MEMBERS",
           "make_mujoco", "mujoco_step", "Simulator", "ModelSpec", "MODELS", "Policy", "Linear",
           "MLP", "POLICIES", "make_policy"]

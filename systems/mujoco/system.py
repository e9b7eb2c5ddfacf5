"""MuJoCo robots as systems: theta = policy weights, loss = minus gymnasium v5's reward.

One step of the system is one environment step of gymnasium's ``<Model>-v5`` (frame_skip
MuJoCo steps with the action held): observe o_t from the state, a_t = clip(pi_theta(o_t),
ctrlrange), step the physics, l_t = -r_t (`systems.mujoco.models` has the rewards). A
trajectory that terminates (Hopper, Ant unhealthy) is frozen with l = 0 for the rest of the
episode, as gymnasium would reset it; a simulation that goes unstable (MuJoCo warns and resets
it) or raises becomes NaN, state and loss, so estimators count it as non-finite.

The state is a `MujocoState`: MuJoCo's physics state ``[B, n]`` in float64 whatever theta's
dtype (mjSTATE_FULLPHYSICS plus the solver warmstart, see `systems.mujoco.simulator`), the
extras the Ant's reward reads ``[B, 2 + 78]`` (``[B, 0]`` otherwise) and the done flags
``[B]``. Episodes start at qpos0 plus gymnasium's reset noise drawn from the episode key
(`systems.noise`), so a trajectory depends on its key alone.

Pathwise gradients (BPTT, truncated BPTT, Mixed) come from MuJoCo's transition Jacobians
(`systems.mujoco.autograd`). ``mjd_transitionFD`` does not support the RK4 integrator that the
Swimmer, Hopper and Ant model files use: those systems have ``differentiable = False`` and a
``nondifferentiable_reason``, unless built with ``integrator="implicitfast"`` (or "euler",
"implicit"), which changes the dynamics (and so the rewards) from gymnasium's.

Example::

    system = systems.make("mujoco:half_cheetah")              # D = 17 * 6 linear policy
    ant = systems.make("mujoco:ant", integrator="implicitfast", policy="mlp")
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .. import noise
from ..base import System
from .autograd import mujoco_step
from .models import load_model, observation, healthy, reward
from .policies import make_policy
from .simulator import Simulator

__all__ = ["MujocoSystem", "MujocoState", "Swimmer", "HalfCheetah", "Hopper", "Ant",
           "MEMBERS", "make_mujoco"]

F64 = torch.float64
_RESET, _RESET_NORMAL = 0, 1  # noise streams of the reset noise


class MujocoState(NamedTuple):
    """A batch of MuJoCo trajectories.

    Attributes:
        physics: ``[B, n]`` float64, the mjSTATE_FULLPHYSICS | mjSTATE_WARMSTART vector.
        extras: ``[B, n_extras]`` float64, what gymnasium reads after the step besides the
            state (Ant: torso xy, cfrc_ext of bodies 1..13; empty otherwise).
        done: ``[B]`` bool, terminated (frozen, loss 0) trajectories.
    """

    physics: Tensor
    extras: Tensor
    done: Tensor


class MujocoSystem(System):
    """A MuJoCo model (MJCF file) as a system: theta = policy weights, loss = minus reward.

    Args:
        model: a member name (``"swimmer"``, ``"half_cheetah"``, ``"hopper"``, ``"ant"``) or
            a path to an MJCF ``.xml`` file (reward in `systems.mujoco.models`); the
            subclasses `Swimmer`, `HalfCheetah`, `Hopper`, `Ant` fix it.
        policy: ``"linear"`` or ``"mlp"`` (`systems.mujoco.policies`).
        hidden: hidden units of the MLP.
        horizon: T, environment steps per episode.
        integrator: None (the file's own) or ``"euler"``, ``"implicit"``, ``"implicitfast"``,
            ``"rk4"``: replaces the model's integrator (not gymnasium's dynamics any more).
        threads: threads of MuJoCo's batch (default: all CPUs).

    Attributes (besides `System`'s):
        state_dtype: float64, the dtype of the floating state leaves whatever theta's dtype
            (MuJoCo computes in float64; a float32 state would change the dynamics).
        nondifferentiable_reason: why pathwise gradients are unavailable, or None.
        spec: the `ModelSpec`; sim: the `Simulator`; policy: the `Policy`.
    """

    member: str | None = None  # the model of a subclass (Ant: "ant")
    state_dtype = torch.float64
    smooth = False  # contact stiffness: a 20-step central difference is off by ~1e-5 itself
    nondifferentiable_reason: str | None = None

    def __init__(self, model: str | None = None, *, policy: str = "linear", hidden: int = 32,
                 horizon: int = 1000, integrator: str | None = None, threads: int | None = None):
        if model is None or model == self.member:
            model = self.member
        elif self.member is not None:
            raise ValueError(f"{type(self).__name__} is the {self.member!r} model, got "
                             f"model={model!r}")
        if model is None:
            raise ValueError("model is required: a member name or a path to an MJCF .xml file")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self._kwargs = dict(model=model, policy=policy, hidden=hidden, horizon=horizon,
                            integrator=integrator, threads=threads)
        mj_model, self.spec = load_model(model, integrator)
        self.name = f"mujoco:{model}"
        self.sim = Simulator(mj_model, self.spec, threads)
        self.horizon = horizon
        self.dt = float(mj_model.opt.timestep * self.spec.frame_skip)
        nq, nv = mj_model.nq, mj_model.nv
        obs_dim = nq - self.spec.skip_qpos + nv + (self.sim.n_extras - 2 if self.spec.contact
                                                   else 0)
        self.policy = make_policy(policy, obs_dim, mj_model.nu, hidden)
        self.param_dim = self.policy.param_dim
        self.state_dim = self.sim.n + self.sim.n_extras
        self.ctrl_range = torch.tensor(mj_model.actuator_ctrlrange, dtype=F64)
        limited = torch.tensor(mj_model.actuator_ctrllimited, dtype=torch.bool)
        self.ctrl_range[~limited] = torch.tensor([-float("inf"), float("inf")], dtype=F64)
        if mj_model.opt.integrator == self.sim.mj.mjtIntegrator.mjINT_RK4:
            self.differentiable = False
            self.nondifferentiable_reason = (
                f"{self.name} uses MuJoCo's RK4 integrator, for which "
                "mjd_transitionFD gives no Jacobians; build it with integrator='implicitfast' "
                "for pathwise gradients (this changes the dynamics)")
        else:
            self.differentiable, self.nondifferentiable_reason = True, None
        self._reset_row = self._default_row()

    def _default_row(self) -> Tensor:
        mj, m = self.sim.mj, self.sim.model
        d = mj.MjData(m)
        row = torch.zeros(self.sim.n, dtype=F64)
        mj.mj_getState(m, d, row.numpy(), self.sim.state_spec)
        return row

    def __reduce__(self):
        # a MuJoCo batch and its threads do not pickle: rebuild the system from its arguments
        return (_rebuild, (type(self), self._kwargs))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.spec.name!r}, D={self.param_dim}, "
                f"T={self.horizon})")

    # ---- the System contract ----

    def init_params(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        return self.policy.init_params(dtype, device)

    def _qpos(self, physics: Tensor) -> Tensor:
        return physics[:, self.sim.qpos_at:self.sim.qpos_at + self.sim.nq]

    def _qvel(self, physics: Tensor) -> Tensor:
        return physics[:, self.sim.qvel_at:self.sim.qvel_at + self.sim.nv]

    def init_state(self, theta: Tensor, keys: Tensor) -> MujocoState:
        """qpos = qpos0 + U(-c, c), qvel = U(-c, c) or c N(0, 1) from each key (c: the model's
        reset noise scale), the rest of the physics state at MuJoCo's defaults."""
        nq, nv, c = self.sim.nq, self.sim.nv, self.spec.reset_noise
        keys = keys.to(theta.device)
        u = noise.uniform(keys, 0, _RESET, (nq + nv,), F64)
        physics = self._reset_row.to(theta.device).expand(keys.shape[0], -1).clone()
        qpos = physics[:, self.sim.qpos_at:self.sim.qpos_at + nq] + c * (2 * u[:, :nq] - 1)
        if self.spec.qvel_noise == "normal":
            qvel = c * noise.normal(keys, 0, _RESET_NORMAL, (nv,), F64)
        else:
            qvel = c * (2 * u[:, nq:] - 1)
        physics[:, self.sim.qpos_at:self.sim.qpos_at + nq] = qpos
        physics[:, self.sim.qvel_at:self.sim.qvel_at + nv] = qvel
        extras = physics.new_zeros(keys.shape[0], self.sim.n_extras)
        if self.spec.contact:  # gymnasium reads the free root's xpos = qpos[:2] after reset
            extras[:, :2] = qpos[:, :2]
        done = torch.zeros(keys.shape[0], dtype=torch.bool, device=theta.device)
        return MujocoState(physics, extras, done)

    def observe(self, state: MujocoState) -> Tensor:
        """Gymnasium v5's observation of each trajectory, ``[B, obs_dim]`` float64."""
        contact = state.extras[:, 2:] if self.spec.contact else None
        return observation(self.spec, self._qpos(state.physics), self._qvel(state.physics),
                           contact)

    def action(self, theta: Tensor, state: MujocoState) -> Tensor:
        """The clipped action ``[B, nu]`` float64 of the policies ``theta [B, D]``."""
        a = self.policy(theta, self.observe(state).to(theta.dtype)).to(F64)
        lo, hi = self.ctrl_range.to(a.device).unbind(1)
        return torch.maximum(torch.minimum(a, hi), lo)

    def step(self, theta: Tensor, state: MujocoState, t: Tensor,
             keys: Tensor) -> tuple[MujocoState, Tensor]:
        if theta.dim() != 2 or theta.shape[1] != self.param_dim:
            raise ValueError(f"theta must have shape [B, {self.param_dim}] for the "
                             f"{self.policy.__class__.__name__.lower()} policy of "
                             f"{self.spec.name}, got {list(theta.shape)}")
        physics, extras, done = state
        ctrl = self.action(theta, state)
        live = ~done & torch.isfinite(physics).all(1)
        nxt, nxt_extras, _failed = mujoco_step(self.sim, physics, ctrl, live,
                                         self.nondifferentiable_reason)
        nxt = torch.where(live[:, None], nxt, physics)
        nxt_extras = torch.where(live[:, None], nxt_extras, extras)
        qpos, qvel = self._qpos(nxt), self._qvel(nxt)
        ok = healthy(self.spec, qpos, qvel)
        if self.spec.forward_body is None:
            x, x_next = self._qpos(physics)[:, 0], qpos[:, 0]
        else:
            x, x_next = extras[:, 0], nxt_extras[:, 0]
        r = reward(self.spec, self.dt, x, x_next, ctrl,
                   nxt_extras[:, 2:] if self.spec.contact else None, ok)
        loss = torch.where(live, -r, torch.zeros_like(r))
        loss = torch.where(torch.isfinite(nxt).all(1), loss, torch.full_like(loss, float("nan")))
        if self.spec.health is not None:
            done = done | (live & ~ok)
        return MujocoState(nxt, nxt_extras, done), loss.to(theta.dtype)


def _rebuild(cls: type, kwargs: dict) -> MujocoSystem:
    return cls(**kwargs)


class Swimmer(MujocoSystem):
    """Gymnasium's Swimmer-v5 (three links in a viscous fluid)."""

    member, differentiable = "swimmer", False  # RK4


class HalfCheetah(MujocoSystem):
    """Gymnasium's HalfCheetah-v5 (planar two-legged runner)."""

    member, differentiable = "half_cheetah", True  # Euler


class Hopper(MujocoSystem):
    """Gymnasium's Hopper-v5 (planar one-legged hopper, terminates when unhealthy)."""

    member, differentiable = "hopper", False  # RK4


class Ant(MujocoSystem):
    """Gymnasium's Ant-v5 (quadruped with contact costs, terminates when unhealthy)."""

    member, differentiable = "ant", False  # RK4


MEMBERS = {"swimmer": Swimmer, "half_cheetah": HalfCheetah, "hopper": Hopper, "ant": Ant}


def make_mujoco(model: str, **kwargs: Any) -> MujocoSystem:
    """MuJoCo robots: mujoco:swimmer, half_cheetah, hopper, ant, or mujoco:path/to/model.xml.

    Args:
        model: the part after ``"mujoco:"``: a member name or an MJCF file path.
        kwargs: as `MujocoSystem`.
    """
    if model in MEMBERS:
        return MEMBERS[model](**kwargs)
    return MujocoSystem(model, **kwargs)

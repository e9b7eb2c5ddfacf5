"""Model files, gymnasium v5's observations, rewards and health checks, and reset noise.

Each built-in model is the MJCF file that ships inside gymnasium (``gymnasium/envs/mujoco/
assets``) with the constants of its v5 environment at their default keyword arguments
(gymnasium 1.x, ``<Model>-v5``). With a the (clipped) action, dt = timestep * frame_skip and
x the root's forward coordinate before and after one environment step:

    reward = w_f (x' - x) / dt + healthy_reward * healthy(s') - w_c |a|^2 - w_k |clip(f, -1, 1)|^2

where the contact term (f: MuJoCo's cfrc_ext of every body, as gymnasium reads it after the
step) is the Ant's only, and the healthy term and termination (``not healthy(s')``) belong to
the Hopper and the Ant. Observations are qpos without the root's x (and y for the Swimmer and
the Ant), qvel (clipped to +-10 for the Hopper), and for the Ant the clipped cfrc_ext of every
body but the world, ``[13 * 6]``. Reset noise: qpos = qpos0 + U(-c, c), qvel = U(-c, c) or
c N(0, 1) (HalfCheetah, Ant), c = reset_noise_scale.

A user's model (``mujoco:path/to/model.xml``) gets the generic reward ``(x' - x) / dt -
0.1 |a|^2`` with x = qpos[0], the first coordinate of its first joint (which must be a free
joint or a slide joint), frame skip 5, no termination, reset noise U(-0.1, 0.1) on qpos and
qvel, and the observation qpos without the root's x (x and y for a free root) and qvel.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ModelSpec", "MODELS", "INTEGRATORS", "import_mujoco", "gymnasium_asset", "load_model",
           "user_spec", "observation", "healthy", "reward"]

INTEGRATORS = ("euler", "rk4", "implicit", "implicitfast")


@dataclass(frozen=True)
class ModelSpec:
    """How one model is observed and rewarded (gymnasium v5's constants for the built-ins).

    Attributes:
        name: member name (``"ant"``) or the XML path of a user's model.
        xml: file name inside gymnasium's assets, or a path.
        env_id: the gymnasium environment it reproduces (None for a user's model).
        frame_skip: MuJoCo steps per environment step.
        forward_weight, ctrl_cost, contact_cost, healthy_reward: reward weights.
        reset_noise: c, the scale of the reset noise.
        qvel_noise: ``"uniform"`` (U(-c, c)) or ``"normal"`` (c N(0, 1)).
        skip_qpos: leading qpos entries left out of the observation.
        clip_qvel: bound on |qvel| in the observation, or None.
        contact: whether the model reads cfrc_ext (contact cost and observation).
        forward_body: body whose xpos (as gymnasium reads it after the step) gives x, or None
            for x = qpos[0].
        health: ``"hopper"``, ``"ant"`` or None (no termination).
    """

    name: str
    xml: str
    env_id: str | None
    frame_skip: int
    ctrl_cost: float
    reset_noise: float
    qvel_noise: str
    skip_qpos: int
    forward_weight: float = 1.0
    contact_cost: float = 0.0
    healthy_reward: float = 0.0
    clip_qvel: float | None = None
    contact: bool = False
    forward_body: int | None = None
    health: str | None = None


MODELS: dict[str, ModelSpec] = {
    "swimmer": ModelSpec("swimmer", "swimmer.xml", "Swimmer-v5", frame_skip=4, ctrl_cost=1e-4,
                         reset_noise=0.1, qvel_noise="uniform", skip_qpos=2),
    "half_cheetah": ModelSpec("half_cheetah", "half_cheetah.xml", "HalfCheetah-v5",
                              frame_skip=5, ctrl_cost=0.1, reset_noise=0.1,
                              qvel_noise="normal", skip_qpos=1),
    "hopper": ModelSpec("hopper", "hopper.xml", "Hopper-v5", frame_skip=4, ctrl_cost=1e-3,
                        reset_noise=5e-3, qvel_noise="uniform", skip_qpos=1,
                        healthy_reward=1.0, clip_qvel=10.0, health="hopper"),
    "ant": ModelSpec("ant", "ant.xml", "Ant-v5", frame_skip=5, ctrl_cost=0.5, reset_noise=0.1,
                     qvel_noise="normal", skip_qpos=2, contact_cost=5e-4, healthy_reward=1.0,
                     contact=True, forward_body=1, health="ant"),
}


def import_mujoco() -> Any:
    """The ``mujoco`` module, or a ModuleNotFoundError saying which extra installs it."""
    try:
        import mujoco
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("mujoco:<model> systems need the 'mujoco' package: "
                                  "pip install 'chaosgrad[mujoco]'", name="mujoco") from err
    return mujoco


def gymnasium_asset(filename: str) -> str:
    """Path of a model file shipped inside gymnasium (without importing gymnasium)."""
    found = importlib.util.find_spec("gymnasium")
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError("the built-in mujoco:<model> systems read their model files "
                                  "from the 'gymnasium' package: pip install 'chaosgrad[mujoco]'",
                                  name="gymnasium")
    return os.path.join(found.submodule_search_locations[0], "envs", "mujoco", "assets", filename)


def user_spec(path: str, model: Any) -> ModelSpec:
    """The generic `ModelSpec` of a user's model (see the module docstring)."""
    mujoco = import_mujoco()
    free, slide = int(mujoco.mjtJoint.mjJNT_FREE), int(mujoco.mjtJoint.mjJNT_SLIDE)
    root = int(model.jnt_type[0]) if model.njnt else None
    if root not in (free, slide):
        raise ValueError(f"mujoco model {path!r}: the forward reward reads qpos[0], so the first "
                         "joint must be a free joint or a slide joint")
    return ModelSpec(path, path, None, frame_skip=5, ctrl_cost=0.1, reset_noise=0.1,
                     qvel_noise="uniform", skip_qpos=2 if root == free else 1)


def load_model(name: str, integrator: str | None = None) -> tuple[Any, ModelSpec]:
    """``(MjModel, ModelSpec)`` of a member name or an MJCF file path.

    Args:
        name: ``"swimmer"``, ``"half_cheetah"``, ``"hopper"``, ``"ant"``, or a path ending in
            ``.xml`` (or containing a path separator).
        integrator: None (the file's own) or one of `INTEGRATORS`, which replaces it.
    Raises:
        ValueError: unknown name or integrator, a file that does not load (with MuJoCo's own
            message), a model without actuators.
    """
    if integrator is not None and integrator not in INTEGRATORS:
        raise ValueError(f"unknown integrator {integrator!r}; choices: {', '.join(INTEGRATORS)}")
    is_path = isinstance(name, str) and (name.endswith(".xml") or os.sep in name)
    if not is_path and name not in MODELS:
        raise ValueError(f"unknown mujoco model {name!r}; choices: {', '.join(MODELS)}, or a "
                         "path to an MJCF .xml file (mujoco:path/to/model.xml)")
    mujoco = import_mujoco()
    path = name if is_path else gymnasium_asset(MODELS[name].xml)
    try:
        model = mujoco.MjModel.from_xml_path(path)
    except ValueError as err:
        message = " ".join(str(err).split())
        raise ValueError(f"mujoco model {path!r} does not load: {message}") from None
    if model.nu == 0:
        raise ValueError(f"mujoco model {path!r} has no actuators: a policy needs actions")
    if integrator is not None:
        model.opt.integrator = getattr(mujoco.mjtIntegrator, f"mjINT_{integrator.upper()}")
    return model, (user_spec(path, model) if is_path else MODELS[name])


# ---- observations, rewards and health, in torch on [B, ...] float64 tensors ----

def observation(spec: ModelSpec, qpos: Tensor, qvel: Tensor, contact: Tensor | None) -> Tensor:
    """Gymnasium v5's observation ``[B, obs_dim]`` from qpos ``[B, nq]``, qvel ``[B, nv]`` and
    (Ant) the raw cfrc_ext of bodies 1.. ``[B, 6 (nbody - 1)]``."""
    vel = qvel if spec.clip_qvel is None else qvel.clamp(-spec.clip_qvel, spec.clip_qvel)
    parts = [qpos[:, spec.skip_qpos:], vel]
    if spec.contact:
        parts.append(contact.clamp(-1.0, 1.0))
    return torch.cat(parts, dim=1)


def healthy(spec: ModelSpec, qpos: Tensor, qvel: Tensor) -> Tensor:
    """``[B]`` bool: gymnasium v5's ``is_healthy`` of the state (all True without a check).

    Hopper: every entry of (qpos, qvel)[2:] in (-100, 100), z = qpos[1] in (0.7, inf) and the
    angle qpos[2] in (-0.2, 0.2), all open intervals. Ant: the state is finite and the torso
    height qpos[2] in [0.2, 1.0].
    """
    if spec.health == "hopper":
        rest = torch.cat([qpos, qvel], dim=1)[:, 2:]
        z, angle = qpos[:, 1], qpos[:, 2]
        return (((rest > -100) & (rest < 100)).all(1) & (z > 0.7) & (z < float("inf"))
                & (angle > -0.2) & (angle < 0.2))
    if spec.health == "ant":
        z = qpos[:, 2]
        finite = torch.isfinite(torch.cat([qpos, qvel], dim=1)).all(1)
        return finite & (z >= 0.2) & (z <= 1.0)
    return torch.ones(qpos.shape[0], dtype=torch.bool, device=qpos.device)


def reward(spec: ModelSpec, dt: float, x: Tensor, x_next: Tensor, action: Tensor,
           contact_next: Tensor | None, healthy_next: Tensor) -> Tensor:
    """Gymnasium v5's reward ``[B]`` of one environment step (formula in the module docstring).

    Args:
        x, x_next: ``[B]`` forward coordinate before and after the step.
        action: ``[B, nu]`` the clipped action applied.
        contact_next: ``[B, 6 (nbody - 1)]`` raw cfrc_ext after the step (Ant), else None.
        healthy_next: ``[B]`` bool health after the step.
    """
    r = spec.forward_weight * (x_next - x) / dt - spec.ctrl_cost * action.square().sum(1)
    if spec.healthy_reward:
        r = r + spec.healthy_reward * healthy_next.to(r.dtype)
    if spec.contact:
        r = r - spec.contact_cost * contact_next.clamp(-1.0, 1.0).square().sum(1)
    return r

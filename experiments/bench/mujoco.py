"""Throughput of chaosgrad's MuJoCo robots against MuJoCo's raw C rollout and gymnasium's vector
env, and the cost of a pathwise gradient against a forward pass.

    python -m experiments.bench.mujoco [--models half_cheetah ant] [--B 256] [--T 1000]
                                       [--threads N] [--gym-steps 100]

Rows, for each model, B trajectories of T environment steps with a linear policy (weights
0.01 N(0, 1), one row per trajectory), no autograd, timed after a warm-up step:

- chaosgrad: ``system.step`` T times on the batch (observation, policy, MuJoCo's threaded
  rollout of frame_skip physics steps, reward) from `init_state`;
- raw mujoco.rollout: ``mujoco.rollout.Rollout(nthread)`` from the same initial states with
  precomputed controls ``[B, T * frame_skip, nu]`` (the controls chaosgrad's policy applied,
  recorded in an untimed rerun, held for each frame skip), so both simulate the same
  trajectories: the limit, with no policy and no Python per step;
- gymnasium SyncVectorEnv: ``gymnasium.vector.SyncVectorEnv`` of B ``<Model>-v5`` envs stepped
  with the same linear policy in numpy, timed over ``gym_steps`` steps and extrapolated to T
  (its cost per step does not depend on t; an episode that terminates is reset, as a user's
  loop would).

Gradient: one pathwise gradient (forward with autograd + backward of the mean loss through
MuJoCo's transition Jacobians) against the same forward without autograd, ``B_grad``
trajectories of ``T_grad`` steps; models whose file uses RK4 are built with
``integrator="implicitfast"`` for this row (and the forward is timed on that model too).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import systems

__all__ = ["linear_policy", "chaosgrad_rollout", "raw_rollout", "gymnasium_rollout",
           "gradient_cost", "main"]

_GYM_IDS = {"swimmer": "Swimmer-v5", "half_cheetah": "HalfCheetah-v5", "hopper": "Hopper-v5",
            "ant": "Ant-v5"}


def linear_policy(system, B: int, seed: int = 0) -> torch.Tensor:
    """``[B, D]`` float64 linear-policy weights 0.01 N(0, 1), one row per trajectory."""
    g = torch.Generator().manual_seed(seed)
    return 0.01 * torch.randn(B, system.param_dim, generator=g, dtype=torch.float64)


@torch.no_grad()
def chaosgrad_rollout(system, theta: torch.Tensor, keys: torch.Tensor, T: int) -> float:
    """Seconds of T batched ``system.step`` calls from `init_state` (after a warm-up step)."""
    state = system.init_state(theta, keys)
    system.step(theta, state, torch.zeros_like(keys), keys)
    state = system.init_state(theta, keys)
    start = time.perf_counter()
    for t in range(T):
        state, _ = system.step(theta, state, torch.full_like(keys, t), keys)
    return time.perf_counter() - start


@torch.no_grad()
def _controls(system, theta: torch.Tensor, keys: torch.Tensor, T: int) -> np.ndarray:
    out, state = [], system.init_state(theta, keys)
    for t in range(T):
        out.append(system.action(theta, state))
        state, _ = system.step(theta, state, torch.full_like(keys, t), keys)
    return torch.stack(out, 1).numpy()


def raw_rollout(system, theta: torch.Tensor, keys: torch.Tensor, T: int, threads: int) -> float:
    """Seconds of ``mujoco.rollout`` of the same B trajectories with precomputed controls."""
    import mujoco
    from mujoco import rollout

    sim = system.sim
    full = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
    if sim.state_spec & full != full:
        raise ValueError(f"{system.name}: the state does not start with mjSTATE_FULLPHYSICS")
    n_full = mujoco.mj_stateSize(sim.model, full)
    init = np.ascontiguousarray(system.init_state(theta, keys).physics.numpy()[:, :n_full])
    ctrl = np.ascontiguousarray(np.repeat(_controls(system, theta, keys, T), sim.frame_skip, 1))
    datas = [mujoco.MjData(sim.model) for _ in range(threads)]
    with rollout.Rollout(nthread=threads) as r:
        r.rollout(sim.model, datas, init, ctrl[:, :sim.frame_skip])  # warm-up
        start = time.perf_counter()
        r.rollout(sim.model, datas, init, ctrl)
        return time.perf_counter() - start


def gymnasium_rollout(model: str, theta: torch.Tensor, steps: int) -> float:
    """Seconds of ``steps`` steps of a ``SyncVectorEnv`` of B gymnasium envs with the linear
    policies ``theta [B, D]`` applied in numpy (after reset and a warm-up step)."""
    import gymnasium

    B = theta.shape[0]
    env = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make(_GYM_IDS[model])] * B)
    try:
        obs, _ = env.reset(seed=0)
        act_dim = env.single_action_space.shape[0]
        w = theta.numpy().reshape(B, act_dim, obs.shape[1])
        lo, hi = env.single_action_space.low, env.single_action_space.high
        obs, *_ = env.step(np.clip(np.einsum("bao,bo->ba", w, obs), lo, hi))
        start = time.perf_counter()
        for _ in range(steps):
            obs, *_ = env.step(np.clip(np.einsum("bao,bo->ba", w, obs), lo, hi))
        return time.perf_counter() - start
    finally:
        env.close()


def gradient_cost(system, theta: torch.Tensor, keys: torch.Tensor,
                  T: int) -> tuple[float, float, float]:
    """(forward seconds without autograd, forward seconds with the graph, backward seconds) of
    the mean T-step loss of the rows ``theta [B, D]``."""
    def run(grad: bool) -> tuple[float, float]:
        rows = theta.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            state, total = system.init_state(rows, keys), 0.0
            start = time.perf_counter()
            for t in range(T):
                state, loss = system.step(rows, state, torch.full_like(keys, t), keys)
                total = total + loss
            mid = time.perf_counter()
            if grad:
                total.mean().backward()
            return mid - start, time.perf_counter() - mid
    run(False)  # warm-up
    forward, _ = run(False)
    with_graph, backward = run(True)
    return forward, with_graph, backward


def main(argv: list[str] | None = None) -> int:
    """Print the throughput table and the gradient cost; exit code 0."""
    p = argparse.ArgumentParser(prog="python -m experiments.bench.mujoco",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["half_cheetah", "ant"], choices=_GYM_IDS)
    p.add_argument("--B", type=int, default=256)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--gym-steps", type=int, default=100,
                   help="SyncVectorEnv steps timed (extrapolated to T)")
    p.add_argument("--B-grad", type=int, default=16)
    p.add_argument("--T-grad", type=int, default=50)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    steps = a.B * a.T
    print(f"mujoco rollouts: B = {a.B}, T = {a.T}, linear policy, {a.threads} threads; "
          f"env-steps/s (SyncVectorEnv timed on {a.gym_steps} steps, extrapolated to T)")
    print(f"{'model':14s}{'chaosgrad':>12s}{'raw rollout':>13s}{'SyncVecEnv':>12s}"
          f"{'ours/raw':>10s}{'ours/gym':>10s}{'seconds':>9s}")
    for name in a.models:
        system = systems.make(f"mujoco:{name}", threads=a.threads)
        theta, keys = linear_policy(system, a.B), torch.arange(a.B)
        ours = chaosgrad_rollout(system, theta, keys, a.T)
        raw = raw_rollout(system, theta, keys, a.T, a.threads)
        gym = gymnasium_rollout(name, theta, a.gym_steps) * a.T / a.gym_steps
        print(f"{name:14s}{steps / ours:12.0f}{steps / raw:13.0f}{steps / gym:12.0f}"
              f"{raw / ours:10.3g}{gym / ours:10.3g}{ours:9.3g}")
    print(f"\npathwise gradient: B = {a.B_grad}, T = {a.T_grad}")
    print(f"{'model':14s}{'integrator':>14s}{'forward s':>11s}{'fwd+graph s':>13s}"
          f"{'backward s':>12s}{'grad/forward':>14s}")
    for name in a.models:
        plain = systems.make(f"mujoco:{name}", threads=a.threads)
        kw = {} if plain.differentiable else {"integrator": "implicitfast"}
        system = systems.make(f"mujoco:{name}", threads=a.threads, **kw)
        theta, keys = linear_policy(system, a.B_grad), torch.arange(a.B_grad)
        fwd, graph, bwd = gradient_cost(system, theta, keys, a.T_grad)
        print(f"{name:14s}{kw.get('integrator', 'own'):>14s}{fwd:11.3g}{graph:13.3g}"
              f"{bwd:12.3g}{(graph + bwd) / fwd:14.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

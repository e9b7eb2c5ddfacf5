"""The JAX peer of `experiments.bench.speed`: chaosgrad's double pendulum and antithetic-ES estimate,
written the idiomatic JAX way (``jax.jit`` + ``vmap`` + ``lax.scan``). Benchmark-only.

Same physics as `systems.double_pendulum` (RK4 at dt = 0.01, linear-tanh torque policy of 14
parameters, loss = l (cos q1 + cos q2) + torque_cost |tau|^2) and the same estimator
g = (1/(2 N sigma)) sum_i eps_i (L+_i - L-_i); the noise comes from ``jax.random`` rather than
chaosgrad's counter hash (the cost of drawing it is part of both measurements).

    python -m experiments.bench.jax_peer --pairs 2048 --horizon 1000
"""
from __future__ import annotations

import argparse
import os
import time

__all__ = ["make_step", "es_estimate_fn", "time_es_estimate"]

G, DT, MAX_TORQUE, TORQUE_COST, RELEASE, JITTER = 9.81, 0.01, 2.0, 1e-3, 1.5707963267948966, 0.01


def make_step():
    """The JAX double-pendulum step ``step(theta [14], s [4]) -> (s' [4], loss)``, one trajectory
    (to be vmapped); the same physics, policy and loss as `systems.double_pendulum`."""
    import jax.numpy as jnp

    def derivative(s, tau):
        q1, q2, w1, w2 = s
        d = q1 - q2
        sn, c = jnp.sin(d), jnp.cos(d)
        r1 = tau[0] - tau[1] - sn * w2 * w2 - 2.0 * G * jnp.sin(q1)
        r2 = tau[1] + sn * w1 * w1 - G * jnp.sin(q2)
        det = 1.0 + sn * sn
        return jnp.stack([w1, w2, (r1 - c * r2) / det, (2.0 * r2 - c * r1) / det])

    def step(theta, s):
        q1, q2, w1, w2 = s
        f = jnp.stack([jnp.sin(q1), jnp.cos(q1), jnp.sin(q2), jnp.cos(q2), w1, w2, 1.0])
        tau = MAX_TORQUE * jnp.tanh(theta.reshape(2, 7) @ f)
        k1 = derivative(s, tau)
        k2 = derivative(s + 0.5 * DT * k1, tau)
        k3 = derivative(s + 0.5 * DT * k2, tau)
        k4 = derivative(s + DT * k3, tau)
        nxt = s + (DT / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        loss = jnp.cos(nxt[0]) + jnp.cos(nxt[1]) + TORQUE_COST * jnp.sum(tau * tau)
        return nxt, loss

    return step


def es_estimate_fn(pairs: int, horizon: int, sigma: float = 0.1):
    """A jitted ``f(theta [14], key) -> grad [14]``: one antithetic-ES estimate."""
    import jax
    import jax.numpy as jnp

    step = make_step()

    def episode(theta, key):
        q = RELEASE + JITTER * jax.random.normal(key, (2,))
        s0 = jnp.concatenate([q, jnp.zeros(2)])
        _, losses = jax.lax.scan(lambda s, _: step(theta, s), s0, None, length=horizon)
        return losses.mean()

    @jax.jit
    def estimate(theta, key):
        k_eps, k_ep = jax.random.split(key)
        eps = jax.random.normal(k_eps, (pairs, theta.shape[0]))
        keys = jax.random.split(k_ep, pairs)
        rows = jnp.concatenate([theta + sigma * eps, theta - sigma * eps])
        losses = jax.vmap(episode)(rows, jnp.concatenate([keys, keys]))
        return (eps * ((losses[:pairs] - losses[pairs:]) / (2 * sigma))[:, None]).mean(0)

    return estimate


def time_es_estimate(pairs: int, horizon: int, repeats: int = 3,
                     platform: str = "cpu") -> tuple[float, float]:
    """(seconds of the first call, compilation included; best seconds of ``repeats`` calls),
    on JAX's first device of ``platform`` ("cpu" or "gpu")."""
    import jax
    import jax.numpy as jnp
    fn = es_estimate_fn(pairs, horizon)
    device = jax.devices(platform)[0]
    theta = jax.device_put(jnp.zeros(14, dtype=jnp.float32), device)
    key = jax.device_put(jax.random.PRNGKey(0), device)
    start = time.perf_counter()
    fn(theta, key).block_until_ready()
    first = time.perf_counter() - start
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        fn(theta, jax.random.fold_in(key, r + 1)).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return first, best


def single_thread() -> None:
    """Make XLA's CPU backend use one thread (call before importing jax), like torch's."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2048)
    p.add_argument("--horizon", type=int, default=1000)
    p.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    args = p.parse_args(argv)
    first, best = time_es_estimate(args.pairs, args.horizon, platform=args.platform)
    steps = 2 * args.pairs * args.horizon
    print(f"jax antithetic ES on {args.platform}, B = {2 * args.pairs}, T = {args.horizon}: "
          f"first call {first:.2f} s, "
          f"then {best:.3f} s ({steps / best:.3g} trajectory-steps/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmarks: scripts that print tables and assert nothing (timings are never tested).

Each is ``python -m experiments.bench.<name> [--help]`` with a ``main(argv) -> exit code``:

- `speed` (also ``python -m experiments.bench``): rollout throughput eager and compiled,
  estimate cost, BPTT memory, peers (a Python loop, JAX, evosax), Ray sweeps;
- `jax_peer`: the double pendulum and antithetic ES written the idiomatic JAX way (`speed`'s
  peer);
- `strategies`: ask + tell overhead per generation of every strategy adapter;
- `system_report`: Lyapunov exponents and BPTT gradient spread of every registered system;
- `commands`: wall time of the quick ``chaosgrad`` commands against their targets.
- `lopt_digits`: inner steps/s of the digits learned-optimizer task (eager, compiled) and
  the wall time of one PES estimate.

They use the public API of `systems` and `estimators` and the experiments' core; no command
imports them.
"""

__all__: list[str] = []

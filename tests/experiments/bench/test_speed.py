"""The benchmark scripts at smoke sizes: they run, they measure what they say, and the JAX peer
simulates the same double pendulum as chaosgrad (so its ratio compares equal work).

Timings are printed by ``python -m experiments.bench``, never asserted here.
"""
import math

import pytest
import torch

import systems
from estimators.rollout import compiled
from experiments.bench import speed as bench


def test_largest_step_tensor_of_disk_packing_is_the_pair_tensor():
    """The size cap of the rollout table: one FIRE step's largest tensors are the [B, N, N]
    pair terms (float32), measured on 2 rows and scaled to B."""
    system = systems.make("disk_packing", n_disks=16)
    for B in (2, 4096):
        assert bench._state_bytes(system, B, "cpu") == B * 16 * 16 * 4


def test_rollout_rate_and_estimate_seconds_at_smoke_sizes():
    system = systems.make("logistic_map")
    assert bench.rollout_rate(system, 8, steps=4) > 0
    assert bench.rollout_rate(compiled(systems.make("logistic_map")), 8, steps=4) > 0
    for name in ("antithetic_es", "pes", "bptt"):
        assert 0 < bench.estimate_seconds(name, systems.make("double_pendulum"), 4, 20, K=10)


def test_rollout_table_prints_eager_compiled_and_compile_seconds(capsys):
    assert bench.main(["--only", "rollout", "--systems", "logistic_map", "--sizes", "16"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith("logistic_map")]
    assert len(row) == 1
    _, device, B, eager, comp, ratio, seconds = row[0].split()
    assert (device, B) == ("cpu", "16") and float(eager) > 0 and float(comp) > 0
    assert float(seconds) > 0 and math.isclose(float(ratio), float(comp) / float(eager),
                                               rel_tol=0.05, abs_tol=0.01)


def test_jax_peer_steps_the_same_double_pendulum():
    """The JAX peer's step against `systems.DoublePendulum` from the same state and policy, over
    50 steps (0.5 s, too short for chaos to amplify float32 rounding): states and losses agree."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import numpy as np

    from experiments.bench.jax_peer import make_step
    system = systems.make("double_pendulum")
    g = torch.Generator().manual_seed(0)
    theta = 0.3 * torch.randn(1, 14, generator=g)
    state = system.init_state(theta, torch.tensor([5]))
    step = jax.jit(make_step())
    s = jnp.asarray(state[0].numpy())
    th = jnp.asarray(theta[0].numpy())
    for t in range(50):
        state, loss = system.step(theta, state, torch.tensor([t]), torch.tensor([5]))
        s, jloss = step(th, s)
        np.testing.assert_allclose(np.asarray(s), state[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(float(jloss), float(loss[0]), rtol=1e-4, atol=1e-5)


def test_bptt_peak_memory_is_the_child_process_own():
    """The peak is read from the child's own address space: a parent holding 1 GiB (as the
    benchmark does after its rollout tables) does not leak into it, and a longer unroll peaks
    higher."""
    big = torch.ones(2**28)  # noqa: F841  (1 GiB held by this process while the child runs)
    short, saved_short = bench.bptt_peak_memory(1, None, samples=64)
    long, saved_long = bench.bptt_peak_memory(400, None, samples=64)
    assert short < 2**30 and long < 2**30
    assert saved_long > 100 * saved_short and long > short


class _FakeCompiled:
    """Compiles (adds to compile_seconds) on the calls listed in ``compiling``."""

    def __init__(self, compiling):
        self.compile_seconds, self.calls, self.compiling = 0.0, 0, set(compiling)

    def measure(self):
        self.calls += 1
        if self.calls in self.compiling:
            self.compile_seconds += 5.0
            return 5.5
        return 0.5 + 0.01 * self.calls


def test_compiled_timings_exclude_compilation_at_every_size():
    fast = _FakeCompiled({1, 2})        # the warm-up and the first timed call both compile
    assert bench.steady_seconds(fast.measure, fast) == pytest.approx(0.53)
    assert fast.calls == 4
    always = _FakeCompiled(range(1, 100))
    assert math.isnan(bench.steady_seconds(always.measure, always))

"""The CUDA path: same estimates as on the CPU, the compiled (CUDA-graph) step, no host syncs
inside an unroll, checkpointed BPTT, and the CLI with ``--device cuda``.

Skipped without a GPU (CI has none); run on a CUDA machine with ``bash .ci/gpu``. The contract
suite (tests/test_contract.py) also reruns on CUDA there through the ``device`` fixture.
"""
import warnings

import pytest
import torch

import estimators
import systems
from estimators.rollout import compiled, unroll
from experiments import cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA, F64 = torch.device("cuda"), torch.float64
POLICIES = ["double_pendulum", "mass_spring_walker", "learned_optimizer"]


@pytest.mark.parametrize("name", ["logistic_map", "lorenz_fit", *POLICIES])
@pytest.mark.parametrize("est_name", ["antithetic_es", "pes", "bptt"])
def test_cuda_estimates_equal_cpu_float64(name, est_name):
    """Counter-based noise makes a seed mean the same perturbations and episodes on any device,
    so the float64 estimate on CUDA equals the CPU one up to rounding."""
    system = systems.make(name, **systems.SYSTEMS.get(name).regimes.get("regular", {}))
    hp = {"samples": 3} if est_name == "bptt" else {"pairs": 3}
    if est_name == "pes":
        hp["truncation"] = 5
    est = estimators.make(est_name, sigma=0.01, horizon=10, **hp)
    grads = []
    for device in ("cpu", CUDA):
        theta = system.init_params(dtype=F64, device=device) + 0.01
        state = est.init(system, theta, seed=3)
        for _ in range(2):
            e, state = est.estimate(system, theta, state)
        assert e.grad.device.type == torch.device(device).type
        grads.append(e.samples.cpu())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["logistic_map", *POLICIES])
def test_compiled_cuda_graph_step_matches_eager(name):
    """No-grad steps on CUDA go through mode="reduce-overhead" (CUDA graphs); outputs are copied
    out of the graph's static buffers, so consecutive replays do not overwrite earlier results."""
    system = systems.make(name, **systems.SYSTEMS.get(name).regimes.get("regular", {}))
    fast = compiled(system)
    theta = system.init_params(device=CUDA) + 0.01
    est = estimators.make("pes", pairs=64, sigma=0.01, horizon=20, truncation=7)
    s1, s2 = est.init(system, theta, seed=0), est.init(fast, theta, seed=0)
    for _ in range(4):  # crosses episode restarts
        e1, s1 = est.estimate(system, theta, s1)
        e2, s2 = est.estimate(fast, theta, s2)
        torch.testing.assert_close(e2.samples, e1.samples, rtol=2e-3, atol=2e-4)
    assert fast.fallback is None and fast.compile_seconds > 0


def test_unroll_syncs_with_the_host_once_per_segment_not_per_step():
    """`torch.cuda.set_sync_debug_mode` warns on every synchronising call; a segment of 40 steps
    must sync no more often than one of 4."""
    system = systems.make("double_pendulum")
    theta = system.init_params(device=CUDA).expand(256, -1)
    keys = torch.arange(256, device=CUDA)
    t0 = torch.zeros_like(keys)

    def syncs(steps: int) -> int:
        state = system.init_state(theta, keys)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with torch.no_grad():
                    unroll(system, theta, state, t0, t0, lambda _: keys, steps, horizon=15)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(40) == syncs(4) <= 2


def test_checkpointed_bptt_on_cuda_equals_plain():
    system = systems.make("double_pendulum", release_angle=0.1)
    theta = system.init_params(dtype=F64, device=CUDA) + 0.01
    grads = []
    for ckpt in (None, 7):
        est = estimators.make("bptt", samples=4, sigma=0.01, horizon=50, checkpoint=ckpt)
        e, _ = est.estimate(system, theta, est.init(system, theta, seed=1))
        grads.append(e.samples)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_cli_curves_on_cuda(tmp_path, capsys):
    assert cli.main(["curves", "logistic", "--quick", "--device", "cuda", "--out",
                     str(tmp_path)]) == 0
    assert list(tmp_path.rglob("*.png"))

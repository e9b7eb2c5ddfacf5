"""The unroll loop reads nothing back from its tensors step by step (no host syncs per step).

On CUDA every data-dependent read (``.item()``, ``bool(tensor)``, ``nonzero``, a boolean mask
index) waits for the GPU; `unroll` is meant to have one such read per segment (`reset_steps`),
whatever its length. The CPU cannot show a wait, but the operators that would cause one are
visible to a dispatch mode, so the property is checked here for every system, without a GPU
(tests/test_cuda.py checks it again with CUDA's sync debug mode where a GPU is present).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import systems
from estimators.rollout import start_episodes, unroll

# operators whose result depends on tensor data and must be copied to the host to be used
HOST_READS = {"_local_scalar_dense", "is_nonzero", "nonzero", "equal", "masked_select",
              "unique", "_unique2", "allclose"}


class CountHostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _host_reads(system, steps: int, budget: bool) -> list[str]:
    B = 6
    theta = system.init_params(dtype=torch.float64).expand(B, -1).clone()
    keys = torch.arange(B)
    t = torch.tensor([0, 1, 2, 3, 4, 5]) % system.horizon
    state = system.init_state(theta, keys)
    spend = torch.tensor([steps, steps - 1, 0, steps, 2, steps]).clamp_min(0) if budget else None
    with torch.no_grad(), CountHostReads() as mode:
        unroll(system, theta, state, t, torch.zeros_like(t), lambda e: keys + 100 * e, steps,
               horizon=3, budget=spend)
    return mode.calls


@pytest.mark.parametrize("budget", [False, True], ids=["plain", "budget"])
@pytest.mark.parametrize("name", sorted(systems.available()))
def test_unroll_host_reads_do_not_grow_with_the_number_of_steps(name, budget):
    """Horizon 3 forces restarts inside the segment, so the reset branch is exercised too."""
    system = systems.make(name)
    short, long = _host_reads(system, 4, budget), _host_reads(system, 24, budget)
    assert long == short, f"{name}.step or unroll reads tensor data back every step: {long}"


def test_staggered_start_has_no_per_step_host_reads():
    system = systems.make("logistic_map")
    theta = system.init_params(dtype=torch.float64).expand(8, -1)
    counts = []
    for horizon in (8, 64):
        offsets = torch.arange(8) * horizon // 8
        with torch.no_grad(), CountHostReads() as mode:
            start_episodes(system, theta, lambda e: torch.arange(8) + e, offsets, horizon)
        counts.append(len(mode.calls))
    assert counts[0] == counts[1]

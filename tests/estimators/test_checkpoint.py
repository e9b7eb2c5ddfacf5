"""Checkpointed BPTT gives the gradient of plain BPTT (same operations, recomputed) up to the
order in which segment contributions are summed."""
import pytest
import torch

import estimators
import systems

F64 = torch.float64


@pytest.mark.parametrize("system_name", ["double_pendulum", "mass_spring_walker", "logistic_map"])
@pytest.mark.parametrize("segment", [1, 7, 50])
def test_checkpointed_bptt_equals_plain_bptt_exactly(system_name, segment):
    system = systems.make(system_name)
    theta = system.init_params(dtype=F64) + 0.01
    out = []
    for checkpoint in (None, segment):
        est = estimators.make("bptt", samples=3, sigma=0.01, horizon=50, checkpoint=checkpoint)
        e, _ = est.estimate(system, theta, est.init(system, theta, seed=1))
        out.append(e)
    plain, ckpt = out
    assert torch.equal(ckpt.loss, plain.loss)  # the forward arithmetic is the same
    # The backward runs segment by segment, so theta's gradient is accumulated in another order:
    # at most T additions, each rounding by 2^-52 of the running sum in float64.
    tol = 50 * 2.0**-52 * plain.samples.abs().max()
    torch.testing.assert_close(ckpt.samples, plain.samples, rtol=0, atol=tol.item())
    assert torch.equal(ckpt.grad, ckpt.samples.mean(0)) and ckpt.steps == plain.steps


def test_checkpoint_is_validated():
    with pytest.raises(ValueError):
        estimators.make("bptt", checkpoint=0)
    with pytest.raises(TypeError):
        estimators.make("bptt", checkpoint=2.5)

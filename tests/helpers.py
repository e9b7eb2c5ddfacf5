"""Small helpers shared by the test modules."""
import torch


def rollout(system, theta, keys, steps):
    """Run ``steps`` steps of ``system`` from `init_state`.

    Args:
        theta: ``[B, D]`` parameters; keys: ``[B]`` int64 episode keys.
    Returns:
        ``(losses [steps, B], final state)``.
    """
    state, losses = system.init_state(theta, keys), []
    for t in range(steps):
        state, loss = system.step(theta, state, torch.full_like(keys, t), keys)
        losses.append(loss)
    return torch.stack(losses), state


def assert_deterministic_and_batch_independent(system, theta, steps):
    """For a system whose state is one tensor: two runs of keys (5, 9, 5, 2) with row 1's theta shifted agree bitwise, rows 0 and 2
    (same key) agree, and row 2 run alone equals row 2 in the batch.

    Returns:
        the per-step losses ``[steps, 4]`` of the batch, for checks of the keys' effect.
    """
    keys = torch.tensor([5, 9, 5, 2])
    rows = theta.expand(4, -1).clone()
    rows[1, 0] += 0.1
    (l1, s1), (l2, s2) = rollout(system, rows, keys, steps), rollout(system, rows, keys, steps)
    alone, _ = rollout(system, rows[2:3], keys[2:3], steps)
    assert torch.equal(l1, l2) and torch.equal(s1, s2)
    assert torch.equal(l1[:, 0], l1[:, 2])
    torch.testing.assert_close(alone, l1[:, 2:3], rtol=0, atol=1e-12)
    return l1

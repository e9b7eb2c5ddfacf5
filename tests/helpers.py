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

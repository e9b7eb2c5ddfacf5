"""Batched unrolls shared by all estimators: resets at the horizon, staggered starts.

A segment advances B rows together for a number of steps. A row whose step index reaches the
horizon restarts a new episode (new key, fresh `init_state`) at that point, so one segment may
hold the end of one episode and the start of the next; their losses are summed separately
(``loss_pre``, ``loss_post``), because online ES estimators weight the two parts differently.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from systems import System, tree_map, tree_where

__all__ = ["Segment", "unroll", "stagger_offsets", "detach"]


class Segment(NamedTuple):
    """The result of `unroll`; every field has leading dimension B."""

    state: Any
    t: Tensor          # [B] step index within the current episode after the segment
    episode: Tensor    # [B] episode counter after the segment
    loss_pre: Tensor   # [B] sum of per-step losses before a restart in this segment
    loss_post: Tensor  # [B] sum of per-step losses after it (zero if none)
    reset: Tensor      # [B] bool, whether the row restarted an episode in this segment


def unroll(system: System, theta: Tensor, state: Any, t: Tensor, episode: Tensor,
           keys_for: Callable[[Tensor], Tensor], steps: int, horizon: int, *,
           theta_next: Tensor | None = None, budget: Tensor | None = None) -> Segment:
    """Advance every row ``steps`` steps, restarting episodes at ``horizon``.

    Args:
        theta: ``[B, D]`` parameters used until a row restarts.
        state, t, episode: current states, ``[B]`` step indices and ``[B]`` episode counters.
        keys_for: maps ``[B]`` episode counters to ``[B]`` episode keys.
        theta_next: ``[B, D]`` parameters after a restart (default ``theta``).
        budget: ``[B]`` steps each row may take (default ``steps``); rows past their budget
            stand still, which is how staggered particles are burnt in.
    """
    theta_next = theta if theta_next is None else theta_next
    keys = keys_for(episode)
    loss_pre = theta.new_zeros(t.shape)
    loss_post = theta.new_zeros(t.shape)
    reset = torch.zeros_like(t, dtype=torch.bool)
    for j in range(steps):
        active = None if budget is None else budget > j
        done = t >= horizon if active is None else (t >= horizon) & active
        if bool(done.any()):
            episode = episode + done
            keys = keys_for(episode)
            state = tree_where(done, system.init_state(theta_next, keys), state)
            t = torch.where(done, torch.zeros_like(t), t)
            reset = reset | done
        params = theta if theta_next is theta else torch.where(reset[:, None], theta_next, theta)
        new_state, loss = system.step(params, state, t, keys)
        if active is not None:
            new_state = tree_where(active, new_state, state)
            loss = torch.where(active, loss, torch.zeros_like(loss))
            t = t + active.long()
        else:
            t = t + 1
        state = new_state
        loss_pre = loss_pre + torch.where(reset, torch.zeros_like(loss), loss)
        loss_post = loss_post + torch.where(reset, loss, torch.zeros_like(loss))
    return Segment(state, t, episode, loss_pre, loss_post, reset)


def stagger_offsets(n: int, horizon: int, stagger: bool, device) -> Tensor:
    """Episode offsets ``[n]``: evenly spread over [0, T) if ``stagger``, else all zero."""
    idx = torch.arange(n, dtype=torch.int64, device=device)
    return (idx * horizon) // n if stagger else torch.zeros_like(idx)


def detach(state: Any) -> Any:
    """Cut the autograd history of a system state."""
    return tree_map(lambda x: x.detach(), state)


def start_episodes(system: System, theta: Tensor, keys_for: Callable[[Tensor], Tensor],
                   offsets: Tensor, horizon: int) -> Segment:
    """Fresh episodes for ``[B]`` rows, each advanced ``offsets[b]`` steps with ``theta[b]``.

    With all offsets zero this just calls `init_state`; otherwise it is the staggered burn-in of
    online estimators (its steps are not counted in any estimate).
    """
    t = torch.zeros_like(offsets)
    state = system.init_state(theta, keys_for(t))
    steps = int(offsets.max()) if offsets.numel() else 0
    with torch.no_grad():
        return unroll(system, theta, state, t, torch.zeros_like(offsets), keys_for, steps,
                      horizon, budget=offsets)

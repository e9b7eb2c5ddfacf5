"""The full-horizon unroll shared by BPTT, AntitheticES and Mixed.

One call starts fresh episodes for a state's n particles (population indices p_i, call counter
c), with eps_i = perturbations(seed, p_i, c) and key_i = episode_keys(seed, p_i, c), from the rows

    theta + sigma eps_i                        one-sided (BPTT; sigma = 0: plain BPTT), n rows
    theta + sigma eps_i, theta - sigma eps_i   antithetic (AntitheticES, Mixed), 2n rows

(the two members of an antithetic pair share key_i), runs them T steps and returns each row's
mean per-step loss L_r and, if asked, its pathwise gradient dL_r/d row_r from one backward
pass. ``checkpoint=S`` cuts the unroll into segments of S steps, run forward without autograd
and recomputed with it in the backward pass (torch.utils.checkpoint, reentrant): memory ~ T/S
boundary states + one segment's graph, for about one extra forward pass, same operations. The
reentrant variant is the one that drops the graph as well as the saved tensors (the
non-reentrant one keeps every step's graph nodes, which dominate for small states); it supports
``Tensor.backward`` but not ``torch.autograd.grad``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.utils.checkpoint
from torch import Tensor

from systems import System, tree_leaves, tree_map

from .base import episode_keys, perturbations
from .rollout import Segment, antithetic_rows, unroll

__all__ = ["FullUnroll", "full_unroll", "pathwise_samples", "checkpointed_unroll"]


class FullUnroll(NamedTuple):
    """The result of `full_unroll` (R = 2n rows if antithetic, else n)."""

    eps: Tensor           # [n, D] perturbation directions
    losses: Tensor        # [R] mean per-step loss of each row (detached)
    grads: Tensor | None  # [R, D] pathwise gradient of each row's loss (None unless asked)
    steps: int            # R * T trajectory-steps simulated


def pathwise_samples(losses: Tensor, rows: Tensor) -> Tensor:
    """Per-row gradients ``d losses[i] / d rows[i]`` ``[N, D]`` from one backward pass.

    Valid because row i's loss depends on row i of the parameters only (the System contract's
    batch independence), so the gradient of ``losses.sum()`` separates by row.
    """
    if not losses.requires_grad:
        return torch.zeros_like(rows)
    (grad,) = torch.autograd.grad(losses.sum(), rows, allow_unused=True)
    return torch.zeros_like(rows) if grad is None else grad


def _pathwise_backward(losses: Tensor, rows: Tensor) -> Tensor:
    """`pathwise_samples` through ``Tensor.backward`` (what reentrant checkpointing supports):
    ``rows`` is the only leaf that requires grad, so its ``.grad`` is the per-row gradient."""
    if not losses.requires_grad:
        return torch.zeros_like(rows)
    rows.grad = None
    losses.sum().backward()
    return torch.zeros_like(rows) if rows.grad is None else rows.grad


def _unflatten(like: Any, leaves) -> Any:
    """A state of the same structure as ``like`` with ``leaves`` in order (the reentrant
    checkpoint passes tensors only, not NamedTuples)."""
    it = iter(leaves)
    return tree_map(lambda _: next(it), like)


def checkpointed_unroll(system: System, theta: Tensor, state, t: Tensor, episode: Tensor,
                        keys_for, steps: int, horizon: int, segment: int | None) -> Segment:
    """`unroll` cut into checkpointed segments of ``segment`` steps (plain `unroll` if None).

    The losses are carried across segments, so the forward arithmetic, and hence the gradient,
    is that of one unroll. For one episode per row (no restart inside ``steps``).
    """
    if segment is None or segment >= steps:
        return unroll(system, theta, state, t, episode, keys_for, steps, horizon)

    def run_flat(n, theta, t, episode, pre, post, *leaves):
        seg = unroll(system, theta, _unflatten(state, leaves), t, episode, keys_for, n, horizon,
                     carry=(pre, post))
        return (*tree_leaves(seg.state), *seg[1:])

    k = len(tree_leaves(state))
    seg = Segment(state, t, episode, *(theta.new_zeros(t.shape),) * 2,
                  torch.zeros_like(t, dtype=torch.bool))
    for start in range(0, steps, segment):
        out = torch.utils.checkpoint.checkpoint(
            run_flat, min(segment, steps - start), theta, seg.t, seg.episode, seg.loss_pre,
            seg.loss_post, *tree_leaves(seg.state), use_reentrant=True)
        seg = Segment(_unflatten(state, out[:k]), *out[k:])
    return seg


def full_unroll(system: System, theta: Tensor, state: Any, sigma: float, horizon: int, *,
                antithetic: bool, pathwise: bool = False,
                checkpoint: int | None = None) -> FullUnroll:
    """Fresh episodes of ``horizon`` steps for the particles of ``state`` at ``theta`` ``[D]``.

    Args:
        state: a full-horizon state (``seed``, call counter ``count``, population indices
            ``particle`` ``[n]``); the counter selects this call's eps and keys.
        sigma: the perturbation scale (0 for plain BPTT: rows equal theta).
        antithetic: 2n rows theta +/- sigma eps (+ members first), else n rows theta + sigma eps.
        pathwise: also return each row's pathwise gradient (autograd through the unroll).
        checkpoint: segment length S of checkpointed backprop (None: plain autograd).
    """
    particle, count = state.particle, state.count
    eps = perturbations(state.seed, particle, count, system.param_dim, theta.dtype)
    rows = antithetic_rows(theta, eps, sigma) if antithetic else theta + sigma * eps
    member = particle.repeat(2) if antithetic else particle
    keys = episode_keys(state.seed, member, count.expand(member.shape))
    grads = None
    with torch.set_grad_enabled(pathwise):
        rows.requires_grad_(pathwise)
        seg = checkpointed_unroll(system, rows, system.init_state(rows, keys),
                                  torch.zeros_like(member), count.expand(member.shape),
                                  lambda _: keys, horizon, horizon, checkpoint)
        losses = seg.loss_pre / horizon
        if pathwise:
            grads = (pathwise_samples(losses, rows) if checkpoint is None
                     else _pathwise_backward(losses, rows)).detach()
    return FullUnroll(eps, losses.detach(), grads, member.shape[0] * horizon)

"""Backpropagation through the full unroll (the reparameterised / pathwise gradient).

    g = (1/N) sum_i grad_theta L(theta + sigma eps_i; key_i),    eps_i ~ N(0, I)

With sigma = 0 this is the plain pathwise gradient averaged over N episode keys; with sigma > 0
it is an unbiased estimate of grad L_sigma (the reparameterisation trick). In a chaotic system
its variance grows like exp(2 lambda T) (Metz et al. 2021, "Gradients are Not All You Need").

Memory grows like T (autograd keeps every step's intermediates and graph nodes). With
``checkpoint=S`` the unroll is cut into segments of S steps, each run forward without autograd
and recomputed with it during the backward pass (torch.utils.checkpoint, reentrant): memory ~
T/S boundary states + one segment's graph, for about one extra forward pass; the gradient is
the same (same operations). The reentrant variant is the one that drops the graph as well as
the saved tensors (the non-reentrant one keeps every step's graph nodes, which dominate for
small states); it supports ``Tensor.backward`` but not ``torch.autograd.grad``, hence
`_pathwise_backward`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.utils.checkpoint
from torch import Tensor

from systems import System, tree_leaves, tree_map

from .base import Estimate, Estimator, _check_int, _check_sigma, episode_keys, finite_estimate, perturbations
from .registry import register
from .rollout import Segment, unroll

__all__ = ["BPTT", "BPTTState", "pathwise_samples", "checkpointed_unroll"]


class BPTTState(NamedTuple):
    """State of the full-horizon estimators between calls: the seed and the call counter."""

    seed: Tensor   # int64 scalar
    count: Tensor  # int64 scalar, calls so far (each call uses fresh keys)


def pathwise_samples(losses: Tensor, rows: Tensor) -> Tensor:
    """Per-row gradients ``d losses[i] / d rows[i]`` ``[N, D]`` from one backward pass.

    Valid because row i's loss depends on row i of the parameters only (the System contract's
    batch independence), so the gradient of ``losses.sum()`` separates by row.
    """
    if not losses.requires_grad:
        return torch.zeros_like(rows)
    (grad,) = torch.autograd.grad(losses.sum(), rows, allow_unused=True)
    return torch.zeros_like(rows) if grad is None else grad


def checkpointed_unroll(system: System, theta: Tensor, state, t: Tensor, episode: Tensor,
                        keys_for, steps: int, horizon: int, segment: int | None) -> Segment:
    """`unroll` cut into checkpointed segments of ``segment`` steps (plain `unroll` if None).

    The losses are carried across segments, so the forward arithmetic, and hence the gradient,
    is that of one unroll. For one episode per row (no restart inside ``steps``), as in BPTT.
    """
    if segment is None or segment >= steps:
        return unroll(system, theta, state, t, episode, keys_for, steps, horizon)

    def run(n, theta, state, t, episode, pre, post):
        return tuple(unroll(system, theta, state, t, episode, keys_for, n, horizon,
                            carry=(pre, post)))

    def run_flat(n, theta, t, episode, pre, post, *leaves):
        out = run(n, theta, _unflatten(structure, leaves), t, episode, pre, post)
        return (*_flatten(out[0]), *out[1:])

    structure = state
    seg = Segment(state, t, episode, *(theta.new_zeros(t.shape),) * 2,
                  torch.zeros_like(t, dtype=torch.bool))
    for start in range(0, steps, segment):
        n = min(segment, steps - start)
        out = torch.utils.checkpoint.checkpoint(
            run_flat, n, theta, seg.t, seg.episode, seg.loss_pre, seg.loss_post,
            *_flatten(seg.state), use_reentrant=True)
        k = len(_flatten(structure))
        seg = Segment(_unflatten(structure, out[:k]), *out[k:])
    return seg


def _flatten(state) -> list[Tensor]:
    return tree_leaves(state)


def _unflatten(like, leaves):
    """A state of the same structure as ``like`` with ``leaves`` in order (the reentrant
    checkpoint passes tensors only, not NamedTuples)."""
    it = iter(leaves)
    return tree_map(lambda _: next(it), like)


def _pathwise_backward(losses: Tensor, rows: Tensor) -> Tensor:
    """`pathwise_samples` through ``Tensor.backward`` (what reentrant checkpointing supports):
    ``rows`` is the only leaf that requires grad, so its ``.grad`` is the per-row gradient."""
    if not losses.requires_grad:
        return torch.zeros_like(rows)
    rows.grad = None
    losses.sum().backward()
    return torch.zeros_like(rows) if rows.grad is None else rows.grad


@register("bptt")
class BPTT(Estimator):
    """Pathwise gradient through the full horizon, optionally Gaussian-smoothed (sigma).

    ``checkpoint=S`` recomputes S-step segments in the backward pass (memory ~ T/S states
    plus one segment's graph).
    """

    needs_grad = True

    def __init__(self, samples: int = 8, sigma: float = 0.0, horizon: int | None = None,
                 checkpoint: int | None = None):
        super().__init__(horizon=horizon)
        self.samples = _check_int("samples", samples)
        self.sigma = _check_sigma(sigma, allow_zero=True)
        self.checkpoint = None if checkpoint is None else _check_int("checkpoint", checkpoint)

    def init(self, system: System, theta: Tensor, *, seed: int) -> BPTTState:
        theta = self.check(system, theta)
        zero = torch.zeros((), dtype=torch.int64, device=theta.device)
        return BPTTState(self.seed_tensor(seed, theta), zero)

    def estimate(self, system: System, theta: Tensor, state: BPTTState) -> tuple[Estimate, BPTTState]:
        theta = self.check(system, theta)
        T, N = self.horizon_for(system), self.samples
        particle = torch.arange(N, device=theta.device)
        keys = episode_keys(state.seed, particle, state.count.expand(N))
        eps = perturbations(state.seed, particle, state.count, system.param_dim, theta.dtype)
        rows = (theta + self.sigma * eps).requires_grad_()
        with torch.enable_grad():
            start = system.init_state(rows, keys)
            seg = checkpointed_unroll(system, rows, start, torch.zeros_like(particle),
                                      state.count.expand(N), lambda _: keys, T, T,
                                      self.checkpoint)
            losses = seg.loss_pre / T
            samples = (pathwise_samples(losses, rows) if self.checkpoint is None
                       else _pathwise_backward(losses, rows))
        est = finite_estimate(samples.detach(), losses.detach(), N * T)
        return est, state._replace(count=state.count + 1)

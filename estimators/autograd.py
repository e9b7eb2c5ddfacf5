"""Estimator gradients inside autograd: a window's loss whose backward is the estimator's gradient.

`unrolled_loss` runs one estimate, ``e = estimator.estimate(system, theta, state)``, and returns
the window's loss ``e.loss`` as a scalar tensor attached to the graph that produced theta, with

    d loss / d theta := e.grad                  (the estimator's gradient, not autograd's)

so ``loss.backward()`` delivers, by the chain rule, ``(d theta / d phi)^T e.grad`` to anything
theta was computed from: a hyper-network, a shared embedding, a schedule parameterisation, an
`torch.nn.Module` holding theta. For ``theta = A phi``, ``phi.grad = A^T e.grad``. This is the
zero-order "gradient inside autograd" of TorchOpt's ``zero_order`` decorator, with the samples
batched in one unroll and the noise fixed by the estimator's seed and state instead of drawn
afresh from a global generator.

Online estimators (PES, NRES, truncated BPTT/ES) advance one window per call and keep their
particles in the returned state: pass it to the next call.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from systems import System

from .base import Estimator

__all__ = ["unrolled_loss"]


class _EstimatedLoss(torch.autograd.Function):
    """``loss`` as a function of ``theta`` with vector-Jacobian product ``grad_output * grad``."""

    @staticmethod
    def forward(theta: Tensor, loss: Tensor, grad: Tensor) -> Tensor:
        return loss.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(inputs[2])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None


def unrolled_loss(system: System, theta: Tensor, estimator: Estimator,
                  state: Any) -> tuple[Tensor, Any]:
    """One estimate as a differentiable loss: ``(loss, next_state)``.

    The estimate runs on ``theta.detach()`` (its unrolls are not part of the caller's graph);
    the returned ``loss`` is the estimate's window loss ``e.loss`` (scalar, the mean per-step
    loss of the finite samples) with a ``grad_fn`` when ``theta`` requires grad, and its
    backward gives theta the gradient ``grad_output * e.grad`` ``[D]``. When every sample was
    non-finite, ``loss`` and the gradient are NaN (`Estimate.ok` is False), so a training loop
    that does not check fails loudly.

    Args:
        system: the `systems.System` to unroll.
        theta: ``[D]`` floating parameters, ``D = system.param_dim``, usually the output of a
            differentiable computation (or an ``nn.Parameter``).
        estimator: any `Estimator` (full-horizon or online).
        state: the estimator's state, from ``estimator.init(system, theta, seed=...)`` or the
            previous call.
    Returns:
        ``(loss, state)``: a scalar tensor of theta's dtype and device, and the estimator's
        next state (online estimators: the particles advanced by one window).

    Example::

        net = HyperNet()                                  # any nn.Module producing theta [D]
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        est = estimators.make("pes", sigma=0.01, truncation=20, pairs=16)
        state = est.init(system, net().detach(), seed=0)
        for _ in range(100):
            loss, state = unrolled_loss(system, net(), est, state)
            opt.zero_grad(); loss.backward(); opt.step()
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"estimator must be an estimators.Estimator, got "
                        f"{type(estimator).__name__}")
    if not isinstance(theta, Tensor):
        raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
    dim = getattr(system, "param_dim", None)
    if theta.dim() != 1 or (dim is not None and theta.shape[0] != dim):
        raise ValueError(f"theta must be a 1-D tensor of shape [{dim}] (the param_dim of "
                         f"{getattr(system, 'name', system)!r}), got shape {list(theta.shape)}")
    e, state = estimator.estimate(system, theta.detach(), state)
    return _EstimatedLoss.apply(theta, e.loss.detach(), e.grad.detach()), state

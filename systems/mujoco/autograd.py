"""Pathwise gradients through MuJoCo: one environment step as a `torch.autograd.Function`.

Forward: `Simulator.step` on the rows (no graph of its own). Backward: the step's Jacobians
in state coordinates from `Simulator.jacobians` (``mjd_transitionFD`` composed over the frame
skip, see `systems.mujoco.simulator`), computed only when a gradient is asked for, and

    ds_in = Jx^T [ds_out, dy_out],        du = Ju^T [ds_out, dy_out]

as batched matrix products of torch tensors, so a second differentiation (JVPs through the
backward, as `systems.lyapunov_exponents` does) works too. Rows that were not simulated (done,
non-finite) have zero Jacobians: the caller selects their old state with ``torch.where``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["mujoco_step"]


class _Step(torch.autograd.Function):

    @staticmethod
    def forward(ctx, sim: Any, reason: str | None, physics: Tensor, ctrl: Tensor,
                live: Tensor):
        out, extras, failed = sim.step(physics.detach().cpu().numpy(),
                                       ctrl.detach().cpu().numpy(), live.cpu().numpy())
        ctx.sim, ctx.reason = sim, reason
        ctx.save_for_backward(physics, ctrl, live)
        failed = torch.from_numpy(failed).to(physics.device)
        ctx.mark_non_differentiable(failed)
        return (torch.from_numpy(out).to(physics.device),
                torch.from_numpy(extras).to(physics.device), failed)

    @staticmethod
    def backward(ctx, g_physics: Tensor, g_extras: Tensor, _):
        if ctx.reason is not None:
            raise RuntimeError(f"pathwise gradient unavailable: {ctx.reason}")
        physics, ctrl, live = ctx.saved_tensors
        jx, ju = ctx.sim.jacobians(physics.detach().cpu().numpy(), ctrl.detach().cpu().numpy(),
                                   live.cpu().numpy())
        g = torch.cat([g_physics, g_extras], dim=1).unsqueeze(1)          # [B, 1, n + m]
        jx = torch.from_numpy(jx).to(device=g.device, dtype=g.dtype)
        ju = torch.from_numpy(ju).to(device=g.device, dtype=g.dtype)
        return None, None, (g @ jx).squeeze(1), (g @ ju).squeeze(1), None


def mujoco_step(sim: Any, physics: Tensor, ctrl: Tensor, live: Tensor,
                nondifferentiable_reason: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One environment step of the ``live`` rows, differentiable in ``physics`` and ``ctrl``.

    Args:
        sim: the `Simulator`.
        physics: ``[B, n]`` float64 physics states; ctrl: ``[B, nu]`` float64 controls.
        live: ``[B]`` bool, the rows to simulate.
        nondifferentiable_reason: when not None, a backward pass raises a RuntimeError
            "pathwise gradient unavailable: <reason>".
    Returns:
        ``(physics [B, n], extras [B, n_extras], failed [B] bool)`` as `Simulator.step`.
    """
    return _Step.apply(sim, nondifferentiable_reason, physics, ctrl, live)

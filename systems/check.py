"""Check a user's `System` against the contract before trusting any estimate made on it.

`check_system` runs a list of named checks, each passed, failed or skipped with a one-line
message, in float64 at ``theta`` (default ``init_params``):

* ``attributes``: ``param_dim``, ``horizon`` and ``state_dim`` are ints >= 1 and
  ``init_params`` returns a finite floating ``[D]`` tensor;
* ``shapes``: ``init_state(theta [B, D], keys [B])`` and ``step`` return a tensor or a
  (named) tuple of tensors with leading dimension B, the state keeps its structure, and the loss
  is one float64 value per trajectory, ``[B]``;
* ``deterministic``: the same keys give bit-identical trajectories twice (hidden global or
  stateful randomness breaks common random numbers and antithetic pairs);
* ``batch_independent``: a trajectory computed alone equals the same trajectory inside a batch
  with other keys and other rows of theta (to 1e-9 relative: batched BLAS may reorder sums);
* ``finite``: states and losses stay finite over the horizon at ``theta``;
* ``gradient``: autograd agrees with central finite differences on the mean loss of a short
  unroll, along random directions u:

      d_h = [L(theta + h u) - L(theta - h u)] / (2 h),
      |<grad L, u> - d_{h/2}| <= 10 |d_h - d_{h/2}| + 1e-6 max(|<grad L, u>|, |d_{h/2}|) + 1e-9

  where ``|d_h - d_{h/2}|`` estimates the finite difference's own error (Richardson), so the
  tolerance adapts to the system's curvature instead of being a fixed number. A ``.detach()``
  in the step, a wrong custom backward or a loss computed outside autograd fails it.

``differentiable`` is True only when the system declares itself differentiable and the
gradient check passes; ``reason`` says why not otherwise (then pathwise estimators are skipped).

Example::

    report = check_system(my_system)
    str(report)                # one line per check
    report.ok, report.differentiable, report.reason
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from . import noise
from .base import System
from .tree import tree_index, tree_leaves

__all__ = ["Check", "CheckReport", "check_system"]

F64 = torch.float64
_CHECK = 0xC4EC                 # noise stream of the checker's own random directions
_GRAD_STEPS = 5                 # short unroll: chaos cannot amplify finite-difference error much
_DIRECTIONS = 2
_BATCH_RTOL = 1e-9


@dataclass(frozen=True)
class Check:
    """One named check: ``status`` is "passed", "failed" or "skipped"; ``message`` one line."""

    name: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        """Whether the check passed (a skipped check did not)."""
        return self.status == "passed"

    def __str__(self) -> str:
        return f"[{self.status:7s}] {self.name}: {self.message}"


@dataclass
class CheckReport:
    """The checks of `check_system`, the differentiability verdict and its reason.

    Attributes:
        system: ``repr`` of the system checked.
        checks: the `Check`s in the order they ran.
        differentiable: whether pathwise (autograd) gradients can be trusted.
        reason: one line saying why (or why not).
    """

    system: str
    checks: list[Check] = field(default_factory=list)
    differentiable: bool = False
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when no contract check failed (a failed gradient check only makes the system
        non-differentiable: estimators that need only losses still apply)."""
        return not any(c.status == "failed" for c in self.checks if c.name != "gradient")

    @property
    def failures(self) -> list[Check]:
        """The checks that failed, in order."""
        return [c for c in self.checks if c.status == "failed"]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def __str__(self) -> str:
        lines = [f"contract check of {self.system}:"] + [f"  {c}" for c in self.checks]
        verdict = "differentiable" if self.differentiable else "not differentiable"
        return "\n".join(lines + [f"  => {verdict}: {self.reason}"])


class _Failed(Exception):
    """A check failed; the message is its one-line reason."""


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _leaves(state: Any, what: str, b: int) -> list[Tensor]:
    try:
        leaves = tree_leaves(state)
    except TypeError as err:
        raise _Failed(f"{what} is not a tensor or a (named) tuple of tensors: {err}") from None
    for i, x in enumerate(leaves):
        if x.dim() == 0 or x.shape[0] != b:
            raise _Failed(f"{what} leaf {i} has shape {list(x.shape)}, expected leading "
                          f"dimension B = {b}")
    return leaves


def _rollout(system: System, rows: Tensor, keys: Tensor, steps: int) -> tuple[Any, Tensor]:
    """``(final state, losses [B, steps])``, checking shapes at every step."""
    b = rows.shape[0]
    state = system.init_state(rows, keys)
    structure = [tuple(x.shape[1:]) for x in _leaves(state, "init_state's state", b)]
    losses = []
    for t in range(steps):
        state, loss = system.step(rows, state, torch.full_like(keys, t), keys)
        leaves = _leaves(state, f"step's state (t={t})", b)
        if [tuple(x.shape[1:]) for x in leaves] != structure:
            raise _Failed(f"step changed the state's structure at t={t}: "
                          f"{[list(s) for s in structure]} -> {[list(x.shape[1:]) for x in leaves]}")
        if not isinstance(loss, Tensor) or loss.shape != (b,):
            shape = list(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise _Failed(f"the loss must be one value per trajectory, shape [{b}], got {shape}")
        if loss.dtype != rows.dtype:
            raise _Failed(f"the loss has dtype {loss.dtype} for float64 theta")
        losses.append(loss)
    return state, torch.stack(losses, 1)


def _run(report: CheckReport, name: str, fn: Callable[[], str], blocked: str | None) -> bool:
    if blocked is not None:
        report.checks.append(Check(name, "skipped", f"not run: {blocked}"))
        return False
    try:
        report.checks.append(Check(name, "passed", fn()))
        return True
    except _Failed as err:
        report.checks.append(Check(name, "failed", str(err)))
    except Exception as err:  # a user's system may raise anything; report it, do not crash
        report.checks.append(Check(name, "failed", f"raised {_one_line(err)}"))
    return False


def check_system(system: System, theta: Tensor | None = None, *, seed: int = 0,
                 steps: int | None = None) -> CheckReport:
    """Run the contract checks on ``system`` at ``theta`` (float64).

    Args:
        system: the system to check.
        theta: ``[D]`` parameters; default ``system.init_params()``.
        seed: fixes the episode keys and the gradient check's directions.
        steps: horizon of the finiteness check (default: the system's ``horizon``).
    Returns:
        A `CheckReport`; its ``ok`` is False when a contract check failed.
    """
    report = CheckReport(repr(system) if isinstance(system, System) else type(system).__name__)
    if not isinstance(system, System):
        report.checks.append(Check("attributes", "failed",
                                   f"not a systems.System subclass instance: {type(system).__name__}"))
        report.reason = "not a System"
        return report
    ctx: dict[str, Any] = {}

    def attributes() -> str:
        for attr in ("param_dim", "horizon", "state_dim"):
            v = getattr(system, attr, None)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise _Failed(f"{attr} must be an int >= 1, got {v!r}")
        th = system.init_params(dtype=F64) if theta is None else theta
        if not isinstance(th, Tensor) or not th.is_floating_point():
            raise _Failed(f"theta must be a floating tensor, got {type(th).__name__}")
        th = th.detach().to(F64)
        if th.shape != (system.param_dim,):
            raise _Failed(f"theta has shape {list(th.shape)}, expected [param_dim] = "
                          f"[{system.param_dim}]")
        if not bool(torch.isfinite(th).all()):
            raise _Failed("theta contains NaN or inf")
        ctx["theta"] = th
        return f"D = {system.param_dim}, T = {system.horizon}, state_dim = {system.state_dim}"

    keys = torch.tensor([11, 3, 11, 7], dtype=torch.int64) + 1000 * int(seed)

    def shapes() -> str:
        rows = ctx["theta"].expand(4, -1).clone()
        _rollout(system, rows, keys, min(3, system.horizon))
        return "state and loss ([B]) keep the batch dimension"

    def deterministic() -> str:
        rows = ctx["theta"].expand(4, -1).clone()
        n = min(6, system.horizon)
        s1, l1 = _rollout(system, rows, keys, n)
        s2, l2 = _rollout(system, rows, keys, n)
        same = torch.equal(l1, l2) and all(torch.equal(a, b) for a, b in
                                           zip(tree_leaves(s1), tree_leaves(s2)))
        if not same:
            raise _Failed("the same keys gave different results: randomness must be a pure "
                          "function of (key, t) (systems.noise), not global or stateful RNG")
        if not torch.equal(l1[0], l1[2]):
            raise _Failed("two rows with the same key and theta differ inside one batch")
        return "same keys give bit-identical trajectories"

    def batch_independent() -> str:
        rows = ctx["theta"].expand(4, -1).clone()
        rows[1] += 0.01
        rows[3] -= 0.01
        n = min(6, system.horizon)
        s, losses = _rollout(system, rows, keys, n)
        s1, alone = _rollout(system, rows[2:3], keys[2:3], n)
        pairs = [(alone, losses[2:3])] + list(zip(tree_leaves(s1),
                                                  tree_leaves(tree_index(s, slice(2, 3)))))
        for a, b in pairs:
            if a.is_floating_point():
                bad = (a - b).abs() > _BATCH_RTOL * (1 + b.abs())
            else:
                bad = a != b
            if bool(bad.any()):
                raise _Failed("a trajectory changes with the other rows of its batch (keys or "
                              "theta of other trajectories leak into it)")
        return "a trajectory alone equals the same trajectory in a batch"

    def finite() -> str:
        n = system.horizon if steps is None else steps
        rows = ctx["theta"].expand(4, -1).clone()
        with torch.no_grad():
            s, losses = _rollout(system, rows, keys, n)
        if not bool(torch.isfinite(losses).all()):
            t = int((~torch.isfinite(losses)).any(0).nonzero()[0])
            raise _Failed(f"NaN/inf loss at step {t} of {n} at theta")
        if not all(bool(torch.isfinite(x).all()) for x in tree_leaves(s) if x.is_floating_point()):
            raise _Failed(f"NaN/inf state after {n} steps at theta")
        return f"losses and states finite over {n} steps"

    def gradient() -> str:
        th, D = ctx["theta"], system.param_dim
        n = min(_GRAD_STEPS, system.horizon)
        dkeys = torch.full((_DIRECTIONS,), 17 + int(seed), dtype=torch.int64)
        u = noise.normal(dkeys, torch.arange(_DIRECTIONS), stream=_CHECK, shape=(D,), dtype=F64)
        u = u / u.norm(dim=1, keepdim=True)
        key = torch.full((1,), 5 + 1000 * int(seed), dtype=torch.int64)
        rows = th[None].clone().requires_grad_()
        with torch.enable_grad():
            _, losses = _rollout(system, rows, key, n)
            mean = losses.mean()
            if not mean.requires_grad:
                raise _Failed("the loss does not depend on theta through autograd "
                              "(computed outside torch, or detached)")
            (g,) = torch.autograd.grad(mean, rows, allow_unused=True)
        g = torch.zeros(D, dtype=F64) if g is None else g[0].detach()
        if not bool(torch.isfinite(g).all()):
            raise _Failed("autograd gives a NaN/inf gradient at theta")
        h = torch.finfo(F64).eps ** (1 / 3) * max(1.0, float(th.abs().max()))
        fd_rows = torch.cat([th + c * h * u for c in (1.0, -1.0, 0.5, -0.5)])
        with torch.no_grad():
            _, fl = _rollout(system, fd_rows, key.expand(4 * _DIRECTIONS).clone(), n)
        p1, m1, p2, m2 = fl.mean(1).chunk(4)
        d1, d2 = (p1 - m1) / (2 * h), (p2 - m2) / h
        ad = u @ g
        tol = 10 * (d1 - d2).abs() + 1e-6 * torch.maximum(ad.abs(), d2.abs()) + 1e-9
        err = (ad - d2).abs()
        worst = int((err - tol).argmax())
        if bool((err > tol).any()):
            raise _Failed(f"autograd disagrees with finite differences over {n} steps: "
                          f"directional derivative {float(ad[worst]):.6g} vs {float(d2[worst]):.6g}")
        return (f"autograd matches central differences over {n} steps "
                f"(largest gap {float(err.max()):.2g}, tolerance {float(tol.min()):.2g})")

    blocked = None if _run(report, "attributes", attributes, None) else "attributes failed"
    if blocked is None and not _run(report, "shapes", shapes, None):
        blocked = "shapes failed"
    _run(report, "deterministic", deterministic, blocked)
    _run(report, "batch_independent", batch_independent, blocked)
    finite_ok = _run(report, "finite", finite, blocked)
    if not getattr(system, "differentiable", True):
        report.checks.append(Check("gradient", "skipped", "not run: the system declares "
                                   "differentiable = False"))
        report.reason = "the system declares differentiable = False"
    elif blocked is not None or not finite_ok:
        _run(report, "gradient", gradient, blocked or "finite failed")
        report.reason = "the gradient could not be checked (" + (blocked or "finite failed") + ")"
    elif not report.ok:
        _run(report, "gradient", gradient, "the contract failed")
        report.reason = "the contract failed: " + report.failures[0].name
    elif _run(report, "gradient", gradient, None):
        report.differentiable = True
        report.reason = "autograd agrees with finite differences"
    else:
        report.reason = report["gradient"].message
    return report

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
* ``coverage``: which coordinates of theta autograd can see over the checked horizon. A
  coordinate d whose pathwise derivative of the mean loss is exactly zero is probed with
  coordinate steps h in {+-0.1, +-1} (at most 8 such coordinates, evenly spaced, when there
  are more):

      blind(d)  <=>  dL/dtheta_d = 0 exactly  and  max_h |L(theta + h e_d) - L(theta)| > 1e-9 (1 + |L|)

  A blind coordinate acts on the loss only through discrete decisions (a floor, an argmax, a
  top-k, a detached threshold, a ReLU that is off): pathwise estimators (BPTT, truncated BPTT) see a zero gradient
  there and cannot tune it, loss-based ones (ES, PES, NRES, CMA-ES) can. A zero-derivative
  coordinate whose loss does not move either is reported as unused. Either is a ``warning``
  (not a failure: the contract holds and autograd is right about what it sees); the blind
  coordinates are in ``CheckReport.blind``.

A check runs only when the checks it needs passed (``shapes`` needs ``attributes``; the next
three need both; ``gradient`` also needs ``finite``, a passed contract and a system that does
not declare ``differentiable = False``; ``coverage`` needs ``gradient``); otherwise it is
reported skipped with the reason.
An exception raised by the system's own code is reported with the file and line where it was
raised, e.g. ``finite: raised RuntimeError: boom (at my_system.py:42 in step)``.

``differentiable`` is True only when the system declares itself differentiable and the
gradient check passes; ``reason`` says why not otherwise (then pathwise estimators are skipped),
and names the blind coordinates when there are any.

Example::

    report = check_system(my_system)
    str(report)                # one line per check
    report.ok, report.differentiable, report.reason
"""
from __future__ import annotations

import os
import sysconfig
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from . import noise, tree
from .base import System
from .tree import tree_index, tree_leaves

__all__ = ["Check", "CheckReport", "check_system"]

F64 = torch.float64
_CHECK = 0xC4EC                 # noise stream of the checker's own random directions
_GRAD_STEPS = 5                 # short unroll: chaos cannot amplify finite-difference error much
_DIRECTIONS = 2
_BATCH_RTOL = 1e-9
_PROBES = (1e-1, -1e-1, 1.0, -1.0)   # coordinate steps of the coverage check
_MAX_PROBED = 8                      # zero-derivative coordinates probed (evenly spaced)
_MOVED_RTOL = 1e-9
_DECLARED = "the system declares differentiable = False"


@dataclass(frozen=True)
class Check:
    """One named check: ``status`` is "passed", "failed", "warning" (the contract holds, but
    something limits what autograd sees) or "skipped"; ``message`` one line."""

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
        blind: the coordinates of theta that move the loss but whose pathwise derivative is
            exactly zero (they act only through discrete decisions; see ``coverage``).
    """

    system: str
    checks: list[Check] = field(default_factory=list)
    differentiable: bool = False
    reason: str = ""
    blind: list[int] = field(default_factory=list)

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


class _Warning(Exception):
    """A check found a limitation that is not a contract failure; the message says which."""


# --- reporting an exception raised by the system's own code ---------------------------------

def _library_dirs() -> tuple[str, ...]:
    """Folders whose frames are not the system's code: the standard library, installed
    packages, torch (wherever it lives)."""
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.add(os.path.dirname(torch.__file__))
    return tuple(os.path.normcase(os.path.abspath(d)) + os.sep for d in dirs)


_LIBRARY_DIRS = _library_dirs()
# the checker and the helpers a system calls: an error inside them is the caller's line
_CHECKER_FILES = frozenset(os.path.normcase(os.path.abspath(f))
                           for f in (__file__, noise.__file__, tree.__file__))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _where(err: BaseException) -> str:
    """`` (at my_system.py:42 in step)``: the deepest frame of the traceback that is the
    system's own code (not torch, the standard library, installed packages or this checker),
    or "" when there is none (the error came from the checker's own handling of the result)."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = os.path.normcase(os.path.abspath(frame.filename))
        if (path in _CHECKER_FILES or path.startswith(_LIBRARY_DIRS)
                or frame.filename.startswith("<frozen")):
            continue
        return f" (at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name})"
    return ""


# --- running a system under the checker's eye --------------------------------------------

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


@dataclass
class _Context:
    """What the checks share.

    Attributes:
        theta_arg: the caller's ``theta`` (None: ``system.init_params``).
        seed: fixes the episode keys and the gradient check's directions.
        steps: horizon of the finiteness check (None: the system's ``horizon``).
        theta: the float64 ``[D]`` point, set by `_attributes` once it is valid.
        blind: the blind coordinates, set by `_coverage`.
    """

    theta_arg: Tensor | None
    seed: int
    steps: int | None
    theta: Tensor | None = None
    blind: list[int] = field(default_factory=list)

    @property
    def keys(self) -> Tensor:
        """``[4]`` episode keys; rows 0 and 2 share one (same trajectory twice in a batch)."""
        return torch.tensor([11, 3, 11, 7], dtype=torch.int64) + 1000 * self.seed

    def rows(self) -> Tensor:
        """``[4, D]``: theta repeated once per key, a fresh tensor the check may modify."""
        return self.theta.expand(4, -1).clone()


# --- the checks: (system, context) -> one-line message, or raise _Failed ------------------

def _attributes(system: System, ctx: _Context) -> str:
    for attr in ("param_dim", "horizon", "state_dim"):
        v = getattr(system, attr, None)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _Failed(f"{attr} must be an int >= 1, got {v!r}")
    th = system.init_params(dtype=F64) if ctx.theta_arg is None else ctx.theta_arg
    if not isinstance(th, Tensor) or not th.is_floating_point():
        raise _Failed(f"theta must be a floating tensor, got {type(th).__name__}")
    th = th.detach().to(F64)
    if th.shape != (system.param_dim,):
        raise _Failed(f"theta has shape {list(th.shape)}, expected [param_dim] = "
                      f"[{system.param_dim}]")
    if not bool(torch.isfinite(th).all()):
        raise _Failed("theta contains NaN or inf")
    ctx.theta = th
    return f"D = {system.param_dim}, T = {system.horizon}, state_dim = {system.state_dim}"


def _shapes(system: System, ctx: _Context) -> str:
    _rollout(system, ctx.rows(), ctx.keys, min(3, system.horizon))
    return "state and loss ([B]) keep the batch dimension"


def _deterministic(system: System, ctx: _Context) -> str:
    rows, n = ctx.rows(), min(6, system.horizon)
    s1, l1 = _rollout(system, rows, ctx.keys, n)
    s2, l2 = _rollout(system, rows, ctx.keys, n)
    same = torch.equal(l1, l2) and all(torch.equal(a, b) for a, b in
                                       zip(tree_leaves(s1), tree_leaves(s2)))
    if not same:
        raise _Failed("the same keys gave different results: randomness must be a pure "
                      "function of (key, t) (systems.noise), not global or stateful RNG")
    if not torch.equal(l1[0], l1[2]):
        raise _Failed("two rows with the same key and theta differ inside one batch")
    return "same keys give bit-identical trajectories"


def _batch_independent(system: System, ctx: _Context) -> str:
    rows, keys, n = ctx.rows(), ctx.keys, min(6, system.horizon)
    rows[1] += 0.01
    rows[3] -= 0.01
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


def _finite(system: System, ctx: _Context) -> str:
    n = system.horizon if ctx.steps is None else ctx.steps
    with torch.no_grad():
        s, losses = _rollout(system, ctx.rows(), ctx.keys, n)
    if not bool(torch.isfinite(losses).all()):
        t = int((~torch.isfinite(losses)).any(0).nonzero()[0])
        raise _Failed(f"NaN/inf loss at step {t} of {n} at theta")
    if not all(bool(torch.isfinite(x).all()) for x in tree_leaves(s) if x.is_floating_point()):
        raise _Failed(f"NaN/inf state after {n} steps at theta")
    return f"losses and states finite over {n} steps"


def _autograd_gradient(system: System, theta: Tensor, key: Tensor, n: int) -> Tensor:
    """``[D]``: autograd's gradient of the mean loss of ``n`` steps of one trajectory."""
    rows = theta[None].clone().requires_grad_()
    with torch.enable_grad():
        _, losses = _rollout(system, rows, key, n)
        mean = losses.mean()
        if not mean.requires_grad:
            raise _Failed("the loss does not depend on theta through autograd "
                          "(computed outside torch, or detached)")
        (g,) = torch.autograd.grad(mean, rows, allow_unused=True)
    g = torch.zeros(system.param_dim, dtype=F64) if g is None else g[0].detach()
    if not bool(torch.isfinite(g).all()):
        raise _Failed("autograd gives a NaN/inf gradient at theta")
    return g


def _central_differences(system: System, theta: Tensor, key: Tensor, u: Tensor,
                         n: int) -> tuple[Tensor, Tensor]:
    """``(d_h, d_{h/2})``, each ``[K]``: central differences of the same mean loss along the
    ``K`` unit directions ``u [K, D]``, with ``h = eps^(1/3) max(1, |theta|_inf)``."""
    h = torch.finfo(F64).eps ** (1 / 3) * max(1.0, float(theta.abs().max()))
    rows = torch.cat([theta + c * h * u for c in (1.0, -1.0, 0.5, -0.5)])
    with torch.no_grad():
        _, fl = _rollout(system, rows, key.expand(4 * u.shape[0]).clone(), n)
    p1, m1, p2, m2 = fl.mean(1).chunk(4)
    return (p1 - m1) / (2 * h), (p2 - m2) / h


def _gradient(system: System, ctx: _Context) -> str:
    n = min(_GRAD_STEPS, system.horizon)
    dkeys = torch.full((_DIRECTIONS,), 17 + ctx.seed, dtype=torch.int64)
    u = noise.normal(dkeys, torch.arange(_DIRECTIONS), stream=_CHECK,
                     shape=(system.param_dim,), dtype=F64)
    u = u / u.norm(dim=1, keepdim=True)
    key = torch.full((1,), 5 + 1000 * ctx.seed, dtype=torch.int64)
    ad = u @ _autograd_gradient(system, ctx.theta, key, n)
    d1, d2 = _central_differences(system, ctx.theta, key, u, n)
    tol = 10 * (d1 - d2).abs() + 1e-6 * torch.maximum(ad.abs(), d2.abs()) + 1e-9
    err = (ad - d2).abs()
    worst = int((err - tol).argmax())
    if bool((err > tol).any()):
        raise _Failed(f"autograd disagrees with finite differences over {n} steps: "
                      f"directional derivative {float(ad[worst]):.6g} vs {float(d2[worst]):.6g}")
    return (f"autograd matches central differences over {n} steps "
            f"(largest gap {float(err.max()):.2g}, tolerance {float(tol.min()):.2g})")


def _moved(system: System, ctx: _Context, key: Tensor, coords: list[int], n: int) -> list[float]:
    """For each coordinate in ``coords``: the largest relative loss change over the `_PROBES`
    coordinate steps, ``max_h |L(theta + h e_d) - L(theta)| / (1 + |L(theta)|)``."""
    units = torch.eye(system.param_dim, dtype=F64)[coords]                       # [C, D]
    steps = units[:, None] * torch.tensor(_PROBES, dtype=F64)[:, None]            # [C, P, D]
    rows = torch.cat([ctx.theta[None], ctx.theta + steps.reshape(-1, system.param_dim)])
    with torch.no_grad():
        _, losses = _rollout(system, rows, key.expand(rows.shape[0]).clone(), n)
    mean = losses.mean(1)
    change = ((mean[1:] - mean[0]).abs() / (1 + mean[0].abs())).reshape(len(coords), -1)
    return [float(c) if bool(torch.isfinite(c).all()) else float("inf")
            for c in change.max(1).values]


def _names(coords: list[int]) -> str:
    shown = ", ".join(map(str, coords[:6])) + (f", ... ({len(coords)} in all)"
                                                if len(coords) > 6 else "")
    return f"theta[{shown}]"


def _coverage(system: System, ctx: _Context) -> str:
    n = system.horizon if ctx.steps is None else ctx.steps
    key = torch.full((1,), 5 + 1000 * ctx.seed, dtype=torch.int64)
    zero = [d for d, g in enumerate(_autograd_gradient(system, ctx.theta, key, n).tolist())
            if g == 0.0]
    if not zero:
        return f"autograd's derivative is nonzero in every coordinate of theta over {n} steps"
    probed = zero[::-(-len(zero) // _MAX_PROBED)]
    moved = _moved(system, ctx, key, probed, n)
    blind = [d for d, m in zip(probed, moved) if m > _MOVED_RTOL]
    unused = [d for d, m in zip(probed, moved) if m <= _MOVED_RTOL]
    ctx.blind = blind
    parts = [] if probed == zero else [f"{len(zero)} coordinates have a zero pathwise "
                                       f"derivative; {len(probed)} evenly spaced ones probed"]
    if blind:
        worst = max(m for m in moved if m > _MOVED_RTOL)
        parts.append(f"autograd is blind to {_names(blind)}: the pathwise derivative is "
                     f"exactly 0 over {n} steps, yet steps of up to 1 move the mean loss by up "
                     f"to {worst:.2g} (relative): they act only through discrete decisions, so "
                     "pathwise estimators cannot tune them; ES-type estimators can")
    if unused:
        parts.append(f"{_names(unused)} do not change the loss over {n} steps (zero derivative, "
                     "the same loss under steps of up to 1)")
    raise _Warning("; ".join(parts))


# --- when a check may run: (system, report so far) -> why not, or None --------------------

def _first_failed(report: CheckReport, names: tuple[str, ...]) -> str | None:
    """``"<name> failed"`` for the first of ``names`` that did not pass, else None."""
    for c in report.checks:
        if c.name in names and not c.passed:
            return f"{c.name} failed"
    return None


def _needs_nothing(system: System, report: CheckReport) -> str | None:
    return None


def _needs_attributes(system: System, report: CheckReport) -> str | None:
    return _first_failed(report, ("attributes",))


def _needs_shapes(system: System, report: CheckReport) -> str | None:
    return _first_failed(report, ("attributes", "shapes"))


_GRADIENT_NEEDS = ("attributes", "shapes", "finite")


def _needs_contract(system: System, report: CheckReport) -> str | None:
    if not getattr(system, "differentiable", True):
        return _DECLARED
    return _first_failed(report, _GRADIENT_NEEDS) or (None if report.ok else "the contract failed")


def _needs_gradient(system: System, report: CheckReport) -> str | None:
    return _needs_contract(system, report) or _first_failed(report, ("gradient",))


@dataclass(frozen=True)
class _Spec:
    """One row of the table: the check's name, what it verifies, how, and when it may run."""

    name: str
    description: str
    run: Callable[[System, _Context], str]
    gate: Callable[[System, CheckReport], str | None]


_CHECKS = (
    _Spec("attributes", "param_dim, horizon, state_dim are ints >= 1; theta is a finite "
          "floating [D] tensor", _attributes, _needs_nothing),
    _Spec("shapes", "state and [B] loss keep the batch dimension and the state its "
          "structure", _shapes, _needs_attributes),
    _Spec("deterministic", "the same keys give bit-identical trajectories", _deterministic,
          _needs_shapes),
    _Spec("batch_independent", "a trajectory alone equals the same trajectory in a batch",
          _batch_independent, _needs_shapes),
    _Spec("finite", "states and losses stay finite over the horizon at theta", _finite,
          _needs_shapes),
    _Spec("gradient", "autograd agrees with central finite differences along random "
          "directions", _gradient, _needs_contract),
    _Spec("coverage", "autograd sees every coordinate of theta that moves the loss",
          _coverage, _needs_gradient),
)


# --- the loop ------------------------------------------------------------------------------

def _run(spec: _Spec, system: System, ctx: _Context, report: CheckReport) -> Check:
    why_not = spec.gate(system, report)
    if why_not is not None:
        return Check(spec.name, "skipped", f"not run: {why_not}")
    try:
        return Check(spec.name, "passed", spec.run(system, ctx))
    except _Failed as err:
        return Check(spec.name, "failed", str(err))
    except _Warning as err:
        return Check(spec.name, "warning", str(err))
    except Exception as err:  # a user's system may raise anything; report it, do not crash
        return Check(spec.name, "failed", f"raised {_one_line(err)}{_where(err)}")


def _verdict(system: System, report: CheckReport) -> tuple[bool, str]:
    """``(differentiable, reason)`` from the finished checks."""
    gradient = report["gradient"]
    if gradient.passed and report.blind:
        return True, (f"autograd agrees with finite differences, but is blind to "
                      f"{_names(report.blind)} (they act only through discrete decisions)")
    if gradient.passed:
        return True, "autograd agrees with finite differences"
    if gradient.status == "failed":
        return False, gradient.message
    if not getattr(system, "differentiable", True):
        return False, _DECLARED
    missing = _first_failed(report, _GRADIENT_NEEDS)
    if missing is not None:
        return False, f"the gradient could not be checked ({missing})"
    return False, f"the contract failed: {report.failures[0].name}"


def _describe(system: System) -> str:
    """``repr(system)``, or its class name when the repr itself fails (it reads attributes
    that the ``attributes`` check has yet to find missing)."""
    try:
        return repr(system)
    except Exception:
        return type(system).__name__


def check_system(system: System, theta: Tensor | None = None, *, seed: int = 0,
                 steps: int | None = None) -> CheckReport:
    """Run the contract checks on ``system`` at ``theta`` (float64).

    Args:
        system: the system to check.
        theta: ``[D]`` parameters; default ``system.init_params()``.
        seed: fixes the episode keys and the gradient check's directions.
        steps: horizon of the finiteness check (default: the system's ``horizon``).
    Returns:
        A `CheckReport` with the seven checks in order; its ``ok`` is False when a contract
        check failed.
    """
    if not isinstance(system, System):
        kind = type(system).__name__
        return CheckReport(kind, [Check("attributes", "failed",
                                        f"not a systems.System subclass instance: {kind}")],
                           reason="not a System")
    report = CheckReport(_describe(system))
    ctx = _Context(theta, int(seed), steps)
    for spec in _CHECKS:
        report.checks.append(_run(spec, system, ctx, report))
    report.blind = list(ctx.blind)
    report.differentiable, report.reason = _verdict(system, report)
    return report

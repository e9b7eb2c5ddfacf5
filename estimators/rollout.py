"""Batched unrolls shared by all estimators: resets at the horizon, staggered starts.

A segment advances B rows together for a number of steps. A row whose step index reaches the
horizon restarts a new episode (new key, fresh `init_state`) at that point, so one segment may
hold the end of one episode and the start of the next; their losses are summed separately
(``loss_pre``, ``loss_post``), because online ES estimators weight the two parts differently.

Resets are deterministic in the step index, so `reset_steps` finds the steps of a segment
at which any row restarts up front; the loop then needs no host synchronisation per step (one per
segment, to learn which steps have any reset at all), which keeps CUDA streams full. `compiled`
wraps a system so that its `step`, with the loop's loss bookkeeping, runs through `torch.compile`
(CUDA graphs on CUDA), with an eager fallback.
"""
from __future__ import annotations

import functools
import time
import types
import warnings
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from systems import System, tree_map, tree_where

__all__ = ["Segment", "unroll", "reset_steps", "stagger_offsets", "antithetic_rows", "detach",
           "compiled", "CompiledSystem", "CompileFallbackWarning"]


class Segment(NamedTuple):
    """The result of `unroll`; every field has leading dimension B."""

    state: Any
    t: Tensor          # [B] step index within the current episode after the segment
    episode: Tensor    # [B] episode counter after the segment
    loss_pre: Tensor   # [B] sum of per-step losses before a restart in this segment
    loss_post: Tensor  # [B] sum of per-step losses after it (zero if none)
    reset: Tensor      # [B] bool, whether the row restarted an episode in this segment


def reset_steps(t: Tensor, horizon: int, steps: int, budget: Tensor | None = None) -> list[bool]:
    """For each step j of a segment, whether any row restarts its episode just before it.

    A row at step index t_b restarts when its index reaches the horizon, i.e. at
    j = max(T - t_b, 0) and every T steps after that, while within its budget (j < budget_b).
    One host transfer of ``t`` (and ``budget``) for the whole segment.
    """
    first = (horizon - t).clamp_min(0).cpu()
    limit = torch.full_like(first, steps) if budget is None else budget.cpu().clamp_max(steps)
    js = first + horizon * torch.arange(steps // horizon + 1)[:, None]  # [K, B]
    flags = torch.zeros(steps, dtype=torch.bool)
    flags[js[js < limit]] = True
    return flags.tolist()


def _restarts(first: Tensor, j: int, horizon: int, active: Tensor | None) -> Tensor:
    """``[B]`` bool: rows that restart before step j (see `reset_steps`), without a host sync."""
    done = (first <= j) & ((j - first) % horizon == 0)
    return done if active is None else done & active


def _advance(theta: Tensor, state: Any, t: Tensor, keys: Tensor, active: Tensor | None,
             reset: Tensor, loss_pre: Tensor, loss_post: Tensor,
             step: Callable) -> tuple[Any, Tensor, Tensor, Tensor]:
    """One step of `unroll`: ``step`` every row, hold rows that are not ``active`` (None: all
    are), add the loss to ``loss_pre`` or, for rows that restarted, ``loss_post``.

    A pure function of tensors, so `CompiledSystem.advance` compiles it whole: the bookkeeping
    fuses into the step's kernel instead of costing a few eager ops per step.
    """
    new_state, loss = step(theta, state, t, keys)
    zero = torch.zeros_like(loss)
    if active is not None:
        new_state = tree_where(active, new_state, state)
        loss = torch.where(active, loss, zero)
        t = t + active.long()
    else:
        t = t + 1
    return (new_state, t, loss_pre + torch.where(reset, zero, loss),
            loss_post + torch.where(reset, loss, zero))


def unroll(system: System, theta: Tensor, state: Any, t: Tensor, episode: Tensor,
           keys_for: Callable[[Tensor], Tensor], steps: int, horizon: int, *,
           theta_next: Tensor | None = None, budget: Tensor | None = None,
           carry: tuple[Tensor, Tensor] | None = None) -> Segment:
    """Advance every row ``steps`` steps, restarting episodes at ``horizon``.

    Args:
        theta: ``[B, D]`` parameters used until a row restarts.
        state, t, episode: current states, ``[B]`` step indices and ``[B]`` episode counters.
        keys_for: maps ``[B]`` episode counters to ``[B]`` episode keys.
        theta_next: ``[B, D]`` parameters after a restart (default ``theta``).
        budget: ``[B]`` steps each row may take (default ``steps``); rows past their budget
            stand still, which is how staggered particles are burnt in.
        carry: ``([B], [B])`` loss sums to continue from (default zeros), so that a long unroll
            cut into segments (checkpointed BPTT) adds its losses in the same order as one.
    """
    theta_next = theta if theta_next is None else theta_next
    keys = keys_for(episode)
    # two tensors, not one twice: a compiled `advance` would compile again for aliased inputs
    loss_pre, loss_post = carry if carry is not None else (theta.new_zeros(t.shape),
                                                           theta.new_zeros(t.shape))
    reset = torch.zeros_like(t, dtype=torch.bool)
    any_reset = reset_steps(t, horizon, steps, budget)  # the segment's only host sync
    first = (horizon - t).clamp_min(0)
    if isinstance(system, CompiledSystem):
        # one compiled call per step; an all-true mask rather than None, so that budgeted
        # (burn-in) and plain segments share one compiled graph (same numbers either way)
        advance, everyone = system.advance, torch.ones_like(t, dtype=torch.bool)
    else:
        advance, everyone = functools.partial(_advance, step=system.step), None
    for j in range(steps):
        active = everyone if budget is None else budget > j
        if any_reset[j]:
            done = _restarts(first, j, horizon, active)
            episode = episode + done
            keys = keys_for(episode)
            state = tree_where(done, system.init_state(theta_next, keys), state)
            t = torch.where(done, torch.zeros_like(t), t)
            reset = reset | done
        params = theta if theta_next is theta else torch.where(reset[:, None], theta_next, theta)
        state, t, loss_pre, loss_post = advance(params, state, t, keys, active, reset,
                                                loss_pre, loss_post)
    return Segment(state, t, episode, loss_pre, loss_post, reset)


def stagger_offsets(particle: Tensor, population: Tensor | int, horizon: int,
                    stagger: bool) -> Tensor:
    """Episode offsets ``[n]`` of particles with population indices ``particle`` ``[n]``.

    With ``stagger`` the population's particles are spread evenly over [0, T): particle i starts
    at step ``floor(i T / population)``; otherwise all start at 0.
    """
    return (particle * horizon) // population if stagger else torch.zeros_like(particle)


def antithetic_rows(theta: Tensor, eps: Tensor, sigma: float) -> Tensor:
    """``[2N, D]``: theta + sigma eps ``[N, D]`` stacked over theta - sigma eps (the + members
    of the N antithetic pairs, then the - members)."""
    return torch.cat([theta + sigma * eps, theta - sigma * eps])


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


class CompileFallbackWarning(RuntimeWarning):
    """`torch.compile` failed for a system's step; it runs eagerly instead."""


def _copy_function(fn: Callable) -> Callable:
    """``fn`` with its own code object (same code), hence its own dynamo cache."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                              fn.__defaults__, fn.__closure__)


class CompiledSystem(System):
    """A system whose `step` runs through `torch.compile`; everything else is delegated.

    `unroll` calls `advance` instead of `step`: the step together with its loss bookkeeping,
    compiled as one graph, so a step costs one compiled call and no eager ops. On CUDA, steps
    taken without autograd use ``mode="reduce-overhead"`` (the step is captured as a CUDA graph
    and replayed; its noise is counter-based, so it is computed inside the graph from (key, t)
    rather than drawn from a generator). Their outputs are copied out of the graph's static
    buffers, because the next replay overwrites them. If compiling or running a compiled
    function raises, a `CompileFallbackWarning` says why and the system runs eagerly from then
    on (``fallback`` holds the reason). ``compile_seconds`` adds up the wall time of the first call
    of each compiled variant at each batch size and dtype (each compiles anew unless
    ``dynamic``), compilation included.

    Inductor options come from the system's optional ``compile_options`` attribute (hints about
    its own kernels), updated with ``options``.
    """

    def __init__(self, system: System, mode: str | None = None, dynamic: bool | None = False,
                 options: dict | None = None):
        if not isinstance(system, System):
            raise TypeError(f"system must be a systems.System, got {type(system).__name__}")
        self.system, self.mode, self.dynamic = system, mode, dynamic
        self.options = {**getattr(system, "compile_options", {}), **(options or {})}
        for attr in ("name", "param_dim", "horizon", "state_dim", "differentiable", "dt",
                     "regimes"):
            setattr(self, attr, getattr(system, attr))
        # a private copy of `_advance`: dynamo caches compiled graphs, and counts recompilations
        # against its limit, per code object, so one shared function would make all compiled
        # systems (each batch size, grad mode) share 8 slots. Compiled as a plain function (a
        # partial would be wrapped in torch's own shared function); `_step` is one bound method
        # object, so dynamo's guard on it holds from call to call.
        self._advance, self._step = _copy_function(_advance), system.step
        self._fns: dict[tuple, Callable] = {}
        self._timed: set[tuple] = set()
        self.compile_seconds = 0.0
        self.fallback: str | None = None

    def __getattr__(self, name: str):
        system = self.__dict__.get("system")
        if system is None:
            raise AttributeError(name)
        return getattr(system, name)

    def init_params(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        return self.system.init_params(dtype=dtype, device=device)

    def init_state(self, theta: Tensor, keys: Tensor) -> Any:
        return self.system.init_state(theta, keys)

    def step(self, theta: Tensor, state: Any, t: Tensor, keys: Tensor) -> tuple[Any, Tensor]:
        return self._call("step", self.system.step, theta, state, t, keys)

    def advance(self, theta: Tensor, state: Any, t: Tensor, keys: Tensor, active: Tensor | None,
                reset: Tensor, loss_pre: Tensor,
                loss_post: Tensor) -> tuple[Any, Tensor, Tensor, Tensor]:
        """`unroll`'s whole step (see `_advance`) as one compiled call."""
        return self._call("advance", self._advance, theta, state, t, keys, active, reset,
                          loss_pre, loss_post, self._step)

    def _compile(self, fn: Callable, graphs: bool) -> Callable:
        mode, options = ("reduce-overhead" if graphs else self.mode), self.options
        if not options or graphs:  # CUDA graphs: keep torch's settings (the hints are for CPU)
            return torch.compile(fn, mode=mode, dynamic=self.dynamic)
        if mode is not None:  # torch.compile takes a mode or options, not both: merge them
            from torch._inductor import list_mode_options
            options = {**list_mode_options(mode, self.dynamic), **options}
        return torch.compile(fn, dynamic=self.dynamic, options=options)

    def _call(self, name: str, fn: Callable, theta: Tensor, *args):
        """``fn(theta, *args)`` compiled (once per device and variant), or eager after a failure."""
        if self.fallback is not None:
            return fn(theta, *args)
        graphs = theta.is_cuda and not torch.is_grad_enabled() and self.mode is None
        variant = (name, theta.device.type, graphs)
        compiled_fn, first = self._fns.get(variant), variant not in self._fns
        # a new batch size or dtype compiles again (dynamic=False): time its first call too
        signature = (variant, tuple(theta.shape), theta.dtype)
        timed = signature not in self._timed
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # the compiler's own notices (it inspects .grad of non-leaf tensors, imports
                # deprecated modules) are not the caller's business; (re)compilation can
                # happen on any call (a new batch size)
                warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
                warnings.simplefilter("ignore", DeprecationWarning)
                if first:
                    compiled_fn = self._fns[variant] = self._compile(fn, graphs)
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                    out = tree_map(torch.clone, compiled_fn(theta, *args))
                else:
                    out = compiled_fn(theta, *args)
        except Exception as err:  # any compiler failure: fall back, loudly
            self.fallback = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            warnings.warn(f"torch.compile of {self.name}.step failed ({self.fallback}); "
                          "running eagerly", CompileFallbackWarning, stacklevel=3)
            return fn(theta, *args)
        if timed:
            self._timed.add(signature)
            if theta.is_cuda:
                torch.cuda.synchronize(theta.device)  # once, so the time includes compilation
            self.compile_seconds += time.perf_counter() - start
        return out

    def __repr__(self) -> str:
        return f"compiled({self.system!r})"


def compiled(system: System, *, mode: str | None = None, dynamic: bool | None = False,
             options: dict | None = None) -> System:
    """``system`` with its `step` compiled by `torch.compile` (opt-in; eager fallback).

    Every estimator accepts the result in place of the system; results agree with the eager
    system up to floating-point rounding (the compiler fuses and reorders arithmetic).

    Args:
        mode: `torch.compile` mode; None picks the default on CPU and "reduce-overhead"
            (CUDA graphs) for CUDA steps without autograd.
        dynamic: passed to `torch.compile`; the default False specialises on each batch size B
            (fastest kernels; a new B recompiles, up to torch's recompile limit); None lets
            torch switch to shape-generic kernels after the first change of B.
        options: inductor options (`torch.compile`'s ``options``), added to the system's own
            ``compile_options`` hints.

    Example::

        fast = compiled(systems.make("double_pendulum"))
        e, state = estimators.make("antithetic_es", pairs=2048).estimate(fast, theta, state)
        fast.compile_seconds, fast.fallback
    """
    if isinstance(system, CompiledSystem):
        return system
    return CompiledSystem(system, mode, dynamic, options)

"""Population sharding over Ray actors: one estimate's particles split across processes.

    est = ShardedEstimator(estimators.make("pes", pairs=4096, truncation=10), workers=4)
    state = est.init(system, theta, seed=0)          # starts the actors, burns in each shard
    e, state = est.estimate(system, theta, state)    # same Estimate as the single-process run

Each of W stateful actors owns a contiguous block of particles (antithetic pairs, or BPTT's
samples) for its whole life: both members of a pair live on the same actor, and the persistent
states of PES/NRES stay on their actor across windows (only theta goes out and only the block's
per-pair samples come back). A shard runs the unchanged estimator on its n_w particles from a
state made by ``init(..., offset=offset_w, population=N)``: the state records that it holds
particles offset_w .. offset_w + n_w - 1, so particle i of the shard draws the episode keys,
perturbations and stagger offset of particle offset_w + i of the full population, and the
combined samples are those of the single-process run, in the same order (equal up to
floating-point rounding of batched kernels, which may differ with the batch size). Each shard
checks that the state it steps is its own block. Estimators whose samples depend on the whole
population (`Mixed` with a measured alpha, fitness-shaped ES: ``separable`` is False) are
refused.

`ShardedRollouts` does the same for ask/tell strategies: the P candidates' episode losses are
computed in blocks (mirrored halves of antithetic strategies kept together).

Ray is optional (``pip install chaosgrad[ray]``) and imported only here, when an object of this
module is created; ``address`` joins an existing cluster, None starts or reuses a local one.
"""
from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from systems import System

from .base import Estimate, Estimator, block_of

__all__ = ["ShardedEstimator", "ShardedState", "ShardedRollouts", "shard_bounds", "row_blocks",
           "combine", "connect"]


def connect(address: str | None = None, num_cpus: int | None = None):
    """The ``ray`` module, initialised: joins ``address``, or reuses/starts a local instance."""
    try:
        import ray
    except ImportError:
        raise ValueError("the Ray backend needs ray: pip install 'chaosgrad[ray]'") from None
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(**kw, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def shard_bounds(n: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous blocks ``[(lo, hi)]`` of ``n`` particles over at most ``workers`` shards."""
    w = max(1, min(workers, n))
    edges = [(k * n) // w for k in range(w + 1)]
    return list(zip(edges[:-1], edges[1:]))


def row_blocks(rows: int, workers: int, *, paired: bool = False) -> list[Tensor]:
    """Indices of the rows each of at most ``workers`` shards evaluates, contiguous blocks.

    With ``paired`` the ``rows`` are mirrored halves (row i and row i + rows/2 form a pair) and
    the blocks are of whole pairs: block ``[lo, hi)`` of the pairs holds rows lo..hi-1 and
    their mirrors, e.g. ``row_blocks(6, 2, paired=True) == [[0, 3], [1, 2, 4, 5]]``.
    """
    if paired and rows % 2:
        raise ValueError(f"paired rows need an even count, got {rows}")
    units = rows // 2 if paired else rows
    return [torch.cat([torch.arange(lo, hi), torch.arange(lo, hi) + units]) if paired
            else torch.arange(lo, hi) for lo, hi in shard_bounds(units, workers)]


def _population_attr(estimator: Estimator) -> str:
    attr = estimator.particles_attr
    if isinstance(getattr(estimator, attr, None), int):
        return attr
    raise TypeError(f"{type(estimator).__name__} has no population (pairs or samples) to shard")


class _Shard:
    """A Ray actor: particles [offset, offset + n) of a population of ``total``."""

    def __init__(self, estimator: Estimator | None, system: System, offset: int, total: int):
        torch.set_num_threads(1)  # one core per actor; W actors fill W cores
        self.estimator, self.system = estimator, system
        self.offset, self.total, self.state = offset, total, None

    def init(self, theta: Tensor, seed: int) -> None:
        self.state = self.estimator.init(self.system, theta, seed=seed, offset=self.offset,
                                         population=self.total)

    def estimate(self, theta: Tensor) -> Estimate:
        n = getattr(self.estimator, self.estimator.particles_attr)
        block = block_of(self.state)
        if block != (self.offset, n, self.total):
            offset, held, total = block
            raise ValueError(f"the state holds particles {offset}..{offset + held - 1} of "
                             f"{total}, but this shard holds {self.offset}.."
                             f"{self.offset + n - 1} of {self.total}")
        est, self.state = self.estimator.estimate(self.system, theta, self.state)
        return est

    def losses(self, rows: Tensor, keys: Tensor, horizon: int) -> Tensor:
        """``[B]`` mean per-step losses of full episodes of ``rows`` ``[B, D]``."""
        from .rollout import unroll
        with torch.no_grad():
            state = self.system.init_state(rows, keys)
            t = torch.zeros_like(keys)
            seg = unroll(self.system, rows, state, t, t, lambda _: keys, horizon, horizon)
        return seg.loss_pre / horizon


def combine(parts: list[Estimate]) -> Estimate:
    """One `Estimate` from the estimates of contiguous shards, in particle order."""
    samples = torch.cat([p.samples for p in parts])
    kept = [p.samples.shape[0] for p in parts]
    n = samples.shape[0]
    if n:
        grad = samples.mean(0)
        loss = sum(p.loss * k for p, k in zip(parts, kept) if k) / n
    else:
        grad = torch.full_like(parts[0].grad, math.nan)
        loss = torch.full_like(parts[0].loss, math.nan)
    return Estimate(grad, loss, samples, sum(p.steps for p in parts),
                    sum(p.nonfinite for p in parts))


class ShardedState(NamedTuple):
    """A handle on the actors that hold the shards' estimator states (they live there)."""

    actors: tuple
    count: int  # estimates so far


class ShardedEstimator(Estimator):
    """``estimator`` with its population split over ``workers`` Ray actors.

    The state lives on the actors (a PES/NRES particle never moves), so the returned
    `ShardedState` is a handle: estimating from an older handle continues from the actors'
    current states. Public behaviour otherwise as ``estimator``.

    Args:
        estimator: any estimator with ``pairs`` (ES family) or ``samples`` (BPTT).
        workers: number of actors W (contiguous blocks of about N/W particles each).
        address: a Ray cluster to join (None: a local instance).
    """

    def __init__(self, estimator: Estimator, workers: int = 2, *, address: str | None = None):
        if not isinstance(estimator, Estimator):
            raise TypeError(f"estimator must be an Estimator, got {type(estimator).__name__}")
        if not estimator.separable:
            raise ValueError(f"{estimator!r} cannot be sharded: its samples depend on every "
                             "particle of the population (give Mixed a fixed alpha; fitness "
                             "shaping ranks or scales over the whole population)")
        super().__init__(horizon=estimator.horizon, truncation=estimator.truncation)
        self.estimator, self.workers, self.address = estimator, int(workers), address
        self.attr = _population_attr(estimator)
        self.name = estimator.name
        self.online, self.needs_grad = estimator.online, estimator.needs_grad

    def init(self, system: System, theta: Tensor, *, seed: int) -> ShardedState:
        theta = self.estimator.check(system, theta)
        ray = connect(self.address)
        actor = ray.remote(num_cpus=1)(_Shard)
        total = getattr(self.estimator, self.attr)
        actors = []
        for lo, hi in shard_bounds(total, self.workers):
            shard = copy.copy(self.estimator)
            setattr(shard, self.attr, hi - lo)
            actors.append(actor.remote(shard, system, lo, total))
        ray.get([a.init.remote(theta, seed) for a in actors])
        return ShardedState(tuple(actors), 0)

    def estimate(self, system: System, theta: Tensor, state: ShardedState) -> tuple[Estimate, Any]:
        import ray
        theta = self.estimator.check(system, theta)
        ref = ray.put(theta)
        parts = ray.get([a.estimate.remote(ref) for a in state.actors])
        return combine(parts), state._replace(count=state.count + 1)

    def close(self, state: ShardedState) -> None:
        """End the actors of ``state`` (their particle states are lost)."""
        import ray
        for a in state.actors:
            ray.kill(a)


class ShardedRollouts:
    """Episode losses of a strategy's P candidates, computed in blocks on ``workers`` actors.

    Example::

        pool = ShardedRollouts(system, workers=4)
        x = strategy.ask()
        strategy.tell(pool.losses(x, keys, T, paired=strategy.antithetic))
    """

    def __init__(self, system: System, workers: int = 2, *, address: str | None = None):
        ray = connect(address)
        actor = ray.remote(num_cpus=1)(_Shard)
        self.actors = [actor.remote(None, system, 0, 0) for _ in range(max(1, int(workers)))]

    def losses(self, rows: Tensor, keys: Tensor, horizon: int, *, paired: bool = False) -> Tensor:
        """``[P]`` mean per-step losses of ``rows`` ``[P, D]`` with episode keys ``keys`` ``[P]``.

        With ``paired`` the rows are mirrored halves (row i and row i + P/2 form a pair) and
        each actor gets whole pairs.
        """
        import ray
        P = rows.shape[0]
        index = row_blocks(P, len(self.actors), paired=paired)
        parts = ray.get([a.losses.remote(rows[i], keys[i], horizon)
                         for a, i in zip(self.actors, index)])
        out = rows.new_empty(P)
        for i, part in zip(index, parts):
            out[i] = part
        return out

"""Counter-based noise: randomness as a pure function of (episode key, step, stream).

Every random number a system or an estimator uses is ``f(key, t, stream, index)`` for a fixed
integer hash ``f``. Nothing is stateful, so

* the same key gives the same numbers whatever else is in the batch, and whatever its size
  (a trajectory computed alone equals the same trajectory inside a population);
* antithetic pairs share system noise by sharing a key (common random numbers);
* a particle of an online estimator keeps its noise across truncation windows.

The hash works on 32-bit words held in int64 tensors, with a multiplier below 2**27, so no
product overflows and the random bits are identical on every device. Uniforms carry 32 random
bits (computed in float64 and cast); normals come from Box-Muller (both outputs of each pair of
uniforms), so their tails are cut at about 6.7 standard deviations, and agree across devices
up to the rounding of their transcendental functions.

Example::

    keys = torch.tensor([3, 7])                       # [B] int64 episode keys
    z = normal(keys, t, stream=0, shape=(4,))         # [B, 4], z[0] depends on keys[0], t[0] only
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["fold", "uniform", "normal"]

_MASK = 0xFFFFFFFF
_MULT = 0x45D9F3B
_GOLDEN = 0x9E3779B9


def _mix(x: Tensor) -> Tensor:
    """A bijective avalanche on 32-bit words (int64 tensors holding values in [0, 2**32))."""
    x = ((x >> 16) ^ x) * _MULT & _MASK
    x = ((x >> 16) ^ x) * _MULT & _MASK
    return (x >> 16) ^ x


def _words(x: Tensor | int, device) -> tuple[Tensor, Tensor]:
    x = torch.as_tensor(x, dtype=torch.int64, device=device)
    return x & _MASK, (x >> 32) & _MASK


def _hash(*words: Tensor) -> Tensor:
    h = torch.full((), _GOLDEN, dtype=torch.int64, device=words[0].device)
    for w in words:
        h = _mix(h ^ w)
    return h


def _prefix(keys: Tensor, t: Tensor | int, stream: int) -> Tensor:
    if not isinstance(keys, Tensor) or keys.dtype != torch.int64:
        raise TypeError(f"keys must be an int64 tensor, got {getattr(keys, 'dtype', type(keys))}")
    k_lo, k_hi = _words(keys, keys.device)
    t_lo, t_hi = _words(t, keys.device)
    s_lo, s_hi = _words(stream, keys.device)
    return _hash(k_lo, k_hi, t_lo, t_hi, s_lo, s_hi)


def fold(keys: Tensor, *words: Tensor | int) -> Tensor:
    """Derive new int64 keys in [0, 2**63) from ``keys`` and further integers.

    Args:
        keys: ``[B]`` int64.
        words: integers or int64 tensors broadcastable to ``[B]`` (e.g. a particle index, an
            episode counter).
    Returns:
        ``[B]`` int64 keys; equal inputs give equal keys, anything else a fresh stream.
    """
    if not isinstance(keys, Tensor) or keys.dtype != torch.int64:
        raise TypeError(f"keys must be an int64 tensor, got {getattr(keys, 'dtype', type(keys))}")
    parts = list(_words(keys, keys.device))
    for w in words:
        parts.extend(_words(w, keys.device))
    h1 = _hash(*parts)
    h2 = _mix(h1 ^ 0x85EBCA6B)
    return ((h1 & 0x7FFFFFFF) << 32) | h2


def _bits(prefix: Tensor, n: int, salt: int) -> Tensor:
    index = torch.arange(n, dtype=torch.int64, device=prefix.device) * 2 + salt
    return _mix(prefix.unsqueeze(-1) ^ _mix(index))


def uniform(keys: Tensor, t: Tensor | int, stream: int, shape: tuple[int, ...] = (),
            dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform numbers in the open interval (0, 1).

    Args:
        keys: ``[B]`` int64 episode keys.
        t: step index, an int or ``[B]`` int64.
        stream: an integer naming what the numbers are for (two streams are independent).
        shape: trailing shape per trajectory.
    Returns:
        ``[B, *shape]`` of ``dtype`` on ``keys.device``.
    """
    n = math.prod(shape)
    bits = _bits(_prefix(keys, t, stream), n, 0)
    u = (bits.to(torch.float64) + 0.5) * 2.0**-32
    return u.reshape(*keys.shape, *shape).to(dtype)


def normal(keys: Tensor, t: Tensor | int, stream: int, shape: tuple[int, ...] = (),
           dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal numbers; arguments as in `uniform`.

    Box-Muller on pairs of 32-bit uniforms (u1, u2), using both outputs: entry j < m of a
    trajectory's numbers is r_j cos(2 pi u2_j) and entry m + j is r_j sin(2 pi u2_j), with
    r_j = sqrt(-2 log u1_j) and m = ceil(n / 2). The transform runs in float64 for float64
    callers and in float32 for lower precisions (6x faster on a CPU, where the transcendental
    functions dominate the cost of ES perturbations); the two agree to float32 rounding.
    """
    n = math.prod(shape)
    m = (n + 1) // 2
    work = torch.float64 if torch.finfo(dtype).bits > 32 else torch.float32
    prefix = _prefix(keys, t, stream)
    u1 = (_bits(prefix, m, 0).to(work) + 0.5) * 2.0**-32
    angle = (_bits(prefix, m, 1).to(work) + 0.5) * (2.0 * math.pi * 2.0**-32)
    r = torch.sqrt(-2.0 * torch.log(u1))
    z = torch.cat([r * torch.cos(angle), r * torch.sin(angle)], dim=-1)[..., :n]
    return z.reshape(*keys.shape, *shape).to(dtype)

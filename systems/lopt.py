"""Per-parameter MLP learned optimizers: batched dense layers and the literature's MLP LOpt.

A per-parameter learned optimizer applies one small MLP, whose weights are theta, to a feature
vector of every inner parameter independently (Andrychowicz et al. 2016, arXiv 1606.04474;
Metz et al. 2019, "Understanding and correcting pathologies in the training of learned
optimizers", arXiv 1810.10180). Everything here is batched over B trajectories, each with its
own theta row (ES perturbs theta per trajectory), so a layer is a batched matmul
``[B, P, F] @ [B, F, H]``, never a Python loop over trajectories or parameters.

`MLPLOpt` is the optimizer of learned_optimization's ``MLPLOpt`` ("LOLv2"), the one its
PES meta-training examples use. For an inner parameter p (one entry of a tensor W of the inner
model) with gradient g at inner step t:

    m_k   <- beta_k m_k + (1 - beta_k) g,         beta = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
    u      = (g, p, m_1 .. m_6) / sqrt(1e-5 + mean_{W} (g, p, m_1 .. m_6)^2)       8 features,
             each normalised by its second moment over the parameter's own tensor W
    e(t)   = tanh(t / tau - 1),   tau = (1, 3, 10, 30, ..., 3e4, 1e5)             11 features
    (d, r) = MLP_theta(u, e(t))                    19 -> 32 -> 32 -> 2, ReLU, D = 1762
    p     <- p - step_mult * d * exp(exp_mult * r)

d is the step's direction and r its log-magnitude; ``step_mult`` scales every step (the
chaos knob of the systems built on it). The code is this project's own.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["layers_dim", "split_layers", "dense", "tanh_embedding", "normalize_per_tensor",
           "update_momenta", "MLPLOpt", "DECAYS", "TIMESCALES"]

DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
TIMESCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
_EPS = 1e-5
_PASS = 4  # the feature MLPLOpt.init_params passes through: m at decay 0.9 (u = g, p, m_1 ...)
_SHIFT = 10.0  # bias of its pass-through units (MLPLOpt.init_params)


def layers_dim(sizes: Sequence[int]) -> int:
    """Number of weights and biases of an MLP with layer widths ``sizes`` (f_0, ..., f_L)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def split_layers(theta: Tensor, sizes: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
    """Views of the layers of flat MLP weights, in the order w_1, b_1, w_2, b_2, ...

    Args:
        theta: ``[B, n]`` with ``n >= layers_dim(sizes)`` (entries past the MLP are ignored).
        sizes: layer widths (f_0, ..., f_L).
    Returns:
        ``[(w_l [B, f_{l-1}, f_l], b_l [B, f_l])]`` for l = 1 .. L.
    """
    out, i = [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        out.append((theta[:, i:i + a * b].reshape(-1, a, b), theta[:, i + a * b:i + a * b + b]))
        i += a * b + b
    return out


def dense(u: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """One per-parameter layer with a weight matrix per trajectory: ``u w + b``.

    Args:
        u: ``[B, P, F]`` features of P parameters; w: ``[B, F, H]``; b: ``[B, H]``.
    Returns:
        ``[B, P, H]``, from one fused batched matmul-add (`torch.baddbmm`).
    """
    return torch.baddbmm(b[:, None, :], u, w)


def tanh_embedding(t: Tensor, dtype: torch.dtype) -> Tensor:
    """Training-step features ``tanh(t / tau - 1)`` for the 11 `TIMESCALES` tau, ``[B, 11]``.

    Args:
        t: ``[B]`` int64 inner step indices.
    """
    tau = torch.tensor(TIMESCALES, dtype=dtype, device=t.device)
    return torch.tanh(t.to(dtype)[:, None] / tau - 1.0)


def normalize_per_tensor(x: Tensor, sizes: Sequence[int], eps: float = _EPS) -> Tensor:
    """Second-moment normalisation of features over each inner tensor separately.

    The inner parameters ``[P]`` are the concatenation of tensors of ``sizes`` entries; each
    feature column is divided by its root mean square over the tensor:
    ``x / sqrt(eps + mean_{p in W} x_p^2)``.

    Args:
        x: ``[B, P, F]``; sizes: tensor sizes summing to P.
    Returns:
        ``[B, P, F]``.
    """
    parts = torch.split(x, list(sizes), dim=1)
    return torch.cat([v * torch.rsqrt(eps + v.square().mean(1, keepdim=True)) for v in parts], 1)


def update_momenta(m: Tensor, g: Tensor, decays: Sequence[float] = DECAYS) -> Tensor:
    """Gradient EMAs at several decays: ``m_k <- beta_k m_k + (1 - beta_k) g``.

    Args:
        m: ``[B, P, K]``; g: ``[B, P]``; decays: the K rates beta_k.
    Returns:
        ``[B, P, K]``.
    """
    beta = torch.tensor(decays, dtype=m.dtype, device=m.device)
    return beta * m + (1.0 - beta) * g[..., None]


class MLPLOpt:
    """The per-parameter MLP learned optimizer (learned_optimization's MLPLOpt; module docs).

    Args:
        hidden: width of the two hidden layers (32 in the literature).
        step_mult: scale of every step, ``step = step_mult * d * exp(exp_mult * r)``.
        exp_mult: scale of the log-magnitude output r (0.001 in the literature).
        init_seed: seed of the random part of `init_params`.

    Attributes:
        sizes: layer widths ``(19, hidden, hidden, 2)``; param_dim: D = `layers_dim` (1762).
    """

    n_features = 2 + len(DECAYS) + len(TIMESCALES)

    def __init__(self, hidden: int = 32, step_mult: float = 0.001, exp_mult: float = 0.001,
                 init_seed: int = 0):
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 2:
            raise ValueError(f"hidden must be an int >= 2, got {hidden!r}")
        for name, v in (("step_mult", step_mult), ("exp_mult", exp_mult)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        self.hidden, self.step_mult, self.exp_mult = hidden, float(step_mult), float(exp_mult)
        self.init_seed = init_seed
        self.sizes = (self.n_features, hidden, hidden, 2)
        self.param_dim = layers_dim(self.sizes)

    def init_params(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """Weights ``[D]`` that start close to per-tensor normalised SGD with momentum 0.9.

        Every weight is random, ``N(0, 1/fan_in)`` (haiku's scale), biases are zero; on top,
        hidden units 0 and 1 of both layers carry ``c + u_m`` and ``c - u_m`` (c = 10, bias)
        of the normalised momentum u_m (decay 0.9), and the direction output is half their
        difference, so that ``d ~ u_m``, ``r ~ 0`` and ``step ~ step_mult * m / rms_W(m)``: a
        working optimizer that the MLP represents (exactly while |u_m| < c; |u_m| stays below
        7 when it trains the digits MLP). The shift c keeps these units far from the ReLU kink
        (without it, half of them would sit on it and the unroll would not be smooth at the
        scale of a finite difference). The random weights into those units and into the outputs
        are scaled by 0.01: they perturb the step by about 1% and give every weight a gradient.
        """
        g = torch.Generator().manual_seed(self.init_seed)
        layers = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            w = torch.randn(a, b, generator=g, dtype=torch.float64) / math.sqrt(a)
            layers.append((w, torch.zeros(b, dtype=torch.float64)))
        (w1, b1), (w2, b2), (w3, _) = layers
        w1[:, :2] *= 0.01
        w2[:, :2] *= 0.01
        w3 *= 0.01
        w1[_PASS, 0] += 1.0
        w1[_PASS, 1] -= 1.0
        w2[0, 0] += 1.0
        w2[1, 1] += 1.0
        b1[:2] = b2[:2] = _SHIFT
        w3[0, 0] += 0.5
        w3[1, 0] -= 0.5
        theta = torch.cat([x.flatten() for layer in layers for x in layer])
        return theta.to(dtype=dtype, device=device)

    def features(self, p: Tensor, g: Tensor, m: Tensor, sizes: Sequence[int]) -> Tensor:
        """The 8 normalised per-parameter features ``[B, P, 8]``: (g, p, m_1 .. m_6) / rms_W.

        Args:
            p: ``[B, P]`` parameters.
            g: ``[B, P]`` gradients.
            m: ``[B, P, 6]`` momenta (already updated with g).
            sizes: sizes of the inner tensors, summing to P.
        """
        return normalize_per_tensor(torch.cat([g[..., None], p[..., None], m], dim=-1), sizes)

    def update(self, theta: Tensor, p: Tensor, g: Tensor, m: Tensor, t: Tensor,
               sizes: Sequence[int]) -> Tensor:
        """The step ``step_mult * d * exp(exp_mult * r)`` ``[B, P]`` (to subtract from p).

        The 11 step features are the same for every parameter, so their part of the first
        layer, ``e(t) w_1[8:] + b_1``, is computed once per trajectory and added as a bias.

        Args:
            theta: ``[B, D]``; p, g: ``[B, P]``; m: ``[B, P, 6]`` updated momenta;
            t: ``[B]`` int64 inner steps; sizes: inner tensor sizes, summing to P.
        """
        (w1, b1), (w2, b2), (w3, b3) = split_layers(theta, self.sizes)
        u = self.features(p, g, m, sizes)
        n = u.shape[-1]
        bias = torch.einsum("bf,bfh->bh", tanh_embedding(t, theta.dtype), w1[:, n:]) + b1
        h = torch.relu_(dense(u, w1[:, :n], bias))  # in place: a fresh tensor, half the traffic
        h = torch.relu_(dense(h, w2, b2))
        out = dense(h, w3, b3)
        return self.step_mult * out[..., 0] * torch.exp(self.exp_mult * out[..., 1])

    def __repr__(self) -> str:
        return (f"MLPLOpt(hidden={self.hidden}, step_mult={self.step_mult}, "
                f"exp_mult={self.exp_mult})")

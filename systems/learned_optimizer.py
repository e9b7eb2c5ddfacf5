"""A per-parameter MLP learned optimizer training a small MLP on teacher-student regression.

After the learned-optimizer unrolls of Metz, Freeman, Schoenholz, Kachman 2021, "Gradients are
Not All You Need" (arXiv 2111.05803, Sec. 4) and Metz et al. 2019, "Understanding and correcting
pathologies in the training of learned optimizers" (arXiv 1810.10180).

Inner task (all from the episode key; streams 0: teacher, 1: student init, 2: minibatch):

    teacher  y = w2* . tanh(W1* x + b1*) + b2*,   W1* ~ N(0, 1/n_in), b1* ~ N(0, 0.1^2),
             w2* ~ N(0, 1/n_hidden), b2* ~ N(0, 0.1^2)      (same shape as the student)
    student  p = (W1 [h, n_in], b1 [h], w2 [h], b2) flattened, P = h n_in + 2h + 1 numbers,
             initialised like the teacher's weights with zero biases
    batch_t  x ~ N(0, I) [M, n_in] from (key, t),  y = teacher(x)
    loss     l_t = (1 / 2M) sum_m (student_t(x_m) - y_m)^2          (before the step's update)

The inner gradient g_t = dl_t/dp is manual backprop of the 2-layer MLP with batched einsums
(no nested autograd), so the unroll stays differentiable w.r.t. theta.

Learned optimizer, applied to each inner parameter independently (theta = its weights):

    m_{t+1} = beta m_t + (1 - beta) g_t                      (beta = ``momentum``)
    u       = (g_t, m_{t+1}, p_t)                            features, [P, 3]
    o       = tanh(u A + a) c + c0 + u . s                   A [3, H], a, c [H], c0, s [3]
    p_{t+1} = p_t - step_scale * tanh(o)

theta = (A, a, c, c0, s) has D = 5H + 4 entries (164 for H = 32). `init_params` gives small
random A (fixed torch.Generator seed), a = 0, a tiny c, and the skip s = (0, 1, 0): at
initialisation the update is ~ -step_scale * tanh(m), i.e. SGD with (EMA) momentum and learning
rate ``step_scale``. The outer tanh bounds every step by step_scale, so the unroll never
diverges to inf; at large step_scale it keeps bouncing around the minimum instead.
State: ``LearnedOptimizerState(params [B, P], momentum [B, P])``.

Regimes (``step_scale``, the bound on each inner update), measured at `init_params` with
`systems.lyapunov_exponents` (float64, 8 keys) and the per-key BPTT gradient std:

    step_scale   lambda_1 / step      BPTT std  T = 10 -> 50
    0.1          -0.0002 +- 0.0001    0.52 -> 0.36     ``regular``: the inner loss falls smoothly
    1.0          -0.0003 +- 0.0004    1.5  -> 0.8
    3.0           0.0006 +- 0.0010    4.4  -> 12
    5.0           0.022  +- 0.009     9.3  -> 51       onset of chaos
    6.0           0.10   +- 0.03      12   -> 370
    8.0           0.36   +- 0.05      15   -> 9e5      ``chaotic``: std ~ exp(lambda_1 T)

(lambda_1 ~ 0 below the onset: directions in which the inner loss is flat are neither stretched
nor contracted.) The unroll turns chaotic when the learned step overshoots the inner problem's
curvature, between step_scale 4 and 6 for this task.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register

__all__ = ["LearnedOptimizer", "LearnedOptimizerState", "mlp_loss_and_grad"]

_TEACHER, _STUDENT, _BATCH = 0, 1, 2
_N_FEATURES = 3


class LearnedOptimizerState(NamedTuple):
    """State of `LearnedOptimizer`: the student's flattened parameters and gradient EMA, ``[B, P]``."""

    params: Tensor    # [B, P] inner (student) parameters, flattened
    momentum: Tensor  # [B, P] EMA of inner gradients


def _unflatten(p: Tensor, n_in: int, h: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``[B, P]`` -> W1 ``[B, h, n_in]``, b1 ``[B, h]``, w2 ``[B, h]``, b2 ``[B]``."""
    i = h * n_in
    return (p[:, :i].reshape(-1, h, n_in), p[:, i:i + h], p[:, i + h:i + 2 * h], p[:, i + 2 * h])


def mlp_loss_and_grad(p: Tensor, x: Tensor, y: Tensor, n_in: int, h: int) -> tuple[Tensor, Tensor]:
    """Mean-squared-error loss of a batched 2-layer tanh MLP and its analytic gradient.

    Args:
        p: ``[B, P]`` flattened (W1, b1, w2, b2); x: ``[B, M, n_in]``; y: ``[B, M]``.
    Returns:
        ``(loss [B], grad [B, P])`` with loss = (1/2M) sum_m (w2 . tanh(W1 x_m + b1) + b2 - y_m)^2.
    """
    w1, b1, w2, b2 = _unflatten(p, n_in, h)
    a = torch.tanh(torch.einsum("bmi,bhi->bmh", x, w1) + b1[:, None, :])
    r = torch.einsum("bmh,bh->bm", a, w2) + b2[:, None] - y
    m = x.shape[1]
    loss = 0.5 * (r * r).mean(1)
    dr = r / m
    dz = dr[:, :, None] * w2[:, None, :] * (1.0 - a * a)
    grad = torch.cat([torch.einsum("bmh,bmi->bhi", dz, x).flatten(1), dz.sum(1),
                      torch.einsum("bm,bmh->bh", dr, a), dr.sum(1, keepdim=True)], dim=1)
    return loss, grad


@register("learned_optimizer")
class LearnedOptimizer(System):
    """Per-parameter MLP optimizer (theta = its weights) training a small MLP; chaotic at large step."""

    differentiable = True
    regimes = {"regular": {"step_scale": 0.1}, "chaotic": {"step_scale": 8.0}}

    def __init__(self, step_scale: float = 0.1, horizon: int = 50, hidden: int = 32,
                 n_in: int = 4, inner_hidden: int = 8, batch_size: int = 16,
                 momentum: float = 0.9, init_seed: int = 0):
        if not step_scale > 0:
            raise ValueError(f"step_scale must be > 0, got {step_scale}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        for name, v in [("horizon", horizon), ("hidden", hidden), ("n_in", n_in),
                        ("inner_hidden", inner_hidden), ("batch_size", batch_size)]:
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.step_scale, self.horizon, self.hidden = float(step_scale), horizon, hidden
        self.n_in, self.inner_hidden, self.batch_size = n_in, inner_hidden, batch_size
        self.momentum, self.init_seed = float(momentum), init_seed
        self.inner_dim = inner_hidden * n_in + 2 * inner_hidden + 1
        self.state_dim = 2 * self.inner_dim
        self.param_dim = (_N_FEATURES + 2) * hidden + 1 + _N_FEATURES

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        """SGD-with-momentum-like optimizer: small random MLP plus the skip s = (0, 1, 0)."""
        g = torch.Generator().manual_seed(self.init_seed)
        H = self.hidden
        A = torch.randn(_N_FEATURES, H, generator=g, dtype=torch.float64) / _N_FEATURES**0.5
        c = 0.01 * torch.randn(H, generator=g, dtype=torch.float64) / H**0.5
        skip = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        theta = torch.cat([A.flatten(), torch.zeros(H, dtype=torch.float64), c,
                           torch.zeros(1, dtype=torch.float64), skip])
        return theta.to(dtype=dtype, device=device)

    def _weights(self, keys: Tensor, stream: int, dtype: torch.dtype, bias: float) -> Tensor:
        """MLP weights ``[B, P]`` from the keys: W ~ N(0, 1/fan_in), biases ~ N(0, bias^2)."""
        h, n = self.inner_hidden, self.n_in
        z = noise.normal(keys, 0, stream=stream, shape=(self.inner_dim,), dtype=dtype)
        scale = torch.cat([torch.full((h * n,), n**-0.5), torch.full((h,), bias),
                           torch.full((h,), h**-0.5), torch.full((1,), bias)])
        return z * scale.to(dtype=dtype, device=z.device)

    def teacher(self, keys: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """The episode's teacher parameters ``[B, P]`` (a pure function of the key)."""
        return self._weights(keys, _TEACHER, dtype, bias=0.1)

    def init_state(self, theta: Tensor, keys: Tensor) -> LearnedOptimizerState:
        p = self._weights(keys, _STUDENT, theta.dtype, bias=0.0)
        return LearnedOptimizerState(p, torch.zeros_like(p))

    def minibatch(self, keys: Tensor, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Step t's inputs ``[B, M, n_in]`` and teacher targets ``[B, M]``."""
        x = noise.normal(keys, t, stream=_BATCH, shape=(self.batch_size, self.n_in), dtype=dtype)
        w1, b1, w2, b2 = _unflatten(self.teacher(keys, dtype), self.n_in, self.inner_hidden)
        y = torch.einsum("bmh,bh->bm", torch.tanh(torch.einsum("bmi,bhi->bmh", x, w1)
                                                  + b1[:, None, :]), w2) + b2[:, None]
        return x, y

    def update(self, theta: Tensor, g: Tensor, m: Tensor, p: Tensor) -> Tensor:
        """The learned step ``step_scale * tanh(o)`` ``[B, P]`` (to subtract from p)."""
        H, F = self.hidden, _N_FEATURES
        A = theta[:, :F * H].reshape(-1, F, H)
        a, c = theta[:, F * H:(F + 1) * H], theta[:, (F + 1) * H:(F + 2) * H]
        c0, s = theta[:, (F + 2) * H], theta[:, (F + 2) * H + 1:]
        u = torch.stack([g, m, p], dim=-1)                                  # [B, P, 3]
        hid = torch.tanh(torch.einsum("bpf,bfh->bph", u, A) + a[:, None, :])
        o = torch.einsum("bph,bh->bp", hid, c) + c0[:, None] + torch.einsum("bpf,bf->bp", u, s)
        return self.step_scale * torch.tanh(o)

    def step(self, theta: Tensor, state: LearnedOptimizerState, t: Tensor,
             keys: Tensor) -> tuple[LearnedOptimizerState, Tensor]:
        x, y = self.minibatch(keys, t, theta.dtype)
        loss, g = mlp_loss_and_grad(state.params, x, y, self.n_in, self.inner_hidden)
        m = self.momentum * state.momentum + (1.0 - self.momentum) * g
        p = state.params - self.update(theta, g, m, state.params)
        return LearnedOptimizerState(p, m), loss

"""The literature's per-parameter MLP learned optimizer training an MLP on the 8x8 digits.

The offline counterpart of learned_optimization's image-MLP meta-training task (an MLP on 8x8
FashionMNIST, meta-trained with truncated PES; Vicol, Metz, Sohl-Dickstein 2021, arXiv
2112.13835; Metz et al. 2019, arXiv 1810.10180), on the handwritten digits that ship inside
scikit-learn (`sklearn.datasets.load_digits`: 1797 images of 8x8 pixels in 0..16, 10 classes;
nothing is downloaded; the ``digits`` extra installs scikit-learn).

Data (fixed, no randomness): inputs x = pixels / 16 in [0, 1]^64; example i is in the
validation split when i % 5 == 0 (360 examples), in the training split otherwise (1437).

Inner task, for each trajectory (all randomness from its episode key, `systems.noise`):

    model    logits = W2 relu(W1 x + b1) + b2,  W1 [32, 64], W2 [10, 32]: P = 2410 parameters
    init     W ~ N(0, 1/fan_in), b = 0                     (stream 0, from the key)
    batch_t  128 training examples drawn uniformly with replacement   (stream 1, from (key, t))
    l_t      cross-entropy of the batch at p_t, before step t's update, clipped as
             learned_optimization's image tasks do: min(max(l, 0), 1.5 ln 10), NaN -> 1.5 ln 10

The inner gradient g_t = dl_t/dp_t is the MLP's manual backprop with batched matmuls (no nested
autograd), so the unroll stays differentiable in theta. The optimizer is `lopt.MLPLOpt` (theta
= its D = 1762 weights): momenta at 6 decays, per-tensor second-moment normalised features and
11 training-step features, a 19 -> 32 -> 32 -> 2 ReLU MLP per parameter, and

    p_{t+1} = p_t - step_mult * d * exp(exp_mult * r).

`init_params` starts it as per-tensor normalised SGD with momentum 0.9 and learning rate
``step_mult`` (see `MLPLOpt.init_params`). The meta-loss is the mean of l_t over the horizon;
`evaluate` gives the validation loss and accuracy of the inner model a state holds.
State: ``DigitsState(params [B, P], momenta [B, P, 6])``.

The meta-loss is only piecewise smooth: the inner gradient contains relu'(z), so where a hidden
pre-activation z of the inner MLP crosses 0 the next state jumps and the meta-loss with it (by
~1e-5 in the regular regime). Autograd (BPTT) differentiates the smooth pieces and does not see
the jumps; `active_units` gives the ReLU pattern a finite-difference check must hold fixed.

Regimes (``step_mult``), measured at `init_params` in float64 with
``lyapunov_exponents(steps=100, burn_in=100, trajectories=8)`` and
``gradient_growth_rate(horizons=[10, 20, 40], samples=8)``, and the inner training over T = 200
steps (16 keys, float32):

    step_mult  lambda_1 / step    BPTT log-std, T = 10 20 40   meta-loss   l_t, t >= 190   val acc
    0.003      0.0012 +- 0.0001   -1.10  -0.80  -0.83          0.500       0.094           0.956
    0.01       0.0012 +- 0.0001   -0.77   0.08   0.29          0.244       0.032           0.964
    0.03       0.057  +- 0.005     1.12   2.20   2.60          0.236       0.076           0.956
    0.1        0.225  +- 0.025     5.09   7.27  11.42          1.684       1.719           0.306
    0.3        0.044  +- 0.018     4.80   6.94  19.12          2.479       2.394           0.102

``"regular"`` is step_mult = 0.01 (lambda_1 ~ 0: e^{lambda_1 T} = 1.3 over the horizon; the
BPTT spread grows 2.9x from T = 10 to 40 as more steps feed the gradient, not exponentially).
``"chaotic"`` is 0.1: lambda_1 = 0.22 per step, and the BPTT spread grows like e^{0.21 T} (550x
from T = 10 to 40), the slope matching lambda_1; the inner training fails (loss ~1.7). The best
meta-loss is at the onset of chaos (0.03), as Metz et al. 2021 (arXiv 2111.05803) observe for
learned optimizers. At 0.3 the inner model diverges to chance, where the loss clip saturates.

Horizon: T = 200 by default. With the starting optimizer the inner training has converged by
then (training loss 2.40 -> 0.03, validation accuracy 0.96); the meta-loss at T = 200 already
separates good from bad optimizers (table); the 2x and 4x horizons of a meta-generalisation
check (400, 800) stay within the 200..1000 range of learned_optimization's image-MLP tasks; and
at a few hundred trajectory-steps per second on two CPU cores one T = 1000 episode of a 64-pair
PES costs minutes, five times T = 200.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor

from . import noise
from .base import System
from .lopt import DECAYS, MLPLOpt, update_momenta
from .registry import register

__all__ = ["LearnedOptimizerDigits", "DigitsState", "load_digits_split"]

_INIT, _BATCH = 0, 1
_IN, _HIDDEN, _CLASSES = 64, 32, 10
SIZES = (_HIDDEN * _IN, _HIDDEN, _CLASSES * _HIDDEN, _CLASSES)  # W1, b1, W2, b2
LOSS_CLIP = 1.5 * math.log(_CLASSES)


class DigitsState(NamedTuple):
    """State of `LearnedOptimizerDigits`: the inner MLP's flat parameters and gradient EMAs."""

    params: Tensor   # [B, P] inner parameters (W1, b1, W2, b2) flattened, P = 2410
    momenta: Tensor  # [B, P, 6] EMAs of the inner gradient at the decays of lopt.DECAYS


@functools.lru_cache(maxsize=1)
def load_digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fixed digits split ``(x_train [1437, 64], y_train [1437], x_val [360, 64], y_val [360])``.

    x = pixels / 16 as float64, y int64 labels 0..9; example i of `load_digits` is a
    validation example when i % 5 == 0. Raises ModuleNotFoundError naming the ``digits``
    extra when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the digits systems (learned_optimizer_digits, active_dendrites) need scikit-learn "
            "for their data: pip install 'chaosgrad[digits]'", name="sklearn") from err
    data = load_digits()
    x = torch.as_tensor(data.data, dtype=torch.float64) / 16.0
    y = torch.as_tensor(data.target, dtype=torch.int64)
    val = torch.arange(x.shape[0]) % 5 == 0
    return x[~val], y[~val], x[val], y[val]


def _unflatten(p: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``[B, P]`` -> W1 ``[B, 32, 64]``, b1 ``[B, 32]``, W2 ``[B, 10, 32]``, b2 ``[B, 10]``."""
    w1, b1, w2, b2 = torch.split(p, SIZES, dim=1)
    return w1.reshape(-1, _HIDDEN, _IN), b1, w2.reshape(-1, _CLASSES, _HIDDEN), b2


def _logits(p: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Hidden pre-activations ``[B, M, 32]`` and logits ``[B, M, 10]`` for x ``[B, M, 64]``."""
    w1, b1, w2, b2 = _unflatten(p)
    z = torch.baddbmm(b1[:, None, :], x, w1.transpose(1, 2))
    return z, torch.baddbmm(b2[:, None, :], torch.relu(z), w2.transpose(1, 2))


@register("learned_optimizer_digits")
class LearnedOptimizerDigits(System):
    """The literature's per-parameter MLP LOpt training an MLP 64-32-10 on sklearn's 8x8 digits."""

    differentiable = True
    smooth = False  # the inner ReLU's gradient jumps where a pre-activation crosses 0
    regimes = {"regular": {"step_mult": 0.01}, "chaotic": {"step_mult": 0.1}}

    def __init__(self, step_mult: float = 0.01, horizon: int = 200, hidden: int = 32,
                 exp_mult: float = 0.001, batch_size: int = 128, init_seed: int = 0):
        for name, v in (("horizon", horizon), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.lopt = MLPLOpt(hidden, step_mult, exp_mult, init_seed)
        self.step_mult, self.exp_mult, self.hidden = self.lopt.step_mult, exp_mult, hidden
        self.horizon, self.batch_size, self.init_seed = horizon, batch_size, init_seed
        self.inner_dim = sum(SIZES)
        self.state_dim = self.inner_dim * (1 + len(DECAYS))
        self.param_dim = self.lopt.param_dim
        self._cpu = load_digits_split()
        self._data: dict[tuple, tuple[Tensor, ...]] = {}

    def data(self, dtype: torch.dtype, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`load_digits_split` on ``device`` with inputs in ``dtype`` (cached per pair)."""
        device = torch.device(device)
        key = (dtype, device)
        if key not in self._data:
            self._data[key] = tuple(v.to(device=device, dtype=dtype if v.is_floating_point()
                                         else v.dtype) for v in self._cpu)
        return self._data[key]

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        """About normalised SGD, momentum 0.9, learning rate step_mult (`MLPLOpt.init_params`)."""
        return self.lopt.init_params(dtype, device)

    def init_inner(self, keys: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """The inner MLP's initial parameters ``[B, P]``: W ~ N(0, 1/fan_in), zero biases."""
        z = noise.normal(keys, 0, stream=_INIT, shape=(self.inner_dim,), dtype=dtype)
        scale = torch.cat([torch.full((SIZES[0],), _IN**-0.5), torch.zeros(SIZES[1]),
                           torch.full((SIZES[2],), _HIDDEN**-0.5), torch.zeros(SIZES[3])])
        return z * scale.to(dtype=dtype, device=z.device)

    def init_state(self, theta: Tensor, keys: Tensor) -> DigitsState:
        p = self.init_inner(keys, theta.dtype)
        return DigitsState(p, p.new_zeros(*p.shape, len(DECAYS)))

    def minibatch(self, keys: Tensor, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Step t's training batch: inputs ``[B, M, 64]`` and labels ``[B, M]`` (from (key, t))."""
        x, y, _, _ = self.data(dtype, keys.device)
        u = noise.uniform(keys, t, stream=_BATCH, shape=(self.batch_size,), dtype=torch.float64)
        idx = (u * x.shape[0]).long()
        return x[idx], y[idx]

    @staticmethod
    def loss_and_grad(p: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy of the inner MLP and its analytic gradient.

        Args:
            p: ``[B, P]`` flat (W1, b1, W2, b2); x: ``[B, M, 64]``; y: ``[B, M]`` int64.
        Returns:
            ``(loss [B], grad [B, P])`` with loss = (1/M) sum_m [logsumexp(z_m) - z_m[y_m]].
        """
        _, _, w2, _ = _unflatten(p)
        z, logits = _logits(p, x)
        a = torch.relu(z)
        loss = (torch.logsumexp(logits, -1) - logits.gather(-1, y[..., None])[..., 0]).mean(1)
        # one-hot by comparison: F.one_hot reads min/max back to the host to validate labels
        onehot = (y[..., None] == torch.arange(_CLASSES, device=y.device)).to(p.dtype)
        dlogits = (torch.softmax(logits, -1) - onehot) / x.shape[1]
        dz = torch.bmm(dlogits, w2) * (z > 0).to(p.dtype)
        grad = torch.cat([torch.bmm(dz.transpose(1, 2), x).flatten(1), dz.sum(1),
                          torch.bmm(dlogits.transpose(1, 2), a).flatten(1), dlogits.sum(1)], 1)
        return loss, grad

    def active_units(self, state: DigitsState, t: Tensor, keys: Tensor) -> Tensor:
        """The inner ReLU pattern of step t: which hidden units are active on which examples.

        The inner gradient contains relu'(z), a step function, so the unroll is smooth in
        theta only while this pattern stays the same; where a pre-activation z crosses 0 the
        next states, and the meta-loss, jump (by ~1e-5 at the regular regime). Finite
        differences are meaningful only between points with the same patterns.

        Returns:
            ``[B, M, 32]`` bool, ``z > 0`` for the step's minibatch (`minibatch`).
        """
        x, _ = self.minibatch(keys, t, state.params.dtype)
        return _logits(state.params, x)[0] > 0

    def step(self, theta: Tensor, state: DigitsState, t: Tensor,
             keys: Tensor) -> tuple[DigitsState, Tensor]:
        x, y = self.minibatch(keys, t, theta.dtype)
        loss, g = self.loss_and_grad(state.params, x, y)
        m = update_momenta(state.momenta, g)
        p = state.params - self.lopt.update(theta, state.params, g, m, t, SIZES)
        return DigitsState(p, m), torch.nan_to_num(loss.clamp(0.0, LOSS_CLIP), nan=LOSS_CLIP)

    def evaluate(self, state: DigitsState) -> dict[str, Tensor]:
        """Loss and accuracy of each trajectory's inner MLP on the full train and validation splits.

        Args:
            state: a `DigitsState` with ``params [B, P]``.
        Returns:
            ``{"train_loss", "train_accuracy", "val_loss", "val_accuracy"}``, each ``[B]``:
            mean unclipped cross-entropy (NaN or inf for a diverged model) and the fraction
            of examples whose largest logit is the label.
        """
        p = state.params
        x_tr, y_tr, x_val, y_val = self.data(p.dtype, p.device)
        out = {}
        for split, x, y in (("train", x_tr, y_tr), ("val", x_val, y_val)):
            _, logits = _logits(p, x.expand(p.shape[0], -1, -1))
            label = logits.gather(-1, y.expand(p.shape[0], -1)[..., None])[..., 0]
            ce = torch.logsumexp(logits, -1) - label
            out[f"{split}_loss"] = ce.mean(1)
            out[f"{split}_accuracy"] = (logits.argmax(-1) == y).to(p.dtype).mean(1)
        return out

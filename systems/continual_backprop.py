"""Continual backprop on the Bit-Flipping problem: online learning as an iterated system.

Dohare, Mahmood, Sutton 2021, "Continual Backprop: Stochastic Gradient Descent with Persistent
Randomness" (arXiv 2108.06325, Sec. 3, the Bit-Flipping problem; Sec. 4, the algorithm), and
Dohare et al. 2024, "Loss of plasticity in deep continual learning" (Nature 632, Methods eq. 1;
the problem reappears there as Slowly-Changing Regression, Extended Data Fig. 2).

Problem (paper constants: m = 20 input bits, f = 15 of them flipping, one flipping bit flipped
every T_flip = 10,000 steps, a target network of 100 linear-threshold units (LTU) with weights
+-1 and beta = 0.7). The input x_t in {0, 1}^(m + 1) is

    x_t = (b_t [f slowly flipping bits], r_t [m - f bits, fresh and uniform every step], 1)

with b_0 uniform and, at every t > 0 that is a multiple of T_flip, one uniformly chosen bit of b
flipped. The target is y_t = sum_j v_j LTU_j(x_t) with V_j, v_j uniform in {-1, +1} and

    LTU_j(x) = 1 if V_j . x > (m + 1) beta - S_j else 0,   S_j = #{i : V_ji = -1}.

Learner (paper: one hidden layer, n = 5 units, SGD one example per step): h = phi(W x),
yhat = w . h + c, the online loss l_t = (yhat_t - y_t)^2 before the step's update, and, with
L2 regularisation (weight decay) lambda,

    W <- W - alpha (2 r (w * phi'(W x)) x^T + lambda W),
    w <- w - alpha (2 r h + lambda w),          c <- c - alpha (2 r + lambda c),

r = yhat - y (manual backprop, batched einsums; the update stays differentiable). lambda = 0
(the default) is plain backprop; lambda > 0 is the gradient of l_t + (lambda / 2) |params|^2,
torch SGD's ``weight_decay`` on every parameter as in the authors' code (their "L2" learner;
the bias column of W and c are decayed too). The activation phi (the paper's Fig. 2 compares
three; the Nature paper's Extended Data Fig. 2b six), with phi' written through h:

    tanh: 1 - h^2     sigmoid: h (1 - h)     relu: [h > 0]     leaky_relu (slope 0.01): 1 or 0.01

Initial and reinitialised input weights are W_ij ~ N(0, g^2 / (m + 1)) with g = ``init_gain``
(default 1); the authors' code draws them Kaiming-uniform, of variance g^2 / (m + 1) with g the
activation's gain (`KAIMING_GAIN`: tanh 5/3, sigmoid 1, relu sqrt 2), which ``init_gain`` set to
that gain matches in variance. w ~ N(0, 1/n) (the authors': uniform of the same variance), c = 0.

Generate-and-test (continual backprop), per hidden unit i after the SGD update, with the
contribution utility of the Nature paper's Methods eq. (1) (one output unit, so the sum over
outgoing weights is |w_i|, taken before the step's update):

    u_i <- eta u_i + (1 - eta) |h_i| |w_i|,       a_i <- a_i + 1
    c_acc <- c_acc + rho n;  k = min(floor(c_acc), #{i : a_i > maturity});  c_acc <- c_acc - k

and the k mature units (age > ``maturity``) of lowest utility are reinitialised: W_i fresh from
the initial distribution drawn from (episode key, t), w_i = 0, u_i = 0, a_i = 0. The fractional
accumulator (the paper's per-step rho n is well below one) makes the number of replacements
after t steps exactly floor(rho n t) whenever enough units are mature. Paper defaults:
rho = 1e-4, eta = 0.99, maturity 100, step size 0.01.

theta = (log alpha, log rho, logit eta), D = 3; the weight decay lambda, the activation and
the initial scale are constructor settings. State `ContinualBackpropState`.

What ``differentiable = True`` means here: autograd through `step` gives the pathwise derivative
of the unroll with the discrete decisions held fixed: which bits flip, which units are replaced
and when. It is exact (a finite difference agrees) as long as no decision changes within the
difference; it is blind to the effect of theta on the decisions. Since rho and eta act on the
loss only through those decisions (the replacement count floor(.) and the utility ranking), their
pathwise derivatives are exactly zero: only ES-type estimators see them.

Regimes (T_flip scaled down to 1000 so a 10^4-step unroll holds ten flips): ``regular``: plain
backprop, rho = 1e-8 (no replacement before 1/(rho n) = 2e7 steps, so the unroll is smooth and
equals backprop exactly); ``continual``: rho = 1e-3, maturity 100 (one replacement every 200
steps). Measured (16 keys, float64, mean online error per 2000-step window +- standard error
over keys, windows 1, 5, 10 of 20,000 steps):

    regime       step 0.01                        step 0.03
    regular      0.93+-0.08  0.98+-0.10  1.10+-0.09   0.94+-0.09  1.03+-0.10  1.16+-0.11
    continual    0.94+-0.08  1.03+-0.10  1.14+-0.11   0.94+-0.09  1.03+-0.11  1.13+-0.09

Backprop's error creeps up over the stream, but with this tanh learner at unit initial gain
and 2e4 steps the paper's separation (its continual backprop keeps the error low over 10^6
steps) is not visible: replacement does not help here, and at T_flip = 200 neither learner
tracks the flips (error ~1.3-1.5 for n = 5 and 20). The regimes differ in what matters to
estimators: discrete reinitialisations happen in ``continual`` and never in ``regular``.

Loss of plasticity does show with the authors' learner (``activation="relu"``, ``init_gain =
KAIMING_GAIN["relu"]``), T_flip = 1000, step 0.01, over 2e5 steps (``chaosgrad reproduce
plasticity``: 32 keys, float32, mean error per 10,000-step bin +- SE over keys):

    steps                  0-10k          90-100k        190-200k      late (150k-200k)
    backprop (rho 1e-12)   1.17+-0.06     1.40+-0.07     1.64+-0.09    1.46+-0.04
    + L2, lambda = 1e-2    1.15+-0.06     1.18+-0.05     1.27+-0.06    1.20+-0.03
    continual, rho 1e-4    1.14+-0.05     1.08+-0.04     1.15+-0.05    1.08+-0.03

backprop's late error exceeds its first bin by 0.285 +- 0.065 and exceeds continual backprop's
by 0.377 +- 0.032 (paired over keys); see `experiments.reproduce.plasticity`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from . import noise
from .base import System
from .registry import register
from .validation import check_int

__all__ = ["ContinualBackprop", "ContinualBackpropState", "bit_flipping_target",
           "contribution_utility", "replacement_mask", "activate", "ACTIVATIONS", "KAIMING_GAIN"]

_TARGET_W, _TARGET_V, _BITS0, _FLIP, _RANDOM, _INIT, _INIT_OUT, _REINIT = range(8)

ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu")
"""The hidden activations phi of the learner (`activate`)."""
KAIMING_GAIN = {"tanh": 5.0 / 3.0, "sigmoid": 1.0, "relu": math.sqrt(2.0),
                "leaky_relu": math.sqrt(2.0 / (1.0 + 0.01 ** 2))}
"""torch.nn.init.calculate_gain of each activation: the authors' initial weight scale g."""
_LEAK = 0.01


class ContinualBackpropState(NamedTuple):
    """State of `ContinualBackprop` for B learners with n hidden units and m + 1 inputs."""

    bits: Tensor     # [B, f] bool, the slowly flipping input bits
    v_in: Tensor     # [B, H, m + 1] bool, target weights V_ji = +1 where True, else -1
    v_out: Tensor    # [B, H] bool, target output weights v_j = +1 where True, else -1
    w_in: Tensor     # [B, n, m + 1] input weights W (the last input is the bias 1)
    w_out: Tensor    # [B, n] output weights w
    b_out: Tensor    # [B] output bias c
    utility: Tensor  # [B, n] contribution utility u
    age: Tensor      # [B, n] int64 steps since (re)initialisation
    accum: Tensor    # [B] fractional replacements owed, c_acc


def bit_flipping_target(x: Tensor, v_in: Tensor, v_out: Tensor, beta: float) -> Tensor:
    """y = sum_j v_j [V_j . x > (m + 1) beta - S_j], ``[B]``.

    The weights come as {-1, +1} numbers or as signs (bool, True = +1); with signs P, V_j . x =
    2 P_j . x - sum(x) and S_j = (m + 1) - sum(P_j), the same integers (exact in floating point)
    without building the +-1 tensor every step.

    Args:
        x: ``[B, m + 1]`` inputs in {0, 1} (the last one the bias 1).
        v_in: ``[B, H, m + 1]`` target input weights in {-1, +1}, or their signs (bool).
        v_out: ``[B, H]`` target output weights in {-1, +1}, or their signs (bool).
        beta: the LTU threshold fraction (0.7 in the paper).
    """
    if v_in.dtype == torch.bool:
        p = v_in.to(x.dtype)
        dot = 2.0 * torch.einsum("bhi,bi->bh", p, x) - x.sum(-1, keepdim=True)
        s = x.shape[-1] - p.sum(-1)                                      # [B, H]
    else:
        dot = torch.einsum("bhi,bi->bh", v_in, x)
        s = (v_in < 0).sum(-1).to(x.dtype)
    if v_out.dtype == torch.bool:
        v_out = 2.0 * v_out.to(x.dtype) - 1.0
    ltu = (dot > x.shape[-1] * beta - s).to(x.dtype)
    return (ltu * v_out).sum(-1)


def activate(z: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """``(h, phi'(z))`` for the pre-activations ``z`` ``[B, n]``, each ``[B, n]``.

    tanh: phi' = 1 - h^2; sigmoid: h (1 - h); relu: [z > 0]; leaky_relu: 1 where z > 0, else
    0.01 (the derivative at the kink z = 0 is taken as the left one).

    Args:
        z: ``[B, n]`` pre-activations W x.
        activation: one of `ACTIVATIONS`.
    """
    if activation == "tanh":
        h = torch.tanh(z)
        return h, 1.0 - h * h
    if activation == "sigmoid":
        h = torch.sigmoid(z)
        return h, h * (1.0 - h)
    slope = 0.0 if activation == "relu" else _LEAK
    pos = z > 0
    d = torch.where(pos, torch.ones_like(z), torch.full_like(z, slope))
    return z * d, d


def contribution_utility(u: Tensor, h: Tensor, w_out: Tensor, eta: Tensor) -> Tensor:
    """The contribution utility update u <- eta u + (1 - eta) |h| |w_out|, ``[B, n]``.

    Args:
        u: ``[B, n]`` utilities.
        h: ``[B, n]`` hidden outputs of this step.
        w_out: ``[B, n]`` outgoing weights of the hidden units.
        eta: decay, ``[B, 1]`` or a scalar.
    """
    return eta * u + (1.0 - eta) * h.abs() * w_out.abs()


def replacement_mask(utility: Tensor, mature: Tensor, k: Tensor) -> Tensor:
    """``[B, n]`` bool: the ``k[B]`` mature units of lowest utility in each row.

    Ties go to the lower index; ``k`` must not exceed the row's count of mature units.

    Args:
        utility: ``[B, n]`` utilities.
        mature: ``[B, n]`` bool, units old enough to be replaced.
        k: ``[B]`` int64 number of units to replace in each row.
    """
    score = torch.where(mature, utility, torch.full_like(utility, math.inf))
    rank = torch.argsort(torch.argsort(score, dim=1, stable=True), dim=1)
    return mature & (rank < k[:, None])


@register("continual_backprop")
class ContinualBackprop(System):
    """Bit-Flipping with a 1-hidden-layer learner and generate-and-test; theta = (log alpha, log rho, logit eta).

    Constructor settings beyond the paper's problem constants: ``weight_decay`` lambda >= 0 (L2
    regularisation of every parameter), ``activation`` (one of `ACTIVATIONS`), ``init_gain`` g
    (input weights N(0, g^2 / (m + 1))). A ReLU-type activation makes the loss piecewise smooth
    (``smooth = False``).
    """

    param_dim = 3
    regimes = {"regular": {"replacement_rate": 1e-8, "flip_every": 1000},
               "continual": {"replacement_rate": 1e-3, "maturity": 100, "flip_every": 1000}}

    def __init__(self, step_size: float = 0.01, replacement_rate: float = 1e-4,
                 decay: float = 0.99, maturity: int = 100, hidden: int = 5, n_bits: int = 20,
                 n_flipping: int = 15, flip_every: int = 10_000, target_hidden: int = 100,
                 beta: float = 0.7, horizon: int = 2000, weight_decay: float = 0.0,
                 activation: str = "tanh", init_gain: float = 1.0):
        if not step_size > 0 or not math.isfinite(step_size):
            raise ValueError(f"step_size must be > 0 and finite, got {step_size}")
        if not 0 < replacement_rate <= 1:
            raise ValueError(f"replacement_rate must be in (0, 1], got {replacement_rate}")
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        if not 0 <= weight_decay < math.inf:
            raise ValueError(f"weight_decay must be >= 0 and finite, got {weight_decay}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {activation!r}")
        if not 0 < init_gain < math.inf:
            raise ValueError(f"init_gain must be > 0 and finite, got {init_gain}")
        check_int("maturity", maturity, low=0)
        for name, v in [("hidden", hidden), ("n_bits", n_bits), ("flip_every", flip_every),
                        ("target_hidden", target_hidden), ("horizon", horizon)]:
            check_int(name, v)
        check_int("n_flipping", n_flipping)
        if n_flipping > n_bits:
            raise ValueError(f"n_flipping must be <= n_bits = {n_bits}, got {n_flipping}")
        self.step_size, self.replacement_rate, self.decay = step_size, replacement_rate, decay
        self.maturity, self.hidden, self.n_bits, self.n_flipping = maturity, hidden, n_bits, n_flipping
        self.flip_every, self.target_hidden, self.beta = flip_every, target_hidden, beta
        self.horizon = horizon
        self.weight_decay, self.activation, self.init_gain = weight_decay, activation, init_gain
        self.smooth = activation in ("tanh", "sigmoid")
        self.n_in = n_bits + 1
        self.state_dim = hidden * (self.n_in + 2) + 2   # the floating leaves: W, w, c, u, c_acc

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        """``(log step_size, log replacement_rate, logit decay)``, ``[3]``."""
        d = self.decay
        return torch.tensor([math.log(self.step_size), math.log(self.replacement_rate),
                             math.log(d / (1.0 - d))], dtype=dtype, device=device)

    def target(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """The episode's target network as signs (True = +1): V ``[B, H, m + 1]``, v ``[B, H]``.

        Drawn once per episode from the key and carried in the state as boolean leaves (not
        tangent directions for diagnostics); hashing it again every step would dominate the cost.

        Args:
            keys: ``[B]`` int64 episode keys.
        """
        shape = (self.target_hidden, self.n_in)
        return (noise.uniform(keys, 0, _TARGET_W, shape, torch.float64) >= 0.5,
                noise.uniform(keys, 0, _TARGET_V, shape[:1], torch.float64) >= 0.5)

    def fresh_inputs(self, keys: Tensor, t: Tensor | int, stream: int, dtype: torch.dtype) -> Tensor:
        """Input weights from the initial distribution N(0, g^2/(m + 1)), ``[B, n, m + 1]``.

        Args:
            keys: ``[B]`` int64 episode keys.
            t: the step (an int or ``[B]`` int64).
            stream: the noise stream (initialisation or reinitialisation).
            dtype: the weights' dtype.
        """
        z = noise.normal(keys, t, stream, (self.hidden, self.n_in), dtype)
        if self.init_gain == 1.0:  # the rounding of the original N(0, 1/(m + 1)), bit for bit
            return z / math.sqrt(self.n_in)
        return z * (self.init_gain / math.sqrt(self.n_in))

    def init_state(self, theta: Tensor, keys: Tensor) -> ContinualBackpropState:
        b, n, dt = theta.shape[0], self.hidden, theta.dtype
        bits = noise.uniform(keys, 0, _BITS0, (self.n_flipping,), torch.float64) < 0.5
        w_out = noise.normal(keys, 0, _INIT_OUT, (n,), dt) / math.sqrt(n)
        zeros = torch.zeros(b, n, dtype=dt, device=theta.device)
        return ContinualBackpropState(
            bits, *self.target(keys), self.fresh_inputs(keys, 0, _INIT, dt), w_out,
            torch.zeros(b, dtype=dt, device=theta.device), zeros,
            torch.zeros(b, n, dtype=torch.int64, device=theta.device),
            torch.zeros(b, dtype=dt, device=theta.device))

    def inputs(self, bits: Tensor, keys: Tensor, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Flip the bit due at step t, then build x_t: ``(bits [B, f], x [B, m + 1])``.

        Args:
            bits: ``[B, f]`` bool flipping bits before step t.
            keys: ``[B]`` int64 episode keys.
            t: ``[B]`` int64 steps.
            dtype: the inputs' dtype.
        """
        f = self.n_flipping
        which = (noise.uniform(keys, t, _FLIP, (), torch.float64) * f).long().clamp(max=f - 1)
        due = (t > 0) & (t % self.flip_every == 0)
        flip = due[:, None] & (torch.arange(f, device=bits.device) == which[:, None])
        bits = bits ^ flip
        rand = noise.uniform(keys, t, _RANDOM, (self.n_bits - f,), torch.float64) < 0.5
        one = torch.ones_like(bits[:, :1])
        return bits, torch.cat([bits, rand, one], dim=1).to(dtype)

    def step(self, theta: Tensor, state: ContinualBackpropState, t: Tensor,
             keys: Tensor) -> tuple[ContinualBackpropState, Tensor]:
        alpha, rho = torch.exp(theta[:, 0]), torch.exp(theta[:, 1])
        eta = torch.sigmoid(theta[:, 2])[:, None]
        bits, x = self.inputs(state.bits, keys, t, theta.dtype)
        y = bit_flipping_target(x, state.v_in, state.v_out, self.beta)

        h, dh = activate(torch.einsum("bni,bi->bn", state.w_in, x), self.activation)
        r = (h * state.w_out).sum(1) + state.b_out - y
        loss = r * r
        g = 2.0 * alpha * r                                                  # [B]
        dz = g[:, None] * state.w_out * dh
        w_in = state.w_in - dz[:, :, None] * x[:, None, :]
        w_out = state.w_out - g[:, None] * h
        b_out = state.b_out - g
        if self.weight_decay:
            decay = alpha * self.weight_decay
            w_in = w_in - decay[:, None, None] * state.w_in
            w_out = w_out - decay[:, None] * state.w_out
            b_out = b_out - decay * state.b_out

        utility = contribution_utility(state.utility, h, state.w_out, eta)
        age = state.age + 1
        mature = age > self.maturity
        accum = state.accum + rho * self.hidden
        k = torch.minimum(torch.floor(accum.detach()).long(), mature.sum(1))
        replace = replacement_mask(utility.detach(), mature, k)
        fresh = self.fresh_inputs(keys, t, _REINIT, theta.dtype)       # no host sync per step
        w_in = torch.where(replace[:, :, None], fresh, w_in)
        w_out = torch.where(replace, torch.zeros_like(w_out), w_out)
        utility = torch.where(replace, torch.zeros_like(utility), utility)
        age = torch.where(replace, torch.zeros_like(age), age)
        accum = accum - k.to(accum.dtype)
        return ContinualBackpropState(bits, state.v_in, state.v_out, w_in, w_out, b_out, utility, age, accum), loss

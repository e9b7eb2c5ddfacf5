"""Continual learning on permuted 8x8 digits with active dendrites and k-winners-take-all.

The continual-learning benchmark of Iyer, Grewal, Velu, Souza, Forest, Ahmad, "Avoiding
Catastrophe: Active Dendrites Enable Multi-Task Learning in Dynamic Environments", Frontiers in
Neurorobotics 16 (2022), arXiv 2201.00042 (permuted MNIST there), on the offline 8x8 digits of
scikit-learn (`learned_optimizer_digits.load_digits_split`: 1437 training and 360 validation
examples; the ``digits`` extra). As in the paper's code, whose permuted MNIST is normalised by
default (numenta/nupic.research has "no_norm" variants that switch it off), the inputs are
standardised: x = (pixels / 16 - mu) / sd, mu and sd the mean and standard deviation of all
training pixels.

Tasks. Task s = 0 .. n_tasks - 1 is the digits with the pixels permuted by pi_s, one fixed
permutation per (episode key, task): pi_s = argsort(u), u ~ U(0, 1)^64 from
``noise.uniform(fold(key, s), 0, stream=1)``. The tasks come in sequence, ``steps_per_task``
online steps each: step t trains on task tau(t) = min(t // steps_per_task, n_tasks - 1), and
the horizon is T = n_tasks * steps_per_task.

Context. As in the paper's prototype method, the context vector of task s is its prototype, the
mean input of the task's training examples: c_s = mean_i x_i[pi_s] (a permutation of the mean
training image). The standardisation centres it (sum_i c_si = 0), so the contexts of two tasks
are nearly orthogonal; on raw pixels in [0, 1] they share a large constant component and the
segments barely tell the tasks apart.

Network (one hidden layer of H units with S = n_tasks dendritic segments each, one segment per
task as in the paper's permuted-MNIST runs; theirs has two hidden layers of 2048 units on 784
pixels):

    a      = W1 x + b1                                   feedforward activation  [H]
    d_us   = U_us . c                                    segment responses       [H, S]
    j_u    = argmax_s |d_us|                             the max-magnitude segment
    z_u    = a_u * sigmoid(d_{u j_u})                    the active-dendrite unit
    h      = kWTA_k(z): z_u if u is among the k largest z, else 0     (kwta=True)
           = ReLU(z)                                                  (kwta=False)
    logits = W2 h + b2

The dendritic rule (the segment with the largest absolute response, its signed value through a
sigmoid, multiplying the feedforward activation: the paper's active-dendrites neuron) and
k-WTA on the modulated activations are the paper's; the sizes and training constants are ours.
``dendrites=False`` drops the gating (z = a): with k-WTA it is the paper's "sparse
representations only" ablation, with ``kwta=False`` as well a plain ReLU MLP of the same width
(the segment weights U stay in the state, unused). ``kwta=False`` with dendrites is the paper's
"active dendrites only" ablation.

Training (all randomness from the episode key, `systems.noise`): W1 ~ N(0, 1/64),
W2 ~ N(0, 1/H), zero biases, and U ~ N(0, 1/(3 * 0.1 * 64)), the variance of the paper's
segment initialisation U(-b, b), b = 1/sqrt(rho_c * dim_context) with context density
rho_c = 0.1 (numenta/nupic.research, ``DendriticMLP``, "modified" init) (stream 0); at step t
a training minibatch of ``batch_size`` examples of the training split drawn with replacement
(stream 2, (key, t)), permuted by pi_tau with context c_tau; SGD with heavy-ball momentum on
the cross-entropy gradient g_t (manual backprop with batched matmuls, so the unroll stays
differentiable in theta):

    v_{t+1} = beta v_t + g_t,      p_{t+1} = p_t - lr v_{t+1}.

theta (D = 3): ``(log lr, logit(k / H), logit beta)``; k = clamp(round(H sigmoid(theta_1)),
1, H) (no effect with ``kwta=False``). `init_params` is lr = 0.1, k / H = 0.25, beta = 0.5.

The paper's settings (numenta/nupic.research ``projects/dendrites/permutedMNIST/experiments``):
hidden layers 2 x 2048, k-WTA with 5% of the units active, 50% feedforward weight sparsity,
Adam (lr 5e-4 for 2 to 10 tasks), batch 256, 1 epoch per task (3 for 10 tasks), one segment
per task; mean test accuracy over all tasks after the last, averaged over 8 trials: 97.5%,
96.4%, 94.6%, 92.1%, 87.0%, 81.4% for 2, 5, 10, 25, 50, 100 tasks; on 10 tasks, 93.4%, 94.9%,
94.3%, 90.1%, 76.0%, 57.1% with 1%, 5%, 10%, 20%, 40%, 99% of the units active (their
``figures.ipynb``). Their MLP baseline (2 x 2048) was tuned separately (10 tasks: Adam lr 3e-6,
5 epochs per task).

Loss. l_t is the mean cross-entropy over all tasks seen so far, s = 0 .. tau(t), of the network
after step t's update, on ``eval_size`` held-out examples of the validation split (stream 3,
(key, t)) permuted by each pi_s with context c_s; forgetting of earlier tasks is in the
objective. `evaluate` gives loss and accuracy per task on the whole validation split.

Differentiability. ``differentiable = True`` means autograd gives the pathwise gradient of the
piecewise-smooth pieces: it flows through the k winners of each k-WTA (the positive units of
the ReLU) and through the selected segment j_u only. The selections are discrete: where two
units swap rank at the k-th place, a unit crosses zero, or two segments tie in |d|, the
network's output, the next state and the loss jump or kink, and autograd does not see the
jump. The k coordinate theta_1 acts only through the integer k, so its pathwise gradient is
zero everywhere; only loss-based estimators (ES, PES, NRES, CMA-ES) see its effect. Between
jumps autograd equals finite differences; at `init_params` no jump falls within the
finite-difference step over the first 20 steps of keys 0, 1, 2 (the shared finite-difference
test) or in `check_system`'s directions, so both pass.

Measured (float32, CPU). The forgetting test (``n_tasks=2, steps_per_task=60``, `init_params`,
keys 0..5): validation accuracy on task 0 is 0.86..0.91 after task 0 and 0.57..0.77 after task
1 (task 1 then 0.89..0.92); ``dendrites=False``: 0.88..0.93 -> 0.50..0.84; the plain MLP
(``kwta=False`` as well): 0.91..0.94 -> 0.55..0.85. Two tasks at k / H = 0.25 do not tell the
variants apart. The forgetting figure (`experiments.reproduce.forgetting`, ``chaosgrad
reproduce forgetting``: 10 tasks of 100 steps, H = 256, lr 0.1, beta 0.5, k / H = 0.1, 16
episode keys) does. Mean accuracy over the 10 tasks after the last, +- standard error: MLP
0.564 +- 0.008, k-WTA only 0.698 +- 0.005, active dendrites + k-WTA 0.774 +- 0.007 (task 0:
0.285, 0.499, 0.596); paired over the shared keys, dendrites - k-WTA 0.076 +- 0.007 and
dendrites - MLP 0.210 +- 0.007. The paper's ordering reproduces, its size does not: its network
keeps 94.6% over 10 tasks, ours still forgets (task 0 falls from 0.94 to 0.60). Before the
inputs were standardised (raw pixels in [0, 1], so contexts that share a large constant part)
the gated network forgot as much as the ungated one (5 tasks of 100 steps, H = 256,
k / H = 0.05, 8 keys, both with k-WTA: mean accuracy over the tasks 0.46 +- 0.01 and
0.45 +- 0.01).

State: ``DendritesState(params [B, P], velocity [B, P])`` with P = 64 H + H + 64 H S + 10 H + 10.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from . import noise
from .base import System
from .learned_optimizer_digits import load_digits_split
from .registry import register
from .validation import check_int

__all__ = ["ActiveDendrites", "DendritesState", "k_winners", "dendritic_gate"]

_INIT, _PERM, _BATCH, _EVAL = 0, 1, 2, 3
_IN, _CLASSES = 64, 10
_SEGMENT_STD = (3 * 0.1 * _IN) ** -0.5


class DendritesState(NamedTuple):
    """State of `ActiveDendrites`: the network's flat parameters and the momentum buffer."""

    params: Tensor    # [B, P] (W1, b1, U, W2, b2) flattened
    velocity: Tensor  # [B, P] heavy-ball momentum v


def k_winners(z: Tensor, k: Tensor) -> Tensor:
    """k-winners-take-all mask: exactly k True entries along the last axis (the k largest).

    Args:
        z: ``[B, ..., H]`` activations.
        k: ``[B]`` int64, 1 <= k <= H, each trajectory's number of winners.
    Returns:
        ``[B, ..., H]`` bool; ties are broken by position (a stable sort), so the count is
        exactly k whatever the values.
    """
    order = torch.argsort(z, dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(z.shape[-1], device=z.device).expand_as(order))
    return rank < k.reshape(-1, *([1] * (z.dim() - 1)))


def dendritic_gate(d: Tensor) -> tuple[Tensor, Tensor]:
    """The active-dendrite modulation of each unit from its segment responses.

    Args:
        d: ``[..., H, S]`` segment responses d_us = U_us . c.
    Returns:
        ``(gate [..., H], winner [..., H, S])``: gate_u = sigmoid(d_{u j}) with
        j = argmax_s |d_us| (signed value of the max-magnitude segment), and the one-hot
        float mask of j. The unit's output is a_u * gate_u.
    """
    j = d.abs().argmax(-1, keepdim=True)
    winner = torch.zeros_like(d).scatter_(-1, j, 1.0)
    return torch.sigmoid(d.gather(-1, j)[..., 0]), winner


@register("active_dendrites")
class ActiveDendrites(System):
    """Continual learning on permuted 8x8 digits: active dendrites + k-WTA, SGD hyper-parameters."""

    differentiable = True
    regimes = {"regular": {}}

    def __init__(self, n_tasks: int = 5, steps_per_task: int = 50, hidden: int = 64,
                 batch_size: int = 32, eval_size: int = 32, dendrites: bool = True,
                 kwta: bool = True):
        self.n_tasks = check_int("n_tasks", n_tasks)
        self.steps_per_task = check_int("steps_per_task", steps_per_task)
        self.hidden = check_int("hidden", hidden, low=2)
        self.batch_size = check_int("batch_size", batch_size)
        self.eval_size = check_int("eval_size", eval_size)
        for name, value in (("dendrites", dendrites), ("kwta", kwta)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        self.dendrites, self.kwta = dendrites, kwta
        self.segments = n_tasks
        h, s = self.hidden, self.segments
        self.sizes = (h * _IN, h, h * s * _IN, _CLASSES * h, _CLASSES)   # W1, b1, U, W2, b2
        self.inner_dim = sum(self.sizes)
        self.state_dim = 2 * self.inner_dim
        self.param_dim = 3
        self.horizon = n_tasks * steps_per_task
        self._cpu = load_digits_split()
        self._data: dict[tuple, tuple[Tensor, ...]] = {}

    def data(self, dtype: torch.dtype, device) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(x_train, y_train, x_val, y_val, mean training image [64])`` on ``device``."""
        device = torch.device(device)
        if (dtype, device) not in self._data:
            x_tr, y_tr, x_val, y_val = self._cpu
            mu, sd = x_tr.mean(), x_tr.std()
            x_tr, x_val = (((x - mu) / sd).to(device=device, dtype=dtype) for x in (x_tr, x_val))
            y_tr, y_val = y_tr.to(device), y_val.to(device)
            self._data[dtype, device] = (x_tr, y_tr, x_val, y_val, x_tr.mean(0))
        return self._data[dtype, device]

    def init_params(self, dtype=torch.float32, device=None) -> Tensor:
        """``(log 0.1, logit 0.25, logit 0.5)``: lr 0.1, k = H / 4, momentum 0.5."""
        return self.theta_for(0.1, 0.25, 0.5, dtype=dtype, device=device)

    @staticmethod
    def theta_for(lr: float, k_fraction: float, momentum: float, dtype=torch.float32,
                  device=None) -> Tensor:
        """``(log lr, logit k_fraction, logit momentum)`` ``[3]``: the theta whose
        `hyper_parameters` are these (k = round(H k_fraction))."""
        def logit(q: float) -> float:
            return math.log(q / (1.0 - q))
        return torch.tensor([math.log(lr), logit(k_fraction), logit(momentum)], dtype=dtype,
                            device=device)

    def hyper_parameters(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(lr [B], k [B] int64, beta [B])`` from theta ``[B, 3]``."""
        frac = torch.sigmoid(theta[:, 1].detach())
        k = torch.round(frac * self.hidden).long().clamp(1, self.hidden)
        return theta[:, 0].exp(), k, torch.sigmoid(theta[:, 2])

    def permutations(self, keys: Tensor) -> Tensor:
        """Every task's pixel permutation, ``[B, n_tasks, 64]`` int64, from ``keys [B]`` only."""
        u = torch.stack([noise.uniform(noise.fold(keys, s), 0, stream=_PERM, shape=(_IN,),
                                       dtype=torch.float64) for s in range(self.n_tasks)], 1)
        return u.argsort(-1)

    def prototypes(self, perms: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Context vectors c_s = mean_i x_i[pi_s] of the training split, ``[B, G, 64]``.

        Args:
            perms: ``[B, G, 64]`` permutations (from `permutations`).
        """
        return self.data(dtype, perms.device)[4][perms]

    def task(self, t: Tensor) -> Tensor:
        """tau(t) = min(t // steps_per_task, n_tasks - 1), ``[B]``."""
        return (t // self.steps_per_task).clamp(max=self.n_tasks - 1)

    def init_network(self, keys: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Initial parameters ``[B, P]``: W1, U ~ N(0, 1/64), W2 ~ N(0, 1/H), zero biases."""
        z = noise.normal(keys, 0, stream=_INIT, shape=(self.inner_dim,), dtype=dtype)
        scales = (_IN**-0.5, 0.0, _SEGMENT_STD, self.hidden**-0.5, 0.0)
        scale = torch.cat([torch.full((n,), s, dtype=dtype) for n, s in zip(self.sizes, scales)])
        return z * scale.to(z.device)

    def init_state(self, theta: Tensor, keys: Tensor) -> DendritesState:
        p = self.init_network(keys, theta.dtype)
        return DendritesState(p, torch.zeros_like(p))

    def _unflatten(self, p: Tensor):
        w1, b1, u, w2, b2 = torch.split(p, self.sizes, dim=1)
        h = self.hidden
        return (w1.reshape(-1, h, _IN), b1, u.reshape(-1, h, self.segments, _IN),
                w2.reshape(-1, _CLASSES, h), b2)

    def forward(self, p: Tensor, x: Tensor, c: Tensor, k: Tensor) -> dict[str, Tensor]:
        """The network on G groups of M inputs, each group with its own context.

        Args:
            p: ``[B, P]`` flat parameters.
            x: ``[B, G, M, 64]`` (permuted) inputs.
            c: ``[B, G, 64]`` contexts, one per group.
            k: ``[B]`` number of k-WTA winners.
        Returns:
            ``{"a", "z", "mask" [B, G, M, H], "gate" [B, G, H], "winner" [B, G, H, S],
            "logits" [B, G, M, 10]}``.
        """
        w1, b1, u, w2, b2 = self._unflatten(p)
        a = torch.matmul(x, w1.transpose(1, 2)[:, None]) + b1[:, None, None]
        if self.dendrites:
            gate, winner = dendritic_gate(torch.einsum("bhsi,bgi->bghs", u, c))
        else:
            gate = a.new_ones(a.shape[0], a.shape[1], self.hidden)
            winner = a.new_zeros(*gate.shape, self.segments)
        z = a * gate[:, :, None]
        mask = k_winners(z, k) if self.kwta else z > 0
        logits = torch.matmul(z * mask, w2.transpose(1, 2)[:, None]) + b2[:, None, None]
        return {"a": a, "z": z, "mask": mask, "gate": gate, "winner": winner, "logits": logits}

    def loss_and_grad(self, p: Tensor, x: Tensor, y: Tensor, c: Tensor,
                      k: Tensor) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy over all G M examples and its gradient (through the winners).

        Args:
            p: ``[B, P]`` flat parameters.
            x: ``[B, G, M, 64]`` inputs.
            y: ``[B, G, M]`` int64 labels.
            c: ``[B, G, 64]`` contexts.
            k: ``[B]`` number of winners.
        Returns:
            ``(loss [B], grad [B, P])``; the k-WTA mask and the segment choice are held fixed
            (they are piecewise constant).
        """
        _, _, _, w2, _ = self._unflatten(p)
        f = self.forward(p, x, c, k)
        logits, mask, gate, a = f["logits"], f["mask"].to(p.dtype), f["gate"], f["a"]
        ce = torch.logsumexp(logits, -1) - logits.gather(-1, y[..., None])[..., 0]
        onehot = (y[..., None] == torch.arange(_CLASSES, device=y.device)).to(p.dtype)
        dlogits = (torch.softmax(logits, -1) - onehot) / (y.shape[1] * y.shape[2])
        h = f["z"] * mask
        dz = torch.matmul(dlogits, w2[:, None]) * mask
        da = dz * gate[:, :, None]
        ddj = (dz * a).sum(2) * gate * (1 - gate)                          # [B, G, H]
        grad = torch.cat([
            torch.einsum("bgmh,bgmi->bhi", da, x).flatten(1), da.sum((1, 2)),
            torch.einsum("bghs,bgi->bhsi", ddj[..., None] * f["winner"], c).flatten(1),
            torch.einsum("bgmo,bgmh->boh", dlogits, h).flatten(1), dlogits.sum((1, 2))], 1)
        return ce.flatten(1).mean(1), grad

    def task_inputs(self, x: Tensor, perms: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs x under each of the permutations perms.

        Args:
            x: ``[B, M, 64]`` inputs.
            perms: ``[B, G, 64]`` permutations.
        Returns:
            ``(x_perm [B, G, M, 64], contexts [B, G, 64])`` with x_perm[b, g, m, i] =
            x[b, m, perms[b, g, i]] and the tasks' `prototypes`.
        """
        B, G, M = perms.shape[0], perms.shape[1], x.shape[1]
        shape = (B, G, M, _IN)
        xs = torch.gather(x[:, None].expand(shape), 3, perms[:, :, None].expand(shape))
        return xs, self.prototypes(perms, x.dtype)

    def step(self, theta: Tensor, state: DendritesState, t: Tensor,
             keys: Tensor) -> tuple[DendritesState, Tensor]:
        x_tr, y_tr, x_val, y_val, _ = self.data(theta.dtype, keys.device)
        lr, k, beta = self.hyper_parameters(theta)
        perms, tau = self.permutations(keys), self.task(t)
        u = noise.uniform(keys, t, stream=_BATCH, shape=(self.batch_size,), dtype=torch.float64)
        idx = (u * x_tr.shape[0]).long()
        current = perms.gather(1, tau[:, None, None].expand(-1, 1, _IN))      # [B, 1, 64]
        x, c = self.task_inputs(x_tr[idx], current)
        _, g = self.loss_and_grad(state.params, x, y_tr[idx][:, None], c, k)
        v = beta[:, None] * state.velocity + g
        p = state.params - lr[:, None] * v
        u = noise.uniform(keys, t, stream=_EVAL, shape=(self.eval_size,), dtype=torch.float64)
        idx = (u * x_val.shape[0]).long()
        xs, cs = self.task_inputs(x_val[idx], perms)
        logits = self.forward(p, xs, cs, k)["logits"]
        yv = y_val[idx][:, None].expand(-1, self.n_tasks, -1)
        ce = (torch.logsumexp(logits, -1) - logits.gather(-1, yv[..., None])[..., 0]).mean(2)
        seen = (torch.arange(self.n_tasks, device=keys.device) <= tau[:, None]).to(ce.dtype)
        return DendritesState(p, v), (ce * seen).sum(1) / seen.sum(1)

    def evaluate(self, state: DendritesState, theta: Tensor, keys: Tensor) -> dict[str, Tensor]:
        """Loss and accuracy on every task over the whole validation split.

        Args:
            state: a `DendritesState` (``params [B, P]``).
            theta: ``[B, 3]`` (for k).
            keys: ``[B]`` the episode keys (for the permutations).
        Returns:
            ``{"val_loss", "val_accuracy"}``, each ``[B, n_tasks]``: mean cross-entropy and the
            fraction of examples whose largest logit is the label, task by task.
        """
        p = state.params
        _, _, x_val, y_val, _ = self.data(p.dtype, p.device)
        xs, cs = self.task_inputs(x_val.expand(p.shape[0], -1, -1),
                                  self.permutations(keys))
        logits = self.forward(p, xs, cs, self.hyper_parameters(theta)[1])["logits"]
        y = y_val.expand(p.shape[0], self.n_tasks, -1)
        ce = torch.logsumexp(logits, -1) - logits.gather(-1, y[..., None])[..., 0]
        return {"val_loss": ce.mean(2),
                "val_accuracy": (logits.argmax(-1) == y).to(p.dtype).mean(2)}

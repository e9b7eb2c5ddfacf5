"""Chaos diagnostics for any `System`: Lyapunov exponents, step Jacobians, gradient growth.

With s_{t+1} = F_t(s_t) and J_t = dF_t/ds_t (theta fixed), the k leading finite-time Lyapunov
exponents over T steps are the growth rates of k-dimensional volumes under J_{T-1} ... J_0. They
are computed by the QR method (Benettin, Galgani, Giorgilli & Strelcyn 1980, Meccanica 15;
Shimada & Nagashima 1979, Prog. Theor. Phys. 61): push k orthonormal tangent vectors Q_t through
one step with Jacobian-vector products, re-orthonormalise J_t Q_t = Q_{t+1} R_t, and

    lambda_i = (1/T) sum_t log |(R_t)_ii|          i = 1 .. k   (per step; / dt per unit time)

When lambda_1 > 0 the pathwise (BPTT) gradient of a T-step loss is a sum of products of T
Jacobians, so its standard deviation grows like exp(lambda_1 T) (Metz, Freeman, Schoenholz &
Kachman 2021, "Gradients are Not All You Need", arXiv 2111.05803); `gradient_growth_rate`
measures that growth directly.

The tangent space is the concatenation of a trajectory's real floating state leaves (a tensor or
a NamedTuple of tensors, leading dim B); integer or boolean leaves such as step counters are not
differentiable coordinates and are passed through unchanged. Trajectories run from their own
t = 0 with episode keys derived from ``seed``, past the system's ``horizon`` if asked to.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor

from . import noise
from .base import System
from .tree import tree_leaves, tree_map
from .validation import check_int

__all__ = ["LyapunovExponents", "GradientGrowth", "lyapunov_exponents", "jacobian_eigenvalues",
           "gradient_growth_rate"]

# Key salt and noise stream of the diagnostics' own randomness (initial tangent vectors).
_DIAG = 0xD1A6
# Up to this many state coordinates the full step Jacobian is cheaper than k JVPs (see
# `_tangent_step`): per-op overhead, not arithmetic, dominates small batched steps.
_FULL_JACOBIAN_MAX = 32


class LyapunovExponents(NamedTuple):
    """Result of `lyapunov_exponents`; exponents are ordered from the leading one down.

    Attributes:
        per_step: ``[k]`` mean over trajectories of the finite-time exponents, per step.
        stderr: ``[k]`` standard error of ``per_step`` over trajectories (NaN for one).
        per_time: ``[k]`` ``per_step / system.dt``, or None when the system has no ``dt``.
        per_trajectory: ``[trajectories, k]`` each trajectory's finite-time exponents per step.
    """

    per_step: Tensor
    stderr: Tensor
    per_time: Tensor | None
    per_trajectory: Tensor


class GradientGrowth(NamedTuple):
    """Result of `gradient_growth_rate`: ``log_std ~ slope * T + intercept``.

    Attributes:
        horizons: ``[H]`` int64 horizons T.
        log_std: ``[H]`` log sqrt(tr Cov) of the per-sample pathwise gradients at each T.
        slope: least-squares slope of ``log_std`` against T (per step), over finite entries.
        intercept: the fit's intercept.
        nonfinite: ``[H]`` int64 samples dropped at each T because their gradient was NaN/inf.
    """

    horizons: Tensor
    log_std: Tensor
    slope: float
    intercept: float
    nonfinite: Tensor


def _rows(system: System, theta: Tensor, b: int) -> Tensor:
    dim = getattr(system, "param_dim", theta.shape[-1])
    if theta.dim() != 1 or theta.shape[0] != dim:
        raise ValueError(f"theta must have shape [{dim}], got {list(theta.shape)}")
    return theta.detach().repeat(b, 1)


def _keys(seed: int, b: int, device) -> Tensor:
    seeds = torch.full((b,), int(seed), dtype=torch.int64, device=device)
    return noise.fold(seeds, torch.arange(b, device=device), _DIAG)


def _tangent(x: Tensor) -> bool:
    return x.is_floating_point()


def _flatten_state(state: Any) -> Tensor:
    """The real floating leaves of a state as one ``[B, n]`` matrix (other leaves left out)."""
    leaves = [x.reshape(x.shape[0], -1) for x in tree_leaves(state) if _tangent(x)]
    if not leaves:
        raise ValueError("the state has no floating-point leaves: no tangent space")
    return torch.cat(leaves, dim=1)


def _unflatten_state(flat: Tensor, like: Any) -> Any:
    """Inverse of `_flatten_state`: floating leaves of ``like`` from ``flat``, the rest as is."""
    offset = 0

    def leaf(x: Tensor) -> Tensor:
        nonlocal offset
        if not _tangent(x):
            return x
        size = x[0].numel()
        out = flat[:, offset:offset + size].reshape(x.shape).to(x.dtype)
        offset += size
        return out
    return tree_map(leaf, like)


def _tangent_step(system: System, theta: Tensor, state: Any, t: Tensor, keys: Tensor,
                  v: Tensor) -> tuple[Any, Tensor]:
    """One step and its state JVPs: ``(s_{t+1} [B, ...], J_t v [B, n, k])`` for ``v [B, n, k]``.

    Reverse mode only, on m copies of the batch (rows are independent by contract), so one call
    of `step` serves all directions; the step's loss is ignored. Small or square problems
    (n <= max(2k, 32)) take one backward pass on n copies for the full J_t, then J_t v;
    otherwise two passes on k copies give J v = d/du <J^T u, v> directly (u a dummy cotangent).
    torch.autograd.forward_ad would give the same numbers, but in torch 2.13 every op mixing a
    dual and a plain tensor takes a Python path (~2 ms per multiply on CPU), 5-10x slower.
    """
    b, n, k = v.shape
    full = n <= max(2 * k, _FULL_JACOBIAN_MAX)
    m = n if full else k

    def rep(x: Tensor) -> Tensor:
        return x if m == 1 else x.repeat(m, *([1] * (x.dim() - 1)))

    jv = None
    with torch.enable_grad():
        x = rep(_flatten_state(state)).detach().requires_grad_()
        start = _unflatten_state(x, tree_map(lambda z: rep(z.detach()), state))
        nxt, _ = system.step(rep(theta), start, rep(t), rep(keys))
        y = _flatten_state(nxt)
        if y.requires_grad and full:  # row i*B + b of the cotangent is e_i: row i of J_t[b]
            eye = torch.eye(n, dtype=y.dtype, device=y.device).repeat_interleave(b, 0)
            (g,) = torch.autograd.grad(y, x, eye, allow_unused=True)
            if g is not None:
                jv = g.reshape(n, b, n).transpose(0, 1) @ v.to(g.dtype)
        elif y.requires_grad:
            u = torch.zeros_like(y, requires_grad=True)
            (jtu,) = torch.autograd.grad(y, x, u, create_graph=True, allow_unused=True)
            if jtu is not None and jtu.requires_grad:
                tangent = v.permute(2, 0, 1).reshape(k * b, n).to(jtu.dtype)
                (g,) = torch.autograd.grad(jtu, u, tangent, allow_unused=True)
                jv = None if g is None else g.reshape(k, b, n).permute(1, 2, 0)
    if jv is None:  # the next state does not depend on the state
        jv = torch.zeros(b, n, k, dtype=theta.dtype, device=theta.device)
    return tree_map(lambda z: z[:b].detach(), nxt), jv.detach()


def _advance(system: System, theta: Tensor, state: Any, start: int, steps: int,
             keys: Tensor) -> Any:
    with torch.no_grad():
        for j in range(start, start + steps):
            state, _ = system.step(theta, state, torch.full_like(keys, j), keys)
    return state


def lyapunov_exponents(system: System, theta: Tensor, *, steps: int, burn_in: int = 100,
                       k: int = 1, trajectories: int = 8, seed: int = 0) -> LyapunovExponents:
    """The k leading finite-time Lyapunov exponents by the QR (Benettin) method.

    For each trajectory, Q_0 is a random orthonormal ``[n, k]`` frame; every step
    J_t Q_t = Q_{t+1} R_t (JVPs of `step` in the state, theta fixed, then a batched
    QR), and ``lambda_i = (1/steps) sum_t log |(R_t)_ii|`` over the ``steps`` steps after
    ``burn_in`` steps, during which the state settles on its attractor and the frame aligns
    with the leading directions without accumulating.

    Args:
        system: any `System` with a differentiable `step` in the state.
        theta: ``[D]`` parameters, shared by every trajectory.
        steps: accumulated steps T.
        burn_in: steps run first, not accumulated.
        k: number of exponents, ``1 <= k <= n`` (n: floating state coordinates).
        trajectories: B independent trajectories (episode keys from ``seed``).
        seed: integer fixing the keys and initial frames.
    Returns:
        `LyapunovExponents` with ``per_step [k]``, ``stderr [k]``, ``per_time [k] | None``,
        ``per_trajectory [B, k]``.

    Example::

        res = lyapunov_exponents(LogisticMap(r=4.0), torch.tensor([4.0], dtype=torch.float64),
                                 steps=1000, trajectories=64)
        res.per_step  # ~ tensor([0.6931]) = ln 2
    """
    steps, burn_in = check_int("steps", steps, 1), check_int("burn_in", burn_in, 0)
    b = check_int("trajectories", trajectories, 1)
    rows = _rows(system, theta, b)
    keys = _keys(seed, b, rows.device)
    with torch.no_grad():
        state = system.init_state(rows, keys)
    n = _flatten_state(state).shape[1]
    if not 1 <= check_int("k", k, 1) <= n:
        raise ValueError(f"k must be in [1, {n}] (floating state coordinates), got {k}")
    frame = noise.normal(keys, 0, stream=_DIAG, shape=(n, k), dtype=rows.dtype)
    q = torch.linalg.householder_product(*torch.geqrf(frame))
    total = rows.new_zeros(b, k)
    for j in range(burn_in + steps):
        state, jq = _tangent_step(system, rows, state, torch.full_like(keys, j), keys, q)
        # QR as geqrf + householder_product: same factors as torch.linalg.qr, whose batched CPU
        # path costs ~20 ms per call on a 2-thread pool even for 1x1 matrices (torch 2.13).
        h, tau = torch.geqrf(jq)
        q = torch.linalg.householder_product(h, tau)
        if j >= burn_in:
            total = total + torch.diagonal(h, dim1=-2, dim2=-1).abs().log()
    per_trajectory = total / steps
    per_step = per_trajectory.mean(0)
    stderr = (per_trajectory.std(0) / b**0.5 if b > 1
              else torch.full_like(per_step, float("nan")))
    dt = getattr(system, "dt", None)
    return LyapunovExponents(per_step, stderr, None if dt is None else per_step / dt,
                             per_trajectory)


def jacobian_eigenvalues(system: System, theta: Tensor, *, t: int, seed: int = 0,
                         trajectories: int = 1) -> Tensor:
    """Eigenvalues of the step Jacobian J_t = d s_{t+1} / d s_t after t steps from `init_state`.

    J_t ``[n, n]`` (n floating state coordinates, flattened leaf by leaf) is built column by
    column from n JVPs of `step` at (s_t, t), theta fixed. |eigenvalue| > 1 marks
    locally expanding directions; for a linear map s <- A s + c it is the spectrum of A.

    Args:
        system: any `System`.
        theta: ``[D]`` parameters.
        t: the step index at which the Jacobian is taken (>= 0).
        seed: integer fixing the episode keys.
        trajectories: B trajectories.
    Returns:
        Complex ``[B, n]``, each row sorted by decreasing modulus.

    Example::

        lam = jacobian_eigenvalues(LinearQuadratic(spectral_radius=0.9), torch.zeros(3), t=5)
        lam.abs()  # all 0.9
    """
    t, b = check_int("t", t, 0), check_int("trajectories", trajectories, 1)
    rows = _rows(system, theta, b)
    keys = _keys(seed, b, rows.device)
    with torch.no_grad():
        state = _advance(system, rows, system.init_state(rows, keys), 0, t, keys)
    n = _flatten_state(state).shape[1]
    eye = torch.eye(n, dtype=rows.dtype, device=rows.device).expand(b, n, n)
    _, jac = _tangent_step(system, rows, state, torch.full_like(keys, t), keys, eye)
    eig = torch.linalg.eigvals(jac)
    order = eig.abs().argsort(dim=-1, descending=True)
    return eig.gather(-1, order)


def gradient_growth_rate(system: System, theta: Tensor, *, horizons: Sequence[int],
                         samples: int = 64, seed: int = 0) -> GradientGrowth:
    """Growth rate with T of the spread of per-sample pathwise (BPTT, sigma = 0) gradients.

    For each key i and horizon T, g_i(T) = grad_theta (1/T) sum_{t<T} l_t(theta; key_i), all
    from one unroll to max(T) (one backward pass per T: row i of theta only drives row i's
    losses). Then

        log_std(T) = log sqrt( sum_d Var_i[g_i(T)_d] ),   log_std(T) ~ slope * T + intercept,

    the norm over parameters of the per-coordinate standard deviations (rows with a non-finite
    gradient are dropped and counted). In a chaotic system slope tracks the leading Lyapunov
    exponent per step; because the loss is a mean over T steps, log_std also carries a -log T
    term, which biases the slope low by about the mean of 1/T over the horizons fitted.

    Args:
        system: a differentiable `System`.
        theta: ``[D]`` parameters.
        horizons: at least two distinct horizons T >= 1 (keep exp(lambda max T) finite).
        samples: N episode keys (>= 2).
        seed: integer fixing the keys (the same keys at every T).
    Returns:
        `GradientGrowth` with ``horizons [H]``, ``log_std [H]``, ``slope``, ``intercept``,
        ``nonfinite [H]``.

    Example::

        g = gradient_growth_rate(LogisticMap(r=4.0), torch.tensor([4.0], dtype=torch.float64),
                                 horizons=[10, 20, 30, 40], samples=256)
        g.slope  # ~ ln 2, minus the 1/T bias
    """
    if not getattr(system, "differentiable", True):
        raise ValueError(f"{system!r} is not differentiable: no pathwise gradient")
    hs = [check_int("horizon", h, 1) for h in horizons]
    if len(set(hs)) < 2:
        raise ValueError(f"need at least two distinct horizons, got {list(horizons)}")
    n = check_int("samples", samples, 2)
    rows = _rows(system, theta, n).requires_grad_()
    grads = _pathwise_grads(system, rows, _keys(seed, n, rows.device), hs)
    log_std, dropped = [], []
    for h in hs:
        g = grads[h][torch.isfinite(grads[h]).all(dim=1)]
        dropped.append(n - g.shape[0])
        std = g.var(0).sum().sqrt() if g.shape[0] > 1 else rows.new_tensor(float("nan"))
        log_std.append(std.log())
    log_std_t = torch.stack(log_std).detach()
    slope, intercept = _line_fit(torch.tensor(hs, dtype=rows.dtype, device=rows.device), log_std_t)
    return GradientGrowth(torch.tensor(hs, dtype=torch.int64, device=rows.device), log_std_t,
                          slope, intercept,
                          torch.tensor(dropped, dtype=torch.int64, device=rows.device))


def _pathwise_grads(system: System, rows: Tensor, keys: Tensor, hs: list[int]) -> dict[int, Tensor]:
    """Per-row gradients ``[B, D]`` of the mean loss over the first T steps, for each T in hs,
    from one unroll to max(hs) (row i of theta drives only row i's losses)."""
    means = {}
    with torch.enable_grad():
        state = system.init_state(rows, keys)
        total = rows.new_zeros(rows.shape[0])
        for j in range(max(hs)):
            state, loss = system.step(rows, state, torch.full_like(keys, j), keys)
            total = total + loss
            if j + 1 in hs:
                means[j + 1] = total / (j + 1)
        grads = {}
        for h, mean_loss in means.items():
            (g,) = torch.autograd.grad(mean_loss.sum(), rows, retain_graph=True,
                                       allow_unused=True)
            grads[h] = torch.zeros_like(rows) if g is None else g.detach()
    return grads


def _line_fit(x: Tensor, y: Tensor) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y on x over the finite y (NaN, NaN if < 2 points)."""
    ok = torch.isfinite(y)
    if int(ok.sum()) < 2 or x[ok].unique().numel() < 2:
        return float("nan"), float("nan")
    xc = x[ok] - x[ok].mean()
    slope = (xc * (y[ok] - y[ok].mean())).sum() / (xc**2).sum()
    return float(slope), float(y[ok].mean() - slope * x[ok].mean())

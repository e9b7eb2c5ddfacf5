"""Fitness shaping for the ES family: a window's member losses replaced by a shaped fitness.

An ES-family estimate (`AntitheticES`, `TruncatedES`, `PES`, `NRES`) is built from the antithetic
differences L+_i - L-_i of its N pairs. With ``shaping`` the 2N member losses of the window are
first replaced by shaped values u, and the estimator's own formula is applied to u:

    None     u = L, the default: the estimate is unbiased for grad L_sigma (PES, NRES,
             AntitheticES) as the contract tests check.
    "std"    u_r = (L_r - mean) / s, s = the standard deviation (ddof = 0) of the 2M member
             losses of the window (over both members of every kept pair, all pairs of the
             estimate together): every antithetic difference is divided by s. The returns'
             standard deviation of ARS (Mania, Guy, Recht 2018, sigma_R "of the 2b rewards"),
             the normalisation of the PES paper's MuJoCo runs (Vicol et al. 2021). Centering
             changes no difference; it keeps u small, so the differences of u lose no digits.
             s = 0 (all losses equal, every difference already zero) gives u = 0.
    "ranks"  u_r = rank(L_r) / (2M - 1) - 1/2 in [-0.5, 0.5], ranks 0 .. 2M-1 of the 2M member
             losses in increasing order, tied losses sharing their average rank (so a pair
             whose members tie contributes zero): the centered ranks of OpenAI-ES (Salimans et
             al. 2017), evosax's ``centered_rank`` and EvoTorch's ``"centered"`` ranking. A loss
             stays a loss: the lowest gets -0.5.

The population is the 2M members of the M pairs whose two losses are finite. The members of the
other pairs get NaN, so the non-finite rule (`finite_estimate`) drops those pairs and counts
them in ``nonfinite``, exactly as without shaping, and they do not move the others' ranks or s.

**A shaped estimate is not an unbiased estimate of grad L_sigma**, nor of the gradient of any
fixed smoothed loss: "std" divides by a random s that is correlated with the differences, and
"ranks" estimates the gradient of a rank-transformed objective that depends on the population
at theta. Both are scale-free and robust to outlying losses, which is why RL practice uses them
for optimisation; they are not for measuring bias or variance against grad L_sigma. Shaping
also couples the pairs of one estimate, so a block of pairs is not a block of the population's
estimate (``separable`` is False and `ShardedEstimator` refuses a shaped estimator).

Online windows that an episode restart splits (PES, NRES: the parts before and after the
restart belong to different episodes and carry different perturbations) are shaped by
`shape_split`: "std" divides each part's difference by the s of the members' whole-window
losses; "ranks" ranks each part as a member of its own (by its mean per-step loss, among all
the window's parts) and weights its centered rank by the part's share of the window's K steps,
as the raw losses, sums over the part divided by K, are weighted. Windows without a restart get
exactly `shape_losses` of the whole-window losses.

Example::

    est = estimators.make("pes", shaping="ranks", sigma=0.3, truncation=100, pairs=10)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SHAPINGS", "check_shaping", "centered_ranks", "standardized", "shape_losses",
           "shape_split"]

SHAPINGS = ("std", "ranks")


def check_shaping(shaping) -> str | None:
    """``shaping`` if it is None or one of `SHAPINGS`, else a ValueError listing the choices."""
    if shaping is None or (isinstance(shaping, str) and shaping in SHAPINGS):
        return shaping
    choices = ", ".join(["None", *(repr(s) for s in SHAPINGS)])
    raise ValueError(f"shaping must be one of {choices}, got {shaping!r}")


def centered_ranks(x: Tensor) -> Tensor:
    """``rank(x_r) / (n - 1) - 1/2`` ``[n]`` (n >= 2), ties sharing their average rank.

    rank(x_r) = (#{x < x_r} + #{x <= x_r} - 1) / 2, which is the 0-based rank when x_r is
    unique and the mean of the tied block's ranks otherwise. Computed as the integer
    #{x < x_r} + #{x <= x_r} - n over 2 (n - 1), one rounding, so the result is exactly
    antisymmetric under x -> -x. E.g. ``[3, 1, 2, 2]`` -> ``[0.5, -0.5, 0, 0]``.
    """
    s = x.sort().values
    below = torch.searchsorted(s, x, right=False)
    upto = torch.searchsorted(s, x, right=True)
    n = x.shape[0]
    return (below + upto - n).to(x.dtype) / (2 * (n - 1))


def _spread(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x - mean(x)`` and the population standard deviation (ddof = 0) of ``x`` ``[n]``."""
    centred = x - x.mean()
    return centred, centred.pow(2).mean().sqrt()


def standardized(x: Tensor) -> Tensor:
    """``(x - mean(x)) / std(x)`` ``[n]`` with the population std (ddof = 0); 0 where std = 0.

    E.g. ``[0, 2, 4, 6]`` (mean 3, std sqrt(5)) -> ``[-3, -1, 1, 3] / sqrt(5)``.
    """
    centred, s = _spread(x)
    return torch.where(s > 0, centred / s, torch.zeros_like(centred))


_SHAPERS = {"std": standardized, "ranks": centered_ranks}


def shape_losses(loss_pos: Tensor, loss_neg: Tensor,
                 shaping: str | None) -> tuple[Tensor, Tensor]:
    """Shaped member losses ``(u+, u-)`` of N antithetic pairs (see the module docstring).

    Args:
        loss_pos: ``[N]`` losses of the + members (theta + sigma eps_i).
        loss_neg: ``[N]`` losses of the - members.
        shaping: None (the inputs are returned as they are), ``"std"`` or ``"ranks"``.
    Returns:
        ``([N], [N])`` shaped over the 2M members of the pairs whose two losses are finite,
        NaN for the members of the other pairs.
    """
    if shaping is None:
        return loss_pos, loss_neg
    keep = torch.isfinite(loss_pos) & torch.isfinite(loss_neg)
    m = int(keep.sum())
    u_pos = torch.full_like(loss_pos, math.nan)
    u_neg = torch.full_like(loss_neg, math.nan)
    if m:
        u = _SHAPERS[shaping](torch.cat([loss_pos[keep], loss_neg[keep]]))
        u_pos[keep], u_neg[keep] = u[:m], u[m:]
    return u_pos, u_neg




def shape_split(pre_pos: Tensor, pre_neg: Tensor, post_pos: Tensor, post_neg: Tensor,
                pre_steps: Tensor, steps: int,
                shaping: str | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shaped parts ``(pre'+, pre'-, post'+, post'-)`` ``[N]`` of an online window.

    A window of K = ``steps`` steps holds, for pair i, ``pre_steps[i]`` steps of its current
    episode and, if that is less than K, K - ``pre_steps[i]`` steps of the next one; the raw
    parts are the sums of the per-step losses over each part divided by K (L_post = 0 without a
    restart). With L = L_pre + L_post the members' whole-window losses:

        "std"    post'_r = L_post,r / s,  pre'_r = u_r - post'_r,  u = `shape_losses`(L), s the
                 standard deviation of the kept members' L: every part's antithetic
                 difference divided by s, the parts adding up to u.
        "ranks"  each non-empty part of a kept pair is a pseudo-pair of its own, ranked by its
                 mean per-step loss (L_part K / steps of the part) with `shape_losses` among
                 all the window's parts; the shaped part is its centered rank times the part's
                 share of the window (steps of the part / K).

    A window without a restart (every ``pre_steps`` = K) gets ``pre' = shape_losses(L)`` exactly
    and ``post' = 0``. Members of pairs with a non-finite part get NaN.

    Args:
        pre_pos: ``[N]`` raw loss of each + member before its restart (the whole window
            when there is none).
        pre_neg: ``[N]`` the same for the - members.
        post_pos: ``[N]`` raw loss of each + member after its restart (0 when none).
        post_neg: ``[N]`` the same for the - members.
        pre_steps: ``[N]`` int, steps of the window before pair i's restart (K: none).
        steps: K.
        shaping: None (the parts are returned as they are), ``"std"`` or ``"ranks"``.
    """
    if shaping is None:
        return pre_pos, pre_neg, post_pos, post_neg
    total_pos, total_neg = pre_pos + post_pos, pre_neg + post_neg
    keep = torch.isfinite(total_pos) & torch.isfinite(total_neg)
    if shaping == "std":
        u_pos, u_neg = shape_losses(total_pos, total_neg, "std")
        _, s = _spread(torch.cat([total_pos[keep], total_neg[keep]]))
        zero = torch.zeros_like(post_pos)
        post_pos = torch.where(s > 0, post_pos / s, zero)
        post_neg = torch.where(s > 0, post_neg / s, zero)
        return u_pos - post_pos, u_neg - post_neg, post_pos, post_neg
    share_pre = pre_steps.to(pre_pos.dtype) / steps
    share_post = (steps - pre_steps).to(pre_pos.dtype) / steps
    parts = [(pre_pos, pre_neg, share_pre, pre_steps > 0),
             (post_pos, post_neg, share_post, pre_steps < steps)]

    def per_step(x: Tensor, share: Tensor, has: Tensor) -> Tensor:
        return torch.where(keep, x / share, torch.full_like(x, math.nan))[has]

    u_pos, u_neg = shape_losses(torch.cat([per_step(p, sh, has) for p, _, sh, has in parts]),
                                torch.cat([per_step(n, sh, has) for _, n, sh, has in parts]),
                                shaping)
    out, start = [], 0
    for _, _, share, has in parts:
        stop = start + int(has.sum())
        for u in (u_pos, u_neg):
            part = torch.zeros_like(share)
            part[has] = u[start:stop] * share[has]
            out.append(part)
        start = stop
    return out[0], out[1], out[2], out[3]

"""Exact tests: fixed noise, float64, against formulas derived by hand (STYLE 6)."""
import pytest
import torch

import estimators
import systems
from estimators.base import episode_keys, perturbations

F64 = torch.float64


def deterministic_lq(**kw):
    return systems.LinearQuadratic(noise_std=0.0, init_std=0.0, **kw)


def test_bptt_equals_closed_form_gradient():
    lq = deterministic_lq(horizon=25)
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    est = estimators.BPTT(samples=3)
    e, _ = est.estimate(lq, theta, est.init(lq, theta, seed=0))
    torch.testing.assert_close(e.grad, lq.exact_grad(theta), rtol=1e-8, atol=0)
    torch.testing.assert_close(e.loss, lq.exact_loss(theta), rtol=1e-8, atol=0)


def test_truncated_bptt_windows_equal_the_truncated_formula():
    """Window w from the detached state s_{wK}: g_w = (1/K) sum_{j=1..K} M_j^T (mu_{wK+j} - g),
    with M_j = sum_{i<j} A^i B the sensitivity accumulated inside the window only."""
    lq, K = deterministic_lq(horizon=12), 4
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    mus, mu = [], lq.mean0.clone()
    for _ in range(lq.horizon):
        mu = lq.A @ mu + lq.B @ theta
        mus.append(mu)
    Ms, M = [], torch.zeros_like(lq.B)
    for _ in range(K):
        M = lq.A @ M + lq.B
        Ms.append(M)
    est = estimators.TruncatedBPTT(truncation=K, samples=2)
    state = est.init(lq, theta, seed=0)
    for w in range(lq.horizon // K):
        e, state = est.estimate(lq, theta, state)
        expected = sum(Ms[j].T @ (mus[w * K + j] - lq.goal) for j in range(K)) / K
        torch.testing.assert_close(e.grad, expected, rtol=1e-10, atol=1e-12)


def reference_online_es(system, theta, sigma, K, T, windows, seed, kind):
    """PES / NRES / TruncatedES written out for one pair at a time, step by step.

    For pair i in window c: the + and - members run theta +/- sigma eps for K steps; an
    episode that ends inside the window restarts with a new key (and, for NRES, a new eps).
    PES:  sample = (xi + eps) dL_pre / (2 sigma K) + eps dL_post / (2 sigma K), xi <- xi + eps
          (or eps after a restart);  NRES: eps_episode dL_pre + eps_next_episode dL_post;
    TruncatedES: eps (dL_pre + dL_post), both members restarted from the + state each window.
    """
    seed = torch.tensor(seed)
    out = []
    for i in range(2):
        pi = torch.tensor([i])
        ep = 0
        key = episode_keys(seed, pi, torch.tensor([ep]))
        eps0 = perturbations(seed, pi, 0, system.param_dim, F64)[0]
        pos = system.init_state((theta + sigma * eps0)[None], key)
        neg = system.init_state((theta - sigma * eps0)[None], key)
        if kind == "truncated_es":
            pos = neg = system.init_state(theta[None], key)
        t, xi, rows = 0, torch.zeros_like(theta), []
        for c in range(windows):
            counter = c + 1 if kind == "pes" else c
            eps = perturbations(seed, pi, ep if kind == "nres" else counter, system.param_dim, F64)[0]
            if kind == "truncated_es":
                neg = pos
            w_pre, w_post = (xi + eps, eps) if kind == "pes" else (eps, eps)
            dpre = dpost = 0.0
            restarted = False
            for _ in range(K):
                if t == T:
                    ep, t, restarted = ep + 1, 0, True
                    key = episode_keys(seed, pi, torch.tensor([ep]))
                    if kind == "nres":
                        eps = w_post = perturbations(seed, pi, ep, system.param_dim, F64)[0]
                    pos = system.init_state((theta + sigma * eps)[None], key)
                    neg = system.init_state((theta - sigma * eps)[None], key)
                tt = torch.tensor([t])
                pos, lp = system.step((theta + sigma * eps)[None], pos, tt, key)
                neg, ln = system.step((theta - sigma * eps)[None], neg, tt, key)
                d = float(lp - ln) / (2 * sigma * K)
                dpost, dpre = (dpost + d, dpre) if restarted else (dpost, dpre + d)
                t += 1
            if kind == "truncated_es":
                rows.append(eps * (dpre + dpost))
            else:
                rows.append(w_pre * dpre + w_post * dpost)
            xi = eps if restarted else xi + eps
        out.append(torch.stack(rows))
    return torch.stack(out, 1)  # [windows, pairs, D]


@pytest.mark.parametrize("kind", ["pes", "nres", "truncated_es"])
def test_online_es_equals_step_by_step_reference(kind):
    lq = systems.LinearQuadratic(horizon=7)  # with noise; K = 3 so windows cross episode ends
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    est = estimators.make(kind, truncation=3, pairs=2, sigma=0.1)
    ref = reference_online_es(lq, theta, 0.1, 3, 7, windows=6, seed=9, kind=kind)
    state = est.init(lq, theta, seed=9)
    for w in range(6):
        e, state = est.estimate(lq, theta, state)
        torch.testing.assert_close(e.samples, ref[w], rtol=1e-10, atol=1e-12)


def test_antithetic_es_is_exact_on_a_linear_loss():
    """For a loss quadratic in theta the antithetic difference cancels the curvature term:
    (L+ - L-)/(2 sigma) = eps . grad L exactly, so each sample is eps eps^T grad L."""
    lq = deterministic_lq(horizon=5)
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    est = estimators.AntitheticES(pairs=4, sigma=0.2)
    e, _ = est.estimate(lq, theta, est.init(lq, theta, seed=1))
    eps = perturbations(torch.tensor(1), torch.arange(4), 0, 3, F64)
    expected = eps * (eps @ lq.exact_grad(theta))[:, None]
    torch.testing.assert_close(e.samples, expected, rtol=1e-10, atol=1e-12)

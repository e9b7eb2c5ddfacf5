"""The batched baselines of ``chaosgrad evaluate-lopt`` equal torch.optim's, row by row (float64)."""
import torch

from experiments.train.lopt_eval import adam_step, sgd_momentum_step


def _reference(make, p0, grads, lr):
    rows = []
    for i in range(p0.shape[0]):
        p = torch.nn.Parameter(p0[i].clone())
        opt = make([p], float(lr[i]))
        for g in grads:
            p.grad = g[i].clone()
            opt.step()
        rows.append(p.detach())
    return torch.stack(rows)


def test_batched_adam_and_sgd_momentum_match_torch_optim():
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    grads = [torch.randn(3, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
    lr = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    p, m, v = p0, torch.zeros_like(p0), torch.zeros_like(p0)
    for t, g in enumerate(grads):
        p, m, v = adam_step(p, m, v, g, t + 1, lr[:, None])
    want = _reference(lambda ps, r: torch.optim.Adam(ps, lr=r), p0, grads, lr)
    torch.testing.assert_close(p, want, rtol=1e-12, atol=1e-14)
    p, buf = p0, torch.zeros_like(p0)
    for g in grads:
        p, buf = sgd_momentum_step(p, buf, g, lr[:, None])
    want = _reference(lambda ps, r: torch.optim.SGD(ps, lr=r, momentum=0.9), p0, grads, lr)
    torch.testing.assert_close(p, want, rtol=1e-12, atol=1e-14)

"""estimators.unrolled_loss: the estimator's gradient delivered through autograd (chain rule)."""
import pytest
import torch

import estimators
import systems
from estimators import unrolled_loss
from systems import tree_leaves

F64 = torch.float64
ESTIMATORS = {
    "pes": dict(sigma=0.05, truncation=5, pairs=4),
    "nres": dict(sigma=0.05, truncation=5, pairs=4, stagger=True),
    "antithetic_es": dict(sigma=0.05, pairs=4),
    "truncated_bptt": dict(truncation=5, samples=3),
    "bptt": dict(samples=3),
}


def same_state(a, b):
    return all(torch.equal(x, y) for x, y in zip(tree_leaves(a), tree_leaves(b)))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_linear_map_gets_A_transpose_times_the_estimate(name):
    """theta = A phi: phi.grad = A^T g with g the estimator's own estimate from an identical
    state, over three calls (online estimators carry their particles from call to call)."""
    system = systems.make("linear_quadratic")
    est = estimators.make(name, **ESTIMATORS[name])
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(system.param_dim, 5, generator=gen, dtype=F64)
    phi = torch.randn(5, generator=gen, dtype=F64, requires_grad=True)
    state = est.init(system, (A @ phi).detach(), seed=3)
    twin = est.init(system, (A @ phi).detach(), seed=3)
    for _ in range(3):
        phi.grad = None
        theta = A @ phi
        loss, state = unrolled_loss(system, theta, est, state)
        assert loss.shape == () and loss.dtype == F64 and loss.grad_fn is not None
        (2.0 * loss).backward()
        e, twin = est.estimate(system, theta.detach(), twin)
        assert torch.equal(loss.detach(), e.loss) and same_state(state, twin)
        torch.testing.assert_close(phi.grad, 2.0 * (A.T @ e.grad), rtol=1e-14, atol=0)
        with torch.no_grad():
            phi -= 0.1 * phi.grad


def test_same_steps_as_the_manual_loop_under_torch_optim():
    """Adam on unrolled_loss takes bit-identically the steps of Adam fed ``theta.grad = e.grad``."""
    system = systems.make("linear_quadratic")
    est = estimators.make("pes", sigma=0.05, truncation=5, pairs=8)
    thetas = []
    for through_autograd in (True, False):
        theta = torch.nn.Parameter(system.init_params(dtype=F64))
        opt = torch.optim.Adam([theta], lr=0.05)
        state = est.init(system, theta, seed=1)
        for _ in range(20):
            opt.zero_grad()
            if through_autograd:
                loss, state = unrolled_loss(system, theta, est, state)
                loss.backward()
            else:
                e, state = est.estimate(system, theta, state)
                theta.grad = e.grad
            opt.step()
        thetas.append(theta.detach().clone())
    assert torch.equal(thetas[0], thetas[1])


def test_torch_optim_steps_reduce_the_exact_loss():
    """30 SGD steps on the PES window loss of linear_quadratic, from 8 seeds: the drop of the
    exact loss L(theta_0) - L(theta_30) is positive by more than 4 standard errors."""
    system = systems.make("linear_quadratic")
    est = estimators.make("pes", sigma=0.05, truncation=5, pairs=8)
    start = system.init_params(dtype=F64)
    drops = []
    for seed in range(8):
        theta = torch.nn.Parameter(start.clone())
        opt = torch.optim.SGD([theta], lr=0.01)  # below 2 / (largest Hessian eigenvalue, 79.5)
        state = est.init(system, theta, seed=seed)
        for _ in range(30):
            loss, state = unrolled_loss(system, theta, est, state)
            opt.zero_grad()
            loss.backward()
            opt.step()
        drops.append(system.exact_loss(start) - system.exact_loss(theta))
    drops = torch.stack(drops)
    assert drops.mean() > 4 * drops.std() / len(drops) ** 0.5, drops


class HyperNet(torch.nn.Module):
    """theta = W tanh(E[task]) + b: a shared embedding table and a linear head."""

    def __init__(self, dim):
        super().__init__()
        self.embed = torch.nn.Embedding(3, 4, dtype=F64)
        self.head = torch.nn.Linear(4, dim, dtype=F64)

    def forward(self, task):
        return self.head(torch.tanh(self.embed(torch.tensor(task))))


def test_gradient_reaches_the_parameters_of_a_module_by_the_chain_rule():
    torch.manual_seed(0)  # the module's own default initialisation only
    system = systems.make("linear_quadratic")
    net = HyperNet(system.param_dim)
    est = estimators.make("antithetic_es", sigma=0.05, pairs=4)
    state = est.init(system, net(1).detach(), seed=0)
    loss, _ = unrolled_loss(system, net(1), est, state)
    loss.backward()
    e, _ = est.estimate(system, net(1).detach(), state)
    params = list(net.parameters())
    expected = torch.autograd.grad(net(1) @ e.grad, params)   # J^T g
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-14, atol=0)
    assert net.embed.weight.grad[[0, 2]].abs().max() == 0   # other tasks' rows untouched


def test_a_module_holding_theta_steps_by_the_estimate():
    """An nn.Module whose parameter is theta, under SGD: each step moves it by -lr * e.grad."""
    system = systems.make("linear_quadratic")
    net = torch.nn.Module()
    net.theta = torch.nn.Parameter(system.init_params(dtype=F64))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    est = estimators.make("nres", sigma=0.05, truncation=5, pairs=4)
    state = twin = est.init(system, net.theta, seed=0)
    for _ in range(3):
        before = net.theta.detach().clone()
        loss, state = unrolled_loss(system, net.theta, est, state)
        opt.zero_grad()
        loss.backward()
        opt.step()
        e, twin = est.estimate(system, before, twin)
        assert torch.equal(net.theta.detach(), before.add(e.grad, alpha=-0.01))  # as SGD adds


def test_bad_input_is_rejected_with_the_argument_named():
    system = systems.make("linear_quadratic")
    est = estimators.make("antithetic_es", pairs=2)
    theta = system.init_params()
    state = est.init(system, theta, seed=0)
    for bad in (theta[:-1], theta.expand(2, -1), theta[0]):
        with pytest.raises(ValueError, match=r"theta must be a 1-D tensor of shape \[3\]"):
            unrolled_loss(system, bad, est, state)
    with pytest.raises(TypeError, match="theta must be a torch.Tensor"):
        unrolled_loss(system, theta.tolist(), est, state)
    with pytest.raises(TypeError, match="estimator must be"):
        unrolled_loss(system, theta, "pes", state)
    with pytest.raises(TypeError, match="system"):
        unrolled_loss("linear_quadratic", theta, est, state)

"""active_dendrites: k-WTA, the dendritic gate on a hand-made case, fixed permutations and
prototypes, the analytic gradient, the seen-tasks loss, determinism, forgetting, bad input."""
import math

import pytest
import torch

from systems import check_system, noise
from systems.active_dendrites import (ActiveDendrites, DendritesState, dendritic_gate,
                                      k_winners)
from systems.learned_optimizer_digits import load_digits_split
from systems.tree import tree_index, tree_leaves
from tests.helpers import rollout

pytest.importorskip("sklearn.datasets")
F64 = torch.float64


@pytest.fixture(scope="module")
def system():
    return ActiveDendrites(n_tasks=3, steps_per_task=4)


def test_k_winners_keeps_exactly_k_largest():
    z = torch.randn(3, 2, 5, 16, dtype=F64, generator=torch.Generator().manual_seed(0))
    k = torch.tensor([1, 7, 16])
    mask = k_winners(z, k)
    assert torch.equal(mask.sum(-1), k[:, None, None].expand(3, 2, 5))
    for b in range(2):  # every winner beats every loser (k = 16 has no loser)
        lowest_winner = z[b].masked_fill(~mask[b], math.inf).amin(-1)
        highest_loser = z[b].masked_fill(mask[b], -math.inf).amax(-1)
        assert (lowest_winner > highest_loser).all()
    ties = k_winners(torch.zeros(2, 4, 8), torch.tensor([3, 5]))   # ties: still exactly k
    assert torch.equal(ties.sum(-1), torch.tensor([[3] * 4, [5] * 4]))


def test_dendritic_gate_on_a_hand_made_network():
    """H = 2 units, S = 2 segments; the unit output a * sigmoid(d_j), j = argmax |d|, by hand."""
    s = ActiveDendrites(n_tasks=2, hidden=2)
    w1 = torch.zeros(2, 64, dtype=F64)
    w1[0, 0], w1[1, 1] = 2.0, -1.0
    b1 = torch.tensor([0.5, 0.25], dtype=F64)
    u = torch.zeros(2, 2, 64, dtype=F64)
    u[0, 0, 0], u[0, 1, 1] = 1.0, -3.0     # unit 0: d = (c0, -3 c1)
    u[1, 0, 0], u[1, 1, 1] = -2.0, 0.5     # unit 1: d = (-2 c0, 0.5 c1)
    w2 = torch.zeros(10, 2, dtype=F64)
    p = torch.cat([w1.flatten(), b1, u.flatten(), w2.flatten(), torch.zeros(10, dtype=F64)])
    x = torch.zeros(1, 1, 1, 64, dtype=F64)
    x[..., 0], x[..., 1] = 0.3, 0.8
    c = torch.zeros(1, 1, 64, dtype=F64)
    c[..., 0], c[..., 1] = 1.0, 0.5
    f = s.forward(p[None], x, c, torch.tensor([2]))
    a = [2 * 0.3 + 0.5, -0.8 + 0.25]                       # 1.1, -0.55
    d = [(1.0, -1.5), (-2.0, 0.25)]                       # winners: -1.5 and -2.0
    sig = [1 / (1 + math.exp(1.5)), 1 / (1 + math.exp(2.0))]
    expected = torch.tensor([a[0] * sig[0], a[1] * sig[1]], dtype=F64)
    torch.testing.assert_close(f["a"][0, 0, 0], torch.tensor(a, dtype=F64), rtol=1e-15, atol=0)
    torch.testing.assert_close(f["z"][0, 0, 0], expected, rtol=1e-15, atol=0)
    assert f["winner"][0, 0].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    gate, winner = dendritic_gate(torch.tensor(d, dtype=F64))
    torch.testing.assert_close(gate, torch.tensor(sig, dtype=F64), rtol=1e-15, atol=0)
    assert torch.equal(winner, f["winner"][0, 0])
    f1 = s.forward(p[None], x, c, torch.tensor([1]))       # k = 1 keeps the larger z only
    assert f1["mask"][0, 0, 0].tolist() == [True, False]
    plain = ActiveDendrites(n_tasks=2, hidden=2, dendrites=False).forward(p[None], x, c,
                                                                         torch.tensor([2]))
    torch.testing.assert_close(plain["z"], plain["a"], rtol=0, atol=0)


def test_relu_variants_on_the_hand_made_network():
    """kwta=False: h = ReLU(z), whatever k; with dendrites=False as well, the plain MLP
    logits = W2 ReLU(W1 x + b1) + b2, checked by hand."""
    w1 = torch.zeros(3, 64, dtype=F64)
    w1[0, 0], w1[1, 1], w1[2, 0] = 2.0, -1.0, -0.5
    b1 = torch.tensor([0.5, 0.25, 0.1], dtype=F64)
    u = torch.zeros(3, 2, 64, dtype=F64)
    u[:, 0, 0] = torch.tensor([1.0, -2.0, 0.5])          # segment 0 reads c0 only
    w2 = torch.arange(30, dtype=F64).reshape(10, 3) / 10
    b2 = torch.linspace(-1, 1, 10, dtype=F64)
    p = torch.cat([w1.flatten(), b1, u.flatten(), w2.flatten(), b2])[None]
    x = torch.zeros(1, 1, 1, 64, dtype=F64)
    x[..., 0], x[..., 1] = 0.3, 0.8
    c = torch.zeros(1, 1, 64, dtype=F64)
    c[..., 0] = 1.0
    a = torch.tensor([1.1, -0.55, -0.05], dtype=F64)      # W1 x + b1
    mlp = ActiveDendrites(n_tasks=2, hidden=3, dendrites=False, kwta=False)
    for k in (1, 3):                                       # k plays no part
        f = mlp.forward(p, x, c, torch.tensor([k]))
        assert f["mask"][0, 0, 0].tolist() == [True, False, False]
        torch.testing.assert_close(f["logits"][0, 0, 0], w2 @ torch.relu(a) + b2, rtol=1e-15,
                                   atol=1e-15)
    gated = ActiveDendrites(n_tasks=2, hidden=3, kwta=False).forward(p, x, c, torch.tensor([3]))
    g = torch.sigmoid(torch.tensor([1.0, -2.0, 0.5], dtype=F64))
    torch.testing.assert_close(gated["z"][0, 0, 0], a * g, rtol=1e-15, atol=0)
    assert gated["mask"][0, 0, 0].tolist() == [True, False, False]   # k-WTA with k = 3: all
    torch.testing.assert_close(gated["logits"][0, 0, 0], w2 @ torch.relu(a * g) + b2,
                               rtol=1e-15, atol=1e-15)


def test_permutations_are_fixed_per_key_and_task(system):
    keys = torch.tensor([4, 9, 4])
    perms = system.permutations(keys)
    assert perms.shape == (3, 3, 64) and perms.dtype == torch.int64
    assert torch.equal(perms.sort(-1).values, torch.arange(64).expand(3, 3, 64))
    assert torch.equal(perms[0], perms[2])
    assert torch.equal(system.permutations(keys[1:2])[0], perms[1])  # alone = in a batch
    assert not torch.equal(perms[0, 0], perms[1, 0])                  # keys differ
    assert not torch.equal(perms[0, 0], perms[0, 1])                  # tasks differ
    bigger = ActiveDendrites(n_tasks=5, steps_per_task=4).permutations(keys)
    assert torch.equal(bigger[:, :3], perms)          # task s's permutation is (key, s) only


def test_tasks_in_sequence_and_prototype_contexts(system):
    t = torch.tensor([0, 3, 4, 11, 12, 30])
    assert system.task(t).tolist() == [0, 0, 1, 2, 2, 2]
    keys = torch.tensor([1, 2])
    perms = system.permutations(keys)
    raw = load_digits_split()[0]
    x_tr = (raw - raw.mean()) / raw.std()                  # standardised as in the paper
    torch.testing.assert_close(system.data(F64, "cpu")[0], x_tr, rtol=0, atol=1e-15)
    c = system.prototypes(perms, F64)
    for b in range(2):
        for s in range(3):
            torch.testing.assert_close(c[b, s], x_tr[:, perms[b, s]].mean(0), rtol=1e-14,
                                       atol=1e-15)
    # the prototypes are centred (global mean 0), so two tasks' contexts are nearly orthogonal
    torch.testing.assert_close(c.sum(-1), torch.zeros(2, 3, dtype=F64), rtol=0, atol=1e-12)
    xs, cs = system.task_inputs(x_tr[None, :5].expand(2, -1, -1), perms)
    assert torch.equal(xs[1, 2, 3], x_tr[3, perms[1, 2]]) and torch.equal(cs, c)


@pytest.mark.parametrize("dendrites, kwta", [(True, True), (False, True), (True, False),
                                             (False, False)])
def test_analytic_gradient_equals_autograd(dendrites, kwta):
    system = ActiveDendrites(n_tasks=3, steps_per_task=4, dendrites=dendrites, kwta=kwta)
    keys = torch.arange(3)
    p = (system.init_network(keys, F64) + 0.05 * torch.randn(
        3, system.inner_dim, dtype=F64, generator=torch.Generator().manual_seed(1)))
    p.requires_grad_()
    x_tr, y_tr, _, _ = load_digits_split()
    xs, cs = system.task_inputs(x_tr[None, :16].expand(3, -1, -1), system.permutations(keys)[:, :2])
    y = y_tr[:16].expand(3, 2, -1)
    k = torch.tensor([1, 16, 64])
    loss, grad = system.loss_and_grad(p, xs, y, cs, k)
    logits = system.forward(p, xs, cs, k)["logits"]
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), y.reshape(-1),
                                                  reduction="none").reshape(3, -1).mean(1)
    torch.testing.assert_close(loss, reference, rtol=1e-13, atol=0)
    (auto,) = torch.autograd.grad(loss.sum(), p)
    torch.testing.assert_close(grad, auto, rtol=1e-12, atol=1e-16)


def test_loss_is_the_mean_over_seen_tasks(system):
    """Step t's loss is the mean over tasks 0..tau(t) of the held-out cross-entropy after the
    update: recompute it from the returned state with the step's evaluation minibatch."""
    keys = torch.tensor([3, 3, 3])
    theta = system.init_params(F64).expand(3, -1)
    state = system.init_state(theta, keys)
    t = torch.tensor([0, 5, 9])                           # tasks 0, 1, 2
    nxt, loss = system.step(theta, state, t, keys)
    _, _, x_val, y_val, _ = system.data(F64, "cpu")
    u = noise.uniform(keys, t, stream=3, shape=(system.eval_size,), dtype=F64)
    idx = (u * 360).long()
    xs, cs = system.task_inputs(x_val[idx], system.permutations(keys))
    logits = system.forward(nxt.params, xs, cs, system.hyper_parameters(theta)[1])["logits"]
    ce = torch.nn.functional.cross_entropy(logits.transpose(-1, -2).reshape(9, 10, -1),
                                           y_val[idx][:, None].expand(3, 3, -1).reshape(9, -1),
                                           reduction="none").mean(1).reshape(3, 3)
    expected = torch.stack([ce[0, :1].mean(), ce[1, :2].mean(), ce[2, :3].mean()])
    torch.testing.assert_close(loss, expected, rtol=1e-13, atol=0)


def test_deterministic_and_batch_independent(system):
    keys = torch.tensor([5, 9, 5, 2])
    rows = system.init_params(F64).expand(4, -1).clone()
    rows[1, 0] += 0.1
    (l1, s1), (l2, s2) = rollout(system, rows, keys, 6), rollout(system, rows, keys, 6)
    alone, alone_state = rollout(system, rows[2:3], keys[2:3], 6)
    assert torch.equal(l1, l2) and all(torch.equal(a, b) for a, b in zip(s1, s2))
    assert torch.equal(l1[:, 0], l1[:, 2]) and not torch.equal(l1[:, 0], l1[:, 3])
    torch.testing.assert_close(alone, l1[:, 2:3], rtol=0, atol=1e-12)
    for a, b in zip(tree_leaves(alone_state), tree_leaves(tree_index(s1, slice(2, 3)))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_check_system_passes_and_k_has_zero_pathwise_gradient(system):
    report = check_system(system, steps=system.horizon)
    assert report.ok and report.differentiable, str(report)
    theta = system.init_params(F64).expand(2, -1).clone().requires_grad_()
    losses, _ = rollout(system, theta, torch.tensor([0, 1]), 6)
    (grad,) = torch.autograd.grad(losses.mean(), theta)
    assert (grad[:, 0] != 0).all() and (grad[:, 1] == 0).all() and (grad[:, 2] != 0).all()


def test_training_learns_each_task_and_forgets_earlier_ones():
    """Two tasks of 60 steps, 6 keys: after task 0 its validation accuracy is far above chance
    (> 0.5 for every key); training on task 1 then lowers it (forgetting) by more than 4
    standard errors of the per-key drop."""
    s = ActiveDendrites(n_tasks=2, steps_per_task=60)
    keys = torch.arange(6)
    theta = s.init_params().expand(6, -1)
    _, mid = rollout(s, theta, keys, 60)
    state = mid
    for t in range(60, 120):
        state, _ = s.step(theta, state, torch.full_like(keys, t), keys)
    before, after = s.evaluate(mid, theta, keys), s.evaluate(state, theta, keys)
    assert (before["val_accuracy"][:, 0] > 0.5).all(), before
    assert (after["val_accuracy"][:, 1] > 0.5).all(), after
    drop = before["val_accuracy"][:, 0] - after["val_accuracy"][:, 0]
    assert drop.mean() > 4 * drop.std() / math.sqrt(6), drop


def test_k_plays_no_part_without_kwta():
    s = ActiveDendrites(n_tasks=2, steps_per_task=3, kwta=False)
    theta = s.init_params(F64).expand(2, -1).clone()
    theta[1, 1] = 2.0                                     # k = 0.25 H vs 0.88 H
    losses, state = rollout(s, theta, torch.tensor([4, 4]), 6)
    assert torch.equal(losses[:, 0], losses[:, 1])
    assert torch.equal(state.params[0], state.params[1])


@pytest.mark.parametrize("bad, err", [({"n_tasks": 0}, ValueError), ({"hidden": 1}, ValueError),
                                      ({"steps_per_task": 2.5}, TypeError),
                                      ({"batch_size": 0}, ValueError),
                                      ({"dendrites": 1}, TypeError), ({"kwta": "no"}, TypeError)])
def test_bad_hyper_parameters_are_rejected(bad, err):
    with pytest.raises(err, match=next(iter(bad))):
        ActiveDendrites(**bad)


def test_dimensions():
    s = ActiveDendrites()
    assert s.inner_dim == 64 * 64 + 64 + 64 * 5 * 64 + 10 * 64 + 10
    assert (s.param_dim, s.horizon, s.state_dim) == (3, 250, 2 * s.inner_dim)
    assert isinstance(s.init_state(s.init_params().expand(1, -1), torch.tensor([0])),
                      DendritesState)

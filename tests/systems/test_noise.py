import math

import torch

from systems import noise


def test_same_key_same_numbers_whatever_the_batch():
    keys = torch.tensor([5, 9, 123456789012345, 5], dtype=torch.int64)
    t = torch.tensor([0, 3, 7, 0])
    z = noise.normal(keys, t, stream=2, shape=(3,), dtype=torch.float64)
    alone = noise.normal(keys[2:3], t[2:3], stream=2, shape=(3,), dtype=torch.float64)
    assert torch.equal(z[2:3], alone)
    assert torch.equal(z[0], z[3])           # equal (key, t) -> equal numbers
    assert not torch.equal(z[0], z[1])


def test_streams_steps_and_keys_differ():
    k = torch.tensor([1])
    a = noise.uniform(k, 0, stream=0, shape=(8,))
    assert not torch.equal(a, noise.uniform(k, 1, stream=0, shape=(8,)))
    assert not torch.equal(a, noise.uniform(k, 0, stream=1, shape=(8,)))
    assert not torch.equal(a, noise.uniform(k + 1, 0, stream=0, shape=(8,)))


def test_normal_moments_within_standard_error():
    n = 200_000
    keys = torch.arange(n, dtype=torch.int64)
    z = noise.normal(keys, 0, stream=0, dtype=torch.float64)
    se_mean, se_var = 1 / math.sqrt(n), math.sqrt(2 / n)
    assert abs(z.mean().item()) < 4 * se_mean
    assert abs(z.var().item() - 1) < 4 * se_var
    u = noise.uniform(keys, 3, stream=1, dtype=torch.float64)
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / n)
    # neighbouring keys are uncorrelated
    r = torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1]
    assert abs(r.item()) < 4 / math.sqrt(n)


def test_fold_is_deterministic_and_spreads():
    keys = torch.zeros(1000, dtype=torch.int64)
    folded = noise.fold(keys, torch.arange(1000), 7)
    assert folded.unique().numel() == 1000 and (folded >= 0).all()
    assert torch.equal(folded, noise.fold(keys, torch.arange(1000), 7))

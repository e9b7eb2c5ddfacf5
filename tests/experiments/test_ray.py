"""The Ray backend on a local cluster (num_cpus=2): sharded estimates equal the single-process
run for the same seed, sharded rollouts split mirrored pairs whole and compose the antithetic
estimate, and a Ray sweep writes every cell once from the driver and resumes."""
import pytest
import torch

import estimators
import systems
from estimators.base import episode_keys, perturbations
from estimators.distributed import (ShardedEstimator, ShardedRollouts, _Shard, row_blocks,
                                    shard_bounds)
from estimators.rollout import antithetic_rows
from experiments.core.store import Cell, ResultsStore
from experiments.core.sweep import CellResult, run_cells

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'chaosgrad[ray]')")

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_shard_bounds_are_contiguous_and_cover():
    assert shard_bounds(7, 3) == [(0, 2), (2, 4), (4, 7)]
    assert shard_bounds(2, 5) == [(0, 1), (1, 2)]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, hp", [
    ("antithetic_es", {"pairs": 5, "sigma": 0.05, "horizon": 12}),
    ("pes", {"pairs": 5, "sigma": 0.05, "horizon": 12, "truncation": 4, "stagger": True}),
    pytest.param("nres", {"pairs": 5, "sigma": 0.05, "horizon": 12, "truncation": 5,
                          "stagger": True}, marks=pytest.mark.slow),
    pytest.param("bptt", {"samples": 3, "sigma": 0.05, "horizon": 12}, marks=pytest.mark.slow),
])
def test_sharded_estimate_equals_single_process(name, hp):
    system = systems.make("double_pendulum", release_angle=0.1)
    theta = system.init_params(dtype=F64) + 0.1
    single, sharded = estimators.make(name, **hp), ShardedEstimator(estimators.make(name, **hp), 2)
    s1, s2 = single.init(system, theta, seed=7), sharded.init(system, theta, seed=7)
    for _ in range(3):  # several windows: PES/NRES states stay on their actor in between
        e1, s1 = single.estimate(system, theta, s1)
        e2, s2 = sharded.estimate(system, theta, s2)
        _close(e2.samples, e1.samples)
        _close(e2.grad, e1.grad)
        _close(e2.loss, e1.loss)
        assert (e2.steps, e2.nonfinite) == (e1.steps, e1.nonfinite)
    sharded.close(s2)


def test_row_blocks_keep_mirrored_pairs_whole():
    assert [b.tolist() for b in row_blocks(6, 2, paired=True)] == [[0, 3], [1, 2, 4, 5]]
    assert [b.tolist() for b in row_blocks(6, 2)] == [[0, 1, 2], [3, 4, 5]]
    blocks = row_blocks(10, 3, paired=True)
    assert sorted(torch.cat(blocks).tolist()) == list(range(10))
    for b in blocks:  # row i and its mirror i + 5 always on the same shard
        assert set(b.tolist()) == {(i + 5) % 10 for i in b.tolist()}
    with pytest.raises(ValueError, match="even"):
        row_blocks(5, 2, paired=True)


def test_sharded_rollouts_split_mirrored_pairs_and_compose_the_antithetic_estimate():
    """The rows AntitheticES evaluates (theta +/- sigma eps_i, a pair sharing key_i), sent to two
    actors as whole pairs: each actor's block is its rows' losses, and the losses put back in
    row order give the single-process AntitheticES samples."""
    system, T, sigma = systems.make("logistic_map"), 20, 0.05
    theta = system.init_params(dtype=F64)
    est = estimators.make("antithetic_es", pairs=3, sigma=sigma, horizon=T)
    state = est.init(system, theta, seed=2)
    eps = perturbations(state.seed, state.particle, state.count, system.param_dim, F64)
    rows = antithetic_rows(theta, eps, sigma)
    keys = episode_keys(state.seed, state.particle.repeat(2), state.count.expand(6))
    pool = ShardedRollouts(system, workers=2)
    losses = pool.losses(rows, keys, T, paired=True)
    for block in row_blocks(6, 2, paired=True):  # what each actor got: whole pairs
        assert torch.equal(_Shard(None, system, 0, 0).losses(rows[block], keys[block], T),
                           losses[block])
    loss_pos, loss_neg = losses.chunk(2)
    e, _ = est.estimate(system, theta, state)
    assert torch.equal(estimators.antithetic_samples(loss_pos, loss_neg, eps, sigma), e.samples)
    assert torch.equal(pool.losses(rows, keys, T), losses)  # unpaired blocks: same numbers


def _square(cell: Cell) -> CellResult:
    return CellResult({"y": cell.params["x"] ** 2}, steps=1)


def test_ray_sweep_writes_every_cell_and_resumes(tmp_path):
    cells = [Cell("toy", "none", params={"x": x}) for x in range(5)]
    with ResultsStore(tmp_path) as store:
        run_cells(store, cells[:3], _square, progress=False, backend="ray")
        rows = run_cells(store, cells, _square, progress=False, backend="ray")
    assert [r["metrics"]["y"] for r in rows] == [x * x for x in range(5)]


def test_curves_quick_on_ray_matches_local(tmp_path):
    from experiments import curves
    cfg = curves.Config(system="logistic_map", regimes=("regular",), estimators=("bptt", "pes"),
                        horizons=(4, 8), truncations=(4,), pairs=2, draws=16, ref_pairs=64,
                        seeds=1)
    local = curves.run(cfg, tmp_path / "local", progress=False)
    remote = curves.run(cfg, tmp_path / "ray", progress=False, backend="ray")
    for a, b in zip(local["rows"], remote["rows"]):
        assert a["key"] == b["key"] and a["metrics"]["mean"] == b["metrics"]["mean"]
    again = curves.run(cfg, tmp_path / "ray", progress=False, backend="ray")
    assert again["new"] == 0

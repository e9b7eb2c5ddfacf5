"""The Ray backend on a local cluster (num_cpus=2): sharded estimates equal the single-process
run for the same seed, sharded strategy rollouts equal local ones, and a Ray sweep writes every
cell once from the driver and resumes."""
import pytest
import torch

import estimators
import systems
from estimators.distributed import ShardedEstimator, ShardedRollouts, shard_bounds
from experiments.store import Cell, ResultsStore
from experiments.sweep import CellResult, run_cells

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


def test_sharded_rollouts_keep_mirrored_pairs_and_match_local():
    system = systems.make("logistic_map")
    rows = system.init_params(dtype=F64) + 0.01 * torch.randn(6, system.param_dim, dtype=F64,
                                                              generator=torch.Generator().manual_seed(0))
    keys = torch.arange(6, dtype=torch.int64)
    pool = ShardedRollouts(system, workers=2)
    from estimators.distributed import _Shard
    local = _Shard(None, system, 0, 0).losses(rows, keys, 20)
    _close(pool.losses(rows, keys, 20, paired=True), local)
    _close(pool.losses(rows, keys, 20), local)


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

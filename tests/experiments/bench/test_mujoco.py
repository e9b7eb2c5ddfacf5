"""``python -m experiments.bench.mujoco`` at smoke sizes: every row is measured and printed, and
the raw rollout replays the trajectories chaosgrad simulated (timings are never asserted)."""
import pytest
import torch

pytest.importorskip("mujoco")
pytest.importorskip("gymnasium")

import systems  # noqa: E402
from experiments.bench import mujoco as bench  # noqa: E402


def test_table_has_a_row_per_model_and_a_gradient_row(capsys):
    argv = ["--models", "half_cheetah", "ant", "--B", "3", "--T", "4", "--gym-steps", "2",
            "--B-grad", "2", "--T-grad", "2", "--threads", "1"]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, integrator in (("half_cheetah", "own"), ("ant", "implicitfast")):
        rows = [line.split() for line in lines if line.startswith(name)]
        assert len(rows) == 2, lines
        rollout, grad = rows
        assert len(rollout) == 7 and all(float(x) > 0 for x in rollout[1:])
        assert grad[1] == integrator and all(float(x) > 0 for x in grad[2:])


def test_raw_rollout_replays_the_same_trajectories():
    """The controls chaosgrad's policy applied, held for each frame skip and replayed by
    mujoco.rollout, reach chaosgrad's final physics state."""
    import mujoco
    from mujoco import rollout

    system = systems.make("mujoco:half_cheetah", threads=1)
    theta, keys = bench.linear_policy(system, 3), torch.arange(3)
    state = system.init_state(theta, keys)
    init = state.physics.numpy()[:, :mujoco.mj_stateSize(
        system.sim.model, int(mujoco.mjtState.mjSTATE_FULLPHYSICS))].copy()
    ctrl = bench._controls(system, theta, keys, 5).repeat(system.sim.frame_skip, 1)
    with torch.no_grad():
        for t in range(5):
            state, _ = system.step(theta, state, torch.full_like(keys, t), keys)
    with rollout.Rollout(nthread=1) as r:
        out, _ = r.rollout(system.sim.model, [mujoco.MjData(system.sim.model)], init, ctrl)
    final = torch.from_numpy(out[:, -1, :init.shape[1]])
    assert torch.allclose(final, state.physics[:, :init.shape[1]], rtol=1e-9, atol=1e-9)

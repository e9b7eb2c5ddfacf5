"""MuJoCo robots (systems.mujoco): gymnasium v5 equivalence, pathwise gradients, bad input."""
import inspect
import pickle

import numpy as np
import pytest
import torch

import estimators
import systems
from systems import lyapunov_exponents, noise
from systems.mujoco import MEMBERS, MODELS, Ant, MujocoState, MujocoSystem, simulator
from systems.mujoco.models import gymnasium_asset
from tests.helpers import rollout

gymnasium = pytest.importorskip("gymnasium")

F64 = torch.float64
ENV = {name: spec.env_id for name, spec in MODELS.items()}
# Override the RK4 integrator of the Swimmer, Hopper and Ant files for pathwise gradients.
DIFFERENTIABLE = {"swimmer": {"integrator": "euler"}, "half_cheetah": {},
                  "hopper": {"integrator": "implicitfast"}, "ant": {"integrator": "implicitfast"}}


class Scripted:
    """A test policy: the t-th call returns actions[t] for every row, whatever theta is."""

    def __init__(self, actions: np.ndarray):
        self.actions, self.t = actions, 0

    def __call__(self, theta, obs):
        a = torch.as_tensor(self.actions[self.t], dtype=theta.dtype)
        self.t += 1
        return a.expand(theta.shape[0], -1)


def test_members_are_listed_and_resolve_to_their_classes():
    listed = systems.available()
    for name, cls in MEMBERS.items():
        assert f"mujoco:{name}" in listed and systems.SYSTEMS.get(f"mujoco:{name}") is cls
    ant = systems.make("mujoco:ant")
    assert isinstance(ant, Ant) and ant.name == "mujoco:ant" and ant.horizon == 1000
    assert ant.param_dim == 105 * 8 and ant.dt == pytest.approx(0.05)
    assert not ant.differentiable and "RK4" in ant.nondifferentiable_reason
    cheetah = systems.make("mujoco:half_cheetah", policy="mlp", hidden=4)
    assert cheetah.differentiable and cheetah.nondifferentiable_reason is None
    assert cheetah.param_dim == 4 * 17 + 4 + 6 * 4 + 6


@pytest.mark.parametrize("name", list(MODELS))
def test_steps_equal_gymnasium_v5(name):
    """Same initial state, same actions: observations, rewards and termination as gymnasium's
    <Model>-v5 over 300 steps (to float64 rounding), and frozen with loss 0 after termination."""
    system = systems.make(f"mujoco:{name}")
    env = gymnasium.make(ENV[name]).unwrapped
    env.reset(seed=0)
    theta, keys = system.init_params(dtype=F64)[None], torch.tensor([3])
    state = system.init_state(theta, keys)
    qpos = state.physics[0, system.sim.qpos_at:system.sim.qpos_at + system.sim.nq]
    qvel = state.physics[0, system.sim.qvel_at:system.sim.qvel_at + system.sim.nv]
    env.set_state(qpos.numpy(), qvel.numpy())
    np.testing.assert_array_equal(system.observe(state)[0].numpy(), env._get_obs())
    actions = 0.3 * np.random.default_rng(0).uniform(-1, 1, (300, system.sim.nu))
    system.policy = Scripted(actions)
    terminated = False
    for t in range(300):
        before = state
        state, loss = system.step(theta, state, torch.tensor([t]), keys)
        if terminated:
            assert loss.item() == 0.0 and torch.equal(state.physics, before.physics)
            continue
        obs, r, terminated, _, _ = env.step(actions[t])
        np.testing.assert_allclose(system.observe(state)[0].numpy(), obs, rtol=0, atol=1e-12)
        assert abs(-loss.item() - r) <= 1e-12 * max(1.0, abs(r))
        assert bool(state.done[0]) == terminated
    if name == "hopper":  # 0.3-amplitude random actions topple the Hopper within 300 steps
        assert terminated


def test_reset_noise_follows_gymnasium_and_the_key():
    c, B = 0.1, 4000
    system = systems.make("mujoco:half_cheetah")  # U(-c, c) on qpos, c N(0, 1) on qvel
    state = system.init_state(torch.zeros(B, system.param_dim, dtype=F64), torch.arange(B))
    sim = system.sim
    qpos = state.physics[:, sim.qpos_at:sim.qpos_at + sim.nq] - torch.from_numpy(sim.model.qpos0)
    qvel = state.physics[:, sim.qvel_at:sim.qvel_at + sim.nv]
    assert qpos.abs().max() < c
    se = c / np.sqrt(3 * B)  # standard error of the mean of U(-c, c)
    assert (qpos.mean(0).abs() < 4 * se).all()
    assert (qvel.mean(0).abs() < 4 * c / np.sqrt(B)).all()
    assert ((qvel.std(0) - c).abs() < 4 * c / np.sqrt(2 * B)).all()
    again = system.init_state(torch.zeros(2, system.param_dim, dtype=F64), torch.tensor([7, 1]))
    assert torch.equal(again.physics[1], state.physics[1]) and not state.done.any()


def directional_check(system, theta, steps, keys, monkeypatch, directions=2, seed=0):
    """Autograd's <grad L, u> (ad) against central differences d_h of whole rollouts, for unit
    u. Both sides are finite differences (MuJoCo's transition Jacobians use a step eps), so the
    tolerance is their own Richardson error estimate, each error being O(step^2):

        |ad - d_{h/2}| <= 10 |d_h - d_{h/2}| + 2 |ad(2 eps) - ad(eps)| + 1e-6 |ad| + 1e-9
    """
    D = system.param_dim
    u = noise.normal(torch.full((directions,), 99 + seed), torch.arange(directions), 0, (D,), F64)
    u = u / u.norm(dim=1, keepdim=True)

    def pathwise():
        rows = theta.expand(len(keys), -1).clone().requires_grad_()
        (grad,) = torch.autograd.grad(rollout(system, rows, keys, steps)[0].mean(0).sum(), rows)
        return grad, (grad @ u.T).T                           # [keys, D], [U, keys]

    grad, ad = pathwise()
    monkeypatch.setattr(simulator, "FD_EPS", 2 * simulator.FD_EPS)
    _, ad_coarse = pathwise()
    h = 1e-5
    shifted = torch.stack([theta + c * h * u for c in (1.0, -1.0, 0.5, -0.5)])  # [4, U, D]
    k = keys.repeat(4 * directions)
    with torch.no_grad():
        losses = rollout(system, shifted.reshape(-1, D).repeat_interleave(len(keys), 0), k,
                         steps)[0].mean(0).reshape(4, directions, len(keys))
    d1 = (losses[0] - losses[1]) / (2 * h)
    d2 = (losses[2] - losses[3]) / h
    tol = 10 * (d1 - d2).abs() + 2 * (ad_coarse - ad).abs() + 1e-6 * ad.abs() + 1e-9
    assert ((ad - d2).abs() <= tol).all(), (ad, d2, tol)
    return grad


@pytest.mark.parametrize("name", list(DIFFERENTIABLE))
def test_pathwise_gradient_matches_central_differences(name, monkeypatch):
    system = systems.make(f"mujoco:{name}", horizon=8, **DIFFERENTIABLE[name])
    assert system.differentiable
    g = torch.Generator().manual_seed(1)
    theta = 0.05 * torch.randn(system.param_dim, generator=g, dtype=F64)
    grad = directional_check(system, theta, steps=8, keys=torch.tensor([0, 5]),
                             monkeypatch=monkeypatch)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_state_jacobian_matches_central_differences_with_quaternions():
    """J_t v through the autograd Function (qpos with the Ant's free-joint quaternion, qvel)
    against [s(x + h v) - s(x - h v)] / 2h of one step."""
    system = systems.make("mujoco:ant", integrator="implicitfast")
    theta = torch.zeros(1, system.param_dim, dtype=F64)
    keys = torch.tensor([2])
    state = system.init_state(theta, keys)
    for t in range(3):
        state, _ = system.step(theta, state, torch.tensor([t]), keys)
    sim = system.sim
    v = torch.zeros_like(state.physics)
    coords = slice(sim.qpos_at, sim.qvel_at + sim.nv)           # qpos and qvel
    v[:, coords] = noise.normal(keys, 0, 5, (sim.nq + sim.nv,), F64)

    def next_physics(physics):
        s = MujocoState(physics, state.extras, state.done)
        return system.step(theta, s, torch.tensor([3]), keys)[0].physics

    x = state.physics.clone().requires_grad_()
    y = next_physics(x)
    w = torch.zeros_like(y, requires_grad=True)             # J v = d/dw <J^T w, v>
    (jtw,) = torch.autograd.grad(y, x, w, create_graph=True)
    (jv,) = torch.autograd.grad(jtw, w, v)
    h = 1e-6
    with torch.no_grad():
        fd = (next_physics(state.physics + h * v) - next_physics(state.physics - h * v)) / (2 * h)
    torch.testing.assert_close(jv[:, coords], fd[:, coords], rtol=1e-5, atol=1e-5)


def test_rk4_models_say_why_pathwise_is_unavailable():
    hopper = systems.make("mujoco:hopper", horizon=3)
    assert not hopper.differentiable and "implicitfast" in hopper.nondifferentiable_reason
    theta = hopper.init_params(dtype=F64)[None].requires_grad_()
    losses, _ = rollout(hopper, theta, torch.tensor([0]), 2)
    with pytest.raises(RuntimeError, match="pathwise gradient unavailable: .*RK4"):
        losses.sum().backward()
    with pytest.raises(ValueError, match="pathwise unavailable on mujoco:hopper: .*RK4"):
        estimators.make("bptt", samples=2).init(hopper, hopper.init_params(), seed=0)


@pytest.mark.parametrize("name", ["bptt", "truncated_bptt", "mixed"])
def test_pathwise_estimators_run_on_an_ant_with_implicitfast(name):
    ant = systems.make("mujoco:ant", integrator="implicitfast", horizon=6)
    params = inspect.signature(estimators.ESTIMATORS.get(name)).parameters
    hp = {k: v for k, v in dict(samples=2, pairs=2, truncation=3).items() if k in params}
    est = estimators.make(name, **hp)
    theta = 0.01 * torch.ones(ant.param_dim)
    e, _ = est.estimate(ant, theta, est.init(ant, theta, seed=0))
    assert e.grad.dtype == torch.float32 and torch.isfinite(e.grad).all() and e.nonfinite == 0


def test_float32_theta_gives_float32_losses_of_the_same_trajectory():
    system = systems.make("mujoco:swimmer")
    keys = torch.tensor([1, 2])
    l64, s64 = rollout(system, torch.zeros(2, system.param_dim, dtype=F64), keys, 5)
    l32, s32 = rollout(system, torch.zeros(2, system.param_dim), keys, 5)
    assert l32.dtype == torch.float32 and s32.physics.dtype == F64
    assert torch.equal(s32.physics, s64.physics) and torch.equal(l32, l64.float())


def test_lyapunov_exponents_of_the_closed_loop_ant():
    ant = systems.make("mujoco:ant", integrator="implicitfast")
    res = lyapunov_exponents(ant, 0.01 * torch.ones(ant.param_dim, dtype=F64), steps=6,
                             burn_in=2, k=1, trajectories=2)
    assert res.per_trajectory.shape == (2, 1) and torch.isfinite(res.per_step).all()
    torch.testing.assert_close(res.per_time, res.per_step / ant.dt)


def test_a_user_model_gets_the_generic_reward(tmp_path):
    system = systems.make(f"mujoco:{gymnasium_asset('half_cheetah.xml')}", horizon=4)
    assert type(system) is MujocoSystem and system.param_dim == 17 * 6
    theta, keys = torch.zeros(1, system.param_dim, dtype=F64), torch.tensor([4])
    state = system.init_state(theta, keys)
    x0 = state.physics[0, system.sim.qpos_at]
    state, loss = system.step(theta, state, torch.tensor([0]), keys)
    x1 = state.physics[0, system.sim.qpos_at]
    torch.testing.assert_close(loss[0], -(x1 - x0) / system.dt, rtol=0, atol=1e-15)
    again = pickle.loads(pickle.dumps(system))
    assert torch.equal(rollout(again, theta, keys, 2)[0], rollout(system, theta, keys, 2)[0])


SLIDER = """<mujoco><option timestep="0.01"/><worldbody><body>
  <joint name="x" type="slide" axis="1 0 0" stiffness="{k}"/>
  <geom type="sphere" size="0.1" mass="0.001"/></body></worldbody>
  <actuator><motor joint="x" ctrlrange="-1 1"/></actuator></mujoco>"""


def test_an_unstable_simulation_becomes_nonfinite_samples(tmp_path):
    """A stiff spring under semi-implicit Euler (omega dt = 10) blows up; MuJoCo warns and
    resets the simulation, which must surface as NaN losses that estimators count."""
    path = tmp_path / "stiff.xml"
    path.write_text(SLIDER.format(k=1e3))
    system = systems.make(f"mujoco:{path}", horizon=10)
    losses, state = rollout(system, torch.zeros(2, system.param_dim, dtype=F64),
                            torch.tensor([0, 1]), 10)
    assert torch.isnan(losses[-1]).all() and torch.isnan(state.physics).all()
    est = estimators.make("antithetic_es", pairs=2, sigma=0.1)
    e, _ = est.estimate(system, system.init_params(), est.init(system, system.init_params(),
                                                               seed=0))
    assert e.nonfinite == 2


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown mujoco model 'antt'.*half_cheetah"):
        systems.make("mujoco:antt")
    broken = tmp_path / "broken.xml"
    broken.write_text("<mujoco><worldbody><body><geom type='sphere'/></body></worldbody>")
    with pytest.raises(ValueError, match="does not load: .*XML"):
        systems.make(f"mujoco:{broken}")
    hinge = tmp_path / "hinge.xml"
    hinge.write_text(SLIDER.format(k=0).replace('type="slide"', 'type="hinge"'))
    with pytest.raises(ValueError, match="first joint must be a free joint or a slide"):
        systems.make(f"mujoco:{hinge}")
    with pytest.raises(ValueError, match="no actuators"):
        passive = tmp_path / "passive.xml"
        passive.write_text(SLIDER.format(k=0).split("<actuator>")[0] + "</mujoco>")
        systems.make(f"mujoco:{passive}")
    with pytest.raises(ValueError, match="unknown policy 'rnn'.*linear, mlp"):
        systems.make("mujoco:swimmer", policy="rnn")
    with pytest.raises(ValueError, match="unknown integrator 'rk45'.*implicitfast"):
        systems.make("mujoco:swimmer", integrator="rk45")
    with pytest.raises(ValueError, match="hidden"):
        systems.make("mujoco:swimmer", policy="mlp", hidden=0)
    swimmer = systems.make("mujoco:swimmer")
    theta = torch.zeros(2, swimmer.param_dim + 1, dtype=F64)
    state = swimmer.init_state(theta, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"theta must have shape \[B, 16\].*swimmer"):
        swimmer.step(theta, state, torch.tensor([0, 0]), torch.tensor([0, 1]))

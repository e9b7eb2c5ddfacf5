"""`check_system` passes every shipped system and names the failure of deliberately broken ones."""
import pytest
import torch

import systems
from systems import System, check_system, noise


class Toy(System):
    """x <- 0.9 x + theta + 0.1 w(key, t), loss = x^2: a small correct system to break."""

    name = "toy"
    param_dim = 2
    state_dim = 2
    horizon = 8

    def init_params(self, dtype=torch.float32, device=None):
        return torch.tensor([0.3, -0.2], dtype=dtype, device=device)

    def init_state(self, theta, keys):
        return noise.normal(keys, 0, stream=0, shape=(2,), dtype=theta.dtype)

    def noise(self, keys, t, like):
        return noise.normal(keys, t, stream=1, shape=(2,), dtype=like.dtype)

    def step(self, theta, state, t, keys):
        nxt = 0.9 * state + theta + 0.1 * self.noise(keys, t, state)
        return nxt, (nxt**2).sum(-1)


class PrivateGenerator(Toy):
    """A stateful generator shared by all trajectories: the same key gives new numbers."""

    def __init__(self):
        self.gen = torch.Generator().manual_seed(0)

    def noise(self, keys, t, like):
        return torch.randn(like.shape, generator=self.gen, dtype=like.dtype)


class GlobalRNG(Toy):
    def noise(self, keys, t, like):
        return torch.randn(like.shape, dtype=like.dtype)  # the global RNG


class BatchCoupled(Toy):
    def step(self, theta, state, t, keys):
        nxt, loss = super().step(theta, state, t, keys)
        return nxt + 0.01 * nxt.mean(0), loss  # every row sees the batch mean


class ScalarLoss(Toy):
    def step(self, theta, state, t, keys):
        nxt, loss = super().step(theta, state, t, keys)
        return nxt, loss.mean()


class ColumnLoss(Toy):
    def step(self, theta, state, t, keys):
        nxt, loss = super().step(theta, state, t, keys)
        return nxt, loss[:, None]


class DroppedBatch(Toy):
    def step(self, theta, state, t, keys):
        nxt, loss = super().step(theta, state, t, keys)
        return nxt[:1], loss


class NaNAtTheta(Toy):
    def step(self, theta, state, t, keys):
        nxt, loss = super().step(theta, state, t, keys)
        return nxt, loss + torch.log(theta[:, 0] - 1.0)  # theta_0 = 0.3: log of a negative


class _Doubled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return 2 * g  # wrong: the identity's derivative is 1


class WrongBackward(Toy):
    def step(self, theta, state, t, keys):
        return super().step(_Doubled.apply(theta), state, t, keys)


class DetachedState(Toy):
    def step(self, theta, state, t, keys):
        return super().step(theta, state.detach(), t, keys)


class Declared(Toy):
    differentiable = False


class Raises(Toy):
    def step(self, theta, state, t, keys):
        raise RuntimeError("boom\nsecond line")


def test_a_correct_system_passes_everything():
    report = check_system(Toy())
    assert report.ok and report.differentiable, str(report)
    assert all(c.passed for c in report.checks)
    assert [c.name for c in report.checks] == ["attributes", "shapes", "deterministic",
                                                "batch_independent", "finite", "gradient",
                                                "coverage"]


@pytest.mark.parametrize("name", list(systems.available()))
def test_every_shipped_system_passes(name):
    cls = systems.SYSTEMS.get(name)
    system = cls(**cls.regimes["regular"])
    report = check_system(system, steps=min(system.horizon, 20))
    assert report.ok and report.differentiable == system.differentiable, str(report)


@pytest.mark.parametrize("cls, check, words", [
    (PrivateGenerator, "deterministic", "pure function of (key, t)"),
    (GlobalRNG, "deterministic", "pure function of (key, t)"),
    (BatchCoupled, "batch_independent", "other rows of its batch"),
    (ScalarLoss, "shapes", "one value per trajectory"),
    (ColumnLoss, "shapes", "one value per trajectory"),
    (DroppedBatch, "shapes", "leading dimension"),
    (NaNAtTheta, "finite", "NaN/inf loss at step 0"),
    (Raises, "shapes", "RuntimeError: boom"),
])
def test_broken_systems_fail_the_named_check(cls, check, words):
    with torch.random.fork_rng():  # GlobalRNG draws from the global generator: leave it as it was
        report = check_system(cls())
    failed = {c.name: c for c in report.failures}
    assert not report.ok and check in failed, str(report)
    assert words in failed[check].message and "\n" not in failed[check].message
    assert not report.differentiable


def test_shape_failure_skips_the_checks_that_depend_on_it():
    report = check_system(ScalarLoss())
    assert report["deterministic"].status == "skipped"
    assert report["gradient"].status == "skipped"
    assert "shapes failed" in report.reason


@pytest.mark.parametrize("cls", [WrongBackward, DetachedState])
def test_wrong_gradients_make_the_system_non_differentiable_but_usable(cls):
    report = check_system(cls())
    assert report.ok, str(report)  # loss-based estimators still apply
    assert report["gradient"].status == "failed"
    assert not report.differentiable
    assert "finite differences" in report.reason


def test_declared_non_differentiable_is_not_gradient_checked():
    report = check_system(Declared())
    assert report.ok and not report.differentiable
    assert report["gradient"].status == "skipped"
    assert "differentiable = False" in report.reason


def test_bad_theta_and_non_systems_are_reported():
    report = check_system(Toy(), torch.zeros(3))
    assert report["attributes"].status == "failed" and "[param_dim]" in report["attributes"].message
    report = check_system(Toy(), torch.tensor([float("nan"), 0.0]))
    assert "NaN" in report["attributes"].message
    report = check_system("toy")
    assert not report.ok and "not a systems.System" in report.checks[0].message


def test_report_prints_one_line_per_check():
    text = str(check_system(Toy()))
    assert text.count("\n") == 8 and "=> differentiable" in text


class EinsumInStep(Toy):
    def step(self, theta, state, t, keys):
        return torch.einsum("bi,ij->bj", state, torch.ones(3, 2, dtype=state.dtype)), state[:, 0]


class InitParamsRaises(Toy):
    def init_params(self, dtype=torch.float32, device=None):
        raise ValueError("no parameters here")


class NoParamDim(System):
    """Toy without ``param_dim``: ``repr`` reads it too, and the report must still be built."""

    horizon, state_dim = Toy.horizon, Toy.state_dim
    init_params, init_state, noise, step = Toy.init_params, Toy.init_state, Toy.noise, Toy.step


def _line_of(method, offset):
    """The file line ``offset`` lines below a method's ``def``."""
    return method.__code__.co_firstlineno + offset


def test_an_exception_in_the_users_code_names_its_file_and_line():
    report = check_system(Raises())
    where = f"(at test_check.py:{_line_of(Raises.step, 1)} in step)"
    assert report["shapes"].message == f"raised RuntimeError: boom {where}"
    report = check_system(InitParamsRaises())
    where = f"(at test_check.py:{_line_of(InitParamsRaises.init_params, 1)} in init_params)"
    assert report["attributes"].message == f"raised ValueError: no parameters here {where}"


def test_an_exception_inside_torch_names_the_users_line_that_called_it():
    message = check_system(EinsumInStep())["shapes"].message
    assert message.startswith("raised RuntimeError: ") and "\n" not in message
    assert message.endswith(f"(at test_check.py:{_line_of(EinsumInStep.step, 1)} in step)")


def test_every_report_lists_the_seven_checks_and_says_why_one_was_skipped():
    names = ["attributes", "shapes", "deterministic", "batch_independent", "finite", "gradient",
             "coverage"]
    for system in (Toy(), ScalarLoss(), InitParamsRaises(), NoParamDim(), NaNAtTheta(),
                   Declared(), BatchCoupled()):
        assert [c.name for c in check_system(system).checks] == names
    report = check_system(NoParamDim())
    assert report.system == "NoParamDim"
    assert "param_dim must be an int" in report["attributes"].message
    assert all(report[n].message == "not run: attributes failed" for n in names[1:])
    assert report.reason == "the gradient could not be checked (attributes failed)"


@pytest.mark.parametrize("cls, gradient, reason", [
    (NaNAtTheta, "not run: finite failed", "the gradient could not be checked (finite failed)"),
    (BatchCoupled, "not run: the contract failed", "the contract failed: batch_independent"),
    (Declared, "not run: the system declares differentiable = False",
     "the system declares differentiable = False"),
])
def test_the_gradient_check_runs_only_after_what_it_needs(cls, gradient, reason):
    report = check_system(cls())
    assert report["gradient"].message == gradient and report.reason == reason


class ThresholdToy(Toy):
    """theta[1] acts only through a floor: x <- 0.9 x + theta[0] + floor(4 theta[1]) / 4."""

    def step(self, theta, state, t, keys):
        shift = theta[:, :1] + torch.floor(4 * theta[:, 1:]) / 4
        nxt = 0.9 * state + shift + 0.1 * self.noise(keys, t, state)
        return nxt, (nxt**2).sum(-1)


class UnusedToy(Toy):
    """theta[1] is never read."""

    def step(self, theta, state, t, keys):
        nxt = 0.9 * state + theta[:, :1] + 0.1 * self.noise(keys, t, state)
        return nxt, (nxt**2).sum(-1)


def test_coverage_names_a_coordinate_seen_only_through_a_discrete_decision():
    report = check_system(ThresholdToy())
    assert report.ok and report.differentiable and report.blind == [1], str(report)
    check = report["coverage"]
    assert check.status == "warning" and "blind to theta[1]" in check.message
    assert "blind to theta[1]" in report.reason


def test_coverage_tells_an_unused_coordinate_from_a_blind_one():
    report = check_system(UnusedToy())
    assert report.ok and report.differentiable and report.blind == [], str(report)
    assert report["coverage"].status == "warning"
    assert "theta[1] do not change the loss" in report["coverage"].message
    assert report.reason == "autograd agrees with finite differences"


def test_coverage_passes_when_autograd_sees_every_coordinate():
    report = check_system(Toy())
    assert report["coverage"].passed and report.blind == []


def test_continual_backprop_is_blind_to_the_replacement_rate_and_the_utility_decay():
    from systems.continual_backprop import ContinualBackprop
    system = ContinualBackprop(**ContinualBackprop.regimes["continual"], horizon=300)
    report = check_system(system)
    # rho acts through the replacement count floor(.); eta through the utility ranking, which
    # at this key and horizon may pick the same units for every eta within +-1 of the default
    assert report.differentiable and report.blind[:1] == [1] and set(report.blind) <= {1, 2}, \
        str(report)
    # within 100 steps no unit is mature, so no decision is taken: unused, not blind
    short = check_system(system, steps=100)
    assert short.blind == [] and "theta[1, 2] do not change" in short["coverage"].message


def test_active_dendrites_is_blind_to_the_number_of_winners():
    pytest.importorskip("sklearn")
    from systems.active_dendrites import ActiveDendrites
    report = check_system(ActiveDendrites(n_tasks=2, steps_per_task=10))
    assert report.differentiable and report.blind == [1], str(report)

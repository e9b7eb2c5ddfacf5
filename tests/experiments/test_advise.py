"""The advisor: loading a user's system, the decision rule, and its advice on every shipped regime."""
import math
import textwrap

import pytest
import torch

from experiments import advise as A
from experiments import cli
from experiments.core.store import ResultsStore
from systems import System, noise

# Small budgets: about 32 draws per estimator (the whole file runs in about a minute).
STEPS_PER_T = 1700

REGULAR = [("linear_quadratic", "regular"), ("double_pendulum", "regular"),
           ("metz_sgd_momentum", "regular")]
CHAOTIC = [("logistic_map", "chaotic"), ("double_pendulum", "chaotic"),
           ("metz_sgd_momentum", "chaotic")]


class Quadratic(System):
    """x <- 0.5 x + theta + 0.1 w(key, t), loss (x - 1)^2: smooth, contracting."""

    name = "quadratic"
    param_dim = 2
    state_dim = 2
    horizon = 20

    def init_params(self, dtype=torch.float32, device=None):
        return torch.zeros(2, dtype=dtype, device=device)

    def init_state(self, theta, keys):
        return noise.normal(keys, 0, stream=0, shape=(2,), dtype=theta.dtype)

    def step(self, theta, state, t, keys):
        nxt = 0.5 * state + theta + 0.1 * noise.normal(keys, t, stream=1, shape=(2,),
                                                       dtype=theta.dtype)
        return nxt, ((nxt - 1.0) ** 2).sum(-1)


class NotDifferentiable(Quadratic):
    differentiable = False


class Detached(Quadratic):
    def step(self, theta, state, t, keys):
        return super().step(theta, state.detach(), t, keys)


def advise_regime(name, regime):
    system = A.load_target(name, regime=regime)
    return A.advise(system, budget_steps=STEPS_PER_T * system.horizon, seed=0)


def check_advice(a, family):
    text = A.format_advice(a)
    assert a.recommendation["family"] == family, text
    assert a.steps_used <= STEPS_PER_T * a.horizon
    assert any(e.startswith("lambda = ") for e in a.evidence), text
    assert any(e.startswith("use ") for e in a.evidence)
    settings = a.recommendation["settings"]
    assert settings.get("pairs", settings.get("samples")) >= 4
    if family == "es":
        assert settings["sigma"] in A.SIGMAS


@pytest.mark.parametrize("name, regime", REGULAR)
def test_recommends_a_pathwise_method_in_regular_regimes(name, regime):
    check_advice(advise_regime(name, regime), "pathwise")


@pytest.mark.parametrize("name, regime", CHAOTIC)
def test_recommends_an_es_method_in_chaotic_regimes(name, regime):
    a = advise_regime(name, regime)
    check_advice(a, "es")
    bptt = next(c for c in a.candidates if c.estimator == "bptt")
    best = min(c.mse for c in a.candidates if c.family == "es" and c.usable)
    assert not bptt.usable or bptt.mse > best  # the decision follows the measured MSE
    assert a.growth["slope"] > 0  # the evidence: BPTT's spread grows with T


@pytest.mark.parametrize("cls, reason", [(NotDifferentiable, "differentiable = False"),
                                         (Detached, "finite differences")])
def test_pathwise_unavailable(cls, reason):
    a = A.advise(cls(), budget_steps=200_000)
    text = A.format_advice(a)
    assert "pathwise unavailable" in text and reason in text
    assert all(c.family == "es" for c in a.candidates)
    assert a.recommendation["family"] == "es"
    assert any("pathwise unavailable" in u for u in a.unmeasured)


def test_a_smooth_user_system_gets_a_pathwise_recommendation():
    a = A.advise(Quadratic(), budget_steps=200_000)
    assert a.differentiable and a.recommendation["estimator"] == "bptt"


def test_contract_failures_are_one_line_errors():
    class ScalarLoss(Quadratic):
        def step(self, theta, state, t, keys):
            nxt, loss = super().step(theta, state, t, keys)
            return nxt, loss.sum()
    with pytest.raises(ValueError, match="fails the contract: shapes: the loss must be one "
                                         "value per trajectory") as err:
        A.advise(ScalarLoss())
    assert "\n" not in str(err.value)


def test_a_small_budget_says_what_it_could_not_measure():
    a = A.advise(A.load_target("logistic_map", regime="chaotic"), budget_steps=30_000)
    assert a.draws == 8 and a.steps_used <= 30_000 and a.unmeasured
    assert "not measured within the budget" in A.format_advice(a)


def cand(name, family, mse, *, bias2_se=0.0, nonfinite=0, biased=False):
    c = A.Candidate(name, family, {}, draws=32, nonfinite=nonfinite, bias2_se=bias2_se, mse=mse)
    c.rank = mse + (2 * bias2_se if biased else 0.0)
    return c


def test_decision_rule():
    es, bptt = cand("antithetic_es", "es", 1.0), cand("bptt", "pathwise", 0.5)
    assert A.decide([es, bptt], differentiable=True) is bptt
    assert A.decide([es, bptt], differentiable=False) is es
    assert A.decide([es, cand("bptt", "pathwise", 0.1, nonfinite=1)], True) is es
    # a biased estimator whose bias the reference cannot resolve does not win on noise
    tbptt = cand("truncated_bptt", "pathwise", 0.2, bias2_se=1.0, biased=True)
    assert A.decide([es, tbptt], True) is es
    assert A.decide([], True) is None


USER_FILE = '''
import torch
from systems import System, noise


class Toy(System):
    name = "toy"
    param_dim = 1
    state_dim = 1
    horizon = 10
    regimes = {"regular": {"gain": 0.5}, "fast": {"gain": 0.9}}

    def __init__(self, gain=0.5):
        self.gain = gain

    def init_params(self, dtype=torch.float32, device=None):
        return torch.zeros(1, dtype=dtype, device=device)

    def init_state(self, theta, keys):
        return noise.normal(keys, 0, stream=0, shape=(1,), dtype=theta.dtype)

    def step(self, theta, state, t, keys):
        nxt = self.gain * state + theta
        return nxt, ((nxt - 1.0) ** 2)[:, 0]


def make():
    return Toy(gain=0.7)


instance = Toy()
number = 3


def broken():
    raise RuntimeError("no system today")
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_system.py"
    path.write_text(textwrap.dedent(USER_FILE))
    return path


def test_load_from_a_file(user_file):
    assert A.load_target(f"{user_file}:make").gain == 0.7
    assert A.load_target(f"{user_file}:instance").gain == 0.5
    assert A.load_target(f"{user_file}:Toy", regime="fast").gain == 0.9
    assert A.load_target(f"{user_file}:Toy", overrides={"gain": 0.2}).gain == 0.2


def test_load_from_a_module_and_by_name():
    assert A.load_target("systems.logistic_map:LogisticMap", regime="chaotic").r == 3.9
    assert A.load_target("logistic", overrides=A.parse_overrides(["r=3.7"])).r == 3.7
    assert A.load_target("double_pendulum", regime="chaotic").release_angle == pytest.approx(math.pi / 2)


@pytest.mark.parametrize("target, words", [
    ("{f}:missing", "has no attribute 'missing'"),
    ("{f}:number", "not a systems.System"),
    ("{f}:broken", "no system today"),
    ("{d}/nowhere.py:make", "no such file"),
    ("no_such_package.module:make", "cannot import"),
    ("no_such_system", "unknown system"),
])
def test_load_errors_are_one_line_value_errors(target, words, user_file):
    with pytest.raises(ValueError, match=words) as err:
        A.load_target(target.format(f=user_file, d=user_file.parent))
    assert "\n" not in str(err.value)


def test_load_rejects_unknown_regimes_and_overrides_of_instances(user_file):
    with pytest.raises(ValueError, match="unknown regime 'stormy'"):
        A.load_target("logistic_map", regime="stormy")
    with pytest.raises(ValueError, match="--regime/--set"):
        A.load_target(f"{user_file}:make", overrides={"gain": 0.1})
    with pytest.raises(ValueError, match="key=value"):
        A.parse_overrides(["gain"])


def run_cli(argv):
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code


def test_cli_advises_a_user_file_and_writes_the_store_figures_and_report(user_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(["advise", f"{user_file}:make", "--budget", "60000", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "evidence:" in text and "  - use " in text
    with ResultsStore(out) as store:
        rows = store.rows("advise")
    assert len(rows) == 1 and rows[0]["metrics"]["recommendation"]["family"] == "pathwise"
    for suffix in ("png", "csv", "txt"):
        assert len(list((out / "figures").glob(f"advise_toy_*_mse.{suffix}"))) == 1
    assert (out / "report.html").is_file()


@pytest.mark.parametrize("argv, words", [
    (["advise", "no_such_system"], "unknown system"),
    (["advise", "logistic_map", "--set", "r"], "key=value"),
    (["advise", "logistic_map", "--regime", "stormy"], "unknown regime"),
    (["advise", "logistic_map", "--theta", "1", "2"], "theta must be 1 floats"),
    (["advise", "logistic_map", "--budget", "-5"], "budget must be > 0"),
    (["advise", "logistic_map", "--budget", "10", "--time", "3"], "not allowed with"),
])
def test_cli_errors_are_one_line_exit_2(argv, words, capsys, tmp_path):
    assert run_cli(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_time_limit_too_short_for_any_es_draw_is_a_clear_error():
    with pytest.raises(ValueError, match="did not fit the budget"):
        A.advise(A.load_target("double_pendulum", regime="chaotic"), time_limit=1e-3)

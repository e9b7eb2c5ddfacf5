"""The estimator question on continual backprop (docs/continual.md), checked against standard
errors: truncated BPTT's short-horizon bias reverses the sign of the step-size gradient.

At the ``continual`` regime's theta (step size 0.01) and T = 200, the full-horizon pathwise
gradient of the mean online error in log step size is negative (a larger step lowers the error
over the whole stream), while truncated BPTT with K = 25 sees only each window's own future and
finds it positive (a larger step raises the error just after it); `chaosgrad curves` measures a
cosine of -0.99 with the target at T = 200 and 400, and `compare` sees truncated BPTT lower the
step size and raise the error.
"""
import torch

from experiments.core.measure import episode_estimates, estimator_kwargs
from systems.continual_backprop import ContinualBackprop

T, K, N = 200, 25, 128


def _step_size_gradient(name: str, truncation: int | None) -> tuple[float, float]:
    system = ContinualBackprop(**ContinualBackprop.regimes["continual"], horizon=T)
    theta = system.init_params(dtype=torch.float64)
    hp = estimator_kwargs(name, horizon=T, n=N, truncation=truncation)
    x = episode_estimates(name, hp, system, theta, seed=0).samples[:, 0]
    return x.mean().item(), (x.std() / x.numel() ** 0.5).item()


def test_truncation_reverses_the_sign_of_the_step_size_gradient():
    full, full_se = _step_size_gradient("bptt", None)
    truncated, truncated_se = _step_size_gradient("truncated_bptt", K)
    assert full < -4 * full_se, (full, full_se)
    assert truncated > 4 * truncated_se, (truncated, truncated_se)

"""Which gradient estimator for this system? Measure, then recommend, with the evidence.

``chaosgrad advise TARGET`` loads a system (a registered name, ``path/to/file.py:attr`` or
``package.module:attr``; the attribute is a `System` instance, a System subclass or a
zero-argument factory), checks it against the contract (`systems.check_system`) and then, at
``theta`` and the user's horizon T, within a budget of simulated steps (``--budget``) or seconds
(``--time``), measures:

1. cost per step: seconds per trajectory-step of a forward unroll and of forward + backward,
   whose ratio c_bwd prices every pathwise step (compute = forward-step equivalents);
2. sigma: antithetic ES at each sigma of a small grid, M per-pair draws each. Less smoothing
   means less bias, so sigma* is the smallest sigma whose per-pair variance is within a factor 4
   (2 in std) of the grid's lowest: on a smooth loss the variance is flat in sigma and the
   smallest sigma wins; where the loss turns rugged (chaos) the variance starts its 1/sigma^2
   rise and sigma* stops above it. A sigma with any non-finite draw is excluded. The smoothing
   bias against the smallest finite sigma, sum_d (m_sigma - m_min)_d^2 - noise, is reported;
3. the reference g* = grad L_sigma* at horizon T: the system's ``exact_grad`` when it has one,
   else antithetic ES with many pairs (its standard error enters every bias);
4. per-pair full-horizon draws (as `experiments.curves`: online estimators average their T/K
   lockstep windows) of BPTT (reparameterised at sigma*, so it targets grad L_sigma*),
   TruncatedBPTT at a few K, AntitheticES (the sigma*
   draws of step 2) and PES at one K; for each, with standard errors,

       bias2 = sum_d (b_d^2 - s_d^2),  b = mean - g*,  s_d^2 = var_d / M + SE(g*)_d^2
       MSE(C) = B + var_pair * cost_pair / C,    C = 2 P T forward steps (P = 64),

   with B = max(bias2, 0) for estimators biased by design (TruncatedBPTT), and for those
   unbiased for grad L_sigma* by construction (BPTT at sigma*, AntitheticES, PES) B = bias2 only
   when it is significant (> 2 standard errors; a discontinuity biases BPTT), else 0: their
   measured bias is otherwise the noise of M draws and of g*. MSE(C) is
   the MSE of one estimate given the compute of P antithetic pairs of the horizon (so the MSE
   ratio of two unbiased estimators is their ratio of MSE per unit of compute at any budget);
5. evidence: the BPTT gradient's std against T (`systems.gradient_growth_rate`, with ES's std
   at the same T) and the leading finite-time Lyapunov exponent from t = 0 over the horizon
   (burn_in = 0: transient chaos such as MetzSGDMomentum at eta = 0.3 counts).

Decision rule (explicit, tested): among the measured candidates whose draws were all finite
(pathwise ones only when the system is differentiable and passes the gradient check), recommend
the one with the smallest MSE(C), where an estimator biased by design is ranked by the upper end
MSE(C) + 2 SE(bias2) (a bias the reference is too noisy to resolve does not win by default). Its settings: K as measured, sigma = sigma* for the ES family,
and pairs (samples for pathwise) = the power of two in [4, 1024] nearest above
var_pair / (0.25 |g*|^2), so that one estimate's noise is at most half the gradient's norm.
The Lyapunov exponent and the growth rate explain the choice; they do not make it.

    chaosgrad advise logistic_map --regime chaotic --horizon 100
    chaosgrad advise my_system.py:make --budget 2000000 --out results/mine

Three steps, one module each: `measure` (phases 1-5 within the budget -> `Measurements`),
`score` (pure: sigma*, each candidate's bias, MSE(C) and rank, the decision rule -> `Advice`),
`render` (the evidence, the terminal text, the figures); `advisor.advise` chains them, `model`
holds the constants and result types, `command` the command line.
"""
from experiments.core.resolve import load_target, parse_overrides

from .advisor import advise
from .command import COMMANDS, add_arguments, command_line, main
from .model import SIGMAS, UNBIASED, Advice, Candidate, Draws, Measurements
from .render import evidence, format_advice, plot
from .score import choose_sigma, decide, pairs_for, score_candidate

# the steps themselves are `measure.measure` and `score.score` (not re-exported: their modules
# carry the same names)
__all__ = ["Advice", "Candidate", "Draws", "Measurements", "SIGMAS", "UNBIASED", "advise",
           "score_candidate", "choose_sigma", "decide", "pairs_for", "evidence",
           "format_advice", "load_target", "parse_overrides", "plot", "command_line",
           "add_arguments", "main", "COMMANDS"]

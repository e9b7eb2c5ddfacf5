"""The advisor's settings and results: the constants of the decision rule, `Candidate` (one
measured estimator setting) and `Advice` (everything measured, the recommendation, the evidence)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["Candidate", "Advice", "Draws", "Measurements", "SIGMAS", "SIGMA_VARIANCE_FACTOR",
           "UNBIASED", "PAIRS_YARDSTICK", "DRAWS", "REF_FACTOR", "GROWTH_FRACTIONS",
           "REFERENCE_Z", "NONFINITE_SHARE"]

F64 = torch.float64
SIGMAS = (0.3, 0.1, 0.03, 0.01)
SIGMA_VARIANCE_FACTOR = 4.0  # see step 2 of the module docstring
# Unbiased for grad L_sigma by construction (same sigma as the reference): a measured bias counts
# only when significant. Every other estimator (truncated BPTT) is biased by design.
UNBIASED = ("bptt", "antithetic_es", "pes")
PAIRS_YARDSTICK = 64     # P: the compute C of one estimate is 2 P T forward steps
DRAWS = 128              # M per-pair draws per candidate when no budget is given
REF_FACTOR = 16          # reference pairs per draw M (when there is no exact_grad)
GROWTH_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1)
# The reference is resolved when |g*| > REFERENCE_Z * SE(g*) (with g* = 0 the measured |g*| is
# about SE(g*)), and when non-finite draws are at most NONFINITE_SHARE of the reference's draws
# and of the candidates' draws; otherwise every bias is noise and nothing is recommended.
REFERENCE_Z = 3.0
NONFINITE_SHARE = 0.5


@dataclass
class Candidate:
    """The measurement of one estimator setting at the user's horizon.

    ``cost_pair``: forward-step equivalents of one per-pair draw (pathwise steps times c_bwd);
    ``mse``: MSE(C) of one estimate with the compute C of `Advice.compute`.
    """

    estimator: str
    family: str                  # "pathwise" or "es"
    settings: dict
    draws: int = 0
    nonfinite: int = 0
    bias2: float = math.nan
    bias2_se: float = math.nan
    var_pair: float = math.nan
    var_pair_se: float = math.nan
    cost_pair: float = math.nan
    mse: float = math.nan
    mse_se: float = math.nan
    rank: float = math.nan       # what the decision rule minimises
    seconds: float = 0.0

    @property
    def label(self) -> str:
        """The estimator with its settings, e.g. ``pes(K = 10, sigma = 0.05, pairs = 64)``."""
        extra = ", ".join(f"{k} = {v:g}" for k, v in self.settings.items())
        return f"{self.estimator}({extra})" if extra else self.estimator

    @property
    def usable(self) -> bool:
        """Whether the candidate may be recommended: all draws finite and a finite rank."""
        return self.nonfinite == 0 and self.draws >= 2 and math.isfinite(self.rank)


@dataclass
class Advice:
    """What `advise` measured, what it recommends and why (JSON-able via `dataclasses.asdict`)."""

    system: str                          # repr of the system
    name: str                            # its registry name (or class name)
    theta: list
    horizon: int
    checks: list[str]
    differentiable: bool
    differentiable_reason: str
    blind: list = field(default_factory=list)  # coordinates autograd sees as exactly flat
    draws: int = 0
    compute: float = math.nan            # C, forward-step equivalents of one estimate
    step_seconds: float = math.nan       # forward, per trajectory-step
    backward_factor: float = math.nan    # c_bwd
    lyapunov: float | None = None        # per step, from t = 0 over the horizon
    lyapunov_se: float | None = None
    lyapunov_per_time: float | None = None
    growth: dict = field(default_factory=dict)
    sigma: float = math.nan
    sigma_grid: list = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    recommendation: dict = field(default_factory=dict)
    withheld: str = ""                   # why nothing is recommended ("" when something is)
    evidence: list[str] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)
    steps_used: int = 0
    seconds: float = 0.0


@dataclass
class Draws:
    """Per-pair full-horizon draws of one estimator setting, as `measure` took them."""

    estimator: str
    family: str                  # "pathwise" or "es"
    settings: dict               # K and/or sigma
    samples: torch.Tensor        # [M', D], the finite draws
    nonfinite: int
    steps: int                   # simulated trajectory-steps of the M draws
    seconds: float


@dataclass
class Measurements:
    """Everything `measure` observed: the input of the pure `score`.

    ``advice`` holds what was measured (no candidates, recommendation or evidence yet);
    ``candidates`` the measured estimator settings in the order they were measured; ``g`` and
    ``se_ref`` the reference gradient ``[D]`` and its standard error ``[D]``.
    """

    advice: Advice
    candidates: list[Draws] = field(default_factory=list)
    g: torch.Tensor | None = None
    se_ref: torch.Tensor | None = None

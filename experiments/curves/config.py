"""Settings of a `curves` run and their validation (names resolved, defaults filled in)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

import estimators
from estimators.resolution import check_resolution
from experiments.core.resolve import make_system, resolve_device, resolve_system, system_regimes

__all__ = ["Config", "QUICK", "DEFAULT_ESTIMATORS", "KIND", "REF_KIND", "truncation_for_horizons",
           "validate"]

DEFAULT_ESTIMATORS = ("bptt", "truncated_bptt", "antithetic_es", "truncated_es", "pes", "nres")
KIND, REF_KIND = "curves", "curves_reference"  # the store kinds of estimator and reference cells


@dataclass(frozen=True)
class Config:
    """Settings of one `run` (the default is the full, publication setting).

    Attributes:
        system: registry name (or unambiguous prefix, resolved by `validate`), or a
            ``path/to/file.py:attr`` / ``package.module:attr`` target.
        regimes: regimes of the system to run; empty means all of ``regimes``.
        overrides: ``(key, value)`` constructor overrides (``--set key=value``).
        estimators: registry names.
        horizons: the T sweep; truncations: the K sweep (at the largest T).
        sigma: perturbation scale of the smoothed target L_sigma (and of BPTT, ES, PES, NRES).
        pairs: N per estimate (what the variance and the cost refer to).
        draws: M per-pair estimates per cell (what the bias is measured with).
        ref_pairs: antithetic pairs of the reference (when there is no closed form).
        seeds: independent repeats 0..seeds-1.
        device: "auto", "cpu" or "cuda" (`validate` resolves auto).
    """

    system: str = "logistic_map"
    regimes: tuple[str, ...] = ()
    overrides: tuple[tuple[str, object], ...] = ()
    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    horizons: tuple[int, ...] = (10, 20, 40, 80, 160)
    truncations: tuple[int, ...] = (1, 2, 5, 10, 20, 40, 80, 160)
    sigma: float = 0.01
    pairs: int = 16
    draws: int = 8192
    ref_pairs: int = 1 << 20
    seeds: int = 5
    device: str = "cpu"


QUICK = Config(horizons=(8, 16, 32, 64), truncations=(2, 4, 8, 16, 32, 64), draws=2048,
               ref_pairs=1 << 17, seeds=2)


def truncation_for_horizons(cfg: Config) -> int:
    """K used by online estimators in the T sweep: the largest K dividing every horizon."""
    ks = [k for k in cfg.truncations if all(T % k == 0 for T in cfg.horizons)]
    if not ks:
        raise ValueError(f"no truncation in {list(cfg.truncations)} divides every horizon "
                         f"{list(cfg.horizons)}; add one (e.g. 1)")
    return max(ks)


def validate(cfg: Config) -> Config:
    """The config with names resolved and defaults filled in; ValueError on bad settings."""
    system = resolve_system(cfg.system)
    known = system_regimes(system)
    regimes = tuple(cfg.regimes) or tuple(known)
    for r in regimes:
        if r not in known:
            raise ValueError(f"unknown regime {r!r} of {system}; "
                             f"available: {', '.join(known)}")
    if not cfg.estimators:
        raise ValueError("no estimators given")
    for name in cfg.estimators:
        estimators.ESTIMATORS.get(name)
    for label, values in (("horizon", cfg.horizons), ("truncation", cfg.truncations)):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                             for v in values):
            raise ValueError(f"every {label} must be an integer >= 1, got {list(values)}")
    T_max = max(cfg.horizons)
    for K in cfg.truncations:
        if K > T_max:
            raise ValueError(f"truncation K={K} exceeds the largest horizon T={T_max}")
        if T_max % K:
            raise ValueError(f"truncation K={K} does not divide the horizon T={T_max} "
                             "(an episode must be a whole number of windows)")
    if not (isinstance(cfg.sigma, (int, float)) and math.isfinite(cfg.sigma) and cfg.sigma > 0):
        raise ValueError(f"sigma must be > 0 and finite, got {cfg.sigma}")
    for r in regimes:  # every cell simulates theta + sigma eps in float64: resolvable there?
        theta = make_system(system, r, dict(cfg.overrides)).init_params(dtype=torch.float64)
        check_resolution(float(cfg.sigma), theta.abs().max().item(), torch.float64)
    for label, value, low in (("pairs", cfg.pairs, 1), ("draws", cfg.draws, 2),
                              ("ref_pairs", cfg.ref_pairs, 2), ("seeds", cfg.seeds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value}")
    if cfg.draws < 2 * cfg.pairs:
        raise ValueError(f"draws ({cfg.draws}) must be at least 2 x pairs ({cfg.pairs})")
    cfg = replace(cfg, system=system, regimes=regimes, horizons=tuple(sorted(set(cfg.horizons))),
                  truncations=tuple(sorted(set(cfg.truncations))), sigma=float(cfg.sigma),
                  device=resolve_device(cfg.device))
    truncation_for_horizons(cfg)
    return cfg

"""Validation of hyper-parameters: one clear error naming the argument and the bad value.

Systems, diagnostics, estimators and strategies check their integer and scale arguments here,
so the same mistake gets the same message everywhere (and the CLI turns it into one line):

    >>> check_int("pairs", 8)
    8
    >>> check_int("pairs", 0)
    Traceback (most recent call last):
    ValueError: pairs must be >= 1, got 0
    >>> check_sigma(0.0, allow_zero=True)
    0.0

It lives in `systems`, the bottom layer, so that `estimators` (which imports `systems`) can use
it without an import going the other way.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["check_int", "check_sigma"]


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` if it is an int >= ``low``.

    Raises:
        TypeError: ``value`` is not an int (a bool or a float such as 2.0 is not).
        ValueError: ``value < low``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_sigma(sigma: Any, allow_zero: bool = False, name: str = "sigma") -> float:
    """``sigma`` as a float if it is a finite perturbation scale, > 0 (or >= 0 with ``allow_zero``).

    Raises:
        TypeError: ``sigma`` is not a real number (bools are not).
        ValueError: ``sigma`` is negative, NaN or inf, or zero without ``allow_zero``.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(sigma).__name__} {sigma!r}")
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0 or (sigma == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} and finite, got {sigma}")
    return sigma

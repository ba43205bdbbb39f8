"""Repeated measurements: their mean and a confidence interval for it. Pure functions, no I/O."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CI95_SUFFIX = "_ci95"  # ``<key>_ci95``: the half-width of the 95% interval logged beside ``<key>``


def t_interval(values, *, level: float = 0.95) -> tuple[float, float]:
    """The mean of ``n >= 2`` values and the half-width of its two-sided Student-t confidence interval.

    .. math::
        \\bar v \\pm t_{(1 + \\text{level})/2,\\; n - 1} \\, \\frac{s}{\\sqrt n}, \\qquad
        s^2 = \\frac{1}{n - 1} \\sum_i (v_i - \\bar v)^2

    The coverage is exactly ``level`` for independent draws from a normal distribution, and tends to
    it for any finite-variance distribution as ``n`` grows (central limit theorem).

    Parameters
    ----------
    values : sequence of float, shape (n,)
        Independent measurements of one quantity; with a non-finite value the half-width is NaN.
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    (float, float)
        The mean and the half-width ``t * s / sqrt(n)`` (0 when all values are equal).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {v.size}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    mean = float(v.mean())
    if not np.isfinite(v).all():
        return mean, math.nan
    quantile = float(stats.t.ppf((1 + level) / 2, df=v.size - 1))
    return mean, quantile * float(v.std(ddof=1)) / math.sqrt(v.size)

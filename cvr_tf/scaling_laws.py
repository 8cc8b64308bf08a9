"""Scaling-law fits of a metric against a resource (FLOPs, parameters, training examples).

Two least-squares fits, in pure numpy, used by the scaling study's report:

* :func:`fit_log_linear`: gain grows by a constant amount per doubling of the resource,

      y = a + b ln x,         gain per doubling = b ln 2;

  the form of "mAP gain ~ a + b log(FLOPs)" across backbones.
* :func:`fit_power_law`: the metric is a power of the resource,

      y = c x^k   <=>   ln y = ln c + k ln x   (y > 0),

  fitted in log-log space; ``k`` is the factor's scaling exponent (for mAP, the percent gain per
  percent more resource), so exponents of different factors compare directly.

Each returns the parameters, the coefficient of determination of the fitted form
(:func:`r_squared`, in the space it is fitted in) and the number of points.

Example:

    fit = fit_log_linear(flops, gains)
    fit.slope * math.log(2)     # gain per doubling of FLOPs
    fit.predict([1e6, 4e6])
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import ArrayLike


def r_squared(observed: ArrayLike, predicted: ArrayLike) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` of ``predicted`` against ``observed``.

    ``SS_res = sum (y - y_hat)^2`` and ``SS_tot = sum (y - mean y)^2``. When every observation is
    equal (``SS_tot = 0``) it is 1.0 for a perfect prediction and ``nan`` otherwise.

    Raises:
        ValueError: when the arrays differ in length or are empty.
    """
    observed = np.asarray(observed, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    if observed.shape != predicted.shape or observed.size == 0:
        raise ValueError(f"r_squared needs two non-empty arrays of one length, got "
                         f"{observed.size} observed and {predicted.size} predicted values")
    residual = float(np.sum((observed - predicted) ** 2))
    total = float(np.sum((observed - observed.mean()) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else math.nan
    return 1.0 - residual / total


@dataclasses.dataclass(frozen=True)
class LogLinearFit:
    """``y = intercept + slope * ln x``, fitted by least squares.

    Attributes:
        intercept: ``a``, the value at ``x = 1``.
        slope: ``b``, the change of ``y`` per unit of ``ln x``.
        r_squared: of the fit, in ``y``.
        points: observations fitted.
    """

    intercept: float
    slope: float
    r_squared: float
    points: int

    @property
    def per_doubling(self) -> float:
        """Change of ``y`` when ``x`` doubles: ``slope * ln 2``."""
        return self.slope * math.log(2.0)

    def predict(self, x: ArrayLike) -> np.ndarray:
        return self.intercept + self.slope * np.log(_positive("x", x))


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """``y = coefficient * x ** exponent``, fitted by least squares on ``ln y``.

    Attributes:
        coefficient: ``c``, the value at ``x = 1``.
        exponent: ``k``, the elasticity ``d ln y / d ln x``.
        r_squared: of the fit, in ``ln y``.
        points: observations fitted.
    """

    coefficient: float
    exponent: float
    r_squared: float
    points: int

    def predict(self, x: ArrayLike) -> np.ndarray:
        return self.coefficient * _positive("x", x) ** self.exponent


def _positive(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        bad = array[~(np.isfinite(array) & (array > 0))][0]
        raise ValueError(f"{name} must be finite and positive for a logarithm, got {bad}; "
                         "fit against a resource count (FLOPs, parameters, examples)")
    return array


def _line(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(intercept, slope, r^2) of the least-squares line ``y = intercept + slope * u``."""
    if u.shape != y.shape:
        raise ValueError(f"x and y differ in length: {u.size} vs {y.size}")
    if np.unique(u).size < 2:
        raise ValueError(f"a fit needs at least two distinct x values, got {np.unique(u).size}; "
                         "add cells at other scales")
    if not np.all(np.isfinite(y)):
        raise ValueError("y holds nan or inf; drop unfinished cells before fitting")
    design = np.column_stack([np.ones_like(u), u])
    (intercept, slope), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(intercept), float(slope), r_squared(y, intercept + slope * u)


def fit_log_linear(x: ArrayLike, y: ArrayLike) -> LogLinearFit:
    """Fits ``y = a + b ln x`` (see the module docstring).

    Args:
        x: positive resource values, e.g. FLOPs per example.
        y: the metric or gain at each ``x``.

    Raises:
        ValueError: on non-positive ``x``, fewer than two distinct ``x``, or non-finite ``y``.
    """
    u = np.log(_positive("x", x))
    y = np.asarray(y, dtype=np.float64).ravel()
    intercept, slope, fit_r2 = _line(u, y)
    return LogLinearFit(intercept=intercept, slope=slope, r_squared=fit_r2, points=int(u.size))


def fit_power_law(x: ArrayLike, y: ArrayLike) -> PowerLawFit:
    """Fits ``y = c x^k`` by least squares on ``ln y = ln c + k ln x``.

    Args:
        x: positive resource values.
        y: positive metric values (e.g. mAP or logloss; not a gain, which may be negative).

    Raises:
        ValueError: on non-positive ``x`` or ``y``, or fewer than two distinct ``x``.
    """
    u = np.log(_positive("x", x))
    log_y = np.log(_positive("y", y))
    log_c, exponent, fit_r2 = _line(u, log_y)
    return PowerLawFit(coefficient=math.exp(log_c), exponent=exponent, r_squared=fit_r2,
                       points=int(u.size))


__all__ = ["LogLinearFit", "PowerLawFit", "fit_log_linear", "fit_power_law", "r_squared"]

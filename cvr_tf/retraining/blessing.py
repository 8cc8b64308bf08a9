"""The blessing gate: push a candidate only if it is no worse than the model being served.

TFX's Evaluator blesses a model by thresholds on its metrics and by a change threshold against
a baseline; this is the same gate for one metric ``m`` (``--bless_metric``) with direction
``s`` (+1 when higher is better: auc, group_auc, mean_average_precision; -1 for logloss),
tolerance ``t >= 0`` (``--bless_tolerance``) and calibration bounds ``[lo, hi]``
(``--calibration_bounds``), on one holdout set scored by both models:

    computable:  m(candidate) is a finite number (not None, the value of a metric that cannot be
                 computed, and not NaN);
    calibrated:  lo <= calibration(candidate) <= hi, calibration = sum(p) / sum(y);
    no worse:    s * (m(candidate) - m(current)) >= -t, when a current model exists and its
                 m is computable (without one, the absolute checks decide alone).

The candidate is blessed when every check passes; each failed check is one reason in the
report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from cvr_tf.metrics import format_metric
from cvr_tf.validation import METRIC_DIRECTIONS

BLESS_METRICS = tuple(METRIC_DIRECTIONS)
_ROUNDING = 1e-12  # 0.705 - 0.710 is -0.00500000000000006 in floating point


@dataclasses.dataclass(frozen=True)
class Check:
    """One check of the gate: its name, whether it passed, and the numbers it compared."""

    name: str
    passed: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Decision:
    """The gate's answer: ``blessed`` and every check, failed ones giving the reasons."""

    blessed: bool
    checks: tuple[Check, ...]

    @property
    def reasons(self) -> list[str]:
        """One line per failed check (empty when blessed)."""
        return [check.detail for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"blessed": self.blessed, "reasons": self.reasons,
                "checks": [dataclasses.asdict(check) for check in self.checks]}


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is None or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def check_gate(metric: str, tolerance: float, calibration_bounds: tuple[float, float]) -> None:
    """Raises ValueError, naming the flag, for a gate that cannot decide anything sensible."""
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(f"--bless_metric={metric!r} is not one of {', '.join(BLESS_METRICS)}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"--bless_tolerance must be a finite number >= 0, got {tolerance}")
    low, high = calibration_bounds
    if not (0 < low <= 1 <= high and math.isfinite(high)):
        raise ValueError(f"--calibration_bounds={low},{high} must satisfy 0 < low <= 1 <= high "
                         "(e.g. 0.5,2.0)")


def decide(candidate: Mapping[str, Any], current: Mapping[str, Any] | None, metric: str,
           tolerance: float, calibration_bounds: tuple[float, float]) -> Decision:
    """Blesses ``candidate`` or not (see the module docstring).

    Args:
      candidate: the candidate's metrics on the holdout (:func:`cvr_tf.metrics.evaluate`).
      current: the served model's metrics on the same holdout, or None when nothing is served.
      metric: the bless metric, one of :data:`BLESS_METRICS`.
      tolerance: how much worse than ``current`` (in ``metric``'s units) still passes.
      calibration_bounds: ``(low, high)`` for the candidate's calibration.

    Returns:
      The decision with every check.
    """
    check_gate(metric, tolerance, calibration_bounds)
    value = finite(candidate.get(metric))
    checks = [Check("computable", value is not None,
                    f"candidate {metric} is {format_metric(value)}" if value is not None else
                    f"candidate {metric} cannot be computed "
                    f"({candidate.get(metric)!r} on the holdout)")]
    calibration = finite(candidate.get("calibration"))
    low, high = calibration_bounds
    calibrated = calibration is not None and low <= calibration <= high
    checks.append(Check("calibrated", calibrated,
                        f"candidate calibration {format_metric(calibration, '.3f')} "
                        f"{'within' if calibrated else 'outside'} [{low:g}, {high:g}]"))
    baseline = finite(current.get(metric)) if current is not None else None
    if value is not None and baseline is not None:
        change = METRIC_DIRECTIONS[metric] * (value - baseline)  # > 0: better
        no_worse = change >= -tolerance - _ROUNDING  # exactly the tolerance passes
        comparison = (f"better by {change:.4f}" if change >= 0 else
                      f"worse by {-change:.4f} ({'within' if no_worse else 'beyond'} "
                      f"tolerance {tolerance:g})")
        checks.append(Check("no_worse", no_worse, f"candidate {metric} {value:.4f} vs current "
                            f"{baseline:.4f}: {comparison}"))
    elif current is None:
        checks.append(Check("no_worse", True, "no current model: the absolute checks decide"))
    else:
        checks.append(Check("no_worse", True, f"current {metric} cannot be computed "
                            "on the holdout: the absolute checks decide"))
    return Decision(all(check.passed for check in checks), tuple(checks))

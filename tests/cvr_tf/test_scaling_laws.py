"""Scaling-law fits recover known parameters (cvr_tf.scaling_laws)."""

import math

import numpy as np
import pytest

from cvr_tf import scaling_laws


def test_log_linear_fit_recovers_a_and_b():
    flops = np.array([4.6e5, 9.2e5, 1.8e6, 3.8e6, 7.4e6])
    gains = -0.30 + 0.025 * np.log(flops)
    fit = scaling_laws.fit_log_linear(flops, gains)
    assert fit.intercept == pytest.approx(-0.30, abs=1e-10)
    assert fit.slope == pytest.approx(0.025, abs=1e-12)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12) and fit.points == 5
    assert fit.per_doubling == pytest.approx(0.025 * math.log(2))
    assert fit.predict([1e6]) == pytest.approx([-0.30 + 0.025 * math.log(1e6)])


def test_log_linear_fit_of_noisy_points_is_least_squares():
    fit = scaling_laws.fit_log_linear([1.0, math.e, math.e ** 2], [0.0, 2.0, 1.0])
    # Points (0, 0), (1, 2), (2, 1): slope 0.5, intercept 0.5, residuals -0.5, 1, -0.5.
    assert (fit.intercept, fit.slope) == pytest.approx((0.5, 0.5))
    assert fit.r_squared == pytest.approx(1 - 1.5 / 2.0)


def test_power_law_fit_recovers_c_and_k():
    examples = np.array([5e4, 1e5, 2e5, 4e5])
    mean_ap = 0.12 * examples ** 0.08
    fit = scaling_laws.fit_power_law(examples, mean_ap)
    assert fit.coefficient == pytest.approx(0.12, rel=1e-10)
    assert fit.exponent == pytest.approx(0.08, abs=1e-12)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12)
    assert fit.predict([8e5]) == pytest.approx([0.12 * 8e5 ** 0.08])


def test_r_squared_edge_cases():
    assert scaling_laws.r_squared([1, 2, 3], [1, 2, 3]) == 1.0
    assert scaling_laws.r_squared([1, 2, 3], [2, 2, 2]) == 0.0
    assert scaling_laws.r_squared([2, 2], [2, 2]) == 1.0
    assert math.isnan(scaling_laws.r_squared([2, 2], [1, 3]))
    with pytest.raises(ValueError, match="one length"):
        scaling_laws.r_squared([1, 2], [1])


@pytest.mark.parametrize("x, y, message", [
    ([1.0, 0.0], [1.0, 2.0], "x must be finite and positive .* got 0.0"),
    ([2.0, 2.0], [1.0, 2.0], "at least two distinct x values"),
    ([1.0, 2.0], [1.0, -1.0], "y must be finite and positive"),
])
def test_bad_inputs_say_what_is_wrong(x, y, message):
    with pytest.raises(ValueError, match=message):
        scaling_laws.fit_power_law(x, y)

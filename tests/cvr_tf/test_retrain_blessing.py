"""The blessing gate: direction-aware comparison, absolute checks, and the reasons it gives."""

import math

import pytest

from cvr_tf.retraining.blessing import check_gate, decide

BOUNDS = (0.5, 2.0)


def _metrics(**values):
    return {"auc": 0.70, "logloss": 0.30, "calibration": 1.0, **values}


def test_higher_is_better_metrics_bless_within_the_tolerance_only():
    current = _metrics(auc=0.710)
    within = decide(_metrics(auc=0.705), current, "auc", 0.005, BOUNDS)
    assert within.blessed and within.reasons == []
    beyond = decide(_metrics(auc=0.704), current, "auc", 0.005, BOUNDS)
    assert not beyond.blessed
    assert beyond.reasons == ["candidate auc 0.7040 vs current 0.7100: worse by 0.0060 (beyond "
                              "tolerance 0.005)"]
    better = decide(_metrics(auc=0.72), current, "auc", 0.0, BOUNDS)
    assert better.blessed
    assert better.checks[2].detail == "candidate auc 0.7200 vs current 0.7100: better by 0.0100"
    assert within.checks[2].detail == ("candidate auc 0.7050 vs current 0.7100: worse by 0.0050 "
                                       "(within tolerance 0.005)")


def test_logloss_is_lower_is_better():
    current = _metrics(logloss=0.300)
    assert decide(_metrics(logloss=0.290), current, "logloss", 0.0, BOUNDS).blessed
    assert decide(_metrics(logloss=0.304), current, "logloss", 0.005, BOUNDS).blessed
    worse = decide(_metrics(logloss=0.306), current, "logloss", 0.005, BOUNDS)
    assert not worse.blessed and "worse by 0.0060" in worse.reasons[0]


def test_a_metric_that_cannot_be_computed_is_never_blessed():
    for value in (None, math.nan):
        decision = decide(_metrics(group_auc=value), _metrics(group_auc=0.6), "group_auc", 1.0,
                          BOUNDS)
        assert not decision.blessed
        assert decision.reasons == [f"candidate group_auc cannot be computed ({value!r} on the "
                                    "holdout)"]


def test_calibration_must_lie_within_the_bounds():
    for calibration, blessed in ((0.5, True), (2.0, True), (0.49, False), (2.5, False),
                                 (None, False)):
        decision = decide(_metrics(calibration=calibration), None, "auc", 0.0, BOUNDS)
        assert decision.blessed is blessed
    assert decide(_metrics(calibration=2.5), None, "auc", 0.0, BOUNDS).reasons == [
        "candidate calibration 2.500 outside [0.5, 2]"]


def test_without_a_current_model_the_absolute_checks_decide():
    decision = decide(_metrics(auc=0.51), None, "auc", 0.0, BOUNDS)
    assert decision.blessed
    assert [c.name for c in decision.checks] == ["computable", "calibrated", "no_worse"]
    assert decision.to_dict()["checks"][2] == {
        "name": "no_worse", "passed": True,
        "detail": "no current model: the absolute checks decide"}


def test_every_failed_check_is_a_reason():
    decision = decide(_metrics(auc=None, calibration=9.0), _metrics(), "auc", 0.0, BOUNDS)
    assert not decision.blessed and len(decision.reasons) == 2
    assert decision.to_dict()["blessed"] is False


@pytest.mark.parametrize("metric, tolerance, bounds, message", [
    ("accuracy", 0.0, BOUNDS, "--bless_metric='accuracy' is not one of auc, group_auc"),
    ("auc", -0.1, BOUNDS, "--bless_tolerance must be a finite number >= 0, got -0.1"),
    ("auc", math.inf, BOUNDS, "--bless_tolerance must be a finite number >= 0"),
    ("auc", 0.0, (1.5, 2.0), r"--calibration_bounds=1.5,2.0 must satisfy 0 < low <= 1 <= high"),
    ("auc", 0.0, (0.0, 2.0), "--calibration_bounds=0.0,2.0"),
])
def test_a_gate_that_cannot_decide_is_refused(metric, tolerance, bounds, message):
    with pytest.raises(ValueError, match=message):
        check_gate(metric, tolerance, bounds)

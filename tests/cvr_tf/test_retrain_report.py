"""The loop's report: markdown table, metric-history plot, and the JSON that marks a day done."""

import datetime
import os

from cvr_tf.retraining import report as report_lib


def _report(day: str, candidate_auc: float, current_auc: float | None, blessed: bool) -> dict:
    current = {"auc": current_auc, "logloss": 0.2, "calibration": 1.1,
               "mean_average_precision": 0.3, "group_auc": None}
    candidate = {"auc": candidate_auc, "logloss": 0.19, "calibration": 0.9,
                 "mean_average_precision": 0.31, "group_auc": None}
    both = {"candidate": candidate, **({"current": current} if current_auc else {})}
    return {
        "date": day, "model_name": "cvr", "bless_metric": "auc",
        "decision": {"blessed": blessed, "reasons": [] if blessed else ["worse"],
                     "checks": [{"name": "no_worse", "passed": blessed, "detail": "d"}]},
        "exported_version": 3 if blessed else None,
        "candidate": {"model_dir": "/w/models/" + day, "train_start": "2026-01-01",
                      "train_end": "2026-01-07", "warm_start": "cold start"},
        "current": {"version": 2, "model_dir": "/w/models/x"} if current_auc else None,
        "holdout": {"labels": "labels mature"},
        "slices": [{"slice": "overall", "examples": 1200, "positives": 40, "metrics": both},
                   {"slice": "device=app", "examples": 200, "positives": 0,
                    "metrics": {"candidate": {"auc": None}, "current": {"auc": None}}}],
        "wall_seconds": {"train": 12.25, "total": 20.0}}


def test_markdown_gives_the_decision_and_candidate_vs_current_per_slice():
    text = report_lib.markdown(_report("2026-01-08", 0.7012, 0.7100, blessed=False))
    lines = text.splitlines()
    assert lines[0] == "# Retraining cvr for 2026-01-08"
    assert "Decision: **not blessed**: the serving base is untouched." in lines
    assert "- FAIL no_worse: d" in lines
    assert "| overall | 1,200 | 40 | 0.7012 | 0.7100 | -0.0088 (worse) |" in lines
    assert "| device=app | 200 | 0 | n/a | n/a | n/a |" in lines
    assert "| logloss | 0.1900 | 0.2000 | -0.0100 |" in lines  # lower is better: not worse
    assert "| calibration | 0.9000 | 1.1000 | -0.2000 |" in lines  # no direction
    assert lines[-1] == "Wall time: train 12.2 s, total 20.0 s."
    blessed = report_lib.markdown(_report("2026-01-08", 0.72, None, blessed=True))
    assert "Decision: **blessed**: exported as version 3." in blessed
    assert "Current: nothing served." in blessed


def test_write_report_writes_the_table_the_plot_and_the_json_last(tmp_path):
    work_dir = str(tmp_path)
    assert report_lib.read_report(work_dir, datetime.date(2026, 1, 8)) is None
    report_lib.write_report(work_dir, _report("2026-01-08", 0.70, None, blessed=True))
    report_lib.write_report(work_dir, _report("2026-01-09", 0.69, 0.70, blessed=False))
    directory = report_lib.report_dir(work_dir, datetime.date(2026, 1, 9))
    assert sorted(os.listdir(directory)) == ["bless_metric_history.png", "retrain_report.json",
                                             "retrain_report.md"]
    with open(os.path.join(directory, "bless_metric_history.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [r["date"] for r in report_lib.history(work_dir)] == ["2026-01-08", "2026-01-09"]
    assert report_lib.read_report(work_dir, datetime.date(2026, 1, 9))["exported_version"] is None
    # A day whose JSON is missing (killed before it) is not in the history.
    os.remove(os.path.join(directory, "retrain_report.json"))
    assert [r["date"] for r in report_lib.history(work_dir)] == ["2026-01-08"]

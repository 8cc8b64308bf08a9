"""The delayed-feedback experiment's view of the logs as of a day, and its table."""

import datetime
import os

from experiments import delayed_feedback


def test_logs_as_of_a_day_hide_later_conversion_partitions(tmp_path):
    logs = tmp_path / "logs"
    for kind, day in (("impressions", "2026-02-02"), ("conversions", "2026-02-02"),
                      ("conversions", "2026-02-03"), ("conversions", "2026-02-04")):
        os.makedirs(logs / kind / f"date={day}")
    view = delayed_feedback.logs_as_of(str(logs), str(tmp_path / "view"),
                                       datetime.date(2026, 2, 3))
    assert sorted(os.listdir(os.path.join(view, "conversions"))) == ["date=2026-02-02",
                                                                     "date=2026-02-03"]
    assert os.listdir(os.path.join(view, "impressions")) == ["date=2026-02-02"]
    again = delayed_feedback.logs_as_of(str(logs), view, datetime.date(2026, 2, 3))  # idempotent
    assert again == view


def test_the_table_gives_means_over_seeds_per_arm():
    rows = [{"arm": arm, "seed": seed, "training_days": days, "auc": 0.7, "logloss": 0.1,
             "calibration": 0.9 + seed / 10, "calibration_vs_truth": 0.8,
             "rank_correlation": 0.5, "kl_to_truth": 0.004}
            for arm, days in (("exclude", 7), ("as_observed", 10)) for seed in (0, 1)]
    assert delayed_feedback.markdown_table(rows).splitlines()[2:] == [
        "| exclude | 7 | 0.7000 | 0.1000 | 0.950 | 0.800 | 0.5000 | 4.000 |",
        "| as_observed | 10 | 0.7000 | 0.1000 | 0.950 | 0.800 | 0.5000 | 4.000 |"]

"""The demo's last step: the next day's logs arrive and the retraining loop runs once.

``make demo`` serves version 1, trained on the first 13 days and tested on day 14. Here day 15
is simulated and :func:`cvr_tf.retraining.loop.retrain` runs for it as the daily job would:
it builds day 15's span, trains a candidate on the 7 days before it warm-started from the
served model, scores candidate and served model on day 15 by slice, and exports version 2 only
if the blessing gate passes. The demo prints the day's report.
"""

from __future__ import annotations

import datetime
import os

from cvr_tf.retraining import loop
from cvr_tf.retraining.config import RetrainConfig, training_template
from cvr_tf.retraining.report import REPORT_MARKDOWN, report_dir
from pipelines.simulate import simulate_logs

TRAIN_DAYS = 7
BLESS_TOLERANCE = 0.002  # AUC points: about the seed spread of a day's holdout AUC


def retraining_step(workdir: str, first_day: datetime.date, days: int, requests_per_day: int,
                    candidates: int, seed: int) -> dict:
    """Simulates the day after the demo's ``days`` and runs the loop for it; returns the report.

    Args:
      workdir: the demo's working directory (``logs/``, ``spans/``, ``export/`` in it; the loop
        writes ``retrain/``).
      first_day: the demo's first simulated day.
      days: days the demo simulated; day ``days + 1`` is the new one.
      requests_per_day: search requests of the new day.
      candidates: candidates per request.
      seed: training seed of the candidate.
    """
    logs = os.path.join(workdir, "logs")
    new_day = first_day + datetime.timedelta(days=days)
    if not os.path.isdir(os.path.join(logs, "impressions", f"date={new_day}")):
        # overwrite: the events of a run interrupted before its impressions (same bytes again)
        simulate_logs(logs, new_day, 1, requests_per_day, candidates, overwrite=True)
    config = RetrainConfig(
        logs=logs, work_dir=os.path.join(workdir, "retrain"),
        export_base=os.path.join(workdir, "export"), date=new_day, train_days=TRAIN_DAYS,
        bless_tolerance=BLESS_TOLERANCE,
        training=training_template(os.path.join(workdir, "spans"), epochs=1, seed=seed,
                                   log_every_steps=250))
    report = loop.retrain(config)
    with open(os.path.join(report_dir(config.work_dir, new_day), REPORT_MARKDOWN),
              encoding="utf-8") as handle:
        print(handle.read())
    return report

"""The daily retraining loop: ``python -m cvr_tf.retrain --date=YYYY-MM-DD [--flagfile=...]``.

Builds the missing spans through ``--date``, trains a candidate on the ``--train_days`` before
it (warm-started from the served model), scores candidate and served model on ``--date``,
exports the candidate only if the blessing gate passes, and writes
``<work_dir>/reports/<date>/retrain_report.{json,md}``. Example::

    python -m cvr_tf.retrain --logs=/data/logs --data_dir=/data/spans --work_dir=/data/retrain \\
        --export_base=/serving --date=2026-01-19 --train_days=7 --steps=400 \\
        --bless_metric=auc --bless_tolerance=0.002 --calibration_bounds=0.5,2.0

Every field of :class:`cvr_tf.retraining.config.RetrainConfig` is a flag, and so is every
field of the training job's ``TrainConfig`` but the ones the loop sets per day. Run it once a
day (cron, Airflow); rerunning a finished day does nothing. The logic is
:func:`cvr_tf.retraining.loop.retrain`.
"""

from __future__ import annotations

import datetime
import json

from absl import app, flags

from cvr_tf import config_flags, job
from cvr_tf.retraining.config import PER_DAY_FIELDS, RetrainConfig, training_template
from cvr_tf.retraining.loop import RetrainError, retrain

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The job's flags: :class:`RetrainConfig`'s and the training job's, and ``--date``."""
    config_flags.define_flags(RetrainConfig, skip=("date", *PER_DAY_FIELDS),
                              flag_values=flag_values)
    flags.DEFINE_string("date", None, "The holdout day, YYYY-MM-DD: spans are built through it "
                        "and the candidate trains on the --train_days before it.",
                        flag_values=flag_values)
    flags.mark_flags_as_required(["logs", "work_dir", "export_base", "data_dir", "date"],
                                 flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> RetrainConfig:
    """The :class:`RetrainConfig` the parsed flags describe."""
    text = flag_values["date"].value
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise app.UsageError(f"--date={text!r} is not a date; use YYYY-MM-DD") from None
    template = training_template("")  # the per-day fields' placeholders
    placeholders = {k: getattr(template, k) for k in PER_DAY_FIELDS}
    return config_flags.build(RetrainConfig, flag_values, date=day, **placeholders)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        report = retrain(config_from_flags())
    except RetrainError as error:
        raise app.UsageError(str(error)) from error
    print(json.dumps({"date": report["date"], **report["decision"],
                      "exported_version": report["exported_version"]}, indent=2))


if __name__ == "__main__":
    define_flags()
    job.run(main)

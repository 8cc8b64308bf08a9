"""Training job: ``python -m cvr_tf.train --data_dir=... --model_dir=... [--flagfile=...]``.

Trains a CVR model on a window of the pipeline's spans, evaluates it on a later window and
writes checkpoints, TensorBoard logs and ``metrics.json`` to ``--model_dir``. Killed and started
again with the same flags, it resumes from its last backup. Example::

    python -m cvr_tf.train --data_dir=/data/spans --model_dir=/models/dcnv2 \\
        --train_end=2026-03-31 --train_days=28 --eval_start=2026-04-01 --eval_end=2026-04-07 \\
        --backbone=dcnv2 --backbone_scale=1 --embedding_dim_scale=1 --batch_size=1024

Every field of :class:`cvr_tf.training.TrainConfig` (and its ``ModelConfig``) is a flag of the
same name and help text; only the window flags are defined here. The logic is
:func:`cvr_tf.training.train`.
"""

from __future__ import annotations

import datetime
import json

from absl import app, flags

from cvr_tf import config_flags, distribute, job, training

_WINDOW = ("train_start", "train_end", "eval_start", "eval_end")

FLAGS = flags.FLAGS
config_flags.define_flags(training.TrainConfig, skip=_WINDOW)
flags.adopt_module_key_flags(config_flags)  # --helpshort lists them as this job's flags
flags.DEFINE_string("train_start", None, "First training day, YYYY-MM-DD.")
flags.DEFINE_string("train_end", None, "Last training day (inclusive), YYYY-MM-DD.")
flags.DEFINE_integer("train_days", None, "Training window length counted back from --train_end; "
                     "instead of --train_start.")
flags.DEFINE_string("eval_start", None, "First eval day; default the day after --train_end.")
flags.DEFINE_string("eval_end", None, "Last eval day (inclusive); default --eval_start.")
flags.mark_flags_as_required(["data_dir", "model_dir", "train_end"])


def _date(flag: str, value: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(value)
    except ValueError as error:
        raise app.UsageError(f"--{flag}={value!r} is not a date; use YYYY-MM-DD") from error


def config_from_flags() -> training.TrainConfig:
    """The :class:`~cvr_tf.training.TrainConfig` the flags describe."""
    train_end = _date("train_end", FLAGS.train_end)
    if (FLAGS.train_start is None) == (FLAGS.train_days is None):
        raise app.UsageError("give exactly one of --train_start and --train_days")
    if FLAGS.train_days is not None:
        if FLAGS.train_days <= 0:
            raise app.UsageError(f"--train_days must be positive, got {FLAGS.train_days}")
        train_start = train_end - datetime.timedelta(days=FLAGS.train_days - 1)
    else:
        train_start = _date("train_start", FLAGS.train_start)
    eval_start = (_date("eval_start", FLAGS.eval_start) if FLAGS.eval_start
                  else train_end + datetime.timedelta(days=1))
    eval_end = _date("eval_end", FLAGS.eval_end) if FLAGS.eval_end else eval_start
    return config_flags.build(training.TrainConfig, FLAGS, train_start=train_start,
                              train_end=train_end, eval_start=eval_start, eval_end=eval_end)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if distribute.is_server_task():
        distribute.serve_cluster_task()
        return
    config = config_from_flags()
    try:  # train() checks the config (check_config) before any work
        record = training.train(config)
    except training.ConfigError as error:
        raise app.UsageError(str(error)) from error
    print(json.dumps(record["eval"], indent=2, sort_keys=True))


if __name__ == "__main__":
    job.run(main)

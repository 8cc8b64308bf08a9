"""Training job: ``python -m cvr_tf.train --data_dir=... --model_dir=... [--flagfile=...]``.

Trains a CVR model on a window of the pipeline's spans, evaluates it on a later window and
writes checkpoints, TensorBoard logs and ``metrics.json`` to ``--model_dir``. Killed and started
again with the same flags, it resumes from its last backup. Example::

    python -m cvr_tf.train --data_dir=/data/spans --model_dir=/models/dcnv2 \\
        --train_end=2026-03-31 --train_days=28 --eval_start=2026-04-01 --eval_end=2026-04-07 \\
        --backbone=dcnv2 --backbone_scale=1 --embedding_dim_scale=1 --batch_size=1024

Flags here only; the logic is :func:`cvr_tf.training.train`.
"""

from __future__ import annotations

import datetime
import json

from absl import app, flags

from cvr_tf import distribute, training
from cvr_tf.model import ModelConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "The pipeline's output directory (spans, vocabularies).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and metrics.json go.")
flags.DEFINE_string("train_start", None, "First training day, YYYY-MM-DD.")
flags.DEFINE_string("train_end", None, "Last training day (inclusive), YYYY-MM-DD.")
flags.DEFINE_integer("train_days", None, "Training window length counted back from --train_end; "
                     "instead of --train_start.")
flags.DEFINE_string("eval_start", None, "First eval day; default the day after --train_end.")
flags.DEFINE_string("eval_end", None, "Last eval day (inclusive); default --eval_start.")
flags.DEFINE_string("feature_spec", "", "Feature spec JSON/YAML; empty for the default spec.")
flags.DEFINE_string("backbone", "dcnv2", "mlp, dcnv2, masknet, dhen, ensemble, ensemble:a+b.")
flags.DEFINE_float("backbone_scale", 1.0, "The backbone's scaling knob (see cvr_tf.backbones).")
flags.DEFINE_float("embedding_dim_scale", 1.0, "Multiplies every embedding dim.")
flags.DEFINE_float("vocab_scale", 1.0, "Multiplies every vocabulary cap and hash-bucket count.")
flags.DEFINE_enum("loss", "logloss", ["logloss", "listwise_softmax"], "Training loss.")
flags.DEFINE_bool("position_debiasing", True, "Add the train_only bias tower's logit in training.")
flags.DEFINE_integer("batch_size", 1024, "Global batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("epochs", 1, "Passes over the training window (unless --steps).")
flags.DEFINE_integer("steps", None, "Total training steps; overrides --epochs.")
flags.DEFINE_integer("checkpoint_every_steps", 200, "Backup period, for resuming after a kill.")
flags.DEFINE_integer("log_every_steps", 100, "Progress line period.")
flags.DEFINE_string("warm_start_from", "", "A previous model dir to initialize from.")
flags.DEFINE_enum("strategy", "auto", list(distribute.STRATEGIES),
                  "tf.distribute strategy; the cluster comes from TF_CONFIG.")
flags.DEFINE_integer("seed", 0, "Seed of initialization and shuffling.")
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
    return training.TrainConfig(
        data_dir=FLAGS.data_dir, model_dir=FLAGS.model_dir, train_start=train_start,
        train_end=train_end, eval_start=eval_start, eval_end=eval_end,
        feature_spec=FLAGS.feature_spec,
        model=ModelConfig(backbone=FLAGS.backbone, backbone_scale=FLAGS.backbone_scale,
                          embedding_dim_scale=FLAGS.embedding_dim_scale,
                          vocab_scale=FLAGS.vocab_scale, loss=FLAGS.loss,
                          position_debiasing=FLAGS.position_debiasing),
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, epochs=FLAGS.epochs,
        steps=FLAGS.steps, checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        log_every_steps=FLAGS.log_every_steps, warm_start_from=FLAGS.warm_start_from,
        strategy=FLAGS.strategy, seed=FLAGS.seed)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if distribute.is_server_task():
        distribute.serve_cluster_task()
        return
    config = config_from_flags()
    try:
        training.check_config(config)
    except training.ConfigError as error:
        raise app.UsageError(str(error)) from error
    record = training.train(config)
    print(json.dumps(record["eval"], indent=2, sort_keys=True))


if __name__ == "__main__":
    app.run(main)

"""Training and evaluation runs: the logic behind ``python -m cvr_tf.train``.

:func:`train` takes a :class:`TrainConfig`, checks it before any work (:func:`check_config`),
builds the model under the chosen ``tf.distribute`` strategy, optionally warm-starts it, trains
with Keras ``fit`` (resumable after a kill through ``BackupAndRestore``), saves the final
checkpoint and evaluates the served scores on the eval window. Experiments call it directly.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import shutil
import time
from typing import Any

import numpy as np
from absl import logging

from cvr_tf import distribute
from cvr_tf import input as input_lib
from cvr_tf import metrics as metrics_lib
from cvr_tf import model_dir as model_dir_lib
from cvr_tf import warm_start as warm_start_lib
from cvr_tf.backbones import build_backbone
from cvr_tf.callbacks import PeriodicEvaluation, ProgressLogger, RaiseOnNaN
from cvr_tf.compat import keras, tf
from cvr_tf.distribute import EpochEndBatchHooks, embedding_table_devices, make_strategy
from cvr_tf.features import FeatureSpec, FeatureSpecError
from cvr_tf.model import CVRModel, ModelConfig
from cvr_tf.request_batches import GROUP_BATCHES, groups_requests
from cvr_tf.span_spec import spec_for_training
from cvr_tf.vocabulary import window_vocabularies


class ConfigError(ValueError):
    """A training config that cannot run; the message names the flag and the fix."""


def _field(default: Any, help_text: str, **metadata: Any) -> Any:
    """A config field whose help text is its training-job flag's help (cvr_tf.config_flags)."""
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs: the training job's flags, one per field.

    Each field's ``metadata["help"]`` is its flag's help text (``python -m cvr_tf.train
    --helpfull``). The four window days are dates here and ``YYYY-MM-DD`` flags in the job; the
    eval window must not overlap the training window.
    """

    data_dir: str = dataclasses.field(metadata={
        "help": "The pipeline's output directory (spans, vocabularies)."})
    model_dir: str = dataclasses.field(metadata={
        "help": "Where checkpoints, logs and metrics.json go."})
    train_start: datetime.date
    train_end: datetime.date
    eval_start: datetime.date
    eval_end: datetime.date
    feature_spec: str = _field("", "Feature spec JSON/YAML; empty for the default spec.")
    model: ModelConfig = ModelConfig()
    batch_size: int = _field(1024, "Global batch size.")
    learning_rate: float = _field(1e-3, "Adam learning rate.")
    epochs: int = _field(1, "Passes over the training window (unless --steps).")
    steps: int | None = _field(None, "Total training steps; overrides --epochs. With --continue, "
                               "the new total, beyond the model dir's last step.")
    checkpoint_every_steps: int = _field(200, "Backup period, for resuming after a kill.")
    log_every_steps: int = _field(100, "Progress line period.")
    warm_start_from: str = _field("", "A previous model dir to initialize from.")
    strategy: str = _field("auto", "tf.distribute strategy; the cluster comes from TF_CONFIG.",
                           choices=distribute.STRATEGIES)
    seed: int = _field(0, "Seed of initialization and shuffling.")
    group_batches: str = _field(
        "auto", "Training batches of whole requests, shuffled by request "
        "(cvr_tf.request_batches): auto = for listwise losses only.",
        choices=GROUP_BATCHES)
    eval_batch_size: int = _field(8192, "Batch size of the evaluation pass.")
    eval_every_steps: int = _field(0, "Also evaluate every this many steps and record the "
                                   "learning curve in metrics.json (eval_curve); 0 evaluates "
                                   "only at the end.")
    overwrite: bool = _field(False, "Wipe a finished --model_dir and train it again.")
    continue_training: bool = _field(False, "Train a finished --model_dir further, from its "
                                     "last checkpoint to --steps (or --epochs) in total.",
                                     flag="continue")

    def to_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        return json.loads(json.dumps(record, default=str))


def check_config(config: TrainConfig) -> tuple[list[str], list[str]]:
    """Fails fast, before any work, on a config that cannot run; returns (train, eval) spans."""
    if config.train_end < config.train_start:
        raise ConfigError(f"--train_end {config.train_end} is before --train_start "
                          f"{config.train_start}")
    if config.eval_end < config.eval_start:
        raise ConfigError(f"--eval_end {config.eval_end} is before --eval_start "
                          f"{config.eval_start}")
    if config.eval_start <= config.train_end and config.train_start <= config.eval_end:
        raise ConfigError(
            f"eval window {config.eval_start}..{config.eval_end} overlaps training window "
            f"{config.train_start}..{config.train_end}; evaluate on later days "
            f"(e.g. --eval_start={config.train_end + datetime.timedelta(days=1)})")
    for flag, value in (("batch_size", config.batch_size), ("epochs", config.epochs),
                        ("checkpoint_every_steps", config.checkpoint_every_steps),
                        ("log_every_steps", config.log_every_steps)):
        if value <= 0:
            raise ConfigError(f"--{flag} must be positive, got {value}")
    if config.eval_every_steps < 0:
        raise ConfigError(f"--eval_every_steps must be >= 0, got {config.eval_every_steps}")
    if config.steps is not None and config.steps <= 0:
        raise ConfigError(f"--steps must be positive, got {config.steps}")
    if not config.learning_rate > 0:
        raise ConfigError(f"--learning_rate must be positive, got {config.learning_rate}")
    _check_model_dir(config)
    try:
        build_backbone(config.model.backbone, input_dim=8, field_dims=[8],
                       scale=config.model.backbone_scale)
    except ValueError as error:
        raise ConfigError(f"--backbone/--backbone_scale: {error}") from error
    if config.warm_start_from and not model_dir_lib.has_model_definition(config.warm_start_from):
        raise ConfigError(f"--warm_start_from={config.warm_start_from} is not a cvr_tf model dir "
                          f"(no {model_dir_lib.MODEL_CONFIG})")
    spans = []
    for name, start, end in (("training", config.train_start, config.train_end),
                             ("eval", config.eval_start, config.eval_end)):
        try:
            spans.append(input_lib.list_spans(config.data_dir, start, end))
        except FileNotFoundError as error:
            raise ConfigError(f"{name} window: {error}") from error
    return spans[0], spans[1]


def _check_model_dir(config: TrainConfig) -> None:
    """A finished model dir is trained again only when --overwrite or --continue says how."""
    model_dir = config.model_dir
    if config.overwrite and config.continue_training:
        raise ConfigError("give at most one of --overwrite (wipe and retrain) and --continue "
                          "(train further)")
    if config.continue_training:
        if model_dir_lib.latest_checkpoint(model_dir) is None:
            raise ConfigError(f"--continue: {model_dir} has no checkpoint to continue from; drop "
                              "--continue to train it from scratch")
        if config.warm_start_from:
            raise ConfigError("--continue trains the model dir's own weights further; drop "
                              "--warm_start_from (or --continue)")
    elif model_dir_lib.is_finished(model_dir) and not config.overwrite:
        raise ConfigError(f"--model_dir={model_dir} holds a finished run "
                          f"({model_dir_lib.METRICS}); pass --overwrite to wipe and retrain it, "
                          "--continue to train it further, or pick a new --model_dir")
    if (config.overwrite and os.path.isdir(model_dir) and os.listdir(model_dir)
            and not model_dir_lib.has_model_definition(model_dir)):
        raise ConfigError(f"--overwrite would wipe {model_dir}, which is not a cvr_tf model dir "
                          f"(no {model_dir_lib.MODEL_CONFIG}); pick another --model_dir")


def count_examples(spans: list[str], split: str) -> int:
    """Examples in the ``split`` shards of ``spans``, from each span's ``stats.json``."""
    total = 0
    for span in spans:
        stats_path = os.path.join(span, "stats.json")
        with open(stats_path, encoding="utf-8") as handle:
            stats = json.load(handle)
        key = f"{split}_rows"
        if key not in stats.get("rows", {}):
            raise KeyError(f"{stats_path} has no rows.{key}; rebuild the span with "
                           "pipelines.build_tfrecords --overwrite")
        total += int(stats["rows"][key])
    return total


def predict_served(model: CVRModel, dataset: tf.data.Dataset, spec: FeatureSpec
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, served probabilities, request keys) over a dataset of parsed columns."""
    columns = spec.column_dtypes(train_only=False)
    labels, probabilities, groups = [], [], []
    for batch in dataset:
        probabilities.append(model.served_probabilities({c: batch[c] for c in columns}).numpy())
        labels.append(batch[spec.label].numpy())
        groups.append(batch[spec.group_key].numpy())
    if not labels:
        raise ValueError("the eval dataset is empty")
    return np.concatenate(labels), np.concatenate(probabilities), np.concatenate(groups)


def evaluate_window(model: CVRModel, data_dir: str, start: datetime.date, end: datetime.date,
                    spec: FeatureSpec, batch_size: int = 8192) -> dict[str, float | None]:
    """Metrics of the served scores over every split of the spans of ``start..end``."""
    datasets = [input_lib.make_dataset(data_dir, start, end, spec, split=split,
                                       batch_size=batch_size, shuffle=False)
                for split in input_lib.SPLITS]
    dataset = datasets[0].concatenate(datasets[1])
    labels, probabilities, groups = predict_served(model, dataset, spec)
    return metrics_lib.evaluate(labels, probabilities, groups)


def _train_dataset(config: TrainConfig, spec: FeatureSpec, strategy: tf.distribute.Strategy
                   ) -> Any:
    def dataset_fn(context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        batch_size = config.batch_size
        return input_lib.make_dataset(
            config.data_dir, config.train_start, config.train_end, spec, split="train",
            batch_size=(context.get_per_replica_batch_size(batch_size) if context else batch_size),
            shuffle=True, num_epochs=None, seed=config.seed, drop_remainder=True,
            num_input_pipelines=context.num_input_pipelines if context else 1,
            input_pipeline_id=context.input_pipeline_id if context else 0,
            group_by_request=groups_requests(config.group_batches, config.model.loss))

    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        return keras.utils.experimental.DatasetCreator(dataset_fn)
    return dataset_fn()


def _model_definition(config: TrainConfig, spec: FeatureSpec
                      ) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(scaled spec dict, vocabularies): the model dir's when resuming, else built anew.

    New vocabularies come from the training window only, so they never see eval days.
    """
    if model_dir_lib.has_model_definition(config.model_dir):
        spec_dict, recorded, vocabularies = model_dir_lib.read_model_definition(config.model_dir)
        if recorded != config.model:
            raise ConfigError(
                f"{config.model_dir} holds a model with {recorded}, not {config.model}; pick a "
                "new --model_dir, or --warm_start_from the old one")
        return spec_dict, vocabularies
    scaled = spec.scaled(embedding_dim_scale=config.model.embedding_dim_scale,
                         vocab_scale=config.model.vocab_scale)
    vocabularies = window_vocabularies(config.data_dir, spec, config.train_start, config.train_end)
    return scaled.to_dict(), scaled.cut_vocabularies(vocabularies)


def train(config: TrainConfig) -> dict[str, Any]:
    """Runs training and evaluation; writes the model dir; returns what ``metrics.json`` holds."""
    train_spans, _ = check_config(config)
    try:
        spec = spec_for_training(config.data_dir, config.feature_spec, config.train_start,
                                 config.train_end)
    except FeatureSpecError as error:
        raise ConfigError(f"--feature_spec={config.feature_spec}: {error}") from error
    model_dir = config.model_dir
    started = time.time()
    train_rows = count_examples(train_spans, "train")
    first_step = (_checkpoint_step(model_dir_lib.latest_checkpoint(model_dir))
                  if config.continue_training else 0)
    total_steps, steps_per_epoch = _schedule(config, train_rows, first_step)
    strategy = make_strategy(config.strategy)
    is_chief = _is_chief(strategy)
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        # Callbacks run at epoch ends only: end an epoch at every logging and evaluation step.
        steps_per_epoch = math.gcd(total_steps - first_step, first_step,
                                   config.log_every_steps, config.eval_every_steps)
    if config.overwrite and is_chief:
        logging.info("--overwrite: wiping %s", model_dir)
        shutil.rmtree(model_dir, ignore_errors=True)
    os.makedirs(model_dir, exist_ok=True)

    source = None
    if config.warm_start_from:
        source = warm_start_lib.read_source_weights(config.warm_start_from)
    else:
        keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    spec_dict, vocabularies = _model_definition(config, spec)
    with strategy.scope():
        model = model_dir_lib.build_from_definition(spec_dict, config.model, vocabularies)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      metrics=[keras.metrics.AUC(name="auc")])
    warm_report = None
    if source is not None:
        warm_report = warm_start_lib.warm_start(model, source)
    if is_chief:
        model_dir_lib.save_model_definition(model_dir, model)
        model_dir_lib.write_json(model_dir_lib.path(model_dir, model_dir_lib.RUN_CONFIG),
                                 config.to_record())
        if warm_report is not None:
            model_dir_lib.write_json(model_dir_lib.path(model_dir, model_dir_lib.WARM_START),
                                     warm_report.to_dict())
    table_devices = embedding_table_devices(model)
    logging.debug("Embedding tables on: %s", table_devices)
    logging.info("Model: backbone %s x%s, %d embedding + %d dense params, %d dense FLOPs/example; "
                 "%d steps of %d (%d training examples).", config.model.backbone,
                 config.model.backbone_scale, model.embedding_parameter_count,
                 model.dense_parameter_count, model.dense_flops_per_example, total_steps,
                 config.batch_size, train_rows)

    evaluate = functools.partial(evaluate_window, model, config.data_dir, config.eval_start,
                                 config.eval_end, spec, config.eval_batch_size)
    progress = ProgressLogger(total_steps, config.batch_size, config.log_every_steps)
    curve = PeriodicEvaluation(config.eval_every_steps, total_steps, evaluate)
    resumed_from_step = _fit(model, config, spec, strategy, is_chief, first_step, total_steps,
                             steps_per_epoch, [progress, curve] if config.eval_every_steps
                             else [progress])
    train_seconds = time.time() - started
    # The curve's last point is the final evaluation when periodic evaluation ran.
    eval_metrics = ({k: v for k, v in curve.curve[-1].items() if k not in PeriodicEvaluation.KEYS}
                    if curve.curve else evaluate())
    record = {
        "eval": eval_metrics,
        "train_steps": total_steps,
        "train_examples": total_steps * config.batch_size,
        "train_examples_per_second": progress.examples_per_second,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - started,
        "embedding_params": model.embedding_parameter_count,
        "dense_params": model.dense_parameter_count,
        "dense_flops_per_example": model.dense_flops_per_example,
        "embedding_table_devices": table_devices,
        "config": config.to_record(),
        "warm_start": warm_report.to_dict() if warm_report else None,
        "eval_curve": curve.curve,
        "resumed_from_step": resumed_from_step,
    }
    if is_chief:
        model_dir_lib.write_json(model_dir_lib.path(model_dir, model_dir_lib.METRICS), record)
    logging.info("Eval %s..%s: %s", config.eval_start, config.eval_end,
                 {k: v if v is None else round(v, 5) for k, v in eval_metrics.items()})
    return record


def _checkpoint_step(checkpoint_path: str) -> int:
    return int(checkpoint_path.rsplit("-", 1)[1])


def _schedule(config: TrainConfig, train_rows: int, first_step: int) -> tuple[int, int]:
    """(total steps, steps per epoch) of a run from ``first_step``, whole epochs of Keras ``fit``.

    The steps to train, ``--steps`` (or ``--epochs`` passes) minus ``first_step``, are cut into
    ``e = ceil(n / s)`` epochs of ``ceil(n / e)`` steps, ``s`` the steps of one pass.

    Raises:
      ConfigError: a ``--continue`` run whose model dir is at or beyond that total already.
    """
    pass_steps = max(1, train_rows // config.batch_size)
    remaining = (config.steps or pass_steps * config.epochs) - first_step
    if remaining <= 0:
        raise ConfigError(f"--continue: {config.model_dir} is at step {first_step} already; set "
                          f"--steps above {first_step} (the new total)")
    epochs = math.ceil(remaining / pass_steps)
    steps_per_epoch = math.ceil(remaining / epochs)
    return first_step + steps_per_epoch * epochs, steps_per_epoch


def _fit(model: CVRModel, config: TrainConfig, spec: FeatureSpec,
         strategy: tf.distribute.Strategy, is_chief: bool, first_step: int, total_steps: int,
         steps_per_epoch: int, callbacks: list[keras.callbacks.Callback]) -> int:
    """Trains from ``first_step`` to ``total_steps``, saves the final checkpoint; returns the
    step training began at.

    A kill mid-run is resumed from ``backup/`` by Keras's BackupAndRestore. A run whose final
    checkpoint exists already is restored from it instead of trained again; a ``--continue`` run
    starts from the model dir's last checkpoint (model and optimizer, so its step too).
    """
    model_dir = config.model_dir
    manager = tf.train.CheckpointManager(
        model_dir_lib.checkpoint(model, model.optimizer),
        model_dir_lib.path(model_dir, model_dir_lib.CHECKPOINT_DIR) if is_chief
        else os.path.join(model_dir, f".worker-{strategy.cluster_resolver.task_id}"),
        max_to_keep=2)
    latest = manager.latest_checkpoint
    if latest is not None and _checkpoint_step(latest) >= total_steps:
        logging.info("%s already holds the final checkpoint %s; evaluating only.", model_dir,
                     latest)
        manager.checkpoint.restore(latest).expect_partial()
        return total_steps
    if first_step:
        manager.checkpoint.restore(latest).assert_existing_objects_matched()
    progress = next(c for c in callbacks if isinstance(c, ProgressLogger))
    step_callbacks = [RaiseOnNaN(), *callbacks]
    # Under ParameterServerStrategy, Keras runs callbacks between epochs only (see
    # EpochEndBatchHooks): back up and log at epoch ends there.
    parameter_server = isinstance(strategy, tf.distribute.ParameterServerStrategy)
    callbacks = [
        keras.callbacks.BackupAndRestore(
            model_dir_lib.path(model_dir, model_dir_lib.BACKUP_DIR),
            save_freq="epoch" if parameter_server else config.checkpoint_every_steps),
        keras.callbacks.TensorBoard(
            model_dir_lib.path(model_dir, model_dir_lib.LOG_DIR),
            update_freq="epoch" if parameter_server else config.log_every_steps),
        *([EpochEndBatchHooks(step_callbacks, steps_per_epoch)] if parameter_server
          else step_callbacks),
    ]
    model.fit(_train_dataset(config, spec, strategy),
              epochs=(total_steps - first_step) // steps_per_epoch,
              steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=0)
    manager.save(checkpoint_number=total_steps)
    if is_chief:  # the final checkpoint supersedes the in-flight backup
        shutil.rmtree(model_dir_lib.path(model_dir, model_dir_lib.BACKUP_DIR), ignore_errors=True)
    return progress.first_step


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())

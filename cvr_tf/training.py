"""Training and evaluation runs: the logic behind ``python -m cvr_tf.train``.

:func:`train` takes a :class:`TrainConfig`, checks it before any work (:func:`check_config`),
builds the model under the chosen ``tf.distribute`` strategy with its dense and embedding
optimizers (:mod:`cvr_tf.optimization`), optionally warm-starts it, and trains with Keras
``fit``, validating on the training window's held-out ``eval`` split (:mod:`cvr_tf.validation`)
and backing up so that a killed run resumes exactly (:mod:`cvr_tf.resume`). It then restores the
best validated checkpoint, saves it as the final one and evaluates the served scores on the test
window (``--eval_start..--eval_end``). Experiments call it directly.

Training spans whose labels are not fully observed yet are refused unless
``--delayed_feedback`` says how to treat them (:mod:`cvr_tf.delayed_feedback`). A multi-task
model (``--tasks``, :mod:`cvr_tf.tasks`) is validated and tested per task; its
``--early_stopping_task`` selects the checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import shutil
import time
from typing import Any

from absl import logging

from cvr_tf import delayed_feedback, distribute
from cvr_tf import input as input_lib
from cvr_tf import model_dir as model_dir_lib
from cvr_tf import warm_start as warm_start_lib
from cvr_tf.backbones import build_backbone
from cvr_tf.callbacks import ProgressLogger
from cvr_tf.compat import keras, tf
from cvr_tf.distribute import embedding_table_devices, make_strategy
from cvr_tf.evaluation import count_examples, evaluate_window, rejected_rows, split_rows
from cvr_tf.features import FeatureSpec, FeatureSpecError
from cvr_tf.model import ModelConfig
from cvr_tf.optimization import OptimizerConfig, exempt_from_decay, make_optimizers
from cvr_tf.request_batches import GROUP_BATCHES
from cvr_tf.resolve import resolve_for_window
from cvr_tf.span_spec import spec_for_training
from cvr_tf.tasks import TaskSet, parse_tasks, split_options
from cvr_tf.training_loop import TrainingLoop
from cvr_tf.validation import SELECTION_METRICS, ValidationMonitor


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
    eval window (the test set) must not overlap the training window; the validation set is
    the training window's held-out ``eval`` split.
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
    optimization: OptimizerConfig = OptimizerConfig()
    batch_size: int = _field(1024, "Global batch size.")
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
    eval_every_steps: int = _field(0, "Validate every this many steps (and at the end) on the "
                                   "training window's held-out eval split; 0: once per pass "
                                   "over the training window.")
    early_stopping_metric: str = _field(
        "auc", "Validation metric that selects the checkpoint restored at the end and drives "
        "early stopping; none: keep the last weights.", choices=SELECTION_METRICS)
    early_stopping_patience: int = _field(
        2, "Stop after this many validations in a row without improvement; 0: never stop "
        "early (the best checkpoint is still restored).")
    overwrite: bool = _field(False, "Wipe a finished --model_dir and train it again.")
    continue_training: bool = _field(False, "Train a finished --model_dir further, from its "
                                     "last checkpoint to --steps (or --epochs) in total.",
                                     flag="continue")
    early_stopping_task: str = _field(
        "", "Multi-task models (--tasks): the evaluation whose --early_stopping_metric selects "
        "the restored checkpoint and drives early stopping, a task of --tasks or "
        "cvr_on_clicks (pCVR on clicked impressions); empty: the last task of --tasks.")
    delayed_feedback: str = _field(
        "none", "Training spans with immature labels (events still arriving, see "
        "cvr_tf.delayed_feedback): none refuses them; exclude trains without them; "
        "as_observed trains on their labels as they are; fake_negative_weighting trains on "
        "them with Ktena et al.'s (2019) importance weights.", choices=delayed_feedback.MODES)

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
    for flag, value in (("eval_every_steps", config.eval_every_steps),
                        ("early_stopping_patience", config.early_stopping_patience)):
        if value < 0:
            raise ConfigError(f"--{flag} must be >= 0, got {value}")
    if config.steps is not None and config.steps <= 0:
        raise ConfigError(f"--steps must be positive, got {config.steps}")
    try:
        config.optimization.check()
    except ValueError as error:
        raise ConfigError(str(error)) from error
    _check_model_dir(config)
    try:
        build_backbone(config.model.backbone, input_dim=8, field_dims=[8],
                       scale=config.model.backbone_scale,
                       options=split_options(config.model.backbone_config)[0],
                       dropout=config.model.dropout)
    except ValueError as error:
        raise ConfigError(f"--backbone/--backbone_scale/--backbone_config/--dropout: {error}"
                          ) from error
    _check_tasks(config)
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
    rows = [split_rows(window) for window in spans]
    for name, window, counts in zip(("training", "eval"), spans, rows, strict=True):
        if not sum(counts.values()):
            reasons = ", ".join(f"{r}: {n}" for r, n in rejected_rows(window).items())
            raise ConfigError(
                f"the {name} window's spans hold no rows: the pipeline rejected every row "
                f"({reasons or 'none read'}); see its dead-letter output, fix the logs or the "
                "spec, and rebuild the spans with --overwrite")
    if rows[0]["eval"] == 0:
        raise ConfigError(
            "the training window's spans hold no eval split to validate on; rebuild them with "
            "pipelines.build_tfrecords --eval_fraction=0.1 --overwrite")
    return spans[0], spans[1]


def _check_tasks(config: TrainConfig) -> None:
    """--tasks with the 'tasks' section of --backbone_config, --early_stopping_task, and the
    losses --delayed_feedback and --tasks need."""
    try:
        task_set = parse_tasks(config.model.tasks, config.model.backbone_config)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    if task_set is not None and config.model.loss != "logloss":
        raise ConfigError(f"--tasks={config.model.tasks} trains with --loss=logloss only; drop "
                          f"--loss={config.model.loss}")
    if config.early_stopping_task:
        evaluated = task_set.evaluated if task_set is not None else ()
        if config.early_stopping_task not in evaluated:
            allowed = (f"one of {', '.join(evaluated)}" if evaluated else
                       "empty: a single-task model has none")
            raise ConfigError(f"--early_stopping_task={config.early_stopping_task} is not an "
                              f"evaluation of --tasks={config.model.tasks}; use {allowed}")
    if (config.delayed_feedback == delayed_feedback.FAKE_NEGATIVE_WEIGHTING
            and config.model.loss != "logloss"):
        raise ConfigError(f"--delayed_feedback={config.delayed_feedback} weights the pointwise "
                          f"log loss; it has no form for --loss={config.model.loss}")


def trained_labels(spec: FeatureSpec, task_set: TaskSet | None) -> list[str]:
    """The label columns a model trains on: the spec's ``label``, or its tasks' labels."""
    if task_set is None:
        return [spec.label]
    return list(dict.fromkeys(task_set.label_columns(spec.label_names, spec.label).values()))


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


def _model_definition(config: TrainConfig, spec: FeatureSpec
                      ) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(scaled spec dict, vocabularies): the model dir's when resuming, else built anew.

    New vocabularies and the spec's window numbers (``normalization: auto``, ``quantiles:N``)
    come from the training window only, so they never see eval days; the returned spec holds
    them, so the model dir records the values used and serving applies the same ones.
    """
    if model_dir_lib.has_model_definition(config.model_dir):
        spec_dict, recorded, vocabularies = model_dir_lib.read_model_definition(config.model_dir)
        if recorded != config.model:
            raise ConfigError(
                f"{config.model_dir} holds a model with {recorded}, not {config.model}; pick a "
                "new --model_dir, or --warm_start_from the old one")
        return spec_dict, vocabularies
    try:
        resolved, vocabularies = resolve_for_window(spec, config.data_dir, config.train_start,
                                                    config.train_end)
    except (FileNotFoundError, FeatureSpecError) as error:
        raise ConfigError(f"training window {config.train_start}..{config.train_end}: "
                          f"{error}") from error
    scaled = resolved.scaled(embedding_dim_scale=config.model.embedding_dim_scale,
                             vocab_scale=config.model.vocab_scale)
    return scaled.to_dict(), scaled.cut_vocabularies(vocabularies)


def _plan_delayed_feedback(config: TrainConfig, spec: FeatureSpec, train_spans: list[str],
                           test_spans: list[str]) -> tuple[delayed_feedback.Plan, list[str]]:
    """(the plan for the training window's immature spans, the test window's immature spans)."""
    try:
        labels = trained_labels(spec, parse_tasks(config.model.tasks,
                                                  config.model.backbone_config))
        plan = delayed_feedback.plan(train_spans, labels, config.delayed_feedback)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    test = [f"{item.day} ({item.label})"
            for item in delayed_feedback.immature_labels(test_spans, labels)]
    if test:
        logging.warning("Test window %s..%s: immature labels in %s; their metrics count "
                        "positives still to arrive as negatives.", config.eval_start,
                        config.eval_end, ", ".join(test))
    return plan, test


def _data_loss_message(spans: list[str], error: tf.errors.DataLossError) -> str:
    """One line naming the corrupt shard files behind ``error`` and the spans to rebuild."""
    unreadable = input_lib.unreadable_shards(spans)
    if not unreadable:
        return f"reading the spans failed: {input_lib.op_error_reason(error)}"
    files = "; ".join(f"{path} ({reason})" for path, reason in unreadable.items())
    days = sorted({input_lib.span_day(os.path.dirname(path)).isoformat() for path in unreadable})
    return (f"corrupt span file(s): {files}; rebuild the span(s) of {', '.join(days)} with "
            "`python -m pipelines.build_tfrecords --overwrite`, then rerun this command (it "
            "resumes from the run's last backup, if it made one)")


def _days(spans: list[str]) -> list[str]:
    """The ISO days of span directories: what a window really held, since a day without a
    complete span is left out of it with a warning."""
    return [input_lib.span_day(span).isoformat() for span in spans]


def train(config: TrainConfig) -> dict[str, Any]:
    """Runs training and evaluation; writes the model dir; returns what ``metrics.json`` holds."""
    train_spans, test_spans = check_config(config)
    try:
        spec = spec_for_training(config.data_dir, config.feature_spec, config.train_start,
                                 config.train_end)
    except FeatureSpecError as error:
        raise ConfigError(f"--feature_spec={config.feature_spec}: {error}") from error
    feedback, immature_test = _plan_delayed_feedback(config, spec, train_spans, test_spans)
    excluded = {input_lib.span_path(config.data_dir, day) for day in feedback.excluded_days}
    train_spans = [span for span in train_spans if span not in excluded]
    model_dir = config.model_dir
    started = time.time()
    train_rows = count_examples(train_spans, "train")
    first_step = (model_dir_lib.checkpoint_step(model_dir_lib.latest_checkpoint(model_dir))
                  if config.continue_training else 0)
    total_steps, pass_steps = _schedule(config, train_rows, first_step)
    strategy = make_strategy(config.strategy)
    is_chief = _is_chief(strategy)
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
        dense_optimizer, embedding_optimizer = make_optimizers(config.optimization, total_steps)
        model.compile(optimizer=dense_optimizer, embedding_optimizer=embedding_optimizer,
                      embedding_l2=config.optimization.embedding_l2,
                      fake_negative_weighting=(config.delayed_feedback
                                               == delayed_feedback.FAKE_NEGATIVE_WEIGHTING),
                      metrics=[keras.metrics.AUC(name="auc")])
        exempt_from_decay(dense_optimizer, model.dense_variables)
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

    validate = functools.partial(evaluate_window, model, config.data_dir, config.train_start,
                                 config.train_end, spec, config.eval_batch_size, ("eval",),
                                 feedback.excluded_days)
    selection_task = model.task_set and (config.early_stopping_task or model.task_set.primary)
    run = TrainingLoop(model, config, strategy, is_chief, total_steps, config.eval_every_steps
                       or pass_steps, validate, selection_task, feedback.excluded_days)
    progress = ProgressLogger(total_steps, config.batch_size, config.log_every_steps)
    try:
        resumed_from_step = run.fit(spec, first_step, progress)
        train_seconds = time.time() - started
        test_metrics = evaluate_window(model, config.data_dir, config.eval_start,
                                       config.eval_end, spec, config.eval_batch_size)
    except tf.errors.DataLossError as error:
        raise ConfigError(_data_loss_message(train_spans + test_spans, error)) from error
    monitor = run.monitor
    record = {
        "eval": test_metrics,
        "validation": _metrics_of(monitor.selected()),
        "early_stopping_task": selection_task,
        "delayed_feedback": {**feedback.to_record(), "immature_test_spans": immature_test},
        "training_spans": _days(train_spans),
        "test_spans": _days(test_spans),
        "best_step": monitor.selected()["step"],
        "stopped_early": monitor.stopped,
        "validation_curve": monitor.curve,
        "train_steps": monitor.curve[-1]["step"],
        "planned_steps": total_steps,
        "train_examples": monitor.curve[-1]["step"] * config.batch_size,
        "train_examples_per_second": progress.examples_per_second,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - started,
        "embedding_params": model.embedding_parameter_count,
        "dense_params": model.dense_parameter_count,
        "dense_flops_per_example": model.dense_flops_per_example,
        "embedding_table_devices": table_devices,
        "config": config.to_record(),
        "warm_start": warm_report.to_dict() if warm_report else None,
        "resumed_from_step": resumed_from_step,
    }
    if is_chief:
        model_dir_lib.write_json(model_dir_lib.path(model_dir, model_dir_lib.METRICS), record)
    run.clean_up()
    logging.info("Best validation step %d of %d: %s. Test %s..%s: %s", record["best_step"],
                 record["train_steps"], _rounded(record["validation"]), config.eval_start,
                 config.eval_end, _rounded(test_metrics))
    return record


def _metrics_of(point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if k not in ValidationMonitor.KEYS}


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: _rounded(v) if isinstance(v, dict) else
            v if v is None or isinstance(v, int) else round(v, 5) for k, v in metrics.items()}


def _schedule(config: TrainConfig, train_rows: int, first_step: int) -> tuple[int, int]:
    """(total steps, steps of one pass over the training window) of a run from ``first_step``.

    The total is ``--steps``, else ``--epochs`` passes.

    Raises:
      ConfigError: a ``--continue`` run whose model dir is at or beyond that total already.
    """
    pass_steps = max(1, train_rows // config.batch_size)
    total_steps = config.steps or pass_steps * config.epochs
    if total_steps <= first_step:
        raise ConfigError(f"--continue: {config.model_dir} is at step {first_step} already; set "
                          f"--steps above {first_step} (the new total)")
    return total_steps, pass_steps


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())

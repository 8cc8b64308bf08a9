"""The training loop of one run: Keras ``fit`` with validation, backups and the final restore.

:class:`TrainingLoop` owns the run's three checkpoint managers (``checkpoints/`` final,
``best/`` best validated, ``backup/`` for resume; :mod:`cvr_tf.model_dir`), its
:class:`~cvr_tf.validation.ValidationMonitor` and the callbacks of ``fit``;
:func:`train_dataset` is the endless training stream it reads, resumable at any step.
:func:`cvr_tf.training.train` builds the model and calls it.
"""

from __future__ import annotations

import datetime
import math
import os
import shutil
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from cvr_tf import input as input_lib
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.callbacks import ProgressLogger, RaiseOnNaN
from cvr_tf.compat import keras, tf
from cvr_tf.distribute import EpochEndBatchHooks
from cvr_tf.features import FeatureSpec
from cvr_tf.model import CVRModel
from cvr_tf.request_batches import groups_requests
from cvr_tf.resume import Backup, PeriodicBackup
from cvr_tf.validation import ValidationMonitor

if TYPE_CHECKING:
    from cvr_tf.training import TrainConfig


def train_dataset(config: TrainConfig, spec: FeatureSpec, strategy: tf.distribute.Strategy,
                  skip_steps: int, exclude_days: Collection[datetime.date] = ()) -> Any:
    """The endless training stream of global batches, less the first ``skip_steps`` of them,
    from the training window's spans but those of ``exclude_days``.

    The stream is a deterministic function of ``--seed``, so skipping the batches of the steps
    already trained resumes it exactly (see :mod:`cvr_tf.resume`). Keras splits each batch
    over the replicas (and the workers, whose datasets it rebatches to their share), so a step
    is one element of every task's stream. Under parameter-server training each worker has its
    own stream and skips its share of the steps.
    """
    def dataset_fn(context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        batch_size = config.batch_size
        pipelines = context.num_input_pipelines if context else 1
        dataset = input_lib.make_dataset(
            config.data_dir, config.train_start, config.train_end, spec, split="train",
            batch_size=(context.get_per_replica_batch_size(batch_size) if context else batch_size),
            shuffle=True, num_epochs=None, seed=config.seed, drop_remainder=True,
            num_input_pipelines=pipelines,
            input_pipeline_id=context.input_pipeline_id if context else 0,
            group_by_request=groups_requests(config.group_batches, config.model.loss),
            exclude_days=exclude_days)
        return dataset.skip(skip_steps // pipelines)

    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        return keras.utils.experimental.DatasetCreator(dataset_fn)
    return dataset_fn()


class TrainingLoop:
    """One run's ``fit`` and its checkpoints: final, best validated, backups.

    Every task saves (multi-worker saves are collective): the chief into the model dir, the
    others into ``.worker-<i>/``; everyone restores from the chief's.

    Args:
      model: the compiled model.
      config: the run's config.
      strategy: the distribution strategy.
      is_chief: whether this task writes the model dir.
      total_steps: the run's last step.
      validate_every: validation period in steps.
      validate: the validation metrics of the current weights.
      selection_task: for a multi-task model, the evaluation whose metric selects.
      exclude_days: training-window days left out of training (``--delayed_feedback``).
    """

    def __init__(self, model: CVRModel, config: TrainConfig, strategy: tf.distribute.Strategy,
                 is_chief: bool, total_steps: int, validate_every: int,
                 validate: Callable[[], dict[str, Any]], selection_task: str | None = None,
                 exclude_days: Collection[datetime.date] = ()) -> None:
        self.model, self.config, self.strategy = model, config, strategy
        self.is_chief, self.total_steps = is_chief, total_steps
        self.exclude_days = tuple(exclude_days)
        model_dir = config.model_dir
        self.checkpoint = model_dir_lib.checkpoint(model, with_optimizers=True)
        self.final = tf.train.CheckpointManager(
            self.checkpoint, self._own(model_dir_lib.CHECKPOINT_DIR), max_to_keep=2)
        self.best = tf.train.CheckpointManager(
            self.checkpoint, self._own(model_dir_lib.BEST_DIR), max_to_keep=1)
        self.backup = Backup(self.checkpoint, model_dir_lib.path(model_dir,
                                                                 model_dir_lib.BACKUP_DIR),
                             self._own(model_dir_lib.BACKUP_DIR), is_chief)
        self.monitor = ValidationMonitor(
            validate_every, total_steps, validate, config.early_stopping_metric,
            config.early_stopping_patience,
            save_best=lambda step: self.best.save(checkpoint_number=step),
            after_point=lambda step: self.backup.save(step, self.monitor.state()),
            task=selection_task)

    def _own(self, name: str) -> str:
        if self.is_chief:
            return model_dir_lib.path(self.config.model_dir, name)
        task = self.strategy.cluster_resolver.task_id
        return os.path.join(self.config.model_dir, f".worker-{task}", name)

    def fit(self, spec: FeatureSpec, first_step: int, progress: ProgressLogger) -> int:
        """Trains to the last step or an early stop, then restores the best validated weights
        and saves them as the final checkpoint; returns the step training (re)started at.

        A ``--continue`` run starts from the model dir's final checkpoint, a killed run from
        its latest backup (with its validation state), and a run whose backup says it is done
        goes straight to the restore.
        """
        config = self.config
        if first_step:
            self.checkpoint.restore(model_dir_lib.latest_checkpoint(config.model_dir)
                                    ).assert_existing_objects_matched()
        resumed, state = self.backup.restore()
        if state is not None:
            self.monitor.load_state(state)
        start = resumed or first_step
        if start < self.total_steps and not self.monitor.stopped:
            self._keras_fit(train_dataset(config, spec, self.strategy, start, self.exclude_days),
                            start, progress)
        selected = self.monitor.selected()
        # By step, not identity: a resumed monitor's points are copies read from JSON.
        if selected["step"] != self.monitor.curve[-1]["step"]:
            self.checkpoint.restore(self.best.latest_checkpoint).assert_existing_objects_matched()
        self.final.save(checkpoint_number=selected["step"])
        return start

    def _keras_fit(self, dataset: Any, start: int, progress: ProgressLogger) -> None:
        config = self.config
        remaining = self.total_steps - start
        step_callbacks = [RaiseOnNaN(), progress, self.monitor,
                          PeriodicBackup(self.backup, config.checkpoint_every_steps,
                                         self.monitor.state)]
        # Under ParameterServerStrategy Keras runs callbacks between epochs only (see
        # EpochEndBatchHooks): end an epoch at every step a callback acts on.
        if isinstance(self.strategy, tf.distribute.ParameterServerStrategy):
            steps_per_epoch = math.gcd(remaining, start, config.log_every_steps,
                                       self.monitor.every_steps, config.checkpoint_every_steps)
            callbacks = [EpochEndBatchHooks(step_callbacks, steps_per_epoch)]
            update_freq: Any = "epoch"
        else:
            steps_per_epoch, callbacks, update_freq = remaining, step_callbacks, \
                config.log_every_steps
        tensorboard = keras.callbacks.TensorBoard(
            model_dir_lib.path(config.model_dir, model_dir_lib.LOG_DIR), update_freq=update_freq)
        self.model.fit(dataset, epochs=remaining // steps_per_epoch,
                       steps_per_epoch=steps_per_epoch, callbacks=[tensorboard, *callbacks],
                       verbose=0)

    def clean_up(self) -> None:
        """Deletes the in-flight state (backups, best checkpoint) once the results are written."""
        for name in (model_dir_lib.BACKUP_DIR, model_dir_lib.BEST_DIR):
            shutil.rmtree(self._own(name), ignore_errors=True)

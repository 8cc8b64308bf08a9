"""Resuming a killed run exactly: backups of the weights, the optimizers and the job's state.

Every ``--checkpoint_every_steps`` steps, and after every validation, the job saves to
``backup/`` a checkpoint of the model and both optimizers (whose ``iterations`` is the global
step) and ``state-<step>.json``, the state of its validation monitor at that step. Started
again with the same flags, it restores the latest backup *before* building the input, and the
input skips the batches of the steps already trained: the training stream is a deterministic
function of ``--seed`` (file order, shuffle buffer, batching), so a killed-and-resumed run sees
exactly the batches of an uninterrupted one, in the same order, and reaches the same weights
(Keras's ``BackupAndRestore`` restores the step counter but restarts the input).

Under ``parameter_server`` each worker skips ``step / num_workers`` batches of its own stream:
asynchronous training assigns steps to whichever worker is free, so no run is reproducible
there, interrupted or not.

Multi-worker: every worker saves (the save is collective), the chief into ``backup/`` and the
others into ``.worker-<i>/backup``; every worker restores from the chief's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from absl import logging

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.callbacks import StepCounter
from cvr_tf.compat import tf


class Backup:
    """The backups of one run: ``save(step, state)`` and ``restore() -> (step, state)``.

    Args:
      checkpoint: the object graph (model and optimizers) to save and restore.
      directory: the chief's backup directory (``<model_dir>/backup``); restored from by all.
      write_directory: where this task saves (the chief's directory, or a worker's own).
      is_chief: only the chief writes the state files.
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, write_directory: str,
                 is_chief: bool) -> None:
        self.checkpoint = checkpoint
        self.directory = directory
        self.is_chief = is_chief
        self._manager = tf.train.CheckpointManager(checkpoint, write_directory, max_to_keep=2)
        self.last_saved = -1

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Saves the checkpoint and, on the chief, the state of ``step`` (once per step)."""
        if step == self.last_saved:
            return
        if self.is_chief:
            model_dir_lib.write_json(os.path.join(self.directory, f"state-{step}.json"), state)
        self._manager.save(checkpoint_number=step)
        self.last_saved = step
        if self.is_chief:  # keep the states of the kept checkpoints only
            kept = {model_dir_lib.checkpoint_step(path) for path in self._manager.checkpoints}
            for name in os.listdir(self.directory):
                if (name.startswith("state-") and name.endswith(".json")
                        and int(name[6:-5]) not in kept):
                    os.remove(os.path.join(self.directory, name))

    def restore(self) -> tuple[int, dict[str, Any] | None]:
        """Restores the latest backup; (its step, its state), or (0, None) when there is none.

        The state is written before its checkpoint and pruned only after a newer one is saved,
        so the latest checkpoint always has its state.
        """
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is None:
            return 0, None
        step = model_dir_lib.checkpoint_step(latest)
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        state = model_dir_lib.read_json(os.path.join(self.directory, f"state-{step}.json"))
        self.last_saved = step
        logging.info("Resuming from backup %s (step %d).", latest, step)
        return step, state


class PeriodicBackup(StepCounter):
    """Saves a :class:`Backup` every ``every_steps`` global steps, with ``state()``."""

    def __init__(self, backup: Backup, every_steps: int,
                 state: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.backup = backup
        self.every_steps = every_steps
        self.state = state

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.step % self.every_steps == 0:
            self.backup.save(self.step, self.state())


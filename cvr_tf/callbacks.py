"""Keras callbacks of the training job: progress lines and NaN loss as an error.

All count steps themselves from the optimizer's step at the start of training, so that no
callback reads a device variable on every batch.
"""

from __future__ import annotations

import math
import time
from typing import Any

from absl import logging

from cvr_tf.compat import keras


class NaNLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StepCounter(keras.callbacks.Callback):
    """Knows the global step after each batch, reading the optimizer only once."""

    def __init__(self) -> None:
        super().__init__()
        self.first_step = self.step = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.first_step = self.step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1


class RaiseOnNaN(StepCounter):
    """Stops training with :class:`NaNLossError` as soon as a batch loss is not finite.

    Keras's ``TerminateOnNaN`` stops quietly; a scheduled job must fail loudly instead, so that
    nothing downstream exports or warm-starts from a diverged model.
    """

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NaNLossError(
                f"training loss became {float(loss)} at step {self.step}; lower --learning_rate, "
                "or check the inputs for NaN/inf (numeric features' transform and std)")


class ProgressLogger(StepCounter):
    """Logs step, loss, AUC, examples/s and ETA every ``every_steps`` steps.

    Throughput counts the time of the training steps only: from each batch's start to its end
    in this callback, which runs before the validation and backup callbacks, so their time
    (and the final validation) is not charged to training. ``examples_per_second`` is the
    throughput after the first logged period (which includes tracing and warm-up), or over the
    whole run when it is shorter than one period. ``first_step`` is the step training began at:
    0, or where a resumed run picked up.
    """

    def __init__(self, total_steps: int, batch_size: int, every_steps: int) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.every_steps = every_steps
        self.examples_per_second = 0.0
        self._busy = 0.0  # seconds spent inside training steps so far
        self._batch_start = 0.0
        self._marks: list[tuple[float, int]] = []  # (busy seconds, step) at each log line

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._busy, self._marks = 0.0, [(0.0, self.step)]

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        self._busy += time.perf_counter() - self._batch_start
        if self.step % self.every_steps and self.step != self.total_steps:
            return
        rate = self._rate(*self._marks[-1])
        self._marks.append((self._busy, self.step))
        eta = (self.total_steps - self.step) * self.batch_size / max(rate, 1e-9)
        logs = logs or {}
        logging.info("step %d/%d  loss %.5f  auc %.4f  %.0f examples/s  eta %.0fs", self.step,
                     self.total_steps, float(logs.get("loss", math.nan)),
                     float(logs.get("auc", math.nan)), rate, eta)

    def _rate(self, since_busy: float, since_step: int) -> float:
        return (self.step - since_step) * self.batch_size / max(self._busy - since_busy, 1e-9)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # Skip the first period (tracing, warm-up) when there is a later one.
        since = self._marks[1] if len(self._marks) > 2 else self._marks[0]
        if self.step > since[1]:
            self.examples_per_second = self._rate(*since)

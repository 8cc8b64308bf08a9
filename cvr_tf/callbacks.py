"""Keras callbacks of the training job: progress lines, NaN loss as an error, learning curves.

All count steps themselves from the optimizer's step at the start of training, so that no
callback reads a device variable on every batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from absl import logging

from cvr_tf.compat import keras
from cvr_tf.metrics import format_metric


class NaNLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class _StepCounter(keras.callbacks.Callback):
    """Knows the global step after each batch, reading the optimizer only once."""

    def __init__(self) -> None:
        super().__init__()
        self.first_step = self.step = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.first_step = self.step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1


class RaiseOnNaN(_StepCounter):
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


class ProgressLogger(_StepCounter):
    """Logs step, loss, AUC, examples/s and ETA every ``every_steps`` steps.

    ``examples_per_second`` is the training throughput after the first logged period (which
    includes tracing and warm-up), or over the whole run when it is shorter than one period.
    ``first_step`` is the step training began at: 0, or where a resumed run picked up.
    """

    def __init__(self, total_steps: int, batch_size: int, every_steps: int) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.every_steps = every_steps
        self.examples_per_second = 0.0
        self._marks: list[tuple[float, int]] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._marks = [(time.perf_counter(), self.step)]

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.step % self.every_steps and self.step != self.total_steps:
            return
        now = time.perf_counter()
        last_time, last_step = self._marks[-1]
        rate = (self.step - last_step) * self.batch_size / max(now - last_time, 1e-9)
        self._marks.append((now, self.step))
        eta = (self.total_steps - self.step) * self.batch_size / max(rate, 1e-9)
        logs = logs or {}
        logging.info("step %d/%d  loss %.5f  auc %.4f  %.0f examples/s  eta %.0fs", self.step,
                     self.total_steps, float(logs.get("loss", math.nan)),
                     float(logs.get("auc", math.nan)), rate, eta)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        # Skip the first period (tracing, warm-up) when there is a later one.
        since_time, since_step = self._marks[1] if len(self._marks) > 2 else self._marks[0]
        if self.step > since_step:
            self.examples_per_second = ((self.step - since_step) * self.batch_size
                                        / max(now - since_time, 1e-9))


class PeriodicEvaluation(_StepCounter):
    """Evaluates every ``every_steps`` steps (and at the end); keeps the learning curve.

    Each point of ``curve`` is ``{"step", "train_seconds", **metrics}`` where ``train_seconds``
    is the wall time spent training so far, evaluation excluded, so that curves of runs with
    different evaluation periods compare.
    """

    KEYS = ("step", "train_seconds")

    def __init__(self, every_steps: int, total_steps: int,
                 evaluate: Callable[[], dict[str, float | None]]) -> None:
        super().__init__()
        self.every_steps = every_steps
        self.total_steps = total_steps
        self.evaluate = evaluate
        self.curve: list[dict[str, float | None]] = []
        self._start = 0.0
        self._eval_seconds = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._start, self._eval_seconds = time.perf_counter(), 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.step % self.every_steps and self.step != self.total_steps:
            return
        began = time.perf_counter()
        point = {"step": self.step, "train_seconds": began - self._start - self._eval_seconds,
                 **self.evaluate()}
        self._eval_seconds += time.perf_counter() - began
        self.curve.append(point)
        logging.info("eval at step %d: logloss %s  auc %s  mAP %s", self.step,
                     *(format_metric(point.get(name), spec) for name, spec in (
                         ("logloss", ".5f"), ("auc", ".4f"), ("mean_average_precision", ".4f"))))

"""Validation-driven training: periodic evaluation, best-checkpoint selection, early stopping.

The validation set is the ``eval`` split the pipeline holds out of every span of the *training*
window (requests, not records, are held out); the job's ``--eval_start/--eval_end`` window stays
the test set, read once, after training. :class:`ValidationMonitor` evaluates the served scores
on the validation set every ``every_steps`` steps and at the last step, and keeps the learning
curve. With a selection metric ``m`` (direction: higher is better for auc, group_auc and
mean_average_precision; lower for logloss) it saves a checkpoint whenever ``m`` strictly
improves on the best so far, and with ``patience = p > 0`` stops training after ``p``
evaluations in a row without improvement. The job then restores the best checkpoint before the
test evaluation and the export, so that training longer can only move the restored model to a
point that validated better.

A multi-task model's points hold metrics by evaluation (``{"ctr": {...}, "ctcvr": {...}}``,
:mod:`cvr_tf.evaluation`); the monitor then reads the metric of one of them, ``task``
(``--early_stopping_task``; default the last task of ``--tasks``).

A metric that cannot be computed (``None`` or NaN, e.g. gAUC when no request has both classes)
never improves on anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from absl import logging

from cvr_tf.callbacks import StepCounter
from cvr_tf.metrics import format_metric

# Selection metric -> +1 when higher is better, -1 when lower is.
METRIC_DIRECTIONS = {"auc": 1, "group_auc": 1, "mean_average_precision": 1, "logloss": -1}
NO_SELECTION = "none"
SELECTION_METRICS = (*METRIC_DIRECTIONS, NO_SELECTION)


def _value(point: dict[str, Any], metric: str, task: str | None = None) -> float | None:
    value = ((point.get(task) or {}) if task else point).get(metric)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


class ValidationMonitor(StepCounter):
    """Evaluates on the validation set, tracks the best point and stops on a plateau.

    Args:
      every_steps: evaluation period in global steps (also evaluated at ``total_steps``).
      total_steps: the run's last step.
      evaluate: the served-score metrics of the validation set, as :func:`metrics.evaluate`.
      metric: selection metric, one of :data:`SELECTION_METRICS` (``none``: keep the last
        weights, never stop early).
      patience: evaluations without improvement before stopping; 0 never stops early.
      save_best: called with the step whenever it becomes the best (saves the checkpoint).
      after_point: called with the step after each evaluation and decision (the job backs up
        there, so that a resumed run has this monitor's state with its weights).
      task: for metrics by evaluation (a multi-task model), the one whose ``metric`` selects.

    Attributes:
      curve: one ``{"step", "train_seconds", **metrics}`` per evaluation; ``train_seconds`` is
        the time spent training so far, evaluation excluded.
      best: the best point so far (the last one with metric ``none``), or None.
      stopped: whether it stopped training early.
    """

    KEYS = ("step", "train_seconds")

    def __init__(self, every_steps: int, total_steps: int,
                 evaluate: Callable[[], dict[str, Any]], metric: str = "auc", patience: int = 0,
                 save_best: Callable[[int], None] = lambda step: None,
                 after_point: Callable[[int], None] = lambda step: None,
                 task: str | None = None) -> None:
        super().__init__()
        if metric not in SELECTION_METRICS:
            raise ValueError(f"--early_stopping_metric={metric!r} is not one of "
                             f"{', '.join(SELECTION_METRICS)}")
        if every_steps <= 0 or patience < 0:
            raise ValueError(f"every_steps must be positive and patience >= 0, got "
                             f"{every_steps} and {patience}")
        self.every_steps = every_steps
        self.total_steps = total_steps
        self.evaluate = evaluate
        self.metric = metric
        self.patience = patience
        self.save_best = save_best
        self.after_point = after_point
        self.task = task
        self.curve: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.stopped = False
        self._waited = 0
        self._trained_before = 0.0
        self._start = 0.0
        self._eval_seconds = 0.0

    # ------------------------------------------------------------------------------------------
    # State, saved with each backup
    def state(self) -> dict[str, Any]:
        return {"curve": self.curve, "best": self.best, "stopped": self.stopped,
                "waited": self._waited}

    def load_state(self, state: dict[str, Any]) -> None:
        self.curve = list(state["curve"])
        self.best = state["best"]
        self.stopped = bool(state["stopped"])
        self._waited = int(state["waited"])
        self._trained_before = self.curve[-1]["train_seconds"] if self.curve else 0.0

    # ------------------------------------------------------------------------------------------
    def is_better(self, point: dict[str, Any]) -> bool:
        """Whether ``point`` improves on the best point (always true for metric ``none``)."""
        if self.metric == NO_SELECTION:
            return True
        value = _value(point, self.metric, self.task)
        if value is None:
            return False
        best = None if self.best is None else _value(self.best, self.metric, self.task)
        return best is None or METRIC_DIRECTIONS[self.metric] * (value - best) > 0

    def selected(self) -> dict[str, Any]:
        """The point whose weights the run keeps: the best one, or the last when the metric is
        ``none`` or was never computable (logged)."""
        if self.best is not None:
            return self.best
        logging.warning("validation %s%s was never computable; keeping the last weights",
                        f"{self.task} " if self.task else "", self.metric)
        return self.curve[-1]

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._start, self._eval_seconds = time.perf_counter(), 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.step % self.every_steps and self.step != self.total_steps:
            return
        began = time.perf_counter()
        trained = self._trained_before + began - self._start - self._eval_seconds
        point = {"step": self.step, "train_seconds": trained, **self.evaluate()}
        self.curve.append(point)
        if self.is_better(point):
            self.best, self._waited = point, 0
            if self.metric != NO_SELECTION:  # with none, the last weights are kept anyway
                self.save_best(self.step)
        else:
            self._waited += 1
            if self.patience and self._waited >= self.patience and self.step < self.total_steps:
                self.stopped = True
                self.model.stop_training = True
        self._eval_seconds += time.perf_counter() - began
        logging.info("validation at step %d: %s%s", self.step, _summary(point, self.task),
                     f"; stopping, best step {self.best['step'] if self.best else None}"
                     if self.stopped else "")
        self.after_point(self.step)


def _summary(point: dict[str, Any], task: str | None = None) -> str:
    metrics = (point.get(task) or {}) if task else point
    parts = [f"{task}:"] if task else []
    for key, label in (("logloss", "logloss"), ("auc", "auc"),
                       ("mean_average_precision", "mAP"), ("group_auc", "gAUC")):
        parts.append(f"{label} {format_metric(metrics.get(key))}")
    return "  ".join(parts)

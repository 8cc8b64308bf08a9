"""The retraining loop's configuration: one dataclass whose fields are the job's flags.

:class:`RetrainConfig` nests the training job's :class:`~cvr_tf.training.TrainConfig` as the
template of every day's candidate: its flags (``--backbone``, ``--steps``, ``--data_dir``, the
spans root, ...) are the loop's flags too, except the ones the loop sets per day
(:data:`PER_DAY_FIELDS`: the model dir, the window, the warm start). ``python -m
cvr_tf.retrain --helpfull`` lists them all.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from cvr_tf.retraining.blessing import BLESS_METRICS, check_gate
from cvr_tf.tasks import parse_tasks
from cvr_tf.training import TrainConfig

# TrainConfig fields the loop sets for each day's candidate: they are not flags of the loop.
WARM_START_WINDOWS = ("new_days", "train_days")
PER_DAY_FIELDS = ("model_dir", "train_start", "train_end", "eval_start", "eval_end",
                  "warm_start_from", "overwrite", "continue_training")


def parse_bounds(text: str) -> tuple[float, float]:
    """``"0.5,2.0"`` -> ``(0.5, 2.0)``; ValueError for anything else."""
    parts = [p.strip() for p in text.split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ValueError("give two numbers, low,high (e.g. 0.5,2.0)") from None
    return low, high


def _field(default: Any, help_text: str, **metadata: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


def _required(help_text: str) -> Any:
    return dataclasses.field(metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """One day of the retraining loop (``python -m cvr_tf.retrain``), one flag per field.

    ``training`` is the candidate's training config; the loop replaces its
    :data:`PER_DAY_FIELDS` each day (:func:`training_template` fills them with placeholders
    for Python callers). ``date`` is a ``YYYY-MM-DD`` flag in the job.
    """

    logs: str = _required("Root of the raw logs (impressions/, conversions/ date partitions).")
    work_dir: str = _required("The loop's own directory: a candidate model dir and a report per "
                              "day (models/<date>/, reports/<date>/).")
    export_base: str = _required("TF Serving's base directory, which the server polls; blessed "
                                 "candidates are exported here as new versions.")
    date: datetime.date
    training: TrainConfig
    model_name: str = _field("cvr", "The served model's name (its subdirectory of "
                             "--export_base).")
    train_days: int = _field(7, "Days of the candidate's training window, ending the day "
                             "before --date.")
    bless_metric: str = _field("auc", "Holdout metric the candidate must not lose on against "
                               "the served model.", choices=BLESS_METRICS)
    bless_tolerance: float = _field(0.0, "How much worse than the served model's "
                                    "--bless_metric (absolute, direction-aware) still blesses.")
    bless_task: str = _field("", "A multi-task candidate (--tasks): the evaluation the gate and "
                             "the report read (ctr, cvr, ctcvr or cvr_on_clicks, one of those "
                             "--tasks evaluates); empty: --early_stopping_task, else the last "
                             "of --tasks. Leave it empty for a single-task candidate.")
    calibration_bounds: tuple[float, float] = _field(
        (0.5, 2.0), "low,high: the candidate's calibration (sum of predictions / positives) on "
        "the holdout must lie within.", parse=parse_bounds)
    warm_start_window: str = _field(
        "new_days", "Training window of a warm-started candidate: new_days = the days of the "
        "--train_days window after the warm-start model's own training window (daily: one "
        "day); train_days = the whole window. A cold candidate always trains on the whole "
        "window.", choices=WARM_START_WINDOWS)
    slice_by: str = _field("device", "Comma-separated spec columns whose values slice the "
                           "report (string or integer columns); empty for none. The default "
                           "is skipped for a spec without the column.")
    query_column: str = _field("query", "Column whose training-window frequency gives the "
                               "head/torso/tail query slices; empty for none. The default is "
                               "skipped for a spec that cannot give them.")
    item_column: str = _field("item_id", "Column whose membership in the served model's "
                              "vocabulary gives the new/returning item slices; empty for none. "
                              "The default is skipped for a spec that cannot give them.")
    attribution_days: int | None = _field(None, "The span pipeline's --attribution_days; unset: "
                                          "its default.")
    batch_scope: str = _field("dense", "The export's in-graph batching: dense, whole or none "
                              "(serving.export --batch_scope).")

    @property
    def slice_columns(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.slice_by.split(",") if c.strip())

    @property
    def bless_evaluation(self) -> str | None:
        """The evaluation the gate decides on: ``--bless_task``, else the training's
        ``--early_stopping_task``, else the last of ``--tasks``; None for a single-task
        candidate (its one output on the spec's label)."""
        model = self.training.model
        task_set = parse_tasks(model.tasks, model.backbone_config)
        if task_set is None:
            return None
        return self.bless_task or self.training.early_stopping_task or task_set.primary

    @property
    def train_start(self) -> datetime.date:
        return self.date - datetime.timedelta(days=self.train_days)

    @property
    def train_end(self) -> datetime.date:
        return self.date - datetime.timedelta(days=1)

    def check(self) -> None:
        """Raises ValueError, naming the flag and the fix, for a config that cannot run."""
        if self.train_days <= 0:
            raise ValueError(f"--train_days must be positive, got {self.train_days}")
        check_gate(self.bless_metric, self.bless_tolerance, self.calibration_bounds)
        if self.attribution_days is not None and self.attribution_days < 0:
            raise ValueError(f"--attribution_days must be >= 0, got {self.attribution_days}")
        model = self.training.model
        task_set = parse_tasks(model.tasks, model.backbone_config)
        if task_set is None and self.bless_task:
            raise ValueError(f"--bless_task={self.bless_task} chooses among the evaluations of a "
                             "multi-task candidate; this one is single-task (no --tasks): drop "
                             "--bless_task")
        if task_set is not None and self.bless_evaluation not in task_set.evaluated:
            flag = "bless_task" if self.bless_task else "early_stopping_task"
            raise ValueError(f"--{flag}={self.bless_evaluation} is not an evaluation of "
                             f"--tasks={model.tasks}; use one of {', '.join(task_set.evaluated)}")

    def to_record(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name != "training"},
                "date": self.date.isoformat(), "training": self.training.to_record()}


def training_template(data_dir: str, **fields: Any) -> TrainConfig:
    """A :class:`TrainConfig` for :attr:`RetrainConfig.training`: ``data_dir`` (the spans root)
    and any other training fields; the per-day ones are placeholders the loop replaces."""
    placeholder = datetime.date.min
    return TrainConfig(data_dir=data_dir, model_dir="", train_start=placeholder,
                       train_end=placeholder, eval_start=placeholder, eval_end=placeholder,
                       **fields)

"""Evaluation of the served scores over the pipeline's spans: test windows and validation splits.

Every figure is computed on ``model.served_probabilities`` (no position-bias tower), by
:func:`cvr_tf.metrics.evaluate`. A multi-task model (:mod:`cvr_tf.tasks`) is evaluated per
task, each output on its own label over every impression, and pCVR also on the clicked
impressions only (``cvr_on_clicks``): ``{task: metrics}``.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from cvr_tf import input as input_lib
from cvr_tf import metrics as metrics_lib
from cvr_tf.compat import tf
from cvr_tf.features import FeatureSpec
from cvr_tf.model import CVRModel
from cvr_tf.tasks import TaskSet


def _span_rows(span: str) -> dict[str, Any]:
    with open(os.path.join(span, "stats.json"), encoding="utf-8") as handle:
        return json.load(handle).get("rows", {})


def split_rows(spans: list[str]) -> dict[str, int]:
    """Examples per split (``train``, ``eval``) of ``spans``, reading each ``stats.json`` once."""
    totals = dict.fromkeys(input_lib.SPLITS, 0)
    for span in spans:
        rows = _span_rows(span)
        for split in totals:
            key = f"{split}_rows"
            if key not in rows:
                raise KeyError(f"{os.path.join(span, 'stats.json')} has no rows.{key}; rebuild "
                               "the span with pipelines.build_tfrecords --overwrite")
            totals[split] += int(rows[key])
    return totals


def count_examples(spans: list[str], split: str) -> int:
    """Examples in the ``split`` shards of ``spans``, from each span's ``stats.json``."""
    return split_rows(spans)[split]


def rejected_rows(spans: list[str]) -> dict[str, int]:
    """Rows the pipeline dead-lettered in ``spans``, by reason (``stats.json``), largest first."""
    reasons: dict[str, int] = {}
    for span in spans:
        for reason, count in _span_rows(span).get("rejected_by_reason", {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(count)
    return dict(sorted(reasons.items(), key=lambda item: -item[1]))


def predict_served(model: CVRModel, dataset: tf.data.Dataset, spec: FeatureSpec
                   ) -> tuple[dict[str, np.ndarray], Any, np.ndarray]:
    """(label columns by name, served probabilities, request keys) over a dataset of parsed
    columns; the probabilities are ``[n]``, or ``{task: [n]}`` for a multi-task model."""
    columns = spec.column_dtypes(train_only=False)
    labels: dict[str, list[np.ndarray]] = {name: [] for name in spec.label_names}
    probabilities, groups = [], []
    for batch in dataset:
        served = model.served_probabilities({c: batch[c] for c in columns})
        probabilities.append({k: v.numpy() for k, v in served.items()}
                             if isinstance(served, Mapping) else served.numpy())
        for name, values in labels.items():
            values.append(batch[name].numpy())
        groups.append(batch[spec.group_key].numpy())
    if not groups:
        raise ValueError("the eval dataset is empty")
    if isinstance(probabilities[0], dict):
        probabilities = {k: np.concatenate([p[k] for p in probabilities])
                         for k in probabilities[0]}
    else:
        probabilities = np.concatenate(probabilities)
    return ({name: np.concatenate(values) for name, values in labels.items()}, probabilities,
            np.concatenate(groups))


def evaluate_tasks(task_set: TaskSet, label_columns: Mapping[str, str],
                   labels: Mapping[str, np.ndarray], probabilities: Mapping[str, np.ndarray],
                   groups: np.ndarray) -> dict[str, dict[str, Any]]:
    """Evaluation name -> metrics of a multi-task model (:attr:`TaskSet.evaluated`).

    Args:
      task_set: the model's tasks.
      label_columns: ``{"click": column, "conversion": column}`` (``model.task_labels``).
      labels: label column -> 0/1 values.
      probabilities: output -> served probabilities.
      groups: request keys.
    """
    click = labels[label_columns["click"]].astype(np.float64)
    conversion = (labels[label_columns["conversion"]].astype(np.float64)
                  if "conversion" in label_columns else None)
    out = {}
    for name, (output, target, mask) in task_set.evaluation_targets(click, conversion).items():
        rows = np.ones(len(click), bool) if mask is None else mask.astype(bool)
        out[name] = (metrics_lib.evaluate(target[rows], probabilities[output][rows], groups[rows])
                     if rows.any() else metrics_lib.no_examples())
    return out


def evaluate_window(model: CVRModel, data_dir: str, start: datetime.date, end: datetime.date,
                    spec: FeatureSpec, batch_size: int = 8192,
                    splits: Sequence[str] = input_lib.SPLITS,
                    exclude_days: Collection[datetime.date] = ()) -> dict[str, Any]:
    """Metrics of the served scores over the ``splits`` of the spans of ``start..end``.

    A test window is read whole (both splits); a training window's validation set is its
    ``("eval",)`` split only, less the spans of ``exclude_days``. A multi-task model's metrics
    are by evaluation (:func:`evaluate_tasks`).
    """
    dataset = None
    for split in splits:
        part = input_lib.make_dataset(data_dir, start, end, spec, split=split,
                                      batch_size=batch_size, shuffle=False,
                                      exclude_days=exclude_days)
        dataset = part if dataset is None else dataset.concatenate(part)
    labels, probabilities, groups = predict_served(model, dataset, spec)
    if model.task_set is None:
        return metrics_lib.evaluate(labels[spec.label], probabilities, groups)
    return evaluate_tasks(model.task_set, model.task_labels, labels, probabilities, groups)

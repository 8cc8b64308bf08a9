"""Evaluation of the served scores over the pipeline's spans: test windows and validation splits.

Every figure is computed on ``model.served_probabilities`` (no position-bias tower), by
:func:`cvr_tf.metrics.evaluate`.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cvr_tf import input as input_lib
from cvr_tf import metrics as metrics_lib
from cvr_tf.compat import tf
from cvr_tf.features import FeatureSpec
from cvr_tf.model import CVRModel


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
                    spec: FeatureSpec, batch_size: int = 8192,
                    splits: Sequence[str] = input_lib.SPLITS) -> dict[str, Any]:
    """Metrics of the served scores over the ``splits`` of the spans of ``start..end``.

    A test window is read whole (both splits); a training window's validation set is its
    ``("eval",)`` split only.
    """
    dataset = None
    for split in splits:
        part = input_lib.make_dataset(data_dir, start, end, spec, split=split,
                                      batch_size=batch_size, shuffle=False)
        dataset = part if dataset is None else dataset.concatenate(part)
    labels, probabilities, groups = predict_served(model, dataset, spec)
    return metrics_lib.evaluate(labels, probabilities, groups)

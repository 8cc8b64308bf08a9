"""The holdout day: its rows, every model's served scores of them, and what slicing needs.

Both models of a blessing decision score the same rows (both splits of the holdout day's
span, in file order) through ``model.served_probabilities``, the forward pass that evaluation,
validation and export share, so the comparison is exact and the labels are the same for both,
mature or not. Multi-task models are compared on one evaluation (``--bless_task``,
:func:`target`): its output's scores, labels and rows.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
from typing import Any

import numpy as np

from cvr_tf import input as input_lib
from cvr_tf.compat import tf
from cvr_tf.features import FeatureSpec
from cvr_tf.model import CVRModel
from cvr_tf.vocabulary import TOKEN_COUNTS_DIR, read_token_counts

SCORE_BATCH = 8192
_CATEGORICAL = "categorical"


def read_day(data_dir: str, day: datetime.date, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Every parsed column of ``spec`` over both splits of ``day``'s span, as numpy arrays."""
    return input_lib.read_columns(data_dir, day, day, spec)


def target(model: CVRModel, columns: dict[str, np.ndarray], evaluation: str | None
           ) -> tuple[str | None, np.ndarray, np.ndarray | None]:
    """(the output to score, 0/1 labels, row mask or None) of the holdout for ``evaluation``.

    A single-task model (``evaluation`` None) is scored on its one output and the spec's label
    over every row; a multi-task one on the output, labels and rows of its evaluation
    (:meth:`cvr_tf.tasks.TaskSet.evaluation_targets`: ``cvr_on_clicks`` reads ``cvr`` on the
    clicked rows only).
    """
    if evaluation is None:
        return None, columns[model.spec.label], None
    labels = {role: columns[column].astype(np.float64)
              for role, column in model.task_labels.items()}
    output, values, mask = model.task_set.evaluation_targets(
        labels["click"], labels.get("conversion"))[evaluation]
    return output, values, None if mask is None else mask.astype(bool)


def score(model: CVRModel, columns: dict[str, np.ndarray], output: str | None = None
          ) -> np.ndarray:
    """The model's served probabilities of the rows of ``columns``, in row order: of its one
    output (``output`` None, a single-task model) or of the task ``output``.

    Raises:
      ValueError: ``columns`` lacks a column the model reads (it was built with another spec),
        or the model has no such output (a single-task model asked for a task's, or the other
        way round).
    """
    if model.task_set is None and output is not None:
        raise ValueError(f"it is a single-task model, without the output {output!r}")
    if model.task_set is not None and output not in model.task_set.outputs:
        raise ValueError(f"its outputs are {', '.join(model.task_set.outputs)} (--tasks="
                         f"{model.config.tasks})" + (f", without {output!r}" if output else
                                                     ", not one single-task output"))
    needed = model.spec.column_dtypes(train_only=False)
    missing = sorted(set(needed) - set(columns))
    if missing:
        raise ValueError(f"the holdout lacks column(s) {', '.join(missing)} that the model "
                         "reads; rebuild the spans with the model's feature spec")
    rows = len(columns[next(iter(needed))])
    parts = []
    for start in range(0, rows, SCORE_BATCH):
        batch = {c: tf.constant(columns[c][start:start + SCORE_BATCH], dtype=d)
                 for c, d in needed.items()}
        served = model.served_probabilities(batch)
        parts.append((served if output is None else served[output]).numpy())
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _categorical_table(spec: FeatureSpec, column: str) -> str | None:
    """The embedding table of the categorical feature reading ``column``, if any."""
    for table, feature in spec.tables().items():
        if feature.column == column and feature.KIND == _CATEGORICAL:
            return table
    return None


def slicing_problems(spec: FeatureSpec, slice_by: tuple[str, ...], query_column: str,
                     item_column: str) -> dict[str, str]:
    """Flag (``slice_by``, ``query_column``, ``item_column``) -> why the spec cannot give its
    slices, naming the flag and the fix; empty when it can."""
    problems = {}
    columns = spec.column_dtypes()
    for column in slice_by:
        if column not in columns:
            problems["slice_by"] = (f"--slice_by: the feature spec reads no column {column!r}; "
                                    f"use some of {', '.join(sorted(columns))}, or none")
        elif columns[column] == "float32":
            problems["slice_by"] = (f"--slice_by: column {column!r} is float32; slice by string "
                                    "or integer columns (a value per slice)")
    if query_column and _categorical_table(spec, query_column) not in spec.vocabulary_tables():
        problems["query_column"] = (
            f"--query_column={query_column}: no categorical feature with a computed vocabulary "
            "reads it, so the spans hold no query counts; name another column, or pass an "
            "empty one to skip query-frequency slices")
    table = _categorical_table(spec, item_column) if item_column else None
    if item_column and (table is None or spec.tables()[table].hash_buckets is not None):
        problems["item_column"] = (
            f"--item_column={item_column}: no categorical feature with a vocabulary reads it; "
            "name another column, or pass an empty one to skip the new/returning item slices")
    return problems


def check_slicing(spec: FeatureSpec, slice_by: tuple[str, ...], query_column: str,
                  item_column: str) -> None:
    """Raises ValueError, naming the flag, when the spec cannot give the report's slices."""
    problems = slicing_problems(spec, slice_by, query_column, item_column)
    if problems:
        raise ValueError(next(iter(problems.values())))


def model_vocabulary(model: CVRModel, column: str) -> list[str]:
    """The tokens of ``column``'s categorical vocabulary table in ``model``.

    Raises:
      ValueError: no categorical feature of the model reads ``column`` from a vocabulary.
    """
    table = _categorical_table(model.spec, column)
    if table is None or table not in model.vocabularies:
        raise ValueError(f"no categorical feature with a vocabulary reads column {column!r}; "
                         "new vs returning items need one (--item_column; empty to skip)")
    return model.vocabularies[table]


def window_query_counts(data_dir: str, start: datetime.date, end: datetime.date,
                        spec: FeatureSpec, column: str) -> collections.Counter:
    """Rows per query in the training splits of ``start..end``: the pipeline's per-span counts
    of the vocabulary table of the categorical feature reading ``column``.

    Raises:
      ValueError: no such feature computes a vocabulary, so the pipeline counted nothing.
    """
    table = _categorical_table(spec, column)
    if table is None or table not in spec.vocabulary_tables():
        raise ValueError(f"--query_column={column}: no categorical feature with a computed "
                         "vocabulary reads it")
    counts: collections.Counter = collections.Counter()
    for span in input_lib.list_spans(data_dir, start, end):
        counts.update(read_token_counts(os.path.join(span, TOKEN_COUNTS_DIR), [table])[table])
    return counts


def label_maturity(data_dir: str, day: datetime.date) -> dict[str, Any] | None:
    """Label -> its maturity record in the span of ``day`` (``stats.json`` ``maturity``: whether
    the events its window needs were all logged when the span was built), or None when the span
    records none (built before spans recorded maturity)."""
    path = os.path.join(input_lib.span_path(data_dir, day), "stats.json")
    with open(path, encoding="utf-8") as handle:
        stats = json.load(handle)
    return stats.get("maturity")


def maturity_note(maturity: dict[str, Any] | None) -> str:
    """What the report says of the holdout's labels (from :func:`label_maturity`)."""
    if maturity is None:
        return "label maturity not recorded by its span"
    immature = [f"{label} (events through {record.get('events_observed_through')}, needs "
                f"{record.get('needs_events_through')})" for label, record in maturity.items()
                if not record.get("mature", True)]
    if not immature:
        return "labels mature"
    return ("immature labels, evaluated as logged for both models (positives still to arrive "
            "count as negatives): " + "; ".join(immature))

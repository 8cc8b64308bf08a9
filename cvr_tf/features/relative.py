"""``request_relative``: a numeric column relative to the other candidates of its request.

For a request (the rows sharing ``spec.group_key``) with values ``x_1..x_n`` of ``column``, let
``less_i = #{j : x_j < x_i}`` and ``ties_i = #{j != i : x_j = x_i}``. The ``relation`` is one of

    rank_i        = less_i + 1                                (1 = smallest; ties share it)
    percentile_i  = (less_i + ties_i / 2) / (n - 1)            (n > 1; 0.5 when n = 1)
    diff_median_i = x_i - median(x)                           (even n: mean of the two middle)

``percentile`` is tie-symmetric: negating the values maps it to ``1 - percentile``, a request of
equal values is 0.5 everywhere (and so is a request of one row), the smallest distinct value is
0 and the largest 1. The derived value is computed in float64 and stored as float32; the field
is then what a ``numeric`` feature makes of it (:mod:`cvr_tf.features.numeric`): normalized,
``(g(v) - mean) / std`` (width 1), or bucketized by ``boundaries`` (width ``embedding_dim``).

Where it is computed (one definition, two implementations, pinned equal by tests):

* the pipeline (:func:`derive_numpy`) computes it once per request, when a shard holds its
  whole requests, and writes it to the span as the column ``<column>__<relation>``
  (:attr:`RequestRelativeFeature.input_column`), which training reads, whatever mix of requests
  a batch holds;
* the served model (:func:`derive`, TF ops) computes it from the raw ``column`` and the group
  key of the rows of one call (:meth:`cvr_tf.features.FeatureSpec.derive_serving_columns`), so
  clients send the raw column, and a call must carry the whole request (TF Serving calls do:
  one search request per Predict call).

Missing values: the pipeline dead-letters rows whose ``column`` is null or NaN (as for every
numeric column), so a request is derived over its valid rows. :func:`derive` treats a NaN as
missing the same way: the row is left out of its request and gets 0 (the serving signatures
refuse NaN inputs before that).

Window statistics (``"normalization": "auto"``, ``"boundaries": "quantiles:N"``) are not
supported: the pipeline's per-chunk statistics describe raw columns, not per-request ones.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from cvr_tf.features.numeric import NumericFeature

RELATIONS = ("rank", "percentile", "diff_median")


def derive_numpy(values: Any, groups: Any, relation: str) -> np.ndarray:
    """The ``relation`` of each row within its group (the pipeline's implementation).

    Args:
      values: ``[n]`` numbers (NaN: missing, see the module docstring).
      groups: ``[n]`` group keys (any values ``np.unique`` orders: strings, bytes, ints).
      relation: ``rank``, ``percentile`` or ``diff_median``.

    Returns:
      ``[n]`` float32, in the rows' order.
    """
    _check_relation(relation)
    values = np.asarray(values, dtype=np.float64)
    _, group_ids = np.unique(np.asarray(groups), return_inverse=True)
    valid = ~np.isnan(values)
    group_ids = np.where(valid, group_ids.reshape(-1), -1)  # NaN rows: a group of their own
    values = np.where(valid, values, 0.0)
    order = np.lexsort((values, group_ids))
    g, v = group_ids[order], values[order]
    positions = np.arange(len(v))
    new_group = np.r_[True, g[1:] != g[:-1]] if len(v) else np.zeros(0, bool)
    new_run = new_group | (np.r_[True, v[1:] != v[:-1]] if len(v) else new_group)
    group_start, group_size = _segments(new_group, positions)
    run_start, run_size = _segments(new_run, positions)
    sorted_out = _relation(relation, v, group_start, group_size, run_start, run_size, _NUMPY_OPS)
    out = np.empty(len(v), dtype=np.float64)
    out[order] = sorted_out
    return np.where(valid, out, 0.0).astype(np.float32)


def _segments(starts: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sorted position: the first position and the size of its segment."""
    segment = np.cumsum(starts) - 1
    first = positions[starts]
    size = np.diff(np.r_[first, len(positions)])
    return first[segment], size[segment]


def _relation(relation: str, v: Any, group_start: Any, group_size: Any, run_start: Any,
              run_size: Any, ops: Any) -> Any:
    """The derived values at sorted positions, from the group and tie-run starts and sizes;
    ``ops`` gives ``where``, ``gather`` and ``to_float`` of numpy or TensorFlow."""
    less = ops.to_float(run_start - group_start)
    if relation == "rank":
        return less + 1.0
    if relation == "percentile":
        spread, ties = ops.to_float(group_size - 1), ops.to_float(run_size - 1)
        many = spread > 0
        return ops.where(many, (less + ties / 2.0) / ops.where(many, spread, 1.0), 0.5)
    middle = (ops.gather(v, group_start + (group_size - 1) // 2)
              + ops.gather(v, group_start + group_size // 2)) / 2.0
    return v - middle


_NUMPY_OPS = SimpleNamespace(where=np.where, gather=lambda a, i: a[i],
                             to_float=lambda a: a.astype(np.float64))


def derive(values: Any, groups: Any, relation: str) -> Any:
    """The ``relation`` of each row within its group, with TF ops (the served model's).

    Sort-based, O(n log n) and O(n) memory (a call may carry thousands of rows): rows are
    sorted by (group, value) with two stable argsorts, group and tie runs found by comparing
    neighbours, their starts and sizes by segment ops, the median gathered from the middle
    of each group's sorted run.

    Args:
      values: ``[n]`` float32 or int64 tensor.
      groups: ``[n]`` group keys (string or integer tensor).
      relation: ``rank``, ``percentile`` or ``diff_median``.

    Returns:
      ``[n]`` float32, equal to :func:`derive_numpy` of the same rows.
    """
    from cvr_tf.compat import tf

    _check_relation(relation)
    values = tf.cast(values, tf.float64)
    group_ids = tf.unique(groups, out_idx=tf.int64).idx
    valid = tf.logical_not(tf.math.is_nan(values))
    group_ids = tf.where(valid, group_ids, -1)
    values = tf.where(valid, values, tf.zeros_like(values))
    by_value = tf.argsort(values, stable=True)
    order = tf.gather(by_value, tf.argsort(tf.gather(group_ids, by_value), stable=True))
    g, v = tf.gather(group_ids, order), tf.gather(values, order)
    positions = tf.range(tf.size(v, out_type=tf.int64), dtype=tf.int64)
    new_group = tf.not_equal(g, tf.concat([tf.constant([-2], tf.int64), g], 0)[:-1])
    new_run = new_group | tf.not_equal(v, tf.concat([v[:1], v], 0)[:-1])

    def segments(starts: Any) -> tuple[Any, Any]:
        segment = tf.cumsum(tf.cast(starts, tf.int64)) - 1
        first = tf.math.segment_min(positions, segment)
        size = tf.math.segment_sum(tf.ones_like(positions), segment)
        return tf.gather(first, segment), tf.gather(size, segment)

    group_start, group_size = segments(new_group)
    run_start, run_size = segments(new_run)
    ops = SimpleNamespace(where=tf.where, gather=tf.gather,
                          to_float=lambda t: tf.cast(t, tf.float64))
    sorted_out = _relation(relation, v, group_start, group_size, run_start, run_size, ops)
    out = tf.gather(sorted_out, tf.math.invert_permutation(order))
    return tf.cast(tf.where(valid, out, tf.zeros_like(out)), tf.float32)


def _check_relation(relation: str) -> None:
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; use one of {', '.join(RELATIONS)}")


@dataclasses.dataclass(frozen=True)
class RequestRelativeFeature(NumericFeature):
    """A numeric column relative to its request (see the module docstring).

    ``column`` and ``dtype`` (float32 or int64) name the raw column; ``min_value`` /
    ``max_value`` validate it in the pipeline. The embedding fields (``boundaries``,
    ``transform``, ``mean``, ``std``) apply to the derived value.

    Attributes:
      relation: ``rank``, ``percentile`` or ``diff_median``.
    """

    KIND: ClassVar[str] = "request_relative"

    relation: str = ""

    def validate(self) -> None:
        if self.relation not in RELATIONS:
            self.fail(f"relation must be one of {', '.join(RELATIONS)}, got {self.relation!r}; "
                      "add one feature per relation")
        if self.normalization is not None or isinstance(self.boundaries, str):
            self.fail("normalization \"auto\" and boundaries \"quantiles:N\" are not supported "
                      "for request_relative features; give mean and std or a list of boundaries")
        if self.train_only:
            self.fail("request_relative features cannot be train_only (the bias tower reads "
                      "raw columns); drop train_only")
        super().validate()

    @property
    def input_column(self) -> str:
        """``<column>__<relation>``: the column the pipeline writes and training reads."""
        return f"{self.column}__{self.relation}"

    @property
    def input_dtype(self) -> str:
        return "float32"

    @property
    def computes_statistics(self) -> bool:
        return False

    def derive(self, values: Any, groups: Any) -> Any:
        """The derived column of raw ``values`` and ``groups`` tensors (:func:`derive`)."""
        return derive(values, groups, self.relation)

    def derive_numpy(self, values: Any, groups: Any) -> np.ndarray:
        """The derived column of raw numpy ``values`` and ``groups`` (:func:`derive_numpy`)."""
        return derive_numpy(values, groups, self.relation)

    def schema_domain(self, column: Any) -> None:
        """None: ``min_value`` / ``max_value`` bound the raw column, not the derived one."""


__all__ = ["RELATIONS", "RequestRelativeFeature", "derive", "derive_numpy"]

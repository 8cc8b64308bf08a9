"""Slices of a holdout day, and the metrics of several models on each (TFMA's sliced metrics).

A slice is a boolean mask over the holdout's rows. :func:`holdout_slices` makes, in order:

* ``overall``: every row;
* ``<column>=<value>`` for each column of ``--slice_by`` (``device=mobile``): its
  :data:`MAX_SLICE_VALUES` most frequent values on the holdout, the rest pooled as
  ``<column>=(other)``;
* ``query_frequency=head|torso|tail``: the query's frequency in the *training window*
  (:func:`query_buckets`), so the tail holds the rare queries and those never trained on;
* ``items=returning|new``: whether the row's item is in the served model's vocabulary (the
  candidate's when nothing is served), i.e. whether any model had an embedding row for it.

Query buckets, from the training window's counts ``n_q`` of each query (rows of its training
splits, the pipeline's per-span token counts), sorted by decreasing count (ties by query),
``N = sum_q n_q`` and ``C_q`` the count of the queries ranked before ``q``:

    head   if C_q < HEAD_SHARE * N       (the most frequent queries, half of the traffic)
    torso  if C_q < TORSO_SHARE * N      (the next 40 %)
    tail   otherwise, and every query the window never saw.

Ranking metrics of a slice average the requests of that slice's rows (an item slice ranks only
its items within each request), as TFMA does; a metric a slice cannot support is ``None``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cvr_tf import metrics as metrics_lib

HEAD_SHARE = 0.5
TORSO_SHARE = 0.9
MAX_SLICE_VALUES = 20
OVERALL = "overall"
OTHER = "(other)"
QUERY_SLICE = "query_frequency"
ITEM_SLICE = "items"


def tokens(values: np.ndarray) -> np.ndarray:
    """A parsed column as the strings vocabularies hold: bytes decoded, integers in decimal."""
    values = np.asarray(values).reshape(-1)
    if values.dtype == object or values.dtype.kind == "S":
        return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                         for v in values], dtype=object)
    return values.astype(str).astype(object)


def query_buckets(counts: Mapping[str, int]) -> dict[str, str]:
    """Query -> ``head``, ``torso`` or ``tail`` by its share of the window (module docstring)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    total = sum(count for _, count in ranked)
    buckets, before = {}, 0
    for query, count in ranked:
        buckets[query] = ("head" if before < HEAD_SHARE * total else
                          "torso" if before < TORSO_SHARE * total else "tail")
        before += count
    return buckets


def _value_slices(column: str, values: np.ndarray) -> dict[str, np.ndarray]:
    frequent = collections.Counter(values.tolist()).most_common()
    kept = [value for value, _ in frequent[:MAX_SLICE_VALUES]]
    masks = {f"{column}={value}": values == value for value in sorted(kept)}
    if len(frequent) > MAX_SLICE_VALUES:
        kept_set = set(kept)
        masks[f"{column}={OTHER}"] = np.fromiter((v not in kept_set for v in values), bool,
                                                 count=len(values))
    return masks


def holdout_slices(columns: Mapping[str, np.ndarray], slice_by: Sequence[str] = (),
                   query_column: str = "", query_bucket_of: Mapping[str, str] | None = None,
                   item_column: str = "", known_items: Sequence[str] | None = None
                   ) -> dict[str, np.ndarray]:
    """Slice name -> row mask over the holdout (see the module docstring), ``overall`` first.

    Args:
      columns: the holdout's parsed columns (``[n]`` arrays).
      slice_by: columns sliced by value.
      query_column: the query column; empty for no query-frequency slices.
      query_bucket_of: query -> bucket (:func:`query_buckets`); unknown queries are ``tail``.
      item_column: the item column; empty for no new/returning slices.
      known_items: the items of the served model's vocabulary.
    """
    rows = len(next(iter(columns.values())))
    masks = {OVERALL: np.ones(rows, bool)}
    for column in slice_by:
        masks.update(_value_slices(column, tokens(columns[column])))
    if query_column:
        bucket_of = query_bucket_of or {}
        buckets = np.array([bucket_of.get(q, "tail") for q in tokens(columns[query_column])])
        masks.update({f"{QUERY_SLICE}={b}": buckets == b for b in ("head", "torso", "tail")})
    if item_column:
        known = set(known_items or ())  # a set: np.isin on object arrays is O(rows x known)
        items = tokens(columns[item_column])
        returning = np.fromiter((item in known for item in items), bool, count=len(items))
        masks.update({f"{ITEM_SLICE}=returning": returning, f"{ITEM_SLICE}=new": ~returning})
    return masks


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray
                    ) -> dict[str, Any]:
    """:func:`cvr_tf.metrics.evaluate`, except that non-finite scores (a diverged model) or an
    empty slice give every metric None and ``non_finite_scores``, the count, instead of raising."""
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad or not len(labels):
        return {**metrics_lib.no_examples(), "examples": int(len(labels)),
                "non_finite_scores": bad}
    return {**metrics_lib.evaluate(labels, scores, groups), "non_finite_scores": 0}


def sliced_metrics(labels: np.ndarray, groups: np.ndarray, scores: Mapping[str, np.ndarray],
                   masks: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per slice, every model's metrics on it.

    Args:
      labels: 0/1 labels of the holdout rows.
      groups: request keys.
      scores: model name (``candidate``, ``current``) -> its scores of the rows.
      masks: slice name -> row mask (:func:`holdout_slices`).

    Returns:
      ``[{"slice", "examples", "positives", "metrics": {model: metrics}}]`` in ``masks`` order.
    """
    out = []
    for name, mask in masks.items():
        out.append({
            "slice": name, "examples": int(mask.sum()), "positives": int(labels[mask].sum()),
            "metrics": {model: evaluate_scores(labels[mask], values[mask], groups[mask])
                        for model, values in scores.items()}})
    return out

"""Labels: the joins of impressions with event logs (clicks, conversions), and their maturity.

Each label of the spec (:class:`cvr_tf.features.labels.LabelSpec`) is one int64 column. An
``events`` label joins the impressions with its event log: an impression ``i`` of item
``item_id`` in request ``request_id`` shown at ``ts_i`` is a positive when some event ``e`` of
the same (request_id, item_id) follows it within the label's window ``W`` (ms)::

    label_i = 1  iff  exists e: (e.request_id, e.item_id) = (i.request_id, i.item_id)
                                and 0 <= e.ts - ts_i <= W

Duplicate events therefore count once, and events before the impression or after the window do
not count. Event partitions are by the event's day, so the events of an impression on day ``D``
lie in partitions ``D .. D + floor((1 day - 1 ms + W) / 1 day)`` (:func:`event_days`; for
``attribution_days = 3``, ``D .. D + 3``), which is what the pipeline reads.

**Maturity.** An event log is observed through its latest ``date=`` partition. A span's label is
*mature* when that covers the last day its window can reach (:func:`label_maturity`); until
then the span's negatives include impressions whose events have not arrived yet. Every span
records, per label, the day its window needs, the day the logs were observed through, whether it
is mature, and the partitions inside the observed range that do not exist (a day with no events
should have an empty partition: a missing one is listed, and logged, because its events may be
lost). The training job refuses immature spans unless told how to treat them
(:mod:`cvr_tf.delayed_feedback`), and the pipeline rebuilds an immature span once the logs reach
further (:func:`pipelines.spans.plan_spans`).
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cvr_tf.features import FeatureSpec
from cvr_tf.features.labels import MS_PER_DAY, LabelSpec

REQUEST_ID = "request_id"
ITEM_ID = "item_id"
TS = "ts"
JOIN_KEYS = (REQUEST_ID, ITEM_ID)
QUANTITY = "quantity"  # optional event column; an event with quantity <= 0 is rejected
CONVERSIONS = "conversions"
DEFAULT_ATTRIBUTION_DAYS = 3  # --attribution_days of a spec without "labels"
_ROW = "__row"
_EVENT_TS = "__event_ts"


def pipeline_labels(spec: FeatureSpec, attribution_days: int | None = None,
                    label_column: str | None = None) -> tuple[LabelSpec, ...]:
    """The labels a pipeline run derives: the spec's ``labels``, or for a spec without them its
    ``label``, joined with conversions within ``attribution_days`` (default 3) or read from the
    impressions column ``label_column``.

    Raises:
      ValueError: the spec names its labels and ``attribution_days`` or ``label_column`` is
        given too (the spec holds each label's window: one source of truth).
    """
    if spec.labels:
        if attribution_days is not None or label_column is not None:
            raise ValueError(
                f"the feature spec names its labels ({', '.join(spec.label_names)}) with their "
                "windows; drop --attribution_days/--label_column and set the windows in the "
                "spec's \"labels\"")
        return spec.labels
    if label_column is not None:
        return (LabelSpec(spec.label, column=label_column),)
    days = DEFAULT_ATTRIBUTION_DAYS if attribution_days is None else attribution_days
    if days < 0:
        raise ValueError(f"attribution_days must be >= 0, got {days}")
    return (LabelSpec(spec.label, events=CONVERSIONS, attribution_days=days),)


def event_days(day: datetime.date, window_ms: int) -> list[datetime.date]:
    """Event partitions that can hold events within ``window_ms`` of ``day``'s impressions."""
    last = (MS_PER_DAY - 1 + window_ms) // MS_PER_DAY
    return [day + datetime.timedelta(days=i) for i in range(last + 1)]


def event_windows(labels: Sequence[LabelSpec]) -> dict[str, int]:
    """Event log -> the widest window (ms) of the labels joining it: the partitions it reads."""
    windows: dict[str, int] = {}
    for label in labels:
        if label.events is not None:
            windows[label.events] = max(windows.get(label.events, 0), label.window_ms)
    return windows


def distinct_events(parts: Sequence[pa.Table]) -> pa.Table:
    """Concatenates event tables and keeps one row per (request_id, item_id, ts)."""
    columns = [*JOIN_KEYS, TS]
    table = pa.concat_tables([part.select(columns) for part in parts])
    return table.group_by(columns, use_threads=False).aggregate([])


def attribute_events(impressions: pa.Table, events: pa.Table, window_ms: int) -> np.ndarray:
    """The 0/1 label of each impression (int64, in row order): an event within the window.

    Args:
      impressions: columns ``request_id``, ``item_id``, ``ts`` (ms).
      events: columns ``request_id``, ``item_id``, ``ts`` (ms), key types as impressions'.
      window_ms: the window after the impression, in milliseconds.

    Returns:
      ``int64 [impressions.num_rows]``.
    """
    if window_ms < 0:
        raise ValueError(f"the label window must be >= 0 ms, got {window_ms}")
    labels = np.zeros(impressions.num_rows, dtype=np.int64)
    if impressions.num_rows == 0 or events.num_rows == 0:
        return labels
    left = impressions.select([*JOIN_KEYS, TS]).append_column(
        _ROW, pa.array(np.arange(impressions.num_rows, dtype=np.int64)))
    right = events.select([*JOIN_KEYS, TS]).rename_columns([*JOIN_KEYS, _EVENT_TS])
    pairs = left.join(right, keys=list(JOIN_KEYS), join_type="inner")
    delay = pc.subtract(pairs.column(_EVENT_TS), pairs.column(TS))
    within = pc.and_(pc.greater_equal(delay, 0), pc.less_equal(delay, window_ms))
    rows = pairs.column(_ROW).filter(within).to_numpy()
    labels[rows] = 1
    return labels


def label_maturity(label: LabelSpec, day: datetime.date, present: Collection[datetime.date],
                   observed_through: datetime.date | None) -> dict[str, Any]:
    """What span ``day`` records about ``label``: whether its window is fully observed.

    Args:
      label: the label.
      day: the span's day.
      present: the days of the label's event log that have a partition.
      observed_through: the latest of them (None: the log has no partition).

    Returns:
      ``{"events", "needs_events_through", "events_observed_through", "mature",
      "missing_partitions"}`` (ISO days), or ``{"column", "mature": True}`` for a label read
      from a column of the impressions (complete as logged).
    """
    if label.events is None:
        return {"column": label.column, "mature": True}
    needed = event_days(day, label.window_ms)
    missing = [d for d in needed if d not in present and observed_through is not None
               and d <= observed_through]
    return {
        "events": label.events,
        "needs_events_through": needed[-1].isoformat(),
        "events_observed_through": observed_through.isoformat() if observed_through else None,
        "mature": observed_through is not None and observed_through >= needed[-1],
        "missing_partitions": [f"{label.events}/date={d}" for d in missing],
    }


def immature_labels(maturity: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The labels a span's maturity record says are not fully observed yet."""
    return [name for name, record in maturity.items() if not record.get("mature", True)]


__all__ = ["CONVERSIONS", "DEFAULT_ATTRIBUTION_DAYS", "ITEM_ID", "JOIN_KEYS", "QUANTITY",
           "REQUEST_ID", "TS", "attribute_events", "distinct_events", "event_days",
           "event_windows", "immature_labels", "label_maturity", "pipeline_labels"]

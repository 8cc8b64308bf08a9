"""Conversion labels: the attribution join of impressions with purchase events.

An impression ``i`` of item ``item_id`` in request ``request_id`` shown at ``ts_i`` is a positive
when some conversion ``c`` of the same (request_id, item_id) follows it within the window:

    converted_i = 1  iff  exists c: (c.request_id, c.item_id) = (i.request_id, i.item_id)
                                    and 0 <= c.ts - ts_i <= attribution_days * 86_400_000

Duplicate conversion events therefore count once. Because conversion partitions are by the
event's day, the conversions of an impression on day ``D`` lie in partitions ``D .. D +
attribution_days`` (:func:`conversion_days`), which is what the pipeline reads.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.validation import MS_PER_DAY

REQUEST_ID = "request_id"
ITEM_ID = "item_id"
TS = "ts"
JOIN_KEYS = (REQUEST_ID, ITEM_ID)
QUANTITY = "quantity"  # optional conversion column; a conversion with quantity <= 0 is rejected
_ROW = "__row"
_CONVERSION_TS = "__conversion_ts"


def conversion_days(day: datetime.date, attribution_days: int) -> list[datetime.date]:
    """Conversion partitions that can hold conversions of ``day``'s impressions."""
    return [day + datetime.timedelta(days=i) for i in range(attribution_days + 1)]


def distinct_conversions(parts: Sequence[pa.Table]) -> pa.Table:
    """Concatenates conversion tables and keeps one row per (request_id, item_id, ts)."""
    columns = [*JOIN_KEYS, TS]
    table = pa.concat_tables([part.select(columns) for part in parts])
    return table.group_by(columns, use_threads=False).aggregate([])


def attribute_conversions(impressions: pa.Table, conversions: pa.Table,
                          attribution_days: int) -> np.ndarray:
    """The 0/1 label of each impression (int64, in row order).

    Args:
      impressions: columns ``request_id``, ``item_id``, ``ts`` (ms).
      conversions: columns ``request_id``, ``item_id``, ``ts`` (ms), key types as impressions'.
      attribution_days: the window after the impression, in days.

    Returns:
      ``int64 [impressions.num_rows]``.
    """
    if attribution_days < 0:
        raise ValueError(f"attribution_days must be >= 0, got {attribution_days}")
    labels = np.zeros(impressions.num_rows, dtype=np.int64)
    if impressions.num_rows == 0 or conversions.num_rows == 0:
        return labels
    left = impressions.select([*JOIN_KEYS, TS]).append_column(
        _ROW, pa.array(np.arange(impressions.num_rows, dtype=np.int64)))
    right = conversions.select([*JOIN_KEYS, TS]).rename_columns([*JOIN_KEYS, _CONVERSION_TS])
    pairs = left.join(right, keys=list(JOIN_KEYS), join_type="inner")
    delay = pc.subtract(pairs.column(_CONVERSION_TS), pairs.column(TS))
    within = pc.and_(pc.greater_equal(delay, 0),
                     pc.less_equal(delay, attribution_days * MS_PER_DAY))
    rows = pairs.column(_ROW).filter(within).to_numpy()
    labels[rows] = 1
    return labels


__all__ = ["ITEM_ID", "JOIN_KEYS", "REQUEST_ID", "TS", "attribute_conversions",
           "conversion_days", "distinct_conversions"]

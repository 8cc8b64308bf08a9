"""The attribution join: window edges, duplicates, keys, and which partitions it needs."""

import datetime

import numpy as np
import pyarrow as pa
import pytest

from pipelines.labels import attribute_conversions, conversion_days, distinct_conversions

DAY_MS = 86_400_000


def impressions(rows):
    request, item, ts = zip(*rows, strict=True)
    return pa.table({"request_id": list(request), "item_id": list(item),
                     "ts": pa.array(ts, pa.int64())})


def test_window_is_zero_to_attribution_days_inclusive():
    shown = impressions([("r1", "a", 1000), ("r1", "b", 1000), ("r1", "c", 1000),
                         ("r1", "d", 1000), ("r2", "a", 1000)])
    conversions = impressions([
        ("r1", "a", 1000),                  # same millisecond: counts
        ("r1", "b", 1000 + 3 * DAY_MS),     # exactly 3 days: counts
        ("r1", "c", 1001 + 3 * DAY_MS),     # 3 days + 1 ms: too late
        ("r1", "d", 999),                   # before the impression
        ("r3", "a", 2000),                  # another request
    ])
    assert attribute_conversions(shown, conversions, 3).tolist() == [1, 1, 0, 0, 0]
    assert attribute_conversions(shown, conversions, 4).tolist() == [1, 1, 1, 0, 0]
    assert attribute_conversions(shown, conversions, 0).tolist() == [1, 0, 0, 0, 0]


def test_duplicate_events_and_repeated_impressions_count_once_each():
    shown = impressions([("r1", "a", 1000), ("r1", "a", 5 * DAY_MS), ("r1", "b", 1000)])
    events = impressions([("r1", "a", 2000)] * 3 + [("r1", "a", 2000 + 5 * DAY_MS)])
    assert attribute_conversions(shown, events, 3).tolist() == [1, 1, 0]
    assert distinct_conversions([events, events]).num_rows == 2


def test_no_conversions_and_no_impressions():
    shown = impressions([("r1", "a", 1000)])
    empty = shown.slice(0, 0)
    assert attribute_conversions(shown, empty, 3).tolist() == [0]
    assert attribute_conversions(empty, shown, 3).dtype == np.int64
    with pytest.raises(ValueError, match="attribution_days must be >= 0"):
        attribute_conversions(shown, shown, -1)


def test_conversion_days_cover_the_window_after_any_time_of_the_day():
    day = datetime.date(2026, 1, 31)
    assert conversion_days(day, 3) == [datetime.date(2026, 1, 31), datetime.date(2026, 2, 1),
                                       datetime.date(2026, 2, 2), datetime.date(2026, 2, 3)]

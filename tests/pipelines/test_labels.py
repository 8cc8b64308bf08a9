"""The label joins: window edges, duplicates, keys, partitions needed, maturity, definitions."""

import datetime

import numpy as np
import pyarrow as pa
import pytest

from cvr_tf.features import FeatureSpecError, default_spec, spec_from_dict
from cvr_tf.features.labels import LabelSpec
from pipelines.labels import (
    attribute_events,
    distinct_events,
    event_days,
    event_windows,
    immature_labels,
    label_maturity,
    pipeline_labels,
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DAY = datetime.date(2026, 1, 31)


def impressions(rows):
    request, item, ts = zip(*rows, strict=True)
    return pa.table({"request_id": list(request), "item_id": list(item),
                     "ts": pa.array(ts, pa.int64())})


def test_window_is_zero_to_the_window_inclusive():
    shown = impressions([("r1", "a", 1000), ("r1", "b", 1000), ("r1", "c", 1000),
                         ("r1", "d", 1000), ("r2", "a", 1000)])
    conversions = impressions([
        ("r1", "a", 1000),                  # same millisecond: counts
        ("r1", "b", 1000 + 3 * DAY_MS),     # exactly 3 days: counts
        ("r1", "c", 1001 + 3 * DAY_MS),     # 3 days + 1 ms: too late
        ("r1", "d", 999),                   # before the impression
        ("r3", "a", 2000),                  # another request
    ])
    assert attribute_events(shown, conversions, 3 * DAY_MS).tolist() == [1, 1, 0, 0, 0]
    assert attribute_events(shown, conversions, 4 * DAY_MS).tolist() == [1, 1, 1, 0, 0]
    assert attribute_events(shown, conversions, 0).tolist() == [1, 0, 0, 0, 0]


def test_duplicate_events_and_repeated_impressions_count_once_each():
    shown = impressions([("r1", "a", 1000), ("r1", "a", 5 * DAY_MS), ("r1", "b", 1000)])
    events = impressions([("r1", "a", 2000)] * 3 + [("r1", "a", 2000 + 5 * DAY_MS)])
    assert attribute_events(shown, events, 3 * DAY_MS).tolist() == [1, 1, 0]
    assert distinct_events([events, events]).num_rows == 2


def test_no_events_and_no_impressions():
    shown = impressions([("r1", "a", 1000)])
    empty = shown.slice(0, 0)
    assert attribute_events(shown, empty, DAY_MS).tolist() == [0]
    assert attribute_events(empty, shown, DAY_MS).dtype == np.int64
    with pytest.raises(ValueError, match="window must be >= 0 ms"):
        attribute_events(shown, shown, -1)


def test_event_days_cover_the_window_after_any_time_of_the_day():
    assert event_days(DAY, 3 * DAY_MS) == [datetime.date(2026, 1, 31), datetime.date(2026, 2, 1),
                                           datetime.date(2026, 2, 2), datetime.date(2026, 2, 3)]
    assert event_days(DAY, HOUR_MS) == [DAY, datetime.date(2026, 2, 1)]  # 23:30 + 1 h
    assert event_days(DAY, 0) == [DAY]
    assert event_days(DAY, DAY_MS + 1) == event_days(DAY, 2 * DAY_MS)


def test_a_spec_without_labels_keeps_the_flags_and_one_with_labels_refuses_them():
    spec = default_spec()
    assert pipeline_labels(spec) == (LabelSpec("converted", events="conversions",
                                               attribution_days=3),)
    assert pipeline_labels(spec, 1)[0].window_ms == DAY_MS
    assert pipeline_labels(spec, label_column="bought") == (LabelSpec("converted",
                                                                      column="bought"),)
    funnel = spec_from_dict({**spec.to_dict(), "labels": {
        "clicked": {"events": "clicks", "window_hours": 1},
        "converted": {"events": "conversions", "attribution_days": 3}}})
    assert [label.window_ms for label in pipeline_labels(funnel)] == [HOUR_MS, 3 * DAY_MS]
    assert event_windows(pipeline_labels(funnel)) == {"clicks": HOUR_MS, "conversions": 3 * DAY_MS}
    with pytest.raises(ValueError, match="names its labels .* drop --attribution_days"):
        pipeline_labels(funnel, 3)


def test_maturity_is_the_last_event_partition_covering_the_window():
    label = LabelSpec("converted", events="conversions", attribution_days=3)
    days = {DAY + datetime.timedelta(days=i) for i in range(6)} - {DAY + datetime.timedelta(1)}
    mature = label_maturity(label, DAY, days, DAY + datetime.timedelta(days=5))
    assert mature == {"events": "conversions", "needs_events_through": "2026-02-03",
                      "events_observed_through": "2026-02-05", "mature": True,
                      "missing_partitions": ["conversions/date=2026-02-01"]}
    fresh = label_maturity(label, DAY, days, DAY + datetime.timedelta(days=2))
    assert not fresh["mature"] and fresh["missing_partitions"] == ["conversions/date=2026-02-01"]
    assert not label_maturity(label, DAY, set(), None)["mature"]
    assert label_maturity(LabelSpec("bought", column="bought"), DAY, set(), None) == {
        "column": "bought", "mature": True}
    assert immature_labels({"clicked": mature, "converted": fresh}) == ["converted"]


@pytest.mark.parametrize("definition, message", [
    ({"events": "clicks"}, "exactly one of window_hours and attribution_days"),
    ({"events": "clicks", "window_hours": 1, "attribution_days": 1}, "exactly one of"),
    ({"events": "clicks", "window_hours": -1}, "window_hours must be a number >= 0"),
    ({"events": "clicks", "attribution_days": 1.5}, "attribution_days must be an integer"),
    ({"column": "x", "window_hours": 1}, "a 'column' label has no window"),
    ({"window_hours": 1}, "exactly one of 'events'"),
    ({"events": "impressions", "window_hours": 1}, "not impressions"),
    ({"events": "clicks", "window": 1}, "unknown field\\(s\\) window"),
])
def test_bad_label_definitions_name_the_label_and_the_fix(definition, message):
    spec = default_spec().to_dict()
    with pytest.raises(FeatureSpecError, match=f"label 'converted'.*{message}"):
        spec_from_dict({**spec, "labels": {"converted": definition}})


def test_the_primary_label_must_be_one_of_the_labels():
    spec = default_spec().to_dict()
    with pytest.raises(FeatureSpecError, match="label 'converted' is not one of the spec's "
                                               "labels \\(clicked\\)"):
        spec_from_dict({**spec, "labels": {"clicked": {"events": "clicks", "window_hours": 1}}})
    labelled = spec_from_dict({**spec, "label": "clicked",
                               "labels": {"clicked": {"events": "clicks", "window_hours": 1}}})
    assert labelled.label_names == ("clicked",)
    assert labelled.log_columns()["clicked"] == "int64"
    assert spec_from_dict(labelled.to_dict()) == labelled

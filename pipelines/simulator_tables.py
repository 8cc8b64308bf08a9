"""The Arrow form of a simulated day: impression, click and conversion tables.

Column contract of the simulator's logs (``pipelines/README.md`` documents it):
``impressions`` carry :data:`IMPRESSION_SCHEMA` (plus optional label and ground-truth columns),
``clicks`` :data:`CLICK_SCHEMA` and ``conversions`` :data:`CONVERSION_SCHEMA`; events are keyed by
(request_id, item_id) of the impression they follow.
"""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa

from pipelines.simulator_config import CATEGORIES, DEVICES, SEGMENTS
from pipelines.simulator_day import DayLog, day_start_ms
from pipelines.simulator_funnel import MS_PER_DAY, MS_PER_HOUR
from pipelines.simulator_world import World

IMPRESSION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.int64()),
        ("user_id", pa.string()),
        ("query", pa.string()),
        ("item_id", pa.string()),
        ("position", pa.int64()),
        ("device", pa.string()),
        ("item_category", pa.string()),
        ("item_brand", pa.string()),
        ("item_price", pa.float64()),
        ("user_segment", pa.string()),
        ("item_title", pa.string()),
    ]
)
CLICK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),
    ]
)
CONVERSION_SCHEMA = CLICK_SCHEMA.append(pa.field("quantity", pa.int64()))
LABEL_COLUMN = "converted"
CLICK_LABEL_COLUMN = "clicked"
GROUND_TRUTH_COLUMN = "true_cvr"
CLICK_GROUND_TRUTH_COLUMN = "true_ctr"
POST_CLICK_GROUND_TRUTH_COLUMN = "true_cvr_given_click"
EVENT_KINDS = ("clicks", "conversions")

_DEVICE_STRINGS = pa.array(DEVICES)
_SEGMENT_STRINGS = pa.array(SEGMENTS)
_CATEGORY_STRINGS = pa.array([name for name, _, _ in CATEGORIES])


def _date_of(world: World, day: int) -> datetime.date:
    return world.config.world_start + datetime.timedelta(days=day)


def request_ids_of(world: World, log: DayLog) -> pa.Array:
    """``r<YYYYMMDD>-<index>``: unique across days, ordered by time within a day."""
    count = len(log.request_ts)
    digits = np.char.zfill(np.arange(count).astype(str), max(6, len(str(count - 1))))
    return pa.array(np.char.add(f"r{_date_of(world, log.day):%Y%m%d}-", digits))


def impressions_table(world: World, log: DayLog, request_ids: pa.Array) -> pa.Table:
    """The impressions of one day as an Arrow table of :data:`IMPRESSION_SCHEMA`.

    Args:
        world: The simulated world.
        log: The day's traffic.
        request_ids: The day's request ids (one per request).

    Returns:
        The table, plus ``converted`` (int64: a conversion within ``attribution_days`` of the
        impression) and ``clicked`` (int64: a click within ``click_window_hours``) when
        ``with_label_column``, and ``true_cvr``, ``true_ctr`` and ``true_cvr_given_click``
        (float64) when ``with_ground_truth`` is configured.
    """
    config = world.config
    request = np.repeat(np.arange(len(log.request_ts)), log.candidates)
    columns = [
        request_ids.take(request),
        pa.array(log.request_ts[request]),
        world.user_id_strings.take(log.request_user[request]),
        world.query_strings.take(log.request_query[request]),
        world.item_id_strings.take(log.item),
        pa.array(log.position),
        _DEVICE_STRINGS.take(log.request_device[request]),
        _CATEGORY_STRINGS.take(world.item_category[log.item]),
        world.brand_strings.take(world.item_brand[log.item]),
        pa.array(world.item_price[log.item]),
        _SEGMENT_STRINGS.take(world.user_segment[log.request_user[request]]),
        world.item_title_strings.take(log.item),
    ]
    schema = IMPRESSION_SCHEMA
    funnel = log.funnel
    if config.with_label_column:
        windows = (
            (LABEL_COLUMN, funnel.conversion_delay_ms, config.attribution_days * MS_PER_DAY),
            (CLICK_LABEL_COLUMN, funnel.click_delay_ms, config.click_window_hours * MS_PER_HOUR),
        )
        for name, delay_ms, window_ms in windows:
            columns.append(pa.array(((delay_ms >= 0) & (delay_ms <= window_ms)).astype(np.int64)))
            schema = schema.append(pa.field(name, pa.int64()))
    if config.with_ground_truth:
        truths = (
            (GROUND_TRUTH_COLUMN, funnel.true_cvr),
            (CLICK_GROUND_TRUTH_COLUMN, funnel.true_ctr),
            (POST_CLICK_GROUND_TRUTH_COLUMN, funnel.true_cvr_given_click),
        )
        for name, values in truths:
            columns.append(pa.array(values))
            schema = schema.append(pa.field(name, pa.float64()))
    return pa.Table.from_arrays(columns, schema=schema)


def events_tables(
    world: World, log: DayLog, request_ids: pa.Array, kind: str
) -> dict[int, pa.Table]:
    """The click or conversion events of one day's impressions, keyed by days from impression
    to event.

    Args:
        world: The simulated world.
        log: The day's traffic.
        request_ids: The day's request ids (one per request).
        kind: ``"clicks"`` or ``"conversions"``.

    Returns:
        ``{lag: table of CLICK_SCHEMA or CONVERSION_SCHEMA}`` for every lag with events, rows in
        time order.
    """
    funnel = log.funnel
    if kind == "clicks":
        event_row, event_ts, extra = funnel.click_row, funnel.click_ts, []
    else:
        event_row, event_ts = funnel.conversion_row, funnel.conversion_ts
        extra = [funnel.conversion_quantity]
    schema = CLICK_SCHEMA if kind == "clicks" else CONVERSION_SCHEMA
    lags = (event_ts - day_start_ms(world, log.day)) // MS_PER_DAY
    bounds = np.searchsorted(lags, np.arange(lags.max() + 2)) if len(lags) else np.zeros(1, int)
    tables = {}
    for lag in np.flatnonzero(np.diff(bounds)):
        rows = slice(bounds[lag], bounds[lag + 1])
        tables[int(lag)] = pa.Table.from_arrays(
            [
                request_ids.take(event_row[rows] // log.candidates),
                world.item_id_strings.take(log.item[event_row[rows]]),
                pa.array(event_ts[rows]),
                *(pa.array(column[rows]) for column in extra),
            ],
            schema=schema,
        )
    return tables

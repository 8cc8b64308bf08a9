"""Tiny search logs with planted edge cases and bad rows, for the pipeline tests.

Three impression days (2026-01-05..07) of ``REQUESTS`` requests x ``CANDIDATES`` items, and
conversion partitions up to three days later. Planted:

* labels: an impression at 23:59 converting 30 minutes later (next day's partition); one
  converting exactly 3 days later (inside the window) and one 3 days + 1 ms later (outside);
  a conversion before its impression; duplicate conversion events;
* bad rows on 2026-01-06 (one per reason) and a second file there whose ``item_price`` is text;
* an unknown date partition ``date=2026-13-45``.

:func:`write_clicks` adds a click log (``clicks/date=.../part-00000.parquet``: request_id,
item_id, ts) with its own planted cases: a click in the next day's partition, one exactly at the
one-hour window's end and one 1 ms after it, a click before its impression, duplicates, clicks
without a conversion and conversions without a click.
"""

from __future__ import annotations

import datetime
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cvr_tf.compat import tf
from cvr_tf.features import FeatureSpec

START = datetime.date(2026, 1, 5)
DAYS = 3
REQUESTS = 40
CANDIDATES = 5
MS_PER_DAY = 86_400_000
TERMS = ["red", "shoe", "Running", "blue", "jacket", "warm", "kids", "sale"]
# Planted bad rows of 2026-01-06: (column, value, expected reason)
BAD_ROWS = [
    ("item_category", None, "missing_value"),
    ("item_price", -3.0, "out_of_range"),
    ("item_price", float("nan"), "missing_value"),
    ("position", 0, "out_of_range"),
    ("ts", "other_day", "bad_timestamp"),
    ("ts", None, "missing_value"),
    ("request_id", None, "missing_value"),
]
TEXT_PRICES = ["12.5", "abc", "7", ""]  # the text-typed file: ok, wrong_type, ok, wrong_type


def day_start_ms(day: datetime.date) -> int:
    return (day - datetime.date(1970, 1, 1)).days * MS_PER_DAY


def _impressions(day: datetime.date, rng: np.random.Generator) -> pd.DataFrame:
    n = REQUESTS * CANDIDATES
    request = np.repeat(np.arange(REQUESTS), CANDIDATES)
    ts = day_start_ms(day) + np.repeat(np.sort(rng.integers(0, MS_PER_DAY - 60_000, REQUESTS)),
                                       CANDIDATES)
    words = rng.integers(0, len(TERMS), size=(n, 3))
    return pd.DataFrame({
        "request_id": [f"r{day:%Y%m%d}-{r:04d}" for r in request],
        "ts": ts.astype(np.int64),
        "user_id": [f"u{u}" for u in rng.integers(0, 30, REQUESTS)[request]],
        "query": [" ".join(TERMS[w] for w in row[:2]) for row in words],
        "item_id": [f"i{i}" for i in rng.integers(0, 50, n)],
        "position": np.tile(np.arange(1, CANDIDATES + 1), REQUESTS).astype(np.int64),
        "device": rng.choice(["mobile", "desktop", "app"], n),
        "item_category": [f"c{c}" for c in rng.integers(0, 6, n)],
        "item_brand": [f"b{b}" for b in rng.integers(0, 9, n)],
        "item_price": np.round(rng.uniform(1, 300, n), 2),
        "user_segment": rng.choice(["budget", "premium"], n),
        "item_title": ["  ".join(TERMS[w] for w in row) for row in words],
    })


def _plant_label_cases(frame: pd.DataFrame, day: datetime.date) -> list[tuple[int, int]]:
    """Edits the first request of ``frame``; returns (row, conversion delay ms) to add.

    Row 0 converts 30 min later (next day), row 1 exactly 3 days later, row 2 3 days + 1 ms
    later, row 3 before its impression; row 4 has three events (two duplicates).
    """
    frame.loc[0:CANDIDATES - 1, "ts"] = day_start_ms(day) + MS_PER_DAY - 60_000  # 23:59
    frame.loc[0:CANDIDATES - 1, "item_id"] = [f"planted{k}" for k in range(CANDIDATES)]
    return [(0, 30 * 60_000), (1, 3 * MS_PER_DAY), (2, 3 * MS_PER_DAY + 1), (3, -1_000),
            (4, 5 * 60_000), (4, 5 * 60_000), (4, 7 * 60_000)]


def _write(frame: pd.DataFrame | pa.Table, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame,
                                                                            preserve_index=False)
    pq.write_table(table, path)


def write_logs(root: str, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Writes the logs under ``root``; returns every impression and conversion as written."""
    rng = np.random.default_rng(seed)
    impressions, conversions = [], []
    for offset in range(DAYS):
        day = START + datetime.timedelta(days=offset)
        frame = _impressions(day, rng)
        planted = _plant_label_cases(frame, day)
        random_rows = rng.choice(np.arange(CANDIDATES, len(frame)), 25, replace=False)
        delays = rng.choice([60_000, 3_600_000, 20 * 3_600_000, 2 * MS_PER_DAY, 5 * MS_PER_DAY],
                            len(random_rows))
        events = planted + list(zip(random_rows.tolist(), delays.tolist(), strict=True))
        rows = frame.iloc[[row for row, _ in events]]
        conversions.append(pd.DataFrame({
            "request_id": rows["request_id"].to_numpy(), "item_id": rows["item_id"].to_numpy(),
            "ts": rows["ts"].to_numpy() + np.array([delay for _, delay in events]),
            "quantity": np.ones(len(events), dtype=np.int64)}))
        if offset == 1:
            frame = _plant_bad_rows(frame)
        _write(frame, os.path.join(root, "impressions", f"date={day}", "part-00000.parquet"))
        impressions.append(frame.assign(partition=str(day)))
    day = START + datetime.timedelta(days=1)
    text_file = _text_price_file(day, rng)
    _write(text_file, os.path.join(root, "impressions", f"date={day}", "part-00001.parquet"))
    impressions.append(text_file.to_pandas().assign(partition=str(day)))
    unknown = _impressions(START, rng).head(3)
    _write(unknown, os.path.join(root, "impressions", "date=2026-13-45", "part-00000.parquet"))
    all_conversions = pd.concat(conversions, ignore_index=True)
    conversion_day = pd.to_datetime(all_conversions["ts"], unit="ms").dt.date
    for day, frame in all_conversions.groupby(conversion_day):
        _write(frame, os.path.join(root, "conversions", f"date={day}", "part-00000.parquet"))
    return {"impressions": pd.concat(impressions, ignore_index=True),
            "conversions": all_conversions}


HOUR_MS = 3_600_000
# (row of the day's first request, click delay ms): 23:59 + 2 min (next day's partition),
# exactly 1 h, 1 h + 1 ms, before the impression, and three events of which two are duplicates.
PLANTED_CLICKS = [(0, 120_000), (1, HOUR_MS), (2, HOUR_MS + 1), (3, -1_000), (4, 5_000),
                  (4, 5_000), (4, 9_000)]


def write_clicks(root: str, impressions: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """Writes a click log for ``write_logs``' impressions; returns every click as written.

    Besides the planted clicks of each day's first request, 60 random impressions of each valid
    partition are clicked after 5 s .. 2 h (2 h is outside a one-hour window), 10 of them twice.
    """
    rng = np.random.default_rng(seed)
    valid = impressions[impressions["partition"].str.match(r"\d{4}-\d{2}-\d{2}$")
                        & impressions["request_id"].notna() & impressions["ts"].notna()]
    clicks = []
    for _, frame in valid.groupby("partition"):
        frame = frame.reset_index(drop=True)
        first = frame[frame["item_id"].astype(str).str.startswith("planted")]
        rows = [first.index[row] for row, _ in PLANTED_CLICKS]
        delays = [delay for _, delay in PLANTED_CLICKS]
        chosen = rng.choice(np.arange(CANDIDATES, len(frame)), 60, replace=False)
        rows += list(chosen) + list(chosen[:10])
        delays += list(rng.choice([5_000, 30_000, 600_000, 59 * 60_000, 2 * HOUR_MS], 60))
        delays += [delay + 1_000 for delay in delays[-60:-50]]
        picked = frame.loc[rows]
        clicks.append(pd.DataFrame({
            "request_id": picked["request_id"].to_numpy(), "item_id": picked["item_id"].to_numpy(),
            "ts": picked["ts"].astype(np.int64).to_numpy() + np.array(delays, dtype=np.int64)}))
    all_clicks = pd.concat(clicks, ignore_index=True)
    click_day = pd.to_datetime(all_clicks["ts"], unit="ms").dt.date
    for day, frame in all_clicks.groupby(click_day):
        _write(frame, os.path.join(root, "clicks", f"date={day}", "part-00000.parquet"))
    return all_clicks


def _plant_bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"ts": object, "position": object, "item_category": object,
                          "request_id": object})
    for i, (column, value, _) in enumerate(BAD_ROWS):
        row = len(frame) - 1 - i
        frame.at[row, column] = (int(frame.at[row, "ts"]) - MS_PER_DAY
                                 if value == "other_day" else value)
    return frame.astype({"ts": "Int64", "position": "Int64"})


def _text_price_file(day: datetime.date, rng: np.random.Generator) -> pa.Table:
    frame = _impressions(day, rng).head(len(TEXT_PRICES))
    frame["request_id"] = [f"t{day:%Y%m%d}-{i}" for i in range(len(frame))]
    frame["item_price"] = TEXT_PRICES
    return pa.Table.from_pandas(frame, preserve_index=False)


def read_examples(files: list[str], spec: FeatureSpec) -> pd.DataFrame:
    """Every example of GZIP TFRecord ``files``, parsed with the spec, strings decoded."""
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(100_000)
    parts = []
    for batch in dataset:
        parsed = tf.io.parse_example(batch, spec.parsing_spec())
        parts.append(pd.DataFrame({k: v.numpy() for k, v in parsed.items()}))
    if not parts:
        return pd.DataFrame(columns=list(spec.log_columns()))
    frame = pd.concat(parts, ignore_index=True)
    for column, dtype in spec.log_columns().items():
        if dtype == "string":
            frame[column] = frame[column].str.decode("utf-8")
    return frame


__all__ = ["BAD_ROWS", "CANDIDATES", "DAYS", "HOUR_MS", "PLANTED_CLICKS", "REQUESTS", "START",
           "TEXT_PRICES", "day_start_ms", "read_examples", "write_clicks", "write_logs"]

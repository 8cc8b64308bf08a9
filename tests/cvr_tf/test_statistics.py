"""Numeric statistics and quantile sketches against numpy; merging spans equals the union."""

import datetime
import json
import os

import numpy as np
import pyarrow as pa
import pytest

from cvr_tf.features import spec_from_dict
from cvr_tf.input import SUCCESS_FILE, span_path
from cvr_tf.quantiles import QuantileSketch, merge_sketches
from cvr_tf.statistics import (
    STATISTICS_FILE,
    compute_statistics,
    merge_statistics,
    numeric_columns,
    read_statistics,
    window_statistics,
    write_statistics,
)

SPEC = spec_from_dict({"features": [
    {"name": "brand", "kind": "categorical", "hash_buckets": 3},
    {"name": "price_log", "kind": "numeric", "column": "price", "dtype": "float32",
     "transform": "log1p", "normalization": "auto"},
    {"name": "price_bucket", "kind": "numeric", "column": "price", "dtype": "float32",
     "boundaries": "quantiles:4"},
    {"name": "position", "kind": "numeric", "dtype": "int64", "normalization": "auto"},
]})
DAY = datetime.date(2026, 1, 5)


def _assert_quantiles_within_rank_error(sketch, data, num_buckets):
    """Each j/B quantile b of the sketch: #{x < b} < qN + E and #{x <= b} >= qN - E."""
    n, error = len(data), sketch.rank_error
    cumulative = np.cumsum(sketch.weights)
    boundaries = sketch.boundaries(num_buckets)
    for j in range(1, num_buckets):
        target = j / num_buckets * n
        b = sketch.values[np.searchsorted(cumulative, target)]
        assert b in boundaries
        assert np.sum(data < b) < target + error and np.sum(data <= b) >= target - error


def test_small_sample_is_exact():
    sketch = QuantileSketch.from_values([3.0, 1.0, 2.0, 2.0, np.nan], size=8)
    assert sketch.values.tolist() == [1.0, 2.0, 3.0] and sketch.weights.tolist() == [1, 2, 1]
    assert sketch.rank_error == 0 and sketch.count == 4
    assert sketch.boundaries(4) == [1.0, 2.0]  # ranks 1, 2, 3 of 4: 1, 2, 2 (merged)
    with pytest.raises(ValueError, match="num_buckets must be at least 2"):
        sketch.boundaries(1)


def test_compressed_sketch_quantiles_are_within_the_stated_rank_error():
    data = np.random.default_rng(0).lognormal(3.0, 1.0, size=20_000)
    sketch = QuantileSketch.from_values(data, size=128)
    assert len(sketch.values) <= 128
    # The documented bound for raw values: E <= N / (2K) + 1/2.
    assert sketch.rank_error <= len(data) / (2 * 128) + 0.5
    for num_buckets in (2, 10, 16):
        _assert_quantiles_within_rank_error(sketch, data, num_buckets)


def test_merged_sketches_are_the_union_within_the_summed_error():
    rng = np.random.default_rng(1)
    parts = [np.round(rng.normal(50, 20, size=n)) for n in (5_000, 3_000, 700)]
    sketches = [QuantileSketch.from_values(p, size=64) for p in parts]
    union = np.concatenate(parts)
    merged = merge_sketches(sketches, size=None)
    assert merged.count == len(union)
    assert merged.rank_error == sum(s.rank_error for s in sketches)
    _assert_quantiles_within_rank_error(merged, union, 16)
    compressed = merge_sketches(sketches, size=64)
    _assert_quantiles_within_rank_error(compressed, union, 16)
    # Uncompressed sketches merge into exactly the union's sketch.
    exact = merge_sketches([QuantileSketch.from_values(p, size=10**6) for p in parts], None)
    reference = QuantileSketch.from_values(union, size=10**6)
    np.testing.assert_array_equal(exact.values, reference.values)
    np.testing.assert_array_equal(exact.weights, reference.weights)


def _table(prices, positions):
    return pa.table({"brand": pa.array(["a"] * len(prices)),
                     "price": pa.array(prices, pa.float32()),
                     "position": pa.array(positions, pa.int64())})


def test_column_statistics_match_numpy():
    prices = [0.0, 4.5, 19.5, None, 250.0]
    stats = compute_statistics(_table(prices, [1, 2, 3, 4, 5]), SPEC)
    assert numeric_columns(SPEC) == ["price", "position"] == list(stats)
    x = np.array([0.0, 4.5, 19.5, 250.0])
    identity, log = stats["price"].moments("identity"), stats["price"].moments("log1p")
    assert (identity.count, identity.min, identity.max) == (4, 0.0, 250.0)
    assert identity.mean == pytest.approx(np.mean(x), rel=1e-15)
    assert identity.std == pytest.approx(np.std(x), rel=1e-15)
    assert log.mean == pytest.approx(np.mean(np.log1p(x)), rel=1e-15)
    assert log.std == pytest.approx(np.std(np.log1p(x)), rel=1e-15)
    assert stats["position"].moments("identity").mean == 3.0


def write_span(root, day, prices, positions):
    directory = span_path(root, day)
    os.makedirs(directory)
    write_statistics(directory, compute_statistics(_table(prices, positions), SPEC))
    open(os.path.join(directory, SUCCESS_FILE), "w").close()


def test_window_statistics_merge_spans_like_the_union(tmp_path):
    rng = np.random.default_rng(2)
    days = [rng.exponential(30.0, size=n).astype(np.float32) for n in (400, 250, 90)]
    for i, prices in enumerate(days):
        write_span(tmp_path, DAY + datetime.timedelta(days=i), prices, np.arange(len(prices)))
    window = window_statistics(tmp_path, ["price"], DAY, DAY + datetime.timedelta(days=2))
    union = np.concatenate(days).astype(np.float64)
    moments = window["price"].moments("identity")
    assert moments.count == len(union)
    assert (moments.min, moments.max) == (union.min(), union.max())
    np.testing.assert_allclose([moments.mean, moments.std], [union.mean(), union.std()],
                               rtol=1e-12)
    log = window["price"].moments("log1p")
    np.testing.assert_allclose([log.mean, log.std],
                               [np.log1p(union).mean(), np.log1p(union).std()], rtol=1e-12)
    # Fewer than 1024 values a day: the spans' sketches are exact, and so is their union.
    assert window["price"].sketch.rank_error == 0
    np.testing.assert_array_equal(window["price"].sketch.values, np.unique(union))
    one_day = window_statistics(tmp_path, ["price"], DAY, DAY)["price"]
    assert one_day.count == 400
    # Merging in any grouping gives the same moments.
    parts = [compute_statistics(_table(d, np.arange(len(d))), SPEC) for d in days]
    regrouped = merge_statistics([merge_statistics(parts[:2]), parts[2]])
    np.testing.assert_allclose(regrouped["price"].moments("identity").mean, union.mean(),
                               rtol=1e-12)


def test_spans_without_statistics_name_the_span_and_the_fix(tmp_path):
    write_span(tmp_path, DAY, [1.0], [1])
    with pytest.raises(FileNotFoundError, match="has no statistics of column\\(s\\) rating"):
        read_statistics(span_path(tmp_path, DAY), ["rating"])
    os.remove(os.path.join(span_path(tmp_path, DAY), STATISTICS_FILE))
    with pytest.raises(FileNotFoundError, match=f"span {span_path(tmp_path, DAY)} has no "
                       f"{STATISTICS_FILE}.*pipelines.build_tfrecords --overwrite"):
        window_statistics(tmp_path, ["price"], DAY, DAY)


def test_statistics_file_is_readable_json(tmp_path):
    write_statistics(tmp_path, compute_statistics(_table([2.0, 4.0], [1, 1]), SPEC))
    with open(tmp_path / STATISTICS_FILE) as handle:
        price = json.load(handle)["columns"]["price"]
    assert price["identity"] == {"count": 2, "mean": 3.0, "std": 1.0, "min": 2.0, "max": 4.0}
    assert price["quantiles"] == {"rank_error": 0.0, "values": [2.0, 4.0], "weights": [1.0, 1.0]}

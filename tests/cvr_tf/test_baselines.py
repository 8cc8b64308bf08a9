"""Popularity baseline: exact smoothed rates on a hand-written span."""

import datetime
import os

import numpy as np
import pytest

from cvr_tf import input as input_lib
from cvr_tf.baselines import evaluate_popularity, fit_popularity
from cvr_tf.compat import tf
from cvr_tf.features import spec_from_dict

SPEC = spec_from_dict({"features": [{"name": "item_id", "kind": "categorical",
                                     "hash_buckets": 10}]})
DAY = datetime.date(2026, 3, 1)


def _write_span(data_dir, day, split, rows):
    span = input_lib.span_path(data_dir, day)
    os.makedirs(span, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(span, input_lib.shard_filename(split, 0, 1)),
                              options="GZIP") as writer:
        for request, item, label in rows:
            feature = {
                "request_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[request])),
                "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[item])),
                "converted": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                         .SerializeToString())
    open(os.path.join(span, input_lib.SUCCESS_FILE), "w").close()


def test_smoothed_rates_and_metrics(tmp_path):
    _write_span(tmp_path, DAY, "train", [(b"r1", b"a", 1), (b"r1", b"b", 0), (b"r2", b"a", 0)])
    _write_span(tmp_path, DAY, "eval", [])
    baseline = fit_popularity(str(tmp_path), DAY, DAY, SPEC, smoothing=20.0)
    assert baseline.prior == pytest.approx(1 / 3)
    # (conversions + 20 * 1/3) / (impressions + 20)
    np.testing.assert_allclose(baseline.score(np.array([b"a", b"b", b"new"], dtype=object)),
                               [(1 + 20 / 3) / 22, (20 / 3) / 21, 1 / 3])
    later = DAY + datetime.timedelta(days=1)
    _write_span(tmp_path, later, "train", [(b"r3", b"b", 0), (b"r3", b"a", 1)])
    _write_span(tmp_path, later, "eval", [(b"r4", b"b", 1), (b"r4", b"new", 0)])
    metrics = evaluate_popularity(baseline, str(tmp_path), later, later, SPEC)
    # r3 ranks a above b (AP 1); r4 ranks new (1/3) above b (0.317): its positive is second.
    assert metrics["mean_average_precision"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["examples"] == 4
    with pytest.raises(ValueError, match="smoothing must be positive"):
        fit_popularity(str(tmp_path), DAY, DAY, SPEC, smoothing=0)

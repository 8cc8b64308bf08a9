"""Span layout: part assembly, completion marker, atomic publish, skip/overwrite planning."""

import datetime
import os

import pytest

from cvr_tf.compat import tf
from cvr_tf.features import default_spec
from cvr_tf.input import SUCCESS_FILE, is_complete_span, span_path
from pipelines.spans import (
    SpanStats,
    assemble_shard,
    complete_span,
    merge_stats,
    part_path,
    plan_spans,
    publish_span,
    remove_stale_staging,
    staging_dir,
    write_records,
)

DAY = datetime.date(2026, 1, 5)
SPEC = default_spec()


def records_of(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def test_assembled_shard_is_the_parts_in_order(tmp_path):
    staging = staging_dir(tmp_path, "run", DAY)
    parts = []
    for chunk, records in (("00000-00000-00001", [b"c"]), ("00000-00000-00000", [b"a", b"b"])):
        parts.append(part_path(staging, "train", 0, chunk))
        write_records(parts[-1], records)
    shard = assemble_shard(staging, "train", 0, 1, sorted(parts))
    assert os.path.basename(shard) == "train-00000-of-00001.tfrecord.gz"
    assert records_of(shard) == [b"a", b"b", b"c"]
    assert assemble_shard(staging, "train", 0, 1, sorted(parts)) == shard  # a retry
    assert records_of(shard) == [b"a", b"b", b"c"]
    complete_span(staging, 1, {}, {}, [], SPEC)
    assert not any(os.path.exists(p) for p in parts)


def test_complete_span_fills_empty_shards_and_writes_success_last(tmp_path):
    staging = str(tmp_path / "staging")
    write_records(os.path.join(staging, "train-00000-of-00002.tfrecord.gz"), [b"x"])
    complete_span(staging, 2, {"rows": {}}, {"device": {"app": 2, "web": 2, "ios": 3}}, [],
                  SPEC)
    names = sorted(os.listdir(staging))
    assert names == ["_SUCCESS", "eval-00000-of-00002.tfrecord.gz",
                     "eval-00001-of-00002.tfrecord.gz", "feature_spec.json",
                     "numeric_statistics.json", "stats.json", "token_counts",
                     "train-00000-of-00002.tfrecord.gz", "train-00001-of-00002.tfrecord.gz"]
    assert records_of(os.path.join(staging, "eval-00001-of-00002.tfrecord.gz")) == []
    with open(os.path.join(staging, "token_counts", "device.tsv")) as f:
        assert f.read() == "3\tios\n2\tapp\n2\tweb\n"


def test_publish_replaces_a_span_and_refuses_an_incomplete_one(tmp_path):
    final = span_path(tmp_path, DAY)
    os.makedirs(final)
    open(os.path.join(final, "old"), "w").close()
    staging = staging_dir(tmp_path, "run", DAY)
    os.makedirs(staging)
    with pytest.raises(RuntimeError, match="no _SUCCESS"):
        publish_span(staging, final)
    open(os.path.join(staging, SUCCESS_FILE), "w").close()
    publish_span(staging, final)
    assert os.listdir(final) == [SUCCESS_FILE] and not os.path.exists(staging)
    publish_span(staging, final)  # a retried publish is a no-op
    assert is_complete_span(final)


def test_plan_skips_complete_spans_unless_overwrite_and_rebuilds_incomplete(tmp_path):
    days = [DAY + datetime.timedelta(days=i) for i in range(3)]
    os.makedirs(span_path(tmp_path, days[0]))
    open(os.path.join(span_path(tmp_path, days[0]), SUCCESS_FILE), "w").close()
    os.makedirs(span_path(tmp_path, days[1]))  # a killed run's leftover, no _SUCCESS
    assert plan_spans(tmp_path, days, overwrite=False) == (days[1:], days[:1])
    assert plan_spans(tmp_path, days, overwrite=True) == (days, [])


def test_stale_staging_roots_are_removed(tmp_path):
    os.makedirs(staging_dir(tmp_path, "killed", DAY))
    os.makedirs(span_path(tmp_path, DAY))
    assert remove_stale_staging(tmp_path) == [str(tmp_path / ".tmp-killed")]
    assert os.listdir(tmp_path) == [f"span={DAY}"]


def test_stats_add_up_and_catch_lost_rows():
    a = SpanStats(rows_in=5, rows_written=4, rows_rejected=1,
                  rejected_by_reason={"missing_value": 1}, positives=1, train_rows=3,
                  eval_rows=1, train_positives=1)
    b = SpanStats(rows_in=2, rows_written=1, rows_rejected=1,
                  rejected_by_reason={"wrong_type": 1}, train_rows=1)
    total = merge_stats([a, b])
    assert (total.rows_in, total.rows_written, total.rows_rejected) == (7, 5, 2)
    assert total.rejected_by_reason == {"missing_value": 1, "wrong_type": 1}
    total.check("span")
    with pytest.raises(AssertionError, match="row accounting of span"):
        SpanStats(rows_in=3, rows_written=1).check("span")

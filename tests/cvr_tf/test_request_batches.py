"""Whole requests out of span files, and the auto|on|off choice of grouped batches."""

import pytest

from cvr_tf import request_batches
from cvr_tf.compat import tf
from cvr_tf.request_batches import file_requests, groups_requests, pack_requests


def _example(key: str, row: int) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        "request_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
        "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
    })).SerializeToString()


def _write(path, keys):
    records = [_example(key, row) for row, key in enumerate(keys)]
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP")) as out:
        for record in records:
            out.write(record)
    return records


def _rows(dataset):
    spec = {"row": tf.io.FixedLenFeature([], tf.int64)}
    return [tf.io.parse_example(run, spec)["row"].numpy().tolist() for run in dataset]


@pytest.mark.parametrize("block", [2, 3, 4096])  # runs cut by block ends, and one block
def test_a_file_yields_its_runs_of_one_key_in_order(tmp_path, monkeypatch, block):
    monkeypatch.setattr(request_batches, "_BLOCK", block)
    path = tmp_path / "shard.tfrecord.gz"
    records = _write(path, ["a", "a", "b", "c", "c", "c", "c", "a"])
    runs = list(file_requests(str(path), "request_id"))
    assert [run.numpy().tolist() for run in runs] == [records[0:2], records[2:3], records[3:7],
                                                      records[7:8]]


def test_an_empty_file_yields_no_request(tmp_path):
    path = tmp_path / "empty.tfrecord.gz"
    _write(path, [])
    assert list(file_requests(str(path), "request_id")) == []


def test_requests_are_laid_end_to_end_and_cut_every_batch_size_rows():
    requests = tf.data.Dataset.from_tensor_slices(
        tf.ragged.constant([[b"a0", b"a1", b"a2"], [b"b0"], [b"c0", b"c1", b"c2", b"c3", b"c4"]]))
    batches = [b.numpy().tolist() for b in pack_requests(requests, 4, drop_remainder=False)]
    assert batches == [[b"a0", b"a1", b"a2", b"b0"], [b"c0", b"c1", b"c2", b"c3"], [b"c4"]]
    assert len(list(pack_requests(requests, 4, drop_remainder=True))) == 2


@pytest.mark.parametrize("setting, loss, grouped", [
    ("auto", "listwise_softmax", True), ("auto", "logloss", False),
    ("on", "logloss", True), ("off", "listwise_softmax", False)])
def test_auto_groups_for_listwise_losses_and_on_off_override(setting, loss, grouped):
    assert groups_requests(setting, loss) is grouped


def test_an_unknown_setting_names_the_choices():
    with pytest.raises(ValueError, match="group_batches must be one of auto, on, off, got 'yes'"):
        groups_requests("yes", "logloss")

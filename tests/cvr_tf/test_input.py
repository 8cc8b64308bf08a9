"""The tf.data reader of the pipeline's spans: values, batching, order, span selection."""

import collections
import dataclasses
import datetime
import os

import numpy as np
import pandas as pd
import pytest

from cvr_tf.compat import tf
from cvr_tf.features import Feature, default_spec
from cvr_tf.input import (
    SUCCESS_FILE,
    SpanSchemaError,
    list_spans,
    make_dataset,
    span_day,
    span_path,
)
from pipelines.span_pipeline import build_spans
from tests.pipelines.log_fixtures import DAYS, START, write_logs

END = START + datetime.timedelta(days=DAYS - 1)
SPEC = default_spec()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    logs = str(tmp_path_factory.mktemp("logs"))
    frames = write_logs(logs)
    output = str(tmp_path_factory.mktemp("spans"))
    summary = build_spans(logs, output, START, END, SPEC, num_shards=2)
    return output, frames["impressions"], summary


def collect(dataset):
    parts = [pd.DataFrame({k: v.numpy() for k, v in batch.items()}) for batch in dataset]
    return pd.concat(parts, ignore_index=True)


def test_parsed_values_equal_the_parquet_input(data):
    output, impressions, summary = data
    got = pd.concat([collect(make_dataset(output, START, END, SPEC, split=split, batch_size=64,
                                          shuffle=False)) for split in ("train", "eval")],
                    ignore_index=True)
    assert len(got) == summary.totals["rows_written"]
    for column, dtype in SPEC.log_columns().items():
        if dtype == "string":
            got[column] = got[column].str.decode("utf-8")
    source = impressions.dropna(subset=["request_id", "position"])
    source = source.assign(position=source["position"].astype(np.int64))
    source = source.set_index(["request_id", "position"]).loc[
        pd.MultiIndex.from_frame(got[["request_id", "position"]])]
    for column in ("user_id", "user_segment", "device", "query", "item_id", "item_title",
                   "item_category", "item_brand"):
        assert (got[column].to_numpy() == source[column].to_numpy()).all(), column
    prices = pd.to_numeric(source["item_price"]).to_numpy().astype(np.float32)
    np.testing.assert_array_equal(got["item_price"].to_numpy(), prices)
    assert got["converted"].isin([0, 1]).all() and got["converted"].sum() > 0


def test_batches_hold_every_parsing_spec_column_with_its_dtype(data):
    output, _, summary = data
    dataset = make_dataset(output, START, END, SPEC, batch_size=50, drop_remainder=True)
    batches = list(dataset)
    assert len(batches) == summary.totals["train_rows"] // 50
    for column, feature in SPEC.parsing_spec().items():
        assert batches[0][column].dtype == feature.dtype
        assert batches[0][column].shape == (50,)


def test_order_is_reproducible_for_a_seed_and_epochs_repeat(data):
    output = data[0]

    def ids(seed, epochs=1):
        dataset = make_dataset(output, START, END, SPEC, batch_size=32, seed=seed,
                               num_epochs=epochs, deterministic=True)
        return np.concatenate([b["request_id"].numpy() for b in dataset]).tolist()

    first = ids(0)
    assert ids(0) == first
    assert ids(1) != first and sorted(ids(1)) == sorted(first)
    twice = ids(0, epochs=2)
    assert len(twice) == 2 * len(first) and sorted(twice) == sorted(first * 2)
    forever = make_dataset(output, START, END, SPEC, batch_size=1000, num_epochs=None)
    assert sum(1 for _ in forever.take(5)) == 5


@pytest.mark.parametrize("pipelines", [2, 50])  # fewer files than pipelines: records are cut
def test_input_pipelines_read_disjoint_parts_that_cover_the_data(data, pipelines):
    output = data[0]
    whole = collect(make_dataset(output, START, END, SPEC, batch_size=64, shuffle=False))
    parts = [collect(make_dataset(output, START, END, SPEC, batch_size=64, shuffle=False,
                                  num_input_pipelines=pipelines, input_pipeline_id=i))
             for i in range(pipelines)]
    def rows(frame):
        return collections.Counter(map(tuple, frame[sorted(frame.columns)].to_numpy().tolist()))

    assert all(len(p) for p in parts[:2])
    assert sum((rows(p) for p in parts), collections.Counter()) == rows(whole)
    with pytest.raises(ValueError, match="input_pipeline_id 2 is not in \\[0, 2\\)"):
        make_dataset(output, START, END, SPEC, num_input_pipelines=2, input_pipeline_id=2)


def test_list_spans_uses_complete_spans_and_names_what_is_missing(data, tmp_path):
    output = data[0]
    assert list_spans(output, START, END) == [span_path(output, START + datetime.timedelta(d))
                                              for d in range(DAYS)]
    later = END + datetime.timedelta(days=5)
    with pytest.raises(FileNotFoundError, match=f"no complete span in {output} for {later}"
                                                f"..{later} \\(missing days: {later}\\)"):
        list_spans(output, later, later)
    os.makedirs(span_path(tmp_path, START))
    with pytest.raises(FileNotFoundError, match=f"incomplete spans \\(no {SUCCESS_FILE}\\): "
                                                f"{START}"):
        make_dataset(tmp_path, START, START, SPEC)


def test_bad_arguments_name_the_argument(data):
    output = data[0]
    with pytest.raises(ValueError, match="split must be one of train, eval"):
        make_dataset(output, START, END, SPEC, split="test")
    with pytest.raises(ValueError, match="end date .* is before start date"):
        list_spans(output, END, START)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        make_dataset(output, START, END, SPEC, batch_size=0)
    assert isinstance(make_dataset(output, START, END, SPEC, options=tf.data.Options()),
                      tf.data.Dataset)


def test_a_column_absent_from_the_spans_fails_before_the_graph_naming_file_and_fix(data):
    output = data[0]
    extra = dataclasses.replace(SPEC, features=SPEC.features + (
        Feature(name="hotel_stars", kind="numeric", dtype="float32"),))
    with pytest.raises(SpanSchemaError,
                       match=r"span file .*\.tfrecord\.gz has no column\(s\) hotel_stars that "
                             r"the feature spec reads; rebuild the spans with this spec"):
        make_dataset(output, START, END, extra)
    retyped = dataclasses.replace(SPEC, features=tuple(
        dataclasses.replace(f, dtype="int64") if f.name == "item_price_log" else f
        for f in SPEC.features if f.name != "item_price_bucket"))
    with pytest.raises(SpanSchemaError,
                       match="holds column 'item_price' as float_list but the feature spec reads "
                             "it as int64"):
        make_dataset(output, START, END, retyped)


def _runs(keys):
    """(key, length) of each run of equal consecutive keys."""
    runs = []
    for key in keys:
        if runs and runs[-1][0] == key:
            runs[-1][1] += 1
        else:
            runs.append([key, 1])
    return [tuple(run) for run in runs]


def test_grouped_batches_are_full_and_hold_whole_requests_shuffled_by_request(data):
    output, impressions, summary = data

    def keys(seed, **kwargs):
        dataset = make_dataset(output, START, END, SPEC, batch_size=32, seed=seed,
                               group_by_request=True, **kwargs)
        batches = [b["request_id"].numpy().tolist() for b in dataset]
        return batches, [key for batch in batches for key in batch]

    batches, stream = keys(0)
    sizes = collections.Counter(stream)
    runs = _runs(stream)
    # Every request is one run of the stream, so one batch or consecutive ones, whole.
    assert len(runs) == len(sizes) and dict(runs) == dict(sizes)
    assert len(stream) == summary.totals["train_rows"]
    assert all(len(batch) == 32 for batch in batches[:-1])
    assert [len(b) for b in keys(0, drop_remainder=True)[0]] == [32] * (len(stream) // 32)
    assert keys(0)[1] == stream
    assert keys(1)[1] != stream and sorted(keys(1)[1]) == sorted(stream)
    in_file_order = _runs(keys(0, shuffle=False)[1])
    assert [key for key, _ in runs] != [key for key, _ in in_file_order]


def test_grouped_input_pipelines_share_out_whole_requests(data):
    output = data[0]  # 6 train files: 7 pipelines share out requests, not files
    parts = [make_dataset(output, START, END, SPEC, batch_size=64, shuffle=False,
                          group_by_request=True, num_input_pipelines=7, input_pipeline_id=i)
             for i in range(7)]
    owners = collections.defaultdict(set)
    rows = 0
    for part, dataset in enumerate(parts):
        for batch in dataset:
            rows += len(batch["request_id"])
            for key in batch["request_id"].numpy():
                owners[key].add(part)
    assert rows == data[2].totals["train_rows"]
    assert all(len(parts_of_request) == 1 for parts_of_request in owners.values())
    assert len({part for parts_of_request in owners.values() for part in parts_of_request}) == 7


def test_span_day_inverts_span_path(tmp_path):
    assert span_day(span_path(tmp_path, START)) == START
    assert span_day(span_path(tmp_path, START) + os.sep) == START  # a trailing slash too

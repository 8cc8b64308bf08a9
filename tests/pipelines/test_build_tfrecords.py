"""End-to-end tests of the span pipeline on tiny logs with planted cases (real Beam runner)."""

import dataclasses
import datetime
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cvr_tf.features import Feature, default_spec
from cvr_tf.input import SUCCESS_FILE, list_spans, span_files, span_path
from cvr_tf.statistics import read_statistics
from pipelines.chunks import ImpressionProcessor
from pipelines.labels import pipeline_labels
from pipelines.log_reader import BadLogFileError, LogSchemaError
from pipelines.simulate import SimulatorConfig, simulate_logs
from pipelines.span_pipeline import build_spans
from pipelines.spans import SpanDefinitionError
from tests.pipelines.log_fixtures import (
    BAD_ROWS,
    CANDIDATES,
    DAYS,
    REQUESTS,
    START,
    TEXT_PRICES,
    read_examples,
    write_logs,
)

END = START + datetime.timedelta(days=DAYS - 1)
BAD_DAY = START + datetime.timedelta(days=1)
MS_PER_DAY = 86_400_000
SPEC = default_spec()


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("logs"))
    return root, write_logs(root)


@pytest.fixture(scope="module")
def built(logs, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("spans"))
    summary = build_spans(logs[0], output, START, END, SPEC, num_shards=2)
    return output, summary


def examples_between(output, start=START, end=END):
    spans = list_spans(output, start, end)
    return read_examples(span_files(spans, "train") + span_files(spans, "eval"), SPEC)


def expected_labels(impressions: pd.DataFrame, conversions: pd.DataFrame) -> pd.Series:
    """The attribution join written plainly: any conversion 0..3 days after the impression."""
    joined = impressions.merge(conversions, on=["request_id", "item_id"], how="left",
                               suffixes=("", "_conversion"))
    delay = joined["ts_conversion"] - joined["ts"]
    joined["hit"] = (delay >= 0) & (delay <= 3 * MS_PER_DAY)
    return joined.groupby(["request_id", "item_id"])["hit"].any().astype(int)


def test_labels_equal_an_independent_pandas_join(logs, built):
    _, frames = logs
    output, summary = built
    examples = examples_between(output)
    expected = expected_labels(frames["impressions"], frames["conversions"])
    got = examples.set_index(["request_id", "item_id"])["converted"]
    assert len(got) == summary.totals["rows_written"]
    assert (got == expected.loc[got.index]).all()
    assert int(got.sum()) == summary.totals["positives"]
    planted = examples[examples["item_id"].str.startswith("planted")]
    labels = planted.groupby("item_id")["converted"].max().to_dict()
    # 23:59 + 30 min (next day's partition), exactly 3 days, 3 days + 1 ms, before, duplicates
    assert labels == {"planted0": 1, "planted1": 1, "planted2": 0, "planted3": 0, "planted4": 1}
    assert planted.groupby("request_id").size().eq(CANDIDATES).all()


def test_every_planted_bad_row_is_dead_lettered_with_its_reason(built):
    output, summary = built
    expected = {}
    for _, _, reason in BAD_ROWS:
        expected[reason] = expected.get(reason, 0) + 1
    expected["wrong_type"] = sum(1 for p in TEXT_PRICES if p in ("abc", ""))
    bad_span = summary.spans[BAD_DAY.isoformat()]["rows"]
    assert bad_span["rejected_by_reason"] == dict(sorted(expected.items()))
    assert bad_span["rows_in"] == REQUESTS * CANDIDATES + len(TEXT_PRICES)
    with open(os.path.join(span_path(output, BAD_DAY), "dead_letter-00000-of-00001.jsonl")) as f:
        letters = [json.loads(line) for line in f]
    assert len(letters) == sum(expected.values())
    assert {(x["reason"], x["column"]) for x in letters} >= {
        ("out_of_range", "item_price"), ("out_of_range", "position"),
        ("bad_timestamp", "ts"), ("missing_value", "item_category"),
        ("wrong_type", "item_price")}
    assert {x["row"]["item_price"] for x in letters if x["reason"] == "wrong_type"} == {"abc", ""}
    for day, stats in summary.spans.items():
        rows = stats["rows"]
        assert rows["rows_in"] == rows["rows_written"] + rows["rows_rejected"], day
        assert rows["rows_written"] == rows["train_rows"] + rows["eval_rows"], day
        if day != BAD_DAY.isoformat():
            assert rows["rows_rejected"] == 0
    unknown = summary.partitions["impressions/date=2026-13-45"]
    assert (unknown["rows_in"], unknown["rows_rejected"]) == (3, 3)
    assert unknown["rejected_by_reason"] == {"unknown_date_partition": 3}
    with open(unknown["dead_letter"]) as f:
        assert len(f.readlines()) == 3
    with open(os.path.join(output, "stats.json")) as f:
        assert json.load(f)["totals"] == summary.totals


def test_each_span_describes_the_numeric_columns_of_its_train_split(built):
    output, _ = built
    for span in list_spans(output, START, END):
        train = read_examples(span_files([span], "train"), SPEC)
        statistics = read_statistics(span, ["item_price", "position"])
        for column in ("item_price", "position"):
            values = train[column].to_numpy(dtype="float64")
            moments = statistics[column].moments("identity")
            assert moments.count == len(values) > 0
            assert (moments.min, moments.max) == (values.min(), values.max())
            assert moments.mean == pytest.approx(values.mean(), rel=1e-9)
            assert moments.std == pytest.approx(values.std(), rel=1e-9)
        log = statistics["item_price"].moments("log1p")
        assert log.mean == pytest.approx(np.log1p(train["item_price"].to_numpy("float64")).mean(),
                                         rel=1e-9)


def test_split_keeps_requests_whole_and_is_identical_across_runs(logs, built, tmp_path):
    output, summary = built
    spans = list_spans(output, START, END)
    train = read_examples(span_files(spans, "train"), SPEC)
    evaluation = read_examples(span_files(spans, "eval"), SPEC)
    assert not set(train["request_id"]) & set(evaluation["request_id"])
    assert 0 < len(evaluation) < len(train)
    again = build_spans(logs[0], str(tmp_path), START, END, SPEC, num_shards=2)
    assert again.totals == summary.totals
    for path in sorted(glob.glob(os.path.join(output, "span=*", "*.tfrecord.gz"))):
        twin = os.path.join(str(tmp_path), os.path.relpath(path, output))
        # Same examples in the same order (tf.Example's feature map has no fixed byte order).
        pd.testing.assert_frame_equal(read_examples([path], SPEC), read_examples([twin], SPEC))


def test_complete_spans_are_skipped_overwritten_or_rebuilt_when_incomplete(logs, tmp_path):
    output = str(tmp_path)
    first = build_spans(logs[0], output, START, END, SPEC)
    assert first.built == [d.isoformat() for d in (START, BAD_DAY, END)]
    run_ids = {d: json.load(open(os.path.join(output, f"span={d}", "stats.json")))["run_id"]
               for d in first.built}

    second = build_spans(logs[0], output, START, END, SPEC)
    assert (second.built, second.skipped) == ([], first.built)
    assert second.totals == first.totals

    os.remove(os.path.join(span_path(output, BAD_DAY), SUCCESS_FILE))  # as a killed run leaves
    assert list_spans(output, START, END) == [span_path(output, START), span_path(output, END)]
    third = build_spans(logs[0], output, START, END, SPEC)
    assert third.built == [BAD_DAY.isoformat()]
    assert third.totals == first.totals

    fourth = build_spans(logs[0], output, START, END, SPEC, overwrite=True)
    assert fourth.built == first.built
    for day in first.built:
        stats = json.load(open(os.path.join(output, f"span={day}", "stats.json")))
        assert stats["run_id"] != run_ids[day]
    assert not [n for n in os.listdir(output) if n.startswith(".tmp-")]


def test_a_spec_column_absent_from_the_logs_fails_before_any_work(logs, tmp_path):
    color = Feature(name="item_color", kind="categorical", vocabulary_size=10)
    spec = dataclasses.replace(SPEC, features=SPEC.features + (color,))
    with pytest.raises(LogSchemaError, match=r"impressions file .*part-00000.parquet has no "
                                             r"column 'item_color'.*feature 'item_color'"):
        build_spans(logs[0], str(tmp_path), START, END, spec)
    assert not glob.glob(os.path.join(str(tmp_path), "span=*"))


def test_only_the_keys_ts_and_the_specs_columns_are_read():
    columns = [rule.column for rule in ImpressionProcessor(SPEC).rules()]
    assert sorted(columns) == sorted({"request_id", "item_id", "ts", *SPEC.column_dtypes()})
    labelled = [rule.column for rule in
                ImpressionProcessor(SPEC, pipeline_labels(SPEC, label_column="bought")).rules()]
    assert sorted(labelled) == sorted({"request_id", "ts", "bought", *SPEC.column_dtypes()})


def test_label_column_skips_the_join(logs, tmp_path):
    source = os.path.join(logs[0], "impressions", f"date={START}", "part-00000.parquet")
    table = pq.read_table(source)
    clicks = [i % 2 for i in range(table.num_rows)]
    labelled = os.path.join(str(tmp_path), "logs", "impressions", f"date={START}")
    os.makedirs(labelled)
    pq.write_table(table.append_column("bought", [clicks]), os.path.join(labelled, "p.parquet"))
    summary = build_spans(os.path.join(str(tmp_path), "logs"), str(tmp_path / "out"), START,
                          START, SPEC, label_column="bought")
    assert summary.totals["positives"] == sum(clicks)
    examples = examples_between(str(tmp_path / "out"))
    assert examples["converted"].sum() == sum(clicks)


def test_simulator_logs_go_through_and_match_its_own_label(tmp_path):
    config = SimulatorConfig(num_items=600, num_queries=200, num_users=500, num_topics=20,
                             num_terms=200, num_brands=100, with_label_column=True)
    day = datetime.date(2026, 1, 5)
    simulation = simulate_logs(str(tmp_path / "logs"), day, 2, 150, 10, config)
    summary = build_spans(str(tmp_path / "logs"), str(tmp_path / "out"), day,
                          day + datetime.timedelta(days=1), SPEC)
    assert summary.totals["rows_in"] == summary.totals["rows_written"] == simulation.impressions
    examples = examples_between(str(tmp_path / "out"), day, day + datetime.timedelta(days=1))
    truth = pq.read_table(str(tmp_path / "logs" / "impressions")).to_pandas()
    truth = truth.set_index(["request_id", "item_id"])["converted"]
    got = examples.set_index(["request_id", "item_id"])["converted"]
    assert (got == truth.loc[got.index]).all()
    assert summary.totals["positives"] == int(truth.sum())


def test_command_line_passes_beam_options_through(logs, tmp_path):
    output = str(tmp_path)
    command = [sys.executable, "-m", "pipelines.build_tfrecords", f"--logs={logs[0]}",
               f"--output={output}", f"--start_date={START}", f"--end_date={START}",
               "--num_shards=3", "--direct_num_workers=2", "--direct_running_mode=multi_threading"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["built"] == [START.isoformat()]
    shards = glob.glob(os.path.join(span_path(output, START), "train-*-of-00003.tfrecord.gz"))
    assert len(shards) == 3


def test_command_line_refuses_label_flags_for_a_spec_with_labels(logs, tmp_path):
    spec = {**SPEC.to_dict(), "labels": {"converted": {"events": "conversions",
                                                       "attribution_days": 2}}}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "pipelines.build_tfrecords", f"--logs={logs[0]}",
               f"--output={tmp_path / 'out'}", f"--start_date={START}", f"--end_date={START}",
               f"--feature_spec={path}", "--attribution_days=3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "names its labels (converted) with their windows; drop --attribution_days" in (
        result.stderr)
    assert not os.path.exists(tmp_path / "out")


def test_command_line_reports_a_pipeline_error_in_one_line_and_writes_nothing(logs, tmp_path):
    command = [sys.executable, "-m", "pipelines.build_tfrecords", f"--logs={tmp_path / 'none'}",
               f"--output={tmp_path / 'out'}", f"--start_date={START}", f"--end_date={START}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: no impressions log directory {tmp_path / 'none' / 'impressions'}; --logs must "
        "hold impressions/date=YYYY-MM-DD/*.parquet")
    assert "--eval_fraction" not in result.stderr  # the message alone, not the job's help
    assert not os.path.exists(tmp_path / "out")


def test_a_build_logs_no_per_element_beam_noise_and_one_line_per_span(logs, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="absl")  # other tests may lower absl's verbosity
    build_spans(logs[0], str(tmp_path / "out"), START, START + datetime.timedelta(days=1), SPEC)
    beam_type_hints = [r for r in caplog.records if r.name.startswith("apache_beam.typehints")]
    assert beam_type_hints == []
    span_lines = [r.getMessage() for r in caplog.records if "complete:" in r.getMessage()]
    assert [line.split(" complete:")[0] for line in span_lines] == [
        f"Span {START}", f"Span {START + datetime.timedelta(days=1)}"]
    assert all(re.search(r"\d+ rows in, .*; positives: converted \d+; \d+\.\d s\.$", line)
               for line in span_lines)
    progress = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO
                and r.name == "absl"]
    assert not [line for line in progress if " chunk " in line or line.startswith("Wrote ")]


@pytest.mark.parametrize("damage, what", [
    (lambda data: b"", r"is empty \(0 bytes\)"),
    (lambda data: data[: len(data) // 2], r"is not readable Parquet \(\d+ bytes\)"),
    (lambda data: b"x" * len(data), r"is not readable Parquet \(\d+ bytes\)"),
])
def test_a_bad_parquet_file_fails_before_any_work_naming_the_file(logs, tmp_path, damage, what):
    copy = str(tmp_path / "logs")
    shutil.copytree(logs[0], copy)
    bad = os.path.join(copy, "impressions", f"date={BAD_DAY}", "part-00000.parquet")
    with open(bad, "rb") as handle:
        data = handle.read()
    with open(bad, "wb") as handle:
        handle.write(damage(data))
    with pytest.raises(BadLogFileError, match=rf"impressions file {re.escape(bad)} {what}: .*; "
                                              r"re-export or remove the file"):
        build_spans(copy, str(tmp_path / "out"), START, END, SPEC)
    assert not os.path.exists(tmp_path / "out")  # not even an empty output directory


def test_missing_conversions_point_to_label_column_for_a_label_in_the_impressions(logs,
                                                                                 tmp_path):
    copy = tmp_path / "logs"
    shutil.copytree(logs[0], copy)
    shutil.rmtree(copy / "conversions")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"no conversions log directory {copy / 'conversions'}; --logs must hold "
            "conversions/date=YYYY-MM-DD/*.parquet (label 'converted' of the feature spec joins "
            "it); if the impressions hold the label, pass its column as --label_column (e.g. "
            "--label_column=converted)")):
        build_spans(str(copy), str(tmp_path / "out"), START, START, SPEC)


def test_a_spec_that_writes_other_data_is_refused_on_built_spans_one_that_does_not_is_not(
        logs, tmp_path):
    output = str(tmp_path / "out")
    build_spans(logs[0], output, START, START, SPEC)

    def with_feature(name, **changes):
        return dataclasses.replace(SPEC, features=tuple(
            dataclasses.replace(f, **changes) if f.name == name else f for f in SPEC.features))

    wider = with_feature("item_id", embedding_dim=64)  # same data: nothing to rebuild
    assert build_spans(logs[0], output, START, START, wider).skipped == [START.isoformat()]
    with pytest.raises(SpanDefinitionError, match=re.escape(
            f"span {span_path(output, START)} was built with another feature spec (column "
            "'item_brand' is validated with default None -> 'unknown'); pass --overwrite")):
        build_spans(logs[0], output, START, START, with_feature("item_brand",
                                                                 default_value="unknown"))
    extra = dataclasses.replace(SPEC, features=(*SPEC.features, Feature(
        name="stars", kind="numeric", dtype="float32", mean=0.0, std=1.0)))
    with pytest.raises(SpanDefinitionError, match="column 'stars' \\(float32\\) is not in the "
                                                  "spans"):
        build_spans(logs[0], output, START, START, extra)


def test_conversions_with_quantity_at_most_zero_are_dead_lettered_with_a_reason(logs, tmp_path):
    copy = str(tmp_path / "logs")
    shutil.copytree(logs[0], copy)
    path = sorted(glob.glob(os.path.join(copy, "conversions", "date=*", "*.parquet")))[0]
    table = pq.read_table(path)
    quantity = [0, -1] + table.column("quantity").to_pylist()[2:]
    pq.write_table(table.set_column(table.schema.get_field_index("quantity"), "quantity",
                                    [quantity]), path)
    summary = build_spans(copy, str(tmp_path / "out"), START, END, SPEC)
    report = summary.partitions[f"conversions/{os.path.basename(os.path.dirname(path))}"]
    assert report["rejected_by_reason"] == {"out_of_range": 2}
    with open(report["dead_letter"]) as f:
        letters = [json.loads(line) for line in f]
    assert [(x["column"], x["detail"], x["row"]["quantity"]) for x in letters] == [
        ("quantity", "quantity must be > 0", 0), ("quantity", "quantity must be > 0", -1)]


def test_a_changed_attribution_window_is_refused_unless_overwrite_never_mixed(logs, tmp_path):
    output = str(tmp_path)
    build_spans(logs[0], output, START, START, SPEC, attribution_days=3)
    with pytest.raises(SpanDefinitionError,
                       match=r"span .*span=2026-01-05 was built with label "
                             r"\{\"attribution_days\": 3\} but this run asks for "
                             r"\{\"attribution_days\": 1\}; pass --overwrite"):
        build_spans(logs[0], output, START, END, SPEC, attribution_days=1)
    assert not os.path.exists(span_path(output, END))  # refused before any work
    rebuilt = build_spans(logs[0], output, START, START, SPEC, attribution_days=1,
                          overwrite=True)
    assert rebuilt.built == [START.isoformat()]
    stats = json.load(open(os.path.join(span_path(output, START), "stats.json")))
    assert stats["label"] == {"attribution_days": 1}

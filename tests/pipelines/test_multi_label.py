"""Several labels per span: each joined with its own log and window, counted, and its maturity
recorded; immature spans rebuilt once their events arrive (real Beam runner, planted logs)."""

import datetime
import glob
import json
import os
import shutil

import pandas as pd
import pytest

from cvr_tf.features import default_spec, spec_from_dict
from cvr_tf.input import list_spans, span_files, span_path
from pipelines.span_pipeline import build_spans
from pipelines.spans import SpanDefinitionError
from tests.pipelines.log_fixtures import (
    DAYS,
    HOUR_MS,
    START,
    read_examples,
    write_clicks,
    write_logs,
)

END = START + datetime.timedelta(days=DAYS - 1)
MS_PER_DAY = 86_400_000
SPEC = spec_from_dict({**default_spec().to_dict(), "labels": {
    "clicked": {"events": "clicks", "window_hours": 1},
    "converted": {"events": "conversions", "attribution_days": 3}}})


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("logs"))
    frames = write_logs(root)
    frames["clicks"] = write_clicks(root, frames["impressions"])
    return root, frames


@pytest.fixture(scope="module")
def built(logs, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("spans"))
    return output, build_spans(logs[0], output, START, END, SPEC, num_shards=2)


def examples(output, start=START, end=END):
    spans = list_spans(output, start, end)
    return read_examples(span_files(spans, "train") + span_files(spans, "eval"), SPEC)


def pandas_join(impressions: pd.DataFrame, events: pd.DataFrame, window_ms: int) -> pd.Series:
    """The label of every (request_id, item_id), written plainly: an event 0..window after."""
    joined = impressions.merge(events, on=["request_id", "item_id"], how="left",
                               suffixes=("", "_event"))
    delay = joined["ts_event"] - joined["ts"]
    joined["hit"] = (delay >= 0) & (delay <= window_ms)
    return joined.groupby(["request_id", "item_id"])["hit"].any().astype(int)


def test_each_label_equals_an_independent_pandas_join_with_its_own_window(logs, built):
    _, frames = logs
    output, summary = built
    got = examples(output).set_index(["request_id", "item_id"])
    clicked = pandas_join(frames["impressions"], frames["clicks"], HOUR_MS)
    converted = pandas_join(frames["impressions"], frames["conversions"], 3 * MS_PER_DAY)
    assert (got["clicked"] == clicked.loc[got.index]).all()
    assert (got["converted"] == converted.loc[got.index]).all()
    # Planted clicks: next day's partition, exactly 1 h, 1 h + 1 ms, before, duplicates.
    planted = got[got.index.get_level_values("item_id").str.startswith("planted")]
    assert planted.groupby("item_id")["clicked"].max().to_dict() == {
        "planted0": 1, "planted1": 1, "planted2": 0, "planted3": 0, "planted4": 1}
    # Clicks without a conversion and conversions without a click both exist and stay apart.
    assert ((got["clicked"] == 1) & (got["converted"] == 0)).any()
    assert ((got["clicked"] == 0) & (got["converted"] == 1)).any()
    totals = summary.totals["positives_by_label"]
    assert totals["clicked"]["positives"] == int(got["clicked"].sum())
    assert totals["converted"]["positives"] == int(got["converted"].sum())
    assert summary.totals["positives"] == totals["converted"]["positives"]  # the spec's label
    for stats in summary.spans.values():
        for counts in stats["rows"]["positives_by_label"].values():
            assert counts["positives"] == counts["train_positives"] + counts["eval_positives"]


def test_spans_record_their_label_definitions_and_maturity(logs, built):
    output, summary = built
    stats = json.load(open(os.path.join(span_path(output, START), "stats.json")))
    assert stats["labels"] == {"clicked": {"events": "clicks", "window_hours": 1},
                               "converted": {"events": "conversions", "attribution_days": 3}}
    assert "label" not in stats
    maturity = stats["maturity"]
    assert maturity["clicked"]["needs_events_through"] == "2026-01-06"
    assert maturity["converted"]["needs_events_through"] == "2026-01-08"
    assert all(record["mature"] for record in maturity.values())
    assert summary.immature == {}
    with pytest.raises(SpanDefinitionError, match="built with labels .* but this run asks for"):
        build_spans(logs[0], output, START, END, default_spec())


def _copy_until(source: str, target: str, kind: str, last: datetime.date) -> None:
    """The logs of ``source`` with ``kind``'s partitions after ``last`` not yet arrived."""
    shutil.copytree(source, target)
    for directory in glob.glob(os.path.join(target, kind, "date=*")):
        if datetime.date.fromisoformat(directory.rsplit("=", 1)[1]) > last:
            shutil.rmtree(directory)


def test_immature_spans_are_flagged_then_rebuilt_when_the_events_arrive(logs, tmp_path):
    fresh = str(tmp_path / "fresh")
    _copy_until(logs[0], fresh, "conversions", END)  # conversions observed through END only
    output = str(tmp_path / "out")
    summary = build_spans(fresh, output, START, END, SPEC)
    assert summary.immature == {d.isoformat(): ["converted"] for d in
                                (START, START + datetime.timedelta(1), END)}
    record = summary.spans[START.isoformat()]["maturity"]["converted"]
    assert (record["events_observed_through"], record["mature"]) == (END.isoformat(), False)
    provisional = int(examples(output)["converted"].sum())
    again = build_spans(fresh, output, START, END, SPEC)  # nothing new arrived: all skipped
    assert again.built == [] and len(again.skipped) == DAYS
    arrived = build_spans(logs[0], output, START, END, SPEC)
    assert arrived.built == [d.isoformat() for d in (START, START + datetime.timedelta(1), END)]
    assert arrived.immature == {}
    assert int(examples(output)["converted"].sum()) > provisional


def test_a_label_whose_event_log_is_absent_is_an_error_naming_it(logs, tmp_path):
    copy = str(tmp_path / "logs")
    shutil.copytree(logs[0], copy)
    shutil.rmtree(os.path.join(copy, "clicks"))
    with pytest.raises(FileNotFoundError, match="no clicks log directory .*label 'clicked'"):
        build_spans(copy, str(tmp_path / "out"), START, END, SPEC)
    with pytest.raises(ValueError, match="names its labels .* drop --attribution_days"):
        build_spans(logs[0], str(tmp_path / "out"), START, END, SPEC, attribution_days=3)

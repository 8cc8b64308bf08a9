"""Holdout slices (value, query-frequency, new/returning item) and their metrics."""

import dataclasses
import datetime

import numpy as np
import pytest

from cvr_tf import metrics as metrics_lib
from cvr_tf.features import default_spec, spec_from_dict
from cvr_tf.retraining import holdout, loop, slices
from cvr_tf.retraining.config import RetrainConfig, training_template


def test_query_buckets_split_the_window_traffic_at_half_and_ninety_percent():
    # Shares before each query (count order): a 0, b 50, c 80, d 90, e 95 (of 100 rows).
    buckets = slices.query_buckets({"b": 30, "a": 50, "c": 10, "e": 5, "d": 5})
    assert buckets == {"a": "head", "b": "torso", "c": "torso", "d": "tail", "e": "tail"}
    # Ties rank by query: "x" comes before "y", so it alone is the head.
    assert slices.query_buckets({"y": 1, "x": 1}) == {"x": "head", "y": "torso"}


def test_tokens_are_the_strings_vocabularies_hold():
    assert slices.tokens(np.array([b"caf\xc3\xa9", b"x"], dtype=object)).tolist() == ["café", "x"]
    assert slices.tokens(np.array([3, -1], dtype=np.int64)).tolist() == ["3", "-1"]


def _columns():
    return {
        "device": np.array([b"app", b"web", b"app", b"tv", b"web", b"app"], dtype=object),
        "query": np.array([b"shoes", b"shoes", b"tent", b"new", b"tent", b"shoes"], dtype=object),
        "item_id": np.array([b"i1", b"i2", b"i3", b"i1", b"i9", b"i2"], dtype=object),
        "position": np.array([1, 2, 1, 2, 1, 3], dtype=np.int64),
    }


def test_holdout_slices_in_order_with_their_rows():
    masks = slices.holdout_slices(
        _columns(), ["device"], "query", {"shoes": "head", "tent": "torso"}, "item_id",
        ["i1", "i2"])
    assert {name: np.flatnonzero(mask).tolist() for name, mask in masks.items()} == {
        "overall": [0, 1, 2, 3, 4, 5],
        "device=app": [0, 2, 5], "device=tv": [3], "device=web": [1, 4],
        "query_frequency=head": [0, 1, 5], "query_frequency=torso": [2, 4],
        "query_frequency=tail": [3],  # never seen in the training window
        "items=returning": [0, 1, 3, 5], "items=new": [2, 4]}
    assert list(masks)[:4] == ["overall", "device=app", "device=tv", "device=web"]


def test_rare_values_are_pooled(monkeypatch):
    monkeypatch.setattr(slices, "MAX_SLICE_VALUES", 2)
    masks = slices.holdout_slices(_columns(), ["position"])
    assert {name: np.flatnonzero(mask).tolist() for name, mask in masks.items()} == {
        "overall": [0, 1, 2, 3, 4, 5], "position=1": [0, 2, 4], "position=2": [1, 3],
        "position=(other)": [5]}


def test_sliced_metrics_are_the_metrics_of_each_slice():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    groups = np.repeat(np.arange(12), 5)
    scores = {"candidate": rng.uniform(size=60), "current": rng.uniform(size=60)}
    masks = {"overall": np.ones(60, bool), "first": np.arange(60) < 25}
    out = slices.sliced_metrics(labels, groups, scores, masks)
    assert [row["slice"] for row in out] == ["overall", "first"]
    assert out[1]["examples"] == 25 and out[1]["positives"] == int(labels[:25].sum())
    for model in scores:
        expected = metrics_lib.evaluate(labels[:25], scores[model][:25], groups[:25])
        assert out[1]["metrics"][model] == {**expected, "non_finite_scores": 0}


def test_non_finite_scores_and_empty_slices_give_no_metrics_instead_of_raising():
    labels, groups = np.array([0, 1, 0]), np.array([1, 1, 2])
    out = slices.sliced_metrics(labels, groups, {"candidate": np.array([0.1, np.nan, 0.2])},
                                {"overall": np.ones(3, bool), "none": np.zeros(3, bool)})
    diverged = out[0]["metrics"]["candidate"]
    assert diverged["auc"] is None and diverged["calibration"] is None
    assert diverged["non_finite_scores"] == 1 and diverged["examples"] == 3
    assert out[1]["metrics"]["candidate"]["examples"] == 0


@pytest.mark.parametrize("arguments, message", [
    ((("nope",), "query", "item_id"), "--slice_by: the feature spec reads no column 'nope'"),
    ((("item_price",), "query", "item_id"), "--slice_by: column 'item_price' is float32"),
    (((), "user_id", "item_id"), "--query_column=user_id: no categorical feature with a "
                                  "computed vocabulary reads it"),
    (((), "", "user_id"), "--item_column=user_id: no categorical feature with a vocabulary"),
])
def test_slices_the_spec_cannot_give_fail_before_any_work(arguments, message):
    holdout.check_slicing(default_spec(), ("device", "position"), "query", "item_id")
    holdout.check_slicing(default_spec(), (), "", "")
    with pytest.raises(ValueError, match=message):
        holdout.check_slicing(default_spec(), *arguments)


def test_the_report_says_whether_the_holdout_labels_are_mature():
    assert holdout.maturity_note(None) == "label maturity not recorded by its span"
    mature = {"converted": {"mature": True, "events_observed_through": "2026-01-22",
                            "needs_events_through": "2026-01-22"}}
    assert holdout.maturity_note(mature) == "labels mature"
    immature = {"converted": {"mature": False, "events_observed_through": "2026-01-19",
                              "needs_events_through": "2026-01-22"}}
    assert holdout.maturity_note(immature) == (
        "immature labels, evaluated as logged for both models (positives still to arrive count "
        "as negatives): converted (events through 2026-01-19, needs 2026-01-22)")


def test_default_slices_a_spec_cannot_give_are_dropped_given_ones_must_work(tmp_path):
    spec = spec_from_dict({"features": [
        {"name": "item_id", "kind": "categorical", "vocabulary_size": 10},
        {"name": "colour", "kind": "categorical", "hash_buckets": 8}]})  # no device, no query
    config = RetrainConfig(logs=str(tmp_path), work_dir=str(tmp_path), export_base=str(tmp_path),
                           date=datetime.date(2026, 2, 1),
                           training=training_template(str(tmp_path)))
    assert holdout.slicing_problems(spec, ("device",), "query", "item_id").keys() == {
        "slice_by", "query_column"}
    fitted = loop._fit_default_slices(config, spec)
    assert (fitted.slice_by, fitted.query_column, fitted.item_column) == ("", "", "item_id")
    given = dataclasses.replace(config, slice_by="colour,size")
    assert loop._fit_default_slices(given, spec).slice_by == "colour,size"  # then refused:
    with pytest.raises(ValueError, match="--slice_by: the feature spec reads no column 'size'"):
        holdout.check_slicing(spec, ("colour", "size"), "", "item_id")

"""Row validation against column rules: conformed values, one reason per rejected row."""

import datetime
import json

import numpy as np
import pyarrow as pa
import pytest

from cvr_tf.features import default_spec, spec_from_dict
from pipelines.validation import (
    LABEL,
    TIMESTAMP,
    ColumnRule,
    dead_letter_lines,
    spec_rules,
    validate,
)

DAY = datetime.date(2026, 1, 5)
NOON = (DAY - datetime.date(1970, 1, 1)).days * 86_400_000 + 12 * 3_600_000


def reasons(validated):
    return list(zip(validated.rejected.column("reason").to_pylist(),
                    validated.rejected.column("column").to_pylist(), strict=True))


def test_numeric_columns_accept_numbers_and_numeric_text_and_reject_the_rest():
    table = pa.table({
        "price": pa.array(["12.5", "abc", "7", None, "-1", "1e40"]),
        "position": pa.array([1.0, 2.0, 3.0, 2.5, 4.0, 5.0]),
    })
    rules = [ColumnRule("price", "float32", min_value=0.0), ColumnRule("position", "int64")]
    validated = validate(table, rules, DAY)
    assert validated.rows.column("price").to_pylist() == [12.5, 7.0]
    assert validated.rows.schema.types == [pa.float32(), pa.int64()]
    assert validated.rows.column("position").to_pylist() == [1, 3]
    assert reasons(validated) == [("wrong_type", "price"), ("missing_value", "price"),
                                  ("out_of_range", "price"), ("out_of_range", "price")]
    assert validated.rejected_counts() == {"wrong_type": 1, "missing_value": 1,
                                           "out_of_range": 2}


def test_a_default_value_stands_for_nulls_and_nans_and_nothing_else():
    table = pa.table({
        "title": pa.array(["red dress", None, "", None]),
        "price": pa.array([12.5, float("nan"), None, -3.0]),
        "stars": pa.array([4, None, 5, 2], pa.int64()),
        "brand": pa.array(["a", "b", None, "d"]),
    })
    rules = [ColumnRule("title", "string", default=""),
             ColumnRule("price", "float32", min_value=0.0, default=0.0),
             ColumnRule("stars", "int64", default=-1), ColumnRule("brand", "string")]
    validated = validate(table, rules, DAY)
    assert validated.rows.to_pydict() == {"title": ["red dress", ""], "price": [12.5, 0.0],
                                          "stars": [4, -1], "brand": ["a", "b"]}
    # A column without a default still rejects its nulls; a default never hides a bad value.
    assert reasons(validated) == [("missing_value", "brand"), ("out_of_range", "price")]


def test_spec_rules_carry_the_features_default_value():
    spec = spec_from_dict({"features": [
        {"name": "title", "kind": "text", "vocabulary_size": 10, "default_value": ""},
        {"name": "title_id", "kind": "categorical", "column": "title", "vocabulary_size": 10},
        {"name": "price", "kind": "numeric", "dtype": "float32", "mean": 0.0, "std": 1.0}]})
    defaults = {rule.column: rule.default for rule in spec_rules(spec)}
    assert defaults == {"request_id": None, "title": "", "price": None}


def test_first_reason_wins_in_the_documented_order():
    table = pa.table({"ts": pa.array([None, NOON, NOON - 86_400_000], pa.int64()),
                      "price": pa.array([-1.0, float("nan"), -1.0]),
                      "item": pa.array(["a", "b", "c"])})
    rules = [ColumnRule("ts", TIMESTAMP), ColumnRule("price", "float32", min_value=0.0),
             ColumnRule("item", "string")]
    validated = validate(table, rules, DAY)
    assert validated.rows.num_rows == 0
    assert reasons(validated) == [("missing_value", "ts"), ("missing_value", "price"),
                                  ("bad_timestamp", "ts")]


def test_integer_overflow_uint64_and_float_strings_for_int64_columns():
    table = pa.table({"count": pa.array([1, 2**64 - 1, 5], pa.uint64()),
                      "n": pa.array(["4", "4.5", "x"])})
    validated = validate(table, [ColumnRule("count", "int64"), ColumnRule("n", "int64")], DAY)
    assert validated.rows.to_pydict() == {"count": [1], "n": [4]}
    assert reasons(validated) == [("wrong_type", "count"), ("wrong_type", "n")]


def test_string_columns_take_strings_dictionaries_and_integers_but_not_floats():
    table = pa.table({"a": pa.array(["x", "y", None]).dictionary_encode(),
                      "b": pa.array([7, 8, 9], pa.int32()),
                      "c": pa.array([b"p", b"q", b"r"], pa.binary())})
    validated = validate(table, [ColumnRule(c, "string") for c in "abc"], DAY)
    assert validated.rows.to_pydict() == {"a": ["x", "y"], "b": ["7", "8"], "c": ["p", "q"]}
    floats = validate(pa.table({"a": [1.5, None]}), [ColumnRule("a", "string")], DAY)
    assert reasons(floats) == [("wrong_type", "a"), ("missing_value", "a")]
    assert floats.rejected.column("detail")[0].as_py() == \
        "a is double in the logs but the spec says string"


def test_timestamps_in_any_unit_must_fall_inside_the_partition_day():
    noon = datetime.datetime(2026, 1, 5, 12)
    table = pa.table({
        "ts": pa.array([noon, noon + datetime.timedelta(hours=12), None], pa.timestamp("us")),
    })
    validated = validate(table, [ColumnRule("ts", TIMESTAMP)], DAY)
    assert validated.rows.column("ts").to_pylist() == [NOON]
    assert reasons(validated) == [("bad_timestamp", "ts"), ("missing_value", "ts")]
    text = validate(pa.table({"ts": [str(NOON), "yesterday"]}), [ColumnRule("ts", TIMESTAMP)],
                    DAY)
    assert text.rows.column("ts").to_pylist() == [NOON]
    assert reasons(text) == [("bad_timestamp", "ts")]


def test_iso_8601_text_is_a_timestamp_and_epoch_seconds_are_named():
    table = pa.table({"ts": ["2026-01-05T12:00:00", "2026-01-05 12:00:00.250", "2026-01-05T12Z",
                             "2026-01-05T13:00:00+01:00", "2026-01-05T23:30:00-02:00",
                             "5 Jan 2026"]})
    validated = validate(table, [ColumnRule("ts", TIMESTAMP)], DAY)
    assert validated.rows.column("ts").to_pylist() == [NOON, NOON + 250, NOON, NOON]
    assert validated.rejected.column("detail").to_pylist() == [
        "ts is not inside the partition's day 2026-01-05 (UTC)",  # 01:30 on the 6th in UTC
        "ts holds text that is neither epoch milliseconds nor an ISO 8601 time"]
    seconds = validate(pa.table({"ts": [NOON // 1000]}), [ColumnRule("ts", TIMESTAMP)], DAY)
    assert seconds.rejected.column("detail").to_pylist() == [
        "ts is not inside the partition's day 2026-01-05 (UTC); the values read as epoch "
        "seconds would be: write ts in milliseconds"]


def test_labels_from_the_logs_must_be_zero_or_one():
    table = pa.table({"bought": pa.array([True, False, None]), "x": pa.array([0, 1, 2])})
    validated = validate(table, [ColumnRule("bought", LABEL), ColumnRule("x", LABEL)], DAY)
    assert validated.rows.to_pydict() == {"bought": [1, 0], "x": [0, 1]}
    assert reasons(validated) == [("missing_value", "bought")]
    out_of_range = validate(pa.table({"x": [2, 1]}), [ColumnRule("x", LABEL)], DAY)
    assert reasons(out_of_range) == [("out_of_range", "x")]


def test_unknown_date_partition_rejects_every_row_and_dead_letters_keep_the_row():
    table = pa.table({"request_id": ["r1", "r2"], "price": [1.5, None]})
    validated = validate(table, [], None)
    assert validated.rows.num_rows == 0
    lines = [json.loads(line) for line in dead_letter_lines(validated.rejected)]
    assert lines[1] == {"reason": "unknown_date_partition", "column": "",
                        "detail": "partition directory name is not date=YYYY-MM-DD",
                        "row": {"request_id": "r2", "price": None}}


def test_spec_rules_cover_every_column_with_the_tightest_bounds():
    rules = {r.column: r for r in spec_rules(default_spec())}
    assert rules["item_price"] == ColumnRule("item_price", "float32", min_value=0.0)
    assert rules["position"] == ColumnRule("position", "int64", min_value=1)
    assert rules["request_id"].dtype == "string"
    assert "converted" not in rules


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_single_row_tables(rows):
    table = pa.table({"ts": pa.array(np.full(rows, NOON), pa.int64())})
    validated = validate(table, [ColumnRule("ts", TIMESTAMP)], DAY)
    assert validated.rows.num_rows == rows and validated.rejected.num_rows == 0

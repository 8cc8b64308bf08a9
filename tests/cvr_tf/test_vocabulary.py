"""Token counting, top-K ranking and window vocabularies shared by pipeline and training."""

import dataclasses
import datetime
import os

import pyarrow as pa
import pytest

from cvr_tf.compat import tf
from cvr_tf.features import MAX_VOCAB_SCALE, spec_from_dict
from cvr_tf.input import SUCCESS_FILE, span_path
from cvr_tf.tokenizer import tokenize
from cvr_tf.vocabulary import (
    TOKEN_COUNTS_DIR,
    count_tokens,
    feature_tokens,
    merge_token_counts,
    ranked_tokens,
    read_token_counts,
    vocabulary_dir,
    window_vocabularies,
    write_token_counts,
    write_vocabularies,
)

SPEC = spec_from_dict({"features": [
    {"name": "device", "kind": "categorical", "vocabulary_size": 1},
    {"name": "shop", "kind": "categorical", "dtype": "int64", "vocabulary_size": 4},
    {"name": "query_terms", "kind": "text", "column": "query", "shared_embedding": "terms",
     "vocabulary_size": 8, "max_tokens": 2},
    {"name": "title_terms", "kind": "text", "column": "title", "shared_embedding": "terms",
     "vocabulary_size": 8, "max_tokens": 2},
    {"name": "user", "kind": "categorical", "hash_buckets": 10},
]})
DAY = datetime.date(2026, 1, 5)
TRICKY = ["Hello  World", " a\tb\nc ", "ÄBC déF", "x\u00a0y", "p\u3000q", "u\x0bv\x0cw\rz", "",
          "   ", "ΣΑΣ", "MiXeD case WORDS here"]


def test_ranking_is_by_count_then_token():
    counts = {"b": 2, "a": 2, "c": 5, "d": 1}
    assert ranked_tokens(counts) == ["c", "a", "b", "d"]
    assert ranked_tokens(counts, 2) == ["c", "a"]


def test_text_tokens_are_exactly_the_models_tokens():
    for max_tokens in (1, 2, 8):
        feature = dataclasses.replace(SPEC.feature("query_terms"), max_tokens=max_tokens)
        ours = feature_tokens(pa.array(TRICKY), feature).to_pylist()
        model = tokenize(tf.constant(TRICKY), max_tokens)
        assert ours == [t.decode() for t in model.flat_values.numpy()], max_tokens


def test_counts_merge_shared_tables_skip_nulls_and_line_breaks():
    table = pa.table({
        "device": pa.array(["app", "web", "app", None, "bad\nvalue", ""]),
        "shop": pa.array([7, 7, 8, 9, None, 7], pa.int64()),
        "query": pa.array(["Red shoe", "red", None, "shoe shoe shoe", "x", "y"]),
        "title": pa.array(["red hat big", "", "hat", "a", "b", "c"]),
        "user": pa.array(["u"] * 6),
    })
    counts = count_tokens(table, SPEC)
    assert set(counts) == {"device", "shop", "terms"}  # hashed features have no vocabulary
    assert counts["device"] == {"app": 2, "web": 1}
    assert counts["shop"] == {"7": 3, "8": 1, "9": 1}
    assert counts["terms"] == {"red": 3, "shoe": 3, "hat": 2, "a": 1, "b": 1, "c": 1, "x": 1,
                               "y": 1}


def write_span(root, day, counts, complete=True):
    path = span_path(root, day)
    write_token_counts(os.path.join(path, TOKEN_COUNTS_DIR), counts)
    if complete:
        open(os.path.join(path, SUCCESS_FILE), "w").close()


def test_window_vocabularies_merge_only_the_window_and_cap_at_max_vocab_scale(tmp_path):
    many = {f"t{i:02d}": 100 - i for i in range(20)}
    write_span(tmp_path, DAY, {"device": {"app": 3, "web": 1}, "shop": {"1": 1},
                               "terms": many})
    write_span(tmp_path, DAY + datetime.timedelta(days=1),
               {"device": {"web": 5}, "shop": {}, "terms": {"zz": 1000}})
    write_span(tmp_path, DAY + datetime.timedelta(days=2),
               {"device": {"ios": 99}, "shop": {}, "terms": {}}, complete=False)
    both = window_vocabularies(tmp_path, SPEC, DAY, DAY + datetime.timedelta(days=2))
    assert both["device"] == ["web", "app"]  # 6 > 3; the incomplete span is not read
    assert len(both["device"]) <= MAX_VOCAB_SCALE * 1
    assert both["terms"][:3] == ["zz", "t00", "t01"] and len(both["terms"]) == 21
    first = window_vocabularies(tmp_path, SPEC, DAY, DAY)
    assert first["device"] == ["app", "web"] and first["shop"] == ["1"]
    tight = spec_from_dict({"features": [{"name": "terms", "kind": "categorical",
                                          "vocabulary_size": 1}]})
    assert window_vocabularies(tmp_path, tight, DAY, DAY)["terms"] == ranked_tokens(many, 16)


def test_vocabularies_round_trip_through_the_spec(tmp_path):
    vocab = vocabulary_dir(tmp_path, DAY, DAY)
    assert vocab == os.path.join(str(tmp_path), "vocab", "2026-01-05_2026-01-05")
    write_vocabularies(vocab, {"device": ["web", "app"], "shop": ["7"], "terms": ["red"]})
    assert SPEC.load_vocabularies(vocab) == {"device": ["web"], "shop": ["7"],
                                             "terms": ["red"]}
    with pytest.raises(ValueError, match="vocabulary 'device' holds token 'a\\\\nb'"):
        write_vocabularies(vocab, {"device": ["a\nb"]})


def test_counts_of_a_table_the_span_lacks_name_the_fix(tmp_path):
    write_token_counts(tmp_path, {"device": {"app": 1}})
    assert read_token_counts(tmp_path, ["device"]) == {"device": {"app": 1}}
    with pytest.raises(FileNotFoundError, match="no token counts for vocabulary table 'shop'.*"
                                                "--overwrite"):
        read_token_counts(tmp_path, ["shop"])
    assert merge_token_counts([{"a": {"x": 1}}, {"a": {"x": 2}, "b": {"y": 1}}]) == {
        "a": {"x": 3}, "b": {"y": 1}}


def test_min_count_leaves_rare_tokens_out_of_the_window_vocabulary(tmp_path):
    write_span(tmp_path, DAY, {"device": {"app": 3, "web": 1, "tv": 1}})
    write_span(tmp_path, DAY + datetime.timedelta(days=1), {"device": {"web": 1}})
    spec = spec_from_dict({"features": [
        {"name": "device", "kind": "categorical", "vocabulary_size": 4, "min_count": 2}]})
    window = window_vocabularies(tmp_path, spec, DAY, DAY + datetime.timedelta(days=1))
    assert window == {"device": ["app", "web"]}  # web: 1 + 1 over the window; tv: 1 (OOV)
    assert window_vocabularies(tmp_path, spec, DAY, DAY) == {"device": ["app"]}
    assert ranked_tokens({"a": 5, "b": 2, "c": 1}, limit=None, min_count=2) == ["a", "b"]

"""Feature spec: loading, validation, scaling, parsing spec, schema and parameter counts."""

import dataclasses
import json
import re

import numpy as np
import pytest
import yaml

from cvr_tf.compat import tf
from cvr_tf.features import (
    Feature,
    FeatureSpec,
    FeatureSpecError,
    default_spec,
    load_spec,
    spec_from_dict,
)

# Rows x dims of the default spec's tables at their caps (vocabulary + 1 OOV row):
# user_id 50000x32 (hashed), user_segment 17x8, device 9x8, query 10001x32, terms 5001x32 (shared by
# query_terms and item_title_terms), item_id 30001x32, item_category 201x16, item_brand 1001x16,
# item_price_bucket 9x8. position (train_only) is not in the served embedding.
DEFAULT_EMBEDDING_PARAMS = 3_059_608


def test_default_spec_fields_and_dims():
    spec = default_spec()
    assert spec.names[:3] == ["user_id", "user_segment", "device"]
    assert [f.name for f in spec.train_only_features] == ["position"]
    assert spec.field_dims() == [32, 8, 8, 32, 32, 32, 32, 16, 16, 1, 8]
    assert sum(spec.field_dims()) == 217
    assert spec.field_dims(train_only=True) == [4]
    assert set(spec.vocabulary_tables()) == {
        "user_segment", "device", "query", "terms", "item_id", "item_category", "item_brand"}
    assert [f.name for f in spec.vocabulary_tables()["terms"]] == ["query_terms",
                                                                  "item_title_terms"]


@pytest.mark.parametrize("scale, expected", [(1, 3_059_608), (2, 6_119_216), (4, 12_238_432)])
def test_embedding_dim_scale_multiplies_embedding_parameters(scale, expected):
    assert default_spec().scaled(embedding_dim_scale=scale).embedding_parameter_count() == expected


def test_vocab_scale_multiplies_rows():
    spec = default_spec().scaled(vocab_scale=2)
    assert spec.feature("user_id").hash_buckets == 100_000
    assert spec.feature("item_id").vocabulary_size == 60_000
    # Every table's rows double except the OOV row and the bucketized price (9 rows x 8).
    expected = (100_000 * 32 + 33 * 8 + 17 * 8 + 20_001 * 32 + 10_001 * 32 + 60_001 * 32
                + 401 * 16 + 2_001 * 16 + 9 * 8)
    assert spec.embedding_parameter_count() == expected


def test_scaling_rounds_and_keeps_at_least_one():
    spec = FeatureSpec((Feature("a", "categorical", hash_buckets=3, embedding_dim=3),))
    small = spec.scaled(embedding_dim_scale=0.1, vocab_scale=0.1)
    assert small.feature("a").embedding_dim == 1 and small.feature("a").hash_buckets == 1
    assert spec.scaled(embedding_dim_scale=1.5).feature("a").embedding_dim == 4
    with pytest.raises(FeatureSpecError, match="embedding_dim_scale must be positive"):
        spec.scaled(embedding_dim_scale=0)
    with pytest.raises(FeatureSpecError, match="vocab_scale 32 exceeds 16"):
        spec.scaled(vocab_scale=32)


def test_json_and_yaml_round_trip(tmp_path):
    spec = default_spec()
    spec.save(tmp_path / "spec.json")
    assert load_spec(tmp_path / "spec.json").to_dict() == spec.to_dict()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    assert load_spec(tmp_path / "spec.yaml").to_dict() == spec.to_dict()
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == dataclasses.replace(spec)


@pytest.mark.parametrize("feature, message", [
    ({"name": "x", "kind": "embedding", "hash_buckets": 3},
     "feature 'x': unknown kind 'embedding'"),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "embedding_dim": 0},
     "feature 'x': embedding_dim must be positive, got 0"),
    ({"name": "x", "kind": "categorical", "hash_buckets": -2},
     "feature 'x': hash_buckets must be positive, got -2"),
    ({"name": "x", "kind": "categorical"}, "feature 'x': needs one of vocabulary_size"),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "vocabulary_size": 3},
     "hash_buckets excludes vocabulary_size"),
    ({"name": "x", "kind": "text", "dtype": "int64", "hash_buckets": 3},
     "feature 'x': text features read string columns"),
    ({"name": "x", "kind": "numeric", "dtype": "string"}, "feature 'x': numeric features read"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "boundaries": [2, 1]},
     "feature 'x': boundaries must be non-empty and strictly increasing"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "std": 0},
     "feature 'x': std must be positive"),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "colour": "red"},
     "feature 'x': unknown field\\(s\\) colour"),
    ({"name": "x", "hash_buckets": 3}, "feature 'x': missing 'kind'"),
    ({"kind": "categorical", "hash_buckets": 3}, "feature #0: missing 'name'"),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "embedding_dim": "32"},
     "feature 'x': embedding_dim must be an integer, got '32' \\(str\\)"),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "embedding_dim": 8.5},
     "feature 'x': embedding_dim must be an integer, got 8.5 \\(float\\)"),
    ({"name": "x", "kind": "text", "vocabulary_size": True},
     "feature 'x': vocabulary_size must be an integer, got True"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "mean": "0.5"},
     "feature 'x': mean must be a number, got '0.5'"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "boundaries": "1,2"},
     "feature 'x': boundaries must be a list of numbers"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "boundaries": [1, "2"]},
     "feature 'x': boundaries must be a list of numbers"),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "train_only": "yes"},
     "feature 'x': train_only must be a boolean"),
    ({"name": "x", "kind": 3, "hash_buckets": 3}, "feature 'x': kind must be a string"),
    ({"name": 7, "kind": "categorical", "hash_buckets": 3},
     "every feature needs a non-empty string 'name', got 7"),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "default_value": 0},
     "feature 'x': default_value must be a string for the string column 'x', got 0"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "default_value": "0"},
     "feature 'x': default_value must be a finite number for the float32 column 'x', got '0'"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "default_value": float("nan")},
     "feature 'x': default_value must be a finite number for the float32 column 'x', got nan"),
    ({"name": "x", "kind": "numeric", "dtype": "int64", "default_value": 1.5},
     "feature 'x': default_value must be an integer for the int64 column 'x', got 1.5"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "min_value": 0, "default_value": -1},
     "feature 'x': default_value -1 is outside \\[min_value, max_value\\] = \\[0, None\\]"),
])
def test_invalid_features_name_the_feature(feature, message):
    with pytest.raises(FeatureSpecError, match=message):
        spec_from_dict({"features": [feature]})


def test_invalid_specs_name_the_feature():
    a = {"name": "a", "kind": "categorical", "hash_buckets": 3}
    with pytest.raises(FeatureSpecError, match="duplicate feature name 'a'"):
        spec_from_dict({"features": [a, a]})
    with pytest.raises(FeatureSpecError, match="feature 'b' reads column 'converted'"):
        spec_from_dict({"features": [a, {"name": "b", "column": "converted", "kind": "categorical",
                                          "hash_buckets": 2}]})
    with pytest.raises(FeatureSpecError, match="share embedding table 't' but differ"):
        spec_from_dict({"features": [
            {"name": "a", "kind": "categorical", "hash_buckets": 3, "shared_embedding": "t"},
            {"name": "b", "kind": "categorical", "hash_buckets": 4, "shared_embedding": "t"}]})
    with pytest.raises(FeatureSpecError, match="reads column 'c' as float32 but feature 'a'"):
        spec_from_dict({"features": [
            {"name": "a", "column": "c", "kind": "categorical", "hash_buckets": 3},
            {"name": "b", "column": "c", "kind": "numeric", "dtype": "float32"}]})
    with pytest.raises(FeatureSpecError, match="features 'a' and 'b' read column 'c' with "
                                               "default_value '' and 'none'; one column has one"):
        spec_from_dict({"features": [
            {"name": "a", "column": "c", "kind": "categorical", "hash_buckets": 3,
             "default_value": ""},
            {"name": "b", "column": "c", "kind": "text", "hash_buckets": 3,
             "default_value": "none"}]})
    with pytest.raises(FeatureSpecError, match=re.escape(
            "column 'Department Name' (read by 'dept') cannot name an input of the served "
            "model: SavedModel signature inputs match [A-Za-z0-9.][A-Za-z0-9_.-]*; rename the "
            "log column (e.g. 'Department_Name'), or make its features train_only")):
        spec_from_dict({"features": [a, {"name": "dept", "column": "Department Name",
                                          "kind": "categorical", "hash_buckets": 3}]})
    spec_from_dict({"features": [a, {"name": "dept", "column": "Department Name",  # not served
                                      "kind": "categorical", "hash_buckets": 3,
                                      "train_only": True}]})
    with pytest.raises(FeatureSpecError, match="every feature is train_only"):
        spec_from_dict({"features": [dict(a, train_only=True)]})
    with pytest.raises(FeatureSpecError, match="unknown top-level spec field"):
        spec_from_dict({"features": [a], "lable": "y"})


def test_missing_vocabulary_file_names_feature(tmp_path):
    spec = spec_from_dict({"features": [
        {"name": "brand", "kind": "categorical", "vocabulary_file": "brands.txt"}]},
        base_dir=str(tmp_path))
    with pytest.raises(FeatureSpecError, match=r"feature 'brand': vocabulary file .*brands.txt"):
        spec.load_vocabularies()
    (tmp_path / "brands.txt").write_text("acme\nzeta\n")
    assert spec.load_vocabularies() == {"brand": ["acme", "zeta"]}
    with pytest.raises(FeatureSpecError, match="feature 'user_segment': vocabulary file"):
        default_spec().load_vocabularies(tmp_path)


def test_vocabulary_cut_at_scaled_cap(tmp_path):
    spec = spec_from_dict({"features": [
        {"name": "item", "kind": "categorical", "vocabulary_size": 2}]})
    (tmp_path / "item.txt").write_text("a\nb\nc\nd\n")
    assert spec.load_vocabularies(tmp_path) == {"item": ["a", "b"]}
    assert spec.scaled(vocab_scale=1.5).load_vocabularies(tmp_path) == {"item": ["a", "b", "c"]}
    assert spec.embedding_parameter_count({"item": ["a", "b"]}) == 3 * 16


def test_parsing_spec_parses_a_real_example():
    spec = default_spec()
    values = {"request_id": b"r1", "user_id": b"u7", "user_segment": b"budget", "device": b"app",
              "query": b"red shoes", "item_id": b"i42", "item_title": b"red running shoes",
              "item_category": b"shoes", "item_brand": b"acme"}
    feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
               for k, v in values.items()}
    feature["item_price"] = tf.train.Feature(float_list=tf.train.FloatList(value=[19.5]))
    feature["position"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))
    feature["converted"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    parsed = tf.io.parse_example([example.SerializeToString()] * 2, spec.parsing_spec())
    assert sorted(parsed) == sorted(spec.log_columns())
    assert parsed["query"].numpy().tolist() == [b"red shoes"] * 2
    np.testing.assert_allclose(parsed["item_price"].numpy(), [19.5, 19.5])
    assert parsed["position"].dtype == tf.int64 and parsed["converted"].numpy().tolist() == [1, 1]
    serving = spec.parsing_spec(train_only=False, label=False)
    assert "position" not in serving and "converted" not in serving and "request_id" not in serving


def test_keras_inputs_and_schema():
    spec = default_spec()
    inputs = spec.keras_inputs()
    assert "position" not in inputs and inputs["item_price"].dtype == tf.float32
    assert inputs["query"].shape.as_list() == [None]
    assert "position" in spec.keras_inputs(train_only=True)
    schema = spec.tfmd_schema()
    by_name = {f.name: f for f in schema.feature}
    assert sorted(by_name) == sorted(spec.log_columns())
    assert by_name["item_price"].float_domain.min == 0.0
    assert by_name["position"].int_domain.min == 1
    assert by_name["converted"].int_domain.max == 1

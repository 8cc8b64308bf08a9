"""One class per feature kind: dispatch, validation, row counts, tokens, fields, warmup values."""

import ast
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.embedding import FeatureEmbedding
from cvr_tf.features import (
    KINDS,
    CategoricalFeature,
    Feature,
    FeatureSpecError,
    NumericFeature,
    TextFeature,
    spec_from_dict,
)

FEATURES_DIR = pathlib.Path(__file__).parents[2] / "cvr_tf" / "features"


def test_feature_builds_the_class_of_its_kind():
    assert KINDS == ("categorical", "text", "numeric", "request_relative")
    brand = Feature("brand", "categorical", hash_buckets=3)
    terms = Feature(name="terms", kind="text", vocabulary_size=5)
    price = Feature(name="price", kind="numeric", dtype="float32")
    assert [type(f) for f in (brand, terms, price)] == [CategoricalFeature, TextFeature,
                                                        NumericFeature]
    assert pickle.loads(pickle.dumps(terms)) == terms  # Beam pickles specs to its workers
    assert CategoricalFeature(name="c", kind="categorical", hash_buckets=2).table == "c"
    with pytest.raises(FeatureSpecError, match="a TextFeature has kind 'text', not 'numeric'"):
        TextFeature(name="t", kind="numeric", vocabulary_size=3)


@pytest.mark.parametrize("feature, message", [
    ({"name": "x", "kind": "numeric", "dtype": "float32", "hash_buckets": 3},
     "feature 'x': unknown field\\(s\\) hash_buckets for a numeric feature; its fields are "),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "colour": "red"},
     "unknown field\\(s\\) colour for a categorical feature"),
    ({"name": "x", "kind": "categorical", "vocabulary_size": 3, "min_count": 0},
     "feature 'x': min_count must be positive, got 0"),
    ({"name": "x", "kind": "categorical", "hash_buckets": 3, "min_count": 2},
     "feature 'x': min_count applies to the vocabularies the pipeline computes"),
    ({"name": "x", "kind": "categorical", "dtype": "float32", "hash_buckets": 3},
     "feature 'x': categorical features read string or int64 columns"),
    ({"name": "x", "kind": "text", "vocabulary_size": 3, "combiner": "max"},
     "feature 'x': unknown combiner 'max'; use one of mean, sum, sqrtn"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "normalization": "zscore"},
     "feature 'x': unknown normalization 'zscore'"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "normalization": "auto", "mean": 2.0},
     "feature 'x': normalization \"auto\" computes mean and std; drop them"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "normalization": "auto",
      "boundaries": [1.0]}, "feature 'x': normalization applies to normalized numerics"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "boundaries": "quantiles:1"},
     "feature 'x': boundaries must be a list of numbers or \"quantiles:N\" with N >= 2"),
    ({"name": "x", "kind": "numeric", "dtype": "float32", "shared_embedding": "t"},
     "feature 'x': only bucketized numerics"),
])
def test_kind_validation_names_the_feature_and_the_fix(feature, message):
    with pytest.raises(FeatureSpecError, match=message):
        spec_from_dict({"features": [feature]})


def test_fields_of_the_old_single_class_without_effect_still_load():
    # Specs and saved layer configs written when every kind shared one class may hold fields
    # that never applied to their kind; they are dropped (with a warning), never an error.
    old = {"name": "x", "kind": "categorical", "hash_buckets": 3, "max_tokens": 2, "mean": 1.0}
    assert Feature.from_dict(old).to_dict() == {"name": "x", "kind": "categorical",
                                                "hash_buckets": 3}
    price = {"name": "p", "kind": "numeric", "dtype": "float32", "vocabulary_size": None,
             "combiner": "sum"}
    assert spec_from_dict({"features": [price]}).feature("p") == Feature("p", "numeric",
                                                                         dtype="float32")
    layer = FeatureEmbedding(features=[old, price])
    assert layer.field_dims == [16, 1]


def test_row_counts_per_kind():
    assert Feature("a", "categorical", hash_buckets=7).table_rows() == 7
    assert Feature("a", "categorical", vocabulary_size=7).table_rows() == 8
    assert Feature("a", "text", vocabulary_size=7).table_rows(["x", "y"]) == 3
    with pytest.raises(FeatureSpecError, match="'a': the size of vocabulary_file tables"):
        Feature("a", "text", vocabulary_file="v.txt").table_rows()
    assert Feature("p", "numeric", dtype="float32", boundaries=[1, 2]).table_rows() == 3
    # At most N buckets before resolution (equal quantiles merge).
    assert Feature("p", "numeric", dtype="float32", boundaries="quantiles:16").table_rows() == 16
    normalized = Feature("p", "numeric", dtype="float32")
    assert normalized.table is None and normalized.field_dim == 1


def test_vocabulary_tokens_per_kind():
    values = pa.array(["Red shoe", "", "a\nb", "red"])
    assert Feature("c", "categorical", vocabulary_size=3).vocabulary_tokens(values).to_pylist() \
        == ["Red shoe", "red"]
    assert Feature("t", "text", vocabulary_size=3, max_tokens=1).vocabulary_tokens(
        values).to_pylist() == ["red", "a", "red"]
    ints = pa.array([7, 3], pa.int64())
    assert Feature("s", "categorical", dtype="int64", vocabulary_size=3).vocabulary_tokens(
        ints).to_pylist() == ["7", "3"]


def test_fields_per_kind_are_exact():
    table = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    terms = Feature("t", "text", vocabulary_size=2, combiner="sum", max_tokens=3)
    lookup = terms.make_lookup(["red", "shoe"])
    out = terms.embed(tf.constant(["red shoe shoe", "", "Blue"]), table, lookup)
    np.testing.assert_array_equal(out.numpy(), [[1.0, 6.0], [0.0, 0.0], [0.0, 0.0]])
    brand = Feature("b", "categorical", vocabulary_size=2)
    out = brand.embed(tf.constant(["shoe", "x"]), table, brand.make_lookup(["red", "shoe"]))
    np.testing.assert_array_equal(out.numpy(), [[0.0, 3.0], [0.0, 0.0]])
    hashed = Feature("h", "categorical", hash_buckets=3)
    assert isinstance(hashed.make_lookup(None), keras.layers.Hashing)
    price = Feature("p", "numeric", dtype="float32", mean=1.0, std=4.0)
    np.testing.assert_array_equal(price.embed(tf.constant([5.0, -3.0]), None, None).numpy(),
                                  [[1.0], [-1.0]])
    bucket = Feature("p", "numeric", dtype="float32", boundaries=[1.0, 2.0])
    out = bucket.embed(tf.constant([0.5, 1.0, 7.0]), table, None)
    np.testing.assert_array_equal(out.numpy(), [[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    auto = Feature("p", "numeric", dtype="float32", normalization="auto")
    with pytest.raises(FeatureSpecError, match="'p': normalization \"auto\" and boundaries"):
        auto.embed(tf.constant([1.0]), None, None)


def test_warmup_values_per_kind():
    rng = np.random.default_rng(0)
    shop = Feature("s", "categorical", dtype="int64", vocabulary_size=3)
    assert set(shop.warmup_values(rng, ["7", "3"], 20).tolist()) == {7, 3}
    text = Feature("t", "text", vocabulary_size=3).warmup_values(rng, ["a"], 2)
    assert text.tolist() == [b"a a", b"a a"]
    price = Feature("p", "numeric", dtype="int64", min_value=2, max_value=4)
    values = price.warmup_values(rng, [], 50)
    assert values.dtype == np.int64 and set(values.tolist()) <= {2, 3, 4}


def test_features_package_never_imports_the_embedding_module():
    # Statically, lazy imports included: the dependency goes embedding -> features only.
    for path in FEATURES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "cvr_tf.embedding", path
                assert not (node.module == "cvr_tf" and any(
                    a.name == "embedding" for a in node.names)), path
    # And at run time, in a fresh interpreter.
    code = ("import sys, cvr_tf.features; "
            "assert 'cvr_tf.embedding' not in sys.modules, 'embedding imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

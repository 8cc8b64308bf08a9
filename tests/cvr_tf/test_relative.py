"""request_relative features: the definitions, numpy (pipeline) == TF (serving), the spec."""

import numpy as np
import pytest

from cvr_tf.compat import tf
from cvr_tf.embedding import FeatureEmbedding
from cvr_tf.features import FeatureSpecError, RequestRelativeFeature, spec_from_dict
from cvr_tf.features.relative import RELATIONS, derive, derive_numpy

# Planted requests: a (odd n, a tie), b (even n, ties), c (n = 1), d (all equal, a NaN row).
VALUES = np.array([3, 1, 3, 2, 5, 4, 4, 1, 9, 7, 2, 2, np.nan, 2], dtype=np.float32)
GROUPS = np.array(["a"] * 5 + ["b"] * 3 + ["c"] + ["b"] + ["d"] * 4, dtype=object)
EXPECTED = {
    # a = [3, 1, 3, 2, 5]; b = [4, 4, 1, 7]; c = [9]; d = [2, 2, NaN -> 0, 2]
    "rank": [3, 1, 3, 2, 5, 2, 2, 1, 1, 4, 1, 1, 0, 1],
    "percentile": [2.5 / 4, 0, 2.5 / 4, 1 / 4, 1, 1.5 / 3, 1.5 / 3, 0, 0.5, 1, 0.5, 0.5, 0, 0.5],
    "diff_median": [0, -2, 0, -1, 2, 0, 0, -3, 0, 3, 0, 0, 0, 0],
}
SPEC = {"group_key": "request_id", "features": [
    {"name": "price_rank", "kind": "request_relative", "column": "price", "dtype": "float32",
     "relation": "rank", "mean": 3.0, "std": 2.0},
    {"name": "price_pct", "kind": "request_relative", "column": "price", "dtype": "float32",
     "relation": "percentile", "boundaries": [0.25, 0.75], "embedding_dim": 2},
    {"name": "price", "kind": "numeric", "dtype": "float32"},
]}


@pytest.mark.parametrize("relation", RELATIONS)
def test_definitions_on_planted_requests(relation):
    expected = np.array(EXPECTED[relation], dtype=np.float32)
    np.testing.assert_array_equal(derive_numpy(VALUES, GROUPS, relation), expected)
    served = derive(tf.constant(VALUES), tf.constant(GROUPS.astype(bytes)), relation)
    np.testing.assert_array_equal(served.numpy(), expected)


def test_percentile_is_tie_symmetric_and_empty_requests_work():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, 200).astype(np.float32)
    groups = rng.integers(0, 9, 200)
    up, down = (derive_numpy(v, groups, "percentile") for v in (values, -values))
    np.testing.assert_allclose(up + down, 1.0, atol=1e-6)
    assert derive_numpy(np.zeros(0), np.zeros(0), "rank").shape == (0,)
    assert derive(tf.zeros([0]), tf.zeros([0], tf.string), "diff_median").shape == (0,)


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_numpy_equals_tf_on_random_requests_with_ties(relation, dtype):
    rng = np.random.default_rng(7)
    n = 3000
    values = (rng.integers(0, 20, n) if dtype == np.int64 else
              np.round(rng.normal(50, 30, n), 1)).astype(dtype)
    groups = np.array([f"r{g}" for g in rng.integers(0, 150, n)], dtype=object)
    expected = derive_numpy(values, groups, relation)
    served = derive(tf.constant(values), tf.constant(groups.astype(bytes)), relation).numpy()
    np.testing.assert_array_equal(served, expected)


def test_spec_derives_serving_columns_and_refuses_bad_features():
    spec = spec_from_dict(SPEC)
    rank = spec.feature("price_rank")
    assert isinstance(rank, RequestRelativeFeature) and rank.input_column == "price__rank"
    assert spec.column_dtypes() == {"price__rank": "float32", "price__percentile": "float32",
                                    "price": "float32"}
    assert spec.serving_columns() == {"price": "float32", "request_id": "string"}
    assert spec.log_columns()["price__percentile"] == "float32"
    inputs = {"price": tf.constant([5.0, 1.0, 3.0]), "request_id": tf.constant(["q"] * 3)}
    derived = spec.derive_serving_columns(inputs)
    np.testing.assert_array_equal(derived["price__rank"], [3, 1, 2])
    np.testing.assert_array_equal(derived["price__percentile"], [1, 0, 0.5])
    embedding = FeatureEmbedding.from_spec(spec)
    out = embedding(derived).numpy()
    np.testing.assert_allclose(out[:, 0], [0, -1, -0.5])  # (rank - 3) / 2
    np.testing.assert_allclose(out[:, 3], [5, 1, 3])
    with pytest.raises(FeatureSpecError, match="relation must be one of rank, percentile, "):
        spec_from_dict({"features": [{**SPEC["features"][0], "relation": "max"}]})
    with pytest.raises(FeatureSpecError, match="'price_rank'.*not supported"):
        spec_from_dict({"features": [{**SPEC["features"][0], "normalization": "auto",
                                      "mean": 0.0, "std": 1.0}]})
    with pytest.raises(FeatureSpecError, match="derives column 'price__rank', which feature "
                                               "'clash' reads"):
        spec_from_dict({"features": [SPEC["features"][0], {"name": "clash", "kind": "numeric",
                                                           "column": "price__rank",
                                                           "dtype": "float32"}]})
    with pytest.raises(FeatureSpecError, match="int64 or float32"):
        spec_from_dict({"features": [{**SPEC["features"][0], "dtype": "string"}]})

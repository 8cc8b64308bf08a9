"""FeatureEmbedding: exact outputs on hand-set tables, and a serialization round trip."""

import numpy as np
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.embedding import FeatureEmbedding
from cvr_tf.features import spec_from_dict

SPEC = spec_from_dict({"features": [
    {"name": "brand", "kind": "categorical", "vocabulary_size": 10, "embedding_dim": 2},
    {"name": "query_terms", "kind": "text", "column": "query", "shared_embedding": "terms",
     "vocabulary_size": 10, "embedding_dim": 2, "max_tokens": 2},
    {"name": "title_terms", "kind": "text", "column": "title", "shared_embedding": "terms",
     "vocabulary_size": 10, "embedding_dim": 2, "max_tokens": 2, "combiner": "sqrtn"},
    {"name": "price_log", "kind": "numeric", "column": "price", "dtype": "float32",
     "transform": "log1p", "mean": 1.0, "std": 2.0},
    {"name": "price_bucket", "kind": "numeric", "column": "price", "dtype": "float32",
     "boundaries": [1.0, 10.0], "embedding_dim": 1},
    {"name": "shop", "kind": "categorical", "dtype": "int64", "vocabulary_size": 5,
     "embedding_dim": 1},
    {"name": "position", "kind": "numeric", "dtype": "int64", "boundaries": [1.5],
     "embedding_dim": 1, "train_only": True},
]})
VOCABS = {"brand": ["acme", "zeta"], "terms": ["red", "shoe", "blue"], "shop": ["7", "3"]}


def _layer_with_known_tables() -> FeatureEmbedding:
    layer = FeatureEmbedding.from_spec(SPEC, VOCABS)
    layer(_batch())
    # Row 0 of every vocabulary table is the out-of-vocabulary row.
    layer.tables["brand"].assign([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]])
    layer.tables["terms"].assign([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    layer.tables["price_bucket"].assign([[10.0], [20.0], [30.0]])
    layer.tables["shop"].assign([[-1.0], [5.0], [6.0]])
    return layer


def _batch() -> dict[str, tf.Tensor]:
    return {
        "brand": tf.constant(["zeta", "acme", "unknown"]),
        "query": tf.constant(["Red SHOE blue", "", "shoe"]),
        "title": tf.constant(["red shoe", "blue", "nope shoe"]),
        "price": tf.constant([0.0, 5.0, 99.0]),
        "shop": tf.constant([3, 7, 42], dtype=tf.int64),
    }


def test_exact_outputs_on_known_tables():
    out = _layer_with_known_tables()(_batch()).numpy()
    sqrt2 = np.sqrt(2.0)
    expected = np.array([
        # brand  | query mean of 2 tokens (3rd cut) | title sqrtn | (log1p(p)-1)/2 | bucket | shop
        [3, 4, 0.5, 0.5, 1 / sqrt2, 1 / sqrt2, -0.5, 10, 6],
        [1, 2, 0, 0, 2.0, 2.0, (np.log1p(5.0) - 1) / 2, 20, 5],
        [0, 0, 0, 1, 0 / sqrt2, 1 / sqrt2, (np.log1p(99.0) - 1) / 2, 30, -1],
    ])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_repeated_text_values_get_the_fields_of_each_value_alone():
    # A request's candidates share its query: each distinct text is tokenized once and its
    # field copied to every row holding it.
    layer = _layer_with_known_tables()
    rows = [0, 1, 0, 2, 0, 1]
    batch = {name: tf.gather(column, rows) for name, column in _batch().items()}
    alone = np.concatenate([layer({n: c[i:i + 1] for n, c in _batch().items()}).numpy()
                            for i in range(3)])
    np.testing.assert_array_equal(layer(batch).numpy(), alone[rows])


def test_field_layout_and_train_only_layer():
    layer = FeatureEmbedding.from_spec(SPEC, VOCABS)
    assert layer.field_dims == [2, 2, 2, 1, 1, 1] and layer.output_dim == 9
    assert layer.input_columns == ["brand", "query", "title", "price", "shop"]
    bias = FeatureEmbedding.from_spec(SPEC, VOCABS, train_only=True)
    out = bias({"position": tf.constant([1, 2, 9], dtype=tf.int64)})
    assert out.shape == (3, 1)
    assert [v.name for v in bias.weights] == ["train_only_embedding/position_embedding:0"]


def test_table_rows_and_parameter_count_match_spec():
    layer = FeatureEmbedding.from_spec(SPEC, VOCABS)
    layer(_batch())
    assert {t: v.shape.as_list() for t, v in layer.tables.items()} == {
        "brand": [3, 2], "terms": [4, 2], "price_bucket": [3, 1], "shop": [3, 1]}
    assert layer.count_params() == SPEC.embedding_parameter_count(VOCABS) == 20


def test_missing_column_and_vocabulary_are_named():
    layer = FeatureEmbedding.from_spec(SPEC, VOCABS)
    batch = _batch()
    del batch["title"]
    with pytest.raises(ValueError, match="missing input column\\(s\\) title"):
        layer(batch)
    with pytest.raises(ValueError, match="no vocabulary given for table\\(s\\) shop"):
        FeatureEmbedding.from_spec(SPEC, {"brand": ["a"], "terms": ["b"]})


def test_layer_config_keeps_the_feature_dicts_saved_models_hold():
    # model_config.json and SavedModels store these dicts: the format must not change.
    config = FeatureEmbedding.from_spec(SPEC, VOCABS).get_config()
    assert config["features"][:2] == [
        {"name": "brand", "kind": "categorical", "embedding_dim": 2, "vocabulary_size": 10},
        {"name": "query_terms", "kind": "text", "column": "query", "embedding_dim": 2,
         "shared_embedding": "terms", "vocabulary_size": 10, "max_tokens": 2}]
    assert config["features"][3:5] == [
        {"name": "price_log", "kind": "numeric", "column": "price", "dtype": "float32",
         "transform": "log1p", "mean": 1.0, "std": 2.0},
        {"name": "price_bucket", "kind": "numeric", "column": "price", "dtype": "float32",
         "embedding_dim": 1, "boundaries": [1.0, 10.0]}]


def test_serialization_round_trip():
    layer = _layer_with_known_tables()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, FeatureEmbedding)
    restored(_batch())
    restored.set_weights(layer.get_weights())
    np.testing.assert_array_equal(restored(_batch()).numpy(), layer(_batch()).numpy())
    assert restored.vocabulary("terms") == ["red", "shoe", "blue"]


def test_saved_model_round_trip(tmp_path):
    layer = _layer_with_known_tables()
    inputs = {c: keras.Input(shape=(), dtype=t.dtype, name=c) for c, t in _batch().items()}
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "model")
    loaded = keras.models.load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded(_batch()).numpy(), model(_batch()).numpy())

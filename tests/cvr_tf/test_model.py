"""CVRModel: the embedding/dense boundary, position debiasing, training step, serialization."""

import numpy as np
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.features import default_spec
from cvr_tf.model import CVRModel, ModelConfig, build_model

SPEC = default_spec()
VOCABS = {t: [f"tok{i}" for i in range(20)] for t in SPEC.vocabulary_tables()}
VOCABS["terms"] = ["red", "shoe", "blue", "bag"]


def _batch(positions=(1, 5, 9, 2)) -> dict[str, tf.Tensor]:
    n = len(positions)
    return {
        "user_id": tf.constant([f"u{i}" for i in range(n)]),
        "user_segment": tf.constant(["tok1", "tok2", "zz", "tok1"][:n]),
        "device": tf.constant(["tok0"] * n),
        "query": tf.constant(["red shoe", "", "bag", "blue bag"][:n]),
        "item_id": tf.constant(["tok3", "tok4", "new", "tok5"][:n]),
        "item_title": tf.constant(["red shoe", "blue", "", "bag"][:n]),
        "item_category": tf.constant(["tok1"] * n),
        "item_brand": tf.constant(["tok2"] * n),
        "item_price": tf.constant([10.0, 0.5, 99.0, 20.0][:n]),
        "position": tf.constant(positions, tf.int64),
        "converted": tf.constant([1, 0, 0, 1][:n], tf.int64),
        "request_id": tf.constant(["r1", "r1", "r2", "r2"][:n]),
    }


@pytest.fixture(scope="module")
def model() -> CVRModel:
    keras.utils.set_random_seed(1)
    return build_model(SPEC, VOCABS, ModelConfig(backbone="dcnv2"))


def test_parts_hold_disjoint_variables(model):
    embedding = {v.name for v in model.embedding_part.variables}
    dense = {v.name for v in model.dense_part.variables}
    assert embedding and dense and not embedding & dense
    assert all("embedding:0" in name for name in embedding)
    assert not any("embedding" in name for name in dense)
    assert model.dense_part.input_shape == (None, 217)
    assert model.embedding_part.output_shape == (None, 217)
    assert "position" not in model.embedding_part.input


def test_served_score_is_the_composition_and_ignores_position(model):
    batch = _batch()
    served = model(batch).numpy()
    composed = model.dense_part(model.embedding_part(
        {c: batch[c] for c in SPEC.column_dtypes(train_only=False)})).numpy()
    np.testing.assert_array_equal(served, composed)
    np.testing.assert_array_equal(model(_batch(positions=(30, 1, 1, 7))).numpy(), served)
    np.testing.assert_allclose(
        model.served_probabilities({c: batch[c] for c in SPEC.column_dtypes(train_only=False)}),
        served, rtol=1e-6)
    # Training logits do read the position through the bias tower.
    moved = model.training_logits(_batch(positions=(30, 1, 1, 7))).numpy()
    assert not np.allclose(moved, model.training_logits(batch).numpy())
    np.testing.assert_allclose(
        model.training_logits(batch).numpy()
        - model.bias_tower({"position": batch["position"]}).numpy(),
        model.dense_logits(model.embedding_part(batch)).numpy(), rtol=1e-5, atol=1e-6)


def test_without_debiasing_there_is_no_bias_tower():
    plain = build_model(SPEC, VOCABS, ModelConfig(backbone="mlp", position_debiasing=False))
    assert plain.bias_tower is None
    np.testing.assert_allclose(tf.sigmoid(plain.training_logits(_batch())).numpy(),
                               plain(_batch()).numpy(), rtol=1e-6)


def test_accounting(model):
    assert model.embedding_parameter_count == SPEC.embedding_parameter_count(model.vocabularies)
    assert model.dense_parameter_count == model.backbone.param_count + model.backbone.output_dim + 1
    assert model.dense_flops_per_example == (model.backbone.flops_per_example
                                             + 2 * model.backbone.output_dim)


def test_scaling_knobs_reach_the_tables():
    scaled = build_model(SPEC, VOCABS, ModelConfig(backbone="mlp", embedding_dim_scale=2,
                                                   vocab_scale=0.5))
    assert scaled.embedding_part.output_shape == (None, 2 * 217 - 1)  # price_log stays 1 wide
    assert len(scaled.vocabularies["user_segment"]) == 8  # cap 16 * 0.5


@pytest.mark.parametrize("loss", ["logloss", "listwise_softmax"])
def test_fit_lowers_the_loss(loss):
    keras.utils.set_random_seed(2)
    model = build_model(SPEC, VOCABS, ModelConfig(backbone="mlp", loss=loss))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=[keras.metrics.AUC(name="auc")])
    history = model.fit(tf.data.Dataset.from_tensors(_batch()).repeat(3), epochs=2, verbose=0)
    assert 0 < history.history["loss"][1] < history.history["loss"][0]
    assert set(history.history) == {"loss", "auc"}


def test_config_round_trip(model):
    clone = CVRModel.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(_batch()).numpy(), model(_batch()).numpy())
    assert clone.config == model.config and clone.vocabularies == model.vocabularies


def test_served_probabilities_is_traced_once(model):
    columns = SPEC.column_dtypes(train_only=False)
    first = model.served_probabilities({c: _batch()[c] for c in columns})
    model.served_probabilities({c: _batch(positions=(1, 2))[c] for c in columns})
    np.testing.assert_allclose(first.numpy(), model(_batch()).numpy(), rtol=1e-6)
    assert model.served_probabilities.experimental_get_tracing_count() == 1

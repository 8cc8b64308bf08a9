"""Tests for the layer norm: Keras' function and weights, computed in element-wise ops."""

import numpy as np
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.layers.norm import LayerNorm

X = np.random.default_rng(0).normal(3.0, 2.0, size=(5, 7)).astype(np.float32)


def test_known_values():
    norm = LayerNorm(epsilon=0.0)
    # [1, 3] has mean 2 and variance 1: [-1, 1]; gamma 1 and beta 0 at initialization.
    np.testing.assert_allclose(norm(np.asarray([[1.0, 3.0]], np.float32)).numpy(), [[-1.0, 1.0]])


def test_equals_keras_layer_normalization_with_the_same_weights():
    norm, keras_norm = LayerNorm(), keras.layers.LayerNormalization()
    norm.build(X.shape)
    keras_norm.build(X.shape)
    gamma, beta = np.linspace(0.5, 2.0, 7), np.linspace(-1.0, 1.0, 7)
    for layer in (norm, keras_norm):
        layer.set_weights([gamma, beta])
    assert [w.name for w in norm.weights] == [w.name for w in keras_norm.weights]
    np.testing.assert_allclose(norm(X).numpy(), keras_norm(X).numpy(), rtol=1e-5, atol=1e-5)
    mean, var = X.mean(-1, keepdims=True), X.var(-1, keepdims=True)
    np.testing.assert_allclose(norm(X).numpy(), (X - mean) / np.sqrt(var + 1e-3) * gamma + beta,
                               rtol=1e-5, atol=1e-5)


def test_checkpoints_of_keras_layer_normalization_restore(tmp_path):
    keras_norm = keras.layers.LayerNormalization()
    keras_norm.build(X.shape)
    keras_norm.set_weights([np.full(7, 2.0), np.full(7, 0.5)])
    path = tf.train.Checkpoint(norm=keras_norm).save(str(tmp_path / "ckpt"))
    norm = LayerNorm()
    norm.build(X.shape)
    tf.train.Checkpoint(norm=norm).restore(path).assert_consumed()
    np.testing.assert_allclose(norm(X).numpy(), keras_norm(X).numpy(), rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_are_normalized_in_float32():
    norm = LayerNorm(dtype="mixed_bfloat16")
    out = norm(X)
    assert out.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), LayerNorm()(X).numpy(),
                               atol=2e-2)


def test_only_the_last_axis():
    with pytest.raises(ValueError, match=r"last axis only, got axis=\[1\]"):
        LayerNorm(axis=1)(np.zeros([2, 3, 4], np.float32))


def test_round_trip(assert_round_trip):
    assert_round_trip(LayerNorm(epsilon=1e-5), X)

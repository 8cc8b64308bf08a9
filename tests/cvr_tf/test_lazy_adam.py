"""Lazy Adam moves exactly the rows a batch looks up, by Adam's formula, and nothing else."""

import numpy as np
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.lazy_adam import LazyAdam
from cvr_tf.optimization import OptimizerConfig, make_optimizers

RATE, BETA_1, BETA_2, EPSILON = 0.1, 0.9, 0.999, 1e-7


def _reference(table, steps):
    """Numpy Lazy Adam over ``steps`` of (indices, values): weights, m, v."""
    weights, m, v = table.copy(), np.zeros_like(table), np.zeros_like(table)
    for t, (indices, values) in enumerate(steps, start=1):
        rows = np.unique(indices)
        gradient = np.zeros_like(table)
        np.add.at(gradient, indices, values)  # duplicate lookups of a row add up
        m[rows] = BETA_1 * m[rows] + (1 - BETA_1) * gradient[rows]
        v[rows] = BETA_2 * v[rows] + (1 - BETA_2) * gradient[rows] ** 2
        alpha = RATE * np.sqrt(1 - BETA_2 ** t) / (1 - BETA_1 ** t)
        weights[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + EPSILON)
    return weights, m, v


def test_sparse_steps_follow_the_formula_and_leave_other_rows_alone():
    table = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    steps = [(np.array([1, 3, 1]), np.array([[0.5, -1.0], [2.0, 0.0], [0.5, 1.0]], np.float32)),
             (np.array([3, 4]), np.array([[-1.0, 1.0], [0.25, 0.5]], np.float32))]
    variable = tf.Variable(table)
    optimizer = LazyAdam(learning_rate=RATE, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON)
    for indices, values in steps:
        optimizer.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(indices),
                                                     tf.constant(table.shape)), variable)])
    weights, m, v = _reference(table, steps)
    np.testing.assert_allclose(variable.numpy(), weights, rtol=1e-6)
    np.testing.assert_allclose(optimizer._momentums[0].numpy(), m, rtol=1e-6)
    np.testing.assert_allclose(optimizer._velocities[0].numpy(), v, rtol=1e-4)  # 1 - beta_2 in fp32
    # Rows 0, 2 and 5 were never looked up; row 1 only in step 1 keeps its step-1 value.
    np.testing.assert_array_equal(variable.numpy()[[0, 2, 5]], table[[0, 2, 5]])
    assert (optimizer._momentums[0].numpy()[[0, 2, 5]] == 0).all()
    # Keras' sparse Adam moves row 1 again in step 2 by its momentum; Lazy Adam does not.
    keras_variable = tf.Variable(table)
    keras_adam = keras.optimizers.Adam(learning_rate=RATE, epsilon=EPSILON)
    for indices, values in steps:
        keras_adam.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(indices),
                                                      tf.constant(table.shape)), keras_variable)])
    assert not np.allclose(keras_variable.numpy()[1], variable.numpy()[1])


def test_dense_gradients_get_keras_adam():
    start = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    gradients = [np.array([[0.1, 0.2], [-0.3, 0.0]], np.float32),
                 np.array([[1.0, -1.0], [0.5, 0.5]], np.float32)]
    lazy, plain = tf.Variable(start), tf.Variable(start)
    lazy_adam, adam = LazyAdam(learning_rate=RATE), keras.optimizers.Adam(learning_rate=RATE)
    for gradient in gradients:
        lazy_adam.apply_gradients([(tf.constant(gradient), lazy)])
        adam.apply_gradients([(tf.constant(gradient), plain)])
    np.testing.assert_allclose(lazy.numpy(), plain.numpy(), rtol=1e-6)


def test_is_the_embedding_optimizer_of_the_training_config_and_serializes():
    dense, embedding = make_optimizers(
        OptimizerConfig(embedding_optimizer="lazy_adam", embedding_learning_rate=0.01), 10)
    assert isinstance(embedding, LazyAdam) and type(dense) is keras.optimizers.Adam
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(embedding))
    assert isinstance(restored, LazyAdam)
    assert restored.get_config()["learning_rate"] == pytest.approx(0.01)


@pytest.mark.parametrize("change, message", [
    ({"optimizer": "lazy_adam"}, "--optimizer='lazy_adam' is not one of adam, adamw"),
    ({"embedding_optimizer": "rmsprop"}, "--embedding_optimizer='rmsprop' is not one of"),
])
def test_unknown_optimizers_name_the_flag(change, message):
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**change).check()


def test_amsgrad_is_refused():
    with pytest.raises(ValueError, match="does not support amsgrad"):
        LazyAdam(amsgrad=True)

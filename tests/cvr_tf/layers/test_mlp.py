"""Tests for the MLP layer."""

import numpy as np
import pytest

from cvr_tf.compat import tf
from cvr_tf.layers.mlp import MLP

X = np.asarray([[1.0, 2.0], [-1.0, 0.0]], np.float32)


def test_two_layers_with_known_weights(assign_weights):
    mlp = MLP([2, 1])
    mlp(X)
    assign_weights(mlp, {
        "dense_0/kernel": [[1.0, 2.0], [3.0, 4.0]], "dense_0/bias": [0.5, -0.5],
        "dense_1/kernel": [[1.0], [-1.0]], "dense_1/bias": [3.0],
    })
    # Row 1: relu([7.5, 9.5]) -> 7.5 - 9.5 + 3 = 1.  Row 2: relu([-0.5, -2.5]) = 0 -> 0 + 3 = 3.
    np.testing.assert_allclose(mlp(X).numpy(), [[1.0], [3.0]])


def test_layer_norm_before_activation(assign_weights):
    mlp = MLP([2], activation=None, use_layer_norm=True)
    mlp(X)
    assign_weights(mlp, {"dense_0/kernel": [[1.0, 2.0], [3.0, 4.0]], "dense_0/bias": [0.5, -0.5]})
    # [7.5, 9.5] has mean 8.5 and variance 1: normalized to [-1, 1] / sqrt(1 + 1e-3).
    np.testing.assert_allclose(mlp(X[:1]).numpy(), [[-0.99950037, 0.99950037]], rtol=1e-6)


def test_dropout_only_in_training():
    mlp = MLP([64], dropout=0.5)
    inputs = tf.ones([4, 8])
    assert np.array_equal(mlp(inputs, training=False), mlp(inputs))
    dropped = mlp(inputs, training=True).numpy()
    assert (dropped == 0).mean() > 0.25
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 2 * mlp(inputs).numpy()[kept], rtol=1e-6)


def test_cost_matches_parameters():
    mlp = MLP([3, 2], use_layer_norm=True)
    mlp(tf.zeros([1, 5]))
    cost = mlp.cost(5)
    assert cost.params == mlp.count_params() == (5 * 3 + 3) + (3 * 2 + 2) + 2 * (3 + 2)
    assert cost.flops == 2 * (5 * 3 + 3 * 2)
    assert mlp.compute_output_shape((None, 5)).as_list() == [None, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": []}, "units must be a non-empty list of positive widths, got \\[\\]"),
        ({"units": [4, 0]}, "got \\[4, 0\\]"),
        ({"units": [4], "dropout": 1.0}, "dropout must be in \\[0, 1\\), got 1.0"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLP(**kwargs)


def test_round_trip(assert_round_trip):
    assert_round_trip(MLP([4, 3], activation="swish", dropout=0.1, use_layer_norm=True), X)

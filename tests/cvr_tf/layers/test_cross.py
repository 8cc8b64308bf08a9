"""Tests for the DCNv2 cross layers."""

import math

import numpy as np
import pytest

from cvr_tf.compat import tf
from cvr_tf.layers.cross import CrossNetwork, DeepCrossNetwork, MixtureOfExpertsCross, cross_cost

X0 = np.asarray([[0.1, 0.2, 0.3]], np.float32)


@pytest.mark.parametrize("projection_dim", [None, 1])
def test_cross_network_with_ones(projection_dim):
    # W = ones (full rank, or U V^T with U, V = ones of rank 1), b = 0:
    # x1 = x0 * sum(x0) + x0 = 1.6 x0;  x2 = x0 * sum(x1) + x1 = (0.96 + 1.6) x0.
    network = CrossNetwork(2, projection_dim=projection_dim, kernel_initializer="ones")
    np.testing.assert_allclose(network(X0).numpy(), [[0.256, 0.512, 0.768]], rtol=1e-6)


def test_cross_network_with_known_weights(assign_weights):
    network = CrossNetwork(1)
    inputs = np.asarray([[1.0, 2.0, 3.0]], np.float32)
    network(inputs)
    assign_weights(network, {"kernel": np.diag([1.0, 2.0, 3.0]), "bias": [0.1, 0.0, 0.0]})
    # x0 * (W x0 + b) + x0 = [1, 2, 3] * [1.1, 4, 9] + [1, 2, 3].
    np.testing.assert_allclose(network(inputs).numpy(), [[2.1, 10.0, 30.0]], rtol=1e-6)


def _mixture_weights(assign_weights, layer):
    assign_weights(layer, {
        "down_projection/kernel": [[1.0, 0.0], [0.0, 1.0]],  # V_1^T x = x_1, V_2^T x = x_2
        "inner_kernel": [[[2.0]], [[3.0]]],  # C_1 = 2, C_2 = 3
        "up_kernel": [[[1.0, 0.0]], [[0.0, 1.0]]],  # U_1 = e_1, U_2 = e_2
        "gate/kernel": [[0.0, 0.0], [0.0, math.log(3.0) / 2]],  # logits [0, ln 3] on x = [1, 2]
        "mixture_of_experts_cross/bias": [0.5, -0.5],
    })


def test_mixture_of_experts_with_known_weights(assign_weights):
    layer = MixtureOfExpertsCross(num_experts=2, projection_dim=1)
    x = np.asarray([[1.0, 2.0]], np.float32)
    layer(x)
    _mixture_weights(assign_weights, layer)
    # Experts: U_1 relu(2 relu(1)) = [2, 0], U_2 relu(3 relu(2)) = [0, 6]; gates [1/4, 3/4]
    # mix [0.5, 4.5], + b = [1, 4]; x0 * [1, 4] + x = [2, 10].
    np.testing.assert_allclose(layer(x).numpy(), [[2.0, 10.0]], rtol=1e-6)
    # Crossing another x0 with the same x scales the experts' part only: [3, 3] * [1, 4] + x.
    np.testing.assert_allclose(layer(np.asarray([[3.0, 3.0]]), x).numpy(), [[4.0, 14.0]], rtol=1e-6)


def test_mixture_of_experts_rejects_mismatched_widths():
    layer = MixtureOfExpertsCross(num_experts=2, projection_dim=1)
    with pytest.raises(ValueError, match="x0 and x must have the same width, got 3 and 2"):
        layer(tf.zeros([1, 3]), tf.zeros([1, 2]))


def test_deep_cross_network_structures(assign_weights):
    x = np.asarray([[1.0, 2.0]], np.float32)
    weights = {
        "cross_0/.*kernel": [[1.0, 0.0], [0.0, 1.0]], "cross_0/.*bias": [0.0, 0.0],
        "dense_0/kernel": [[1.0], [1.0]], "dense_0/bias": [-1.0],
    }
    stacked = DeepCrossNetwork(1, [1], structure="stacked")
    parallel = DeepCrossNetwork(1, [1], structure="parallel")
    for layer in (stacked, parallel):
        layer(x)
        assign_weights(layer, weights)
    # cross(x) = x * x + x = [2, 6];  mlp(v) = relu(v_1 + v_2 - 1).
    np.testing.assert_allclose(stacked(x).numpy(), [[7.0]])
    np.testing.assert_allclose(parallel(x).numpy(), [[2.0, 6.0, 2.0]])
    assert parallel.compute_output_shape((None, 2)).as_list() == [None, 3]


@pytest.mark.parametrize(
    ("layer", "params"),
    [
        (CrossNetwork(2), 2 * (8 * 8 + 8)),
        (CrossNetwork(2, projection_dim=3, use_bias=False), 2 * (2 * 8 * 3)),
        (CrossNetwork(1, projection_dim=3, num_experts=2), 8 * 6 + 2 * 9 + 2 * 3 * 8 + 8 * 2 + 8),
        (DeepCrossNetwork(2, [4], structure="parallel"), 2 * (8 * 8 + 8) + 8 * 4 + 4),
    ],
)
def test_cost_matches_parameters(layer, params):
    layer(tf.zeros([1, 8]))
    assert layer.cost(8).params == layer.count_params() == params


def test_cross_cost_counts_two_flops_per_multiply_add():
    assert cross_cost(10).flops == 2 * 10 * 10
    assert cross_cost(10, projection_dim=2).flops == 2 * (10 * 2 + 2 * 10)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CrossNetwork(0), "num_layers must be positive, got 0"),
        (lambda: CrossNetwork(2, projection_dim=0), "projection_dim must be positive, got 0"),
        (lambda: CrossNetwork(2, num_experts=4), "num_experts=4 needs low-rank experts"),
        (lambda: MixtureOfExpertsCross(0, 4), "num_experts must be positive, got 0"),
        (lambda: DeepCrossNetwork(2, [4], structure="serial"), "structure must be one of"),
    ],
)
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "layer",
    [
        CrossNetwork(2, projection_dim=2),
        CrossNetwork(2, projection_dim=2, num_experts=3, expert_activation="tanh"),
        DeepCrossNetwork(2, [4, 2], structure="parallel", use_layer_norm=True),
    ],
    ids=["low_rank", "mixture", "deep_cross"],
)
def test_round_trip(layer, assert_round_trip):
    assert_round_trip(layer, np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32))

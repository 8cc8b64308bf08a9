"""Tests for the compute accounting helpers."""

from cvr_tf.compat import keras
from cvr_tf.flops import Cost, dense_cost, layer_norm_cost, measured_flops


def test_costs_add_and_repeat():
    assert Cost(10, 3) + Cost(5, 1) == Cost(15, 4)
    assert 3 * Cost(10, 3) == Cost(30, 9)
    assert sum([Cost(1, 2), Cost(3, 4)], Cost()) == Cost(4, 6)


def test_dense_cost_counts_two_flops_per_multiply_add():
    assert dense_cost(5, 3) == Cost(flops=30, params=18)
    assert dense_cost(5, 3, use_bias=False, positions=4) == Cost(flops=120, params=15)
    assert layer_norm_cost(7) == Cost(flops=0, params=14)


def test_profiler_counts_matmul_and_bias_add():
    # MatMul [1, 5] x [5, 3]: 2 * 15 FLOPs; BiasAdd: 3 more (elementwise, not in dense_cost).
    assert measured_flops(keras.layers.Dense(3), 5) == dense_cost(5, 3).flops + 3


def test_profiler_counts_nothing_for_activations():
    assert measured_flops(keras.layers.Activation("relu"), 5) == 0

"""MultiGateMixture: gates sum to 1 and mix the experts as the formula says, against numpy."""

import numpy as np
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.flops import Cost, dense_cost, measured_flops
from cvr_tf.layers.mlp import MLP
from cvr_tf.layers.mmoe import MultiGateMixture

X = np.asarray([[1.0, 2.0], [-1.0, 0.5], [0.0, 0.0]], np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _linear_experts(count: int) -> list[keras.layers.Layer]:
    return [keras.layers.Dense(3, use_bias=False, name=f"expert_{k}") for k in range(count)]


def test_mmoe_mixes_every_expert_with_softmax_gates_as_numpy_does(assign_weights):
    layer = MultiGateMixture(_linear_experts(3), {"ctr": [0, 1, 2], "cvr": [0, 1, 2]})
    layer(X)
    rng = np.random.default_rng(0)
    experts = [rng.normal(size=(2, 3)) for _ in range(3)]
    gates = {name: (rng.normal(size=(2, 3)), rng.normal(size=3)) for name in ("ctr", "cvr")}
    assign_weights(layer, {f"expert_{k}/kernel": experts[k] for k in range(3)})
    assign_weights(layer, {f"gate_{name}/kernel": w for name, (w, _) in gates.items()})
    assign_weights(layer, {f"gate_{name}/bias": b for name, (_, b) in gates.items()})
    outputs = layer(X)
    expert_outputs = np.stack([X @ e for e in experts], axis=1)  # [batch, K, W]
    for name, (kernel, bias) in gates.items():
        weights = _softmax(X @ kernel + bias)
        np.testing.assert_allclose(layer.gate_weights(X)[name].numpy(), weights, rtol=1e-5)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
        expected = np.einsum("bk,bkw->bw", weights, expert_outputs)
        np.testing.assert_allclose(outputs[name].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs["ctr"].numpy(), outputs["cvr"].numpy())  # own gates


def test_ple_gates_read_their_own_and_the_shared_experts_only(assign_weights):
    # Experts: 0 shared, 1 ctr's own, 2 cvr's own. Zero gate weights: equal mixing.
    layer = MultiGateMixture(_linear_experts(3), {"ctr": [1, 0], "cvr": [2, 0]})
    layer(X)
    kernels = [np.full((2, 3), k + 1.0) for k in range(3)]
    assign_weights(layer, {f"expert_{k}/kernel": kernels[k] for k in range(3)})
    for name in ("ctr", "cvr"):
        assign_weights(layer, {f"gate_{name}/kernel": np.zeros((2, 2)),
                               f"gate_{name}/bias": np.zeros(2)})
    outputs = layer(X)
    np.testing.assert_allclose(outputs["ctr"].numpy(), X @ (kernels[1] + kernels[0]) / 2,
                               rtol=1e-6)
    np.testing.assert_allclose(outputs["cvr"].numpy(), X @ (kernels[2] + kernels[0]) / 2,
                               rtol=1e-6)


def test_a_gate_over_one_expert_is_that_expert_a_shared_bottom():
    layer = MultiGateMixture(_linear_experts(1), {"ctr": [0], "cvr": [0]})
    outputs = layer(X)
    assert not [w for w in layer.weights if "/gate_" in w.name]
    np.testing.assert_array_equal(outputs["ctr"].numpy(), outputs["cvr"].numpy())
    np.testing.assert_array_equal(layer.gate_weights(X)["cvr"].numpy(), np.ones((3, 1)))


def test_cost_counts_experts_gates_and_mixtures_and_matches_the_profiler():
    experts = [MLP([64, 32]) for _ in range(3)]
    layer = MultiGateMixture(experts, {"ctr": [0, 1, 2], "cvr": [2, 0]})
    layer(tf.zeros([1, 48]))
    expert = Cost(2 * (48 * 64 + 64 * 32), (48 * 64 + 64) + (64 * 32 + 32))
    expected = (3 * expert + dense_cost(48, 3) + dense_cost(48, 2)
                + Cost(2 * 3 * 32 + 2 * 2 * 32))  # the mixtures: [1, k] x [k, 32] per gate
    assert layer.cost(48) == expected
    assert layer.count_params() == expected.params
    measured = measured_flops(layer, 48)
    assert expected.flops <= measured <= 1.1 * expected.flops


def test_serialization_round_trip(assert_round_trip):
    layer = MultiGateMixture([MLP([4]), MLP([4])], {"ctr": [0, 1]})
    copy = keras.layers.deserialize(keras.layers.serialize(layer))
    assert copy.get_config() == layer.get_config()
    # A functional model needs one output tensor: check through the single gate.
    inputs = keras.Input(shape=(2,))
    model = keras.Model(inputs, layer(inputs)["ctr"])
    restored = keras.Model.from_config(model.get_config())
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(restored(X).numpy(), model(X).numpy(), rtol=1e-6)


@pytest.mark.parametrize("experts, gates, message", [
    ([], {"ctr": [0]}, "at least one expert"),
    ([MLP([2])], {}, "at least one gate"),
    ([MLP([2])], {"ctr": [1]}, "distinct expert indices in \\[0, 1\\)"),
    ([MLP([2]), MLP([2])], {"ctr": [0, 0]}, "distinct expert indices"),
])
def test_invalid_arguments(experts, gates, message):
    with pytest.raises(ValueError, match=message):
        MultiGateMixture(experts, gates)

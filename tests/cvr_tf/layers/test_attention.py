"""Tests for the field self-attention layer."""

import numpy as np
import pytest

from cvr_tf.compat import tf
from cvr_tf.layers.attention import FieldSelfAttention


def test_uniform_attention_with_known_weights(assign_weights):
    layer = FieldSelfAttention(field_dims=[1, 2], attention_dim=2, num_heads=1)
    x = np.asarray([[1.0, 2.0, 4.0]], np.float32)
    layer(x)
    qkv = np.zeros([2, 6])
    qkv[:, 4:] = np.eye(2)  # Q = K = 0 (uniform attention), V = T
    assign_weights(layer, {
        "field_projection_0/kernel": [[1.0, 0.0]], "field_projection_1/kernel": np.eye(2),
        "query_key_value/kernel": qkv, "output_projection/kernel": np.eye(2),
    })
    # T = [[1, 0], [2, 4]]; each field attends equally: mean [1.5, 2];
    # Z = LN(T + mean) = LN([2.5, 2]), LN([3.5, 6]).
    np.testing.assert_allclose(
        layer(x).numpy(), [[0.99209474, -0.99209474, -0.99968015, 0.99968015]], rtol=1e-5
    )


def _layer_norm(values):
    mean = values.mean(-1, keepdims=True)
    return (values - mean) / np.sqrt(values.var(-1, keepdims=True) + 1e-3)


def test_two_heads_match_the_formula():
    field_dims, width, heads = [3, 1, 2], 4, 2
    layer = FieldSelfAttention(field_dims, width, heads)
    x = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    outputs = layer(x).numpy()
    weights = {w.name.split("/", 1)[1].removesuffix(":0"): w.numpy() for w in layer.weights}

    starts = np.cumsum([0, *field_dims])
    tokens = np.stack([
        x[:, starts[f]:starts[f + 1]] @ weights[f"field_projection_{f}/kernel"]
        + weights[f"field_projection_{f}/bias"]
        for f in range(len(field_dims))
    ], axis=1)
    qkv = tokens @ weights["query_key_value/kernel"] + weights["query_key_value/bias"]
    heads_out = []
    for head in range(heads):
        columns = slice(2 * head, 2 * head + 2)
        query, key, value = (qkv[..., i * width:(i + 1) * width][..., columns] for i in range(3))
        scores = query @ key.transpose(0, 2, 1) / np.sqrt(2)
        attention = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
        heads_out.append(attention @ value)
    attended = np.concatenate(heads_out, -1) @ weights["output_projection/kernel"]
    expected = _layer_norm(tokens + attended + weights["output_projection/bias"])
    np.testing.assert_allclose(outputs, expected.reshape(2, -1), rtol=1e-4, atol=1e-5)


def test_cost_matches_parameters():
    layer = FieldSelfAttention([3, 1, 2], attention_dim=4, num_heads=2)
    layer(tf.zeros([1, 6]))
    cost = layer.cost(6)
    assert cost.params == layer.count_params() == (6 * 4 + 3 * 4) + (4 * 12 + 12) + (4 * 4 + 4) + 8
    # Field projections, Q/K/V and output for 3 fields, scores and weighted sums.
    assert cost.flops == 2 * 6 * 4 + 2 * 3 * (4 * 12 + 4 * 4) + 2 * 2 * 3 * 3 * 4
    assert layer.compute_output_shape((None, 6)).as_list() == [None, 12]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"field_dims": [], "attention_dim": 4}, "field_dims must be a non-empty list"),
        ({"field_dims": [2, 0], "attention_dim": 4}, "got \\[2, 0\\]"),
        ({"field_dims": [2], "attention_dim": 5}, "attention_dim must be a positive multiple of "
                                                  "num_heads=2, got 5"),
        ({"field_dims": [2], "attention_dim": 4, "num_heads": 0}, "num_heads must be positive"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FieldSelfAttention(**kwargs)


def test_rejects_fields_not_summing_to_the_input_width():
    layer = FieldSelfAttention([2, 2], attention_dim=2)
    with pytest.raises(ValueError, match="field_dims \\[2, 2\\] sum to 4 but the input is 5 wide"):
        layer(tf.zeros([1, 5]))


def test_round_trip(assert_round_trip):
    layer = FieldSelfAttention([3, 1, 2], attention_dim=4, num_heads=2)
    assert_round_trip(layer, np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32))

"""Tests for the DHEN layers."""

import numpy as np
import pytest

from cvr_tf.compat import tf
from cvr_tf.layers.hierarchical import DHEN, DHENLayer

X = np.asarray([[1.0, 2.0]], np.float32)
MLP_WEIGHTS = {"mlp/dense_0/kernel": [[1.0, 0.0], [1.0, 1.0]], "mlp/dense_0/bias": [0.0, -3.0]}


def test_single_module_sum_with_identity_shortcut(assign_weights):
    layer = DHENLayer(output_dim=2, field_dims=[2], modules=["mlp"], combine="sum", mlp_units=[2])
    layer(X)
    assign_weights(layer, MLP_WEIGHTS)
    # mlp(x) = relu([3, 2] + [0, -3]) = [3, 0]; LN(mlp(x) + x) = LN([4, 2]).
    np.testing.assert_allclose(layer(X).numpy(), [[0.99950037, -0.99950037]], rtol=1e-5)


def test_concat_combine_of_cross_and_mlp(assign_weights):
    layer = DHENLayer(output_dim=2, field_dims=[2], modules=["cross", "mlp"], mlp_units=[2])
    layer(X)
    assign_weights(layer, {
        **MLP_WEIGHTS,
        "cross/.*kernel": np.eye(2), "cross/.*bias": [0.0, 0.0],
        "combine/kernel": [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
        "combine/bias": [0.0, 1.0],
    })
    # cross(x) = x * x + x = [2, 6], mlp(x) = [3, 0]; W_c [2, 6, 3, 0] + b_c = [2, 4];
    # LN([2, 4] + x) = LN([3, 6]).
    np.testing.assert_allclose(layer(X).numpy(), [[-0.99977785, 0.99977785]], rtol=1e-5)


def test_projected_shortcut_when_widths_differ(assign_weights):
    layer = DHENLayer(output_dim=2, field_dims=[3], modules=["mlp"], combine="sum", mlp_units=[2])
    x = np.asarray([[1.0, 2.0, 3.0]], np.float32)
    layer(x)
    assign_weights(layer, {
        "mlp/dense_0/kernel": np.zeros([3, 2]), "mlp/dense_0/bias": [3.0, 0.0],
        "shortcut/kernel": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
    })
    # mlp(x) = [3, 0]; S x = [4, 5]; LN([7, 5]).
    np.testing.assert_allclose(layer(x).numpy(), [[0.99950037, -0.99950037]], rtol=1e-5)


def test_modules_projected_to_the_output_width():
    layer = DHENLayer(output_dim=4, field_dims=[2, 3, 1], attention_dim=2, mlp_units=[8, 3])
    layer(tf.zeros([1, 6]))
    sublayers = {w.name.split("/")[1] for w in layer.weights}
    projected = {name for name in sublayers if name.endswith("_projection")}
    # cross keeps the input width 6, attention gives 3 fields x 2, the MLP 3; the mask block
    # outputs 4 already.
    assert projected == {"cross_projection", "attention_projection", "mlp_projection"}


def test_stack_chains_layers_over_hidden_fields():
    dhen = DHEN(num_layers=2, field_dims=[2, 3, 1], field_width=2, attention_dim=2,
                mlp_units=[4])
    x = tf.random.stateless_normal([3, 6], seed=[3, 4])
    outputs = dhen(x)
    first, second = sorted(
        (m for m in dhen.submodules if isinstance(m, DHENLayer)), key=lambda m: m.name
    )
    np.testing.assert_allclose(outputs, second(first(x)), rtol=1e-6)
    assert outputs.shape == (3, 6) and dhen.output_dim == 6
    assert second.get_config()["field_dims"] == [2, 2, 2]


@pytest.mark.parametrize(
    "layer",
    [
        DHENLayer(4, [2, 3, 1], attention_dim=2, mlp_units=[8, 3]),
        DHENLayer(6, [2, 3, 1], combine="sum", cross_projection_dim=2, attention_dim=2),
        DHEN(3, [2, 3, 1], field_width=2, attention_dim=2, num_heads=1, mlp_units=[4]),
    ],
    ids=["concat", "sum_low_rank", "stack"],
)
def test_cost_matches_parameters(layer):
    layer(tf.zeros([1, 6]))
    assert layer.cost(6).params == layer.count_params()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DHENLayer(0, [2]), "output_dim must be positive, got 0"),
        (lambda: DHENLayer(2, [2], modules=["cross", "gru"]), "\\(unknown: \\['gru'\\]\\)"),
        (lambda: DHENLayer(2, [2], modules=["mlp", "mlp"]), "modules must be distinct names"),
        (lambda: DHENLayer(2, [2], modules=[]), "modules must be distinct names"),
        (lambda: DHENLayer(2, [2], combine="max"), "combine must be one of"),
        (lambda: DHENLayer(2, [2], cross_projection_dim=0), "cross_projection_dim must be"),
        (lambda: DHEN(0, [2], 2), "num_layers must be positive, got 0"),
        (lambda: DHEN(1, [2], 0), "field_width must be positive, got 0"),
    ],
)
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_rejects_fields_not_summing_to_the_input_width():
    with pytest.raises(ValueError, match="field_dims \\[2, 3\\] sum to 5 but the input is 6 wide"):
        DHEN(1, [2, 3], field_width=2)(tf.zeros([1, 6]))


@pytest.mark.parametrize(
    "layer",
    [
        DHENLayer(4, [2, 3, 1], combine="sum", attention_dim=2, mlp_units=[8, 3]),
        DHEN(2, [2, 3, 1], field_width=2, modules=["attention", "mask"], attention_dim=2),
    ],
    ids=["layer", "stack"],
)
def test_round_trip(layer, assert_round_trip):
    assert_round_trip(layer, np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32))

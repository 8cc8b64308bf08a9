"""Tests for the MaskNet layers."""

import numpy as np
import pytest

from cvr_tf.compat import tf
from cvr_tf.layers.mask import (
    InstanceGuidedMask,
    MaskBlock,
    ParallelMaskNet,
    SerialMaskNet,
    aggregation_width,
)
from cvr_tf.layers.mlp import MLP

EMBEDDINGS = np.asarray([[1.0, 3.0]], np.float32)


def test_instance_guided_mask_with_known_weights(assign_weights):
    mask = InstanceGuidedMask(units=3, reduction_ratio=1.0)
    mask(EMBEDDINGS)
    assign_weights(mask, {
        "aggregation/kernel": np.eye(2), "aggregation/bias": [0.0, -5.0],
        "projection/kernel": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "projection/bias": [0.5, 0, 0],
    })
    # relu([1, 3] + [0, -5]) = [1, 0]  ->  [1, 2, 3] + [0.5, 0, 0].
    np.testing.assert_allclose(mask(EMBEDDINGS).numpy(), [[1.5, 2.0, 3.0]])


def test_aggregation_width_rounds_half_up():
    assert aggregation_width(3, 1.5) == 5
    assert aggregation_width(10, 2.0) == 20
    assert aggregation_width(3, 0.01) == 1


def test_mask_block_on_embeddings_with_known_weights(assign_weights):
    block = MaskBlock(units=3, reduction_ratio=1.0)
    block(EMBEDDINGS)
    assign_weights(block, {
        "aggregation/kernel": np.eye(2), "aggregation/bias": [0.0, 0.0],
        "projection/kernel": [[1.0, 0.0], [0.0, 2.0]], "projection/bias": [1.0, 0.0],
        "dense/kernel": [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]],
    })
    # LN_emb([1, 3]) = [-1, 1] / sqrt(1.001); mask = [1 + 1, 2 * 3] = [2, 6];
    # W (mask * LN_emb) = [-1.999, 5.997, 3.998]; ReLU(LN(.)).
    np.testing.assert_allclose(
        block(EMBEDDINGS).numpy(), [[0.0, 0.98053821, 0.39221528]], rtol=1e-5
    )


def test_mask_block_on_hidden_with_known_weights(assign_weights):
    block = MaskBlock(units=2, reduction_ratio=1.0)
    hidden = np.asarray([[0.5, -1.0, 2.0]], np.float32)
    block([EMBEDDINGS, hidden])
    assign_weights(block, {
        "aggregation/kernel": np.eye(2), "aggregation/bias": [0.0, 0.0],
        "projection/kernel": [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], "projection/bias": [0, 0, 0],
        "dense/kernel": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
    })
    # No input norm on a hidden vector: mask = [1, 3, 4], mask * h = [0.5, -3, 8],
    # W (.) = [8.5, 5], LN -> [1, -1] * 1.75 / sqrt(1.75^2 + 1e-3), ReLU.
    np.testing.assert_allclose(
        block([EMBEDDINGS, hidden]).numpy(), [[0.99983677, 0.0]], rtol=1e-5
    )
    assert not any("input_norm" in weight.name for weight in block.weights)


def test_serial_masknet_chains_blocks_masked_by_embeddings():
    net = SerialMaskNet([4, 3], reduction_ratio=1.5)
    embeddings = tf.random.stateless_normal([5, 6], seed=[1, 2])
    outputs = net(embeddings)
    first, second = sorted(
        (m for m in net.submodules if isinstance(m, MaskBlock)), key=lambda m: m.name
    )
    np.testing.assert_allclose(outputs, second([embeddings, first(embeddings)]), rtol=1e-6)
    assert outputs.shape == (5, 3)


def test_parallel_masknet_concatenates_blocks_into_mlp():
    net = ParallelMaskNet(num_blocks=3, block_units=2, mlp_units=[4])
    embeddings = tf.random.stateless_normal([5, 6], seed=[1, 2])
    outputs = net(embeddings)
    blocks = sorted((m for m in net.submodules if isinstance(m, MaskBlock)), key=lambda m: m.name)
    (mlp,) = (m for m in net.submodules if isinstance(m, MLP))
    expected = mlp(tf.concat([block(embeddings) for block in blocks], axis=-1))
    np.testing.assert_allclose(outputs, expected, rtol=1e-6)
    assert len(blocks) == 3 and outputs.shape == (5, 4)


@pytest.mark.parametrize(
    ("layer", "inputs", "params"),
    [
        # mask 6 -> 12 -> 6, input norm 6, W 6 x 4, output norm 4.
        (MaskBlock(4), [6], (6 * 12 + 12 + 12 * 6 + 6) + 2 * 6 + 6 * 4 + 2 * 4),
        # on a hidden vector of 5: mask 6 -> 12 -> 5, W 5 x 4, output norm 4.
        (MaskBlock(4), [6, 5], (6 * 12 + 12 + 12 * 5 + 5) + 5 * 4 + 2 * 4),
        (SerialMaskNet([4, 3]), [6], None),
        (ParallelMaskNet(2, 3, [4, 2]), [6], None),
    ],
)
def test_cost_matches_parameters(layer, inputs, params):
    tensors = [tf.zeros([1, width]) for width in inputs]
    layer(tensors[0] if len(tensors) == 1 else tensors)
    cost = layer.cost(*inputs)
    assert cost.params == layer.count_params()
    if params is not None:
        assert cost.params == params


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: InstanceGuidedMask(0), "units must be positive, got 0"),
        (lambda: MaskBlock(4, reduction_ratio=0), "reduction_ratio must be positive, got 0"),
        (lambda: SerialMaskNet([]), "block_units must name at least one block width"),
        (lambda: ParallelMaskNet(0, 4, [4]), "num_blocks must be positive, got 0"),
    ],
)
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_mask_block_rejects_three_inputs():
    with pytest.raises(ValueError, match="MaskBlock takes embeddings or \\[embeddings, hidden\\]"):
        MaskBlock(2)([tf.zeros([1, 2])] * 3)


@pytest.mark.parametrize(
    "layer",
    [MaskBlock(3, reduction_ratio=0.5), SerialMaskNet([4, 3]), ParallelMaskNet(2, 3, [4])],
    ids=["block", "serial", "parallel"],
)
def test_round_trip(layer, assert_round_trip):
    assert_round_trip(layer, np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32))

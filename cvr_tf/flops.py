"""Compute accounting: analytic FLOPs and parameter counts, and TensorFlow's own FLOP count.

Convention for every analytic count in cvr_tf (``Cost.flops``): forward FLOPs for ONE example,
**2 FLOPs per multiply-add of every matrix product** - Dense kernels, the batched products of
attention (scores ``Q K^T`` and the weighted sum ``A V``) and of the mixture-of-experts cross.
Elementwise work (bias adds, activations, layer norms, softmax, gates, Hadamard products,
residual adds) is **not** counted: it is linear in the widths while the matrix products are
quadratic, and it is a few percent of the total for the backbones here.

TensorFlow's profiler (:func:`measured_flops`) also counts 2 FLOPs per multiply-add for
``MatMul``/``BatchMatMul`` and adds 1 FLOP per element for ``BiasAdd``, ``Mul``, ``AddV2`` and
friends (5 per element for ``Softmax``); it has no statistics for ``Einsum``, ``FusedBatchNorm``
or activations. So ``measured >= analytic`` and the gap is the elementwise share; the tests
require it to stay within 10%.
"""

from __future__ import annotations

import dataclasses

from cvr_tf.compat import keras, tf


@dataclasses.dataclass(frozen=True)
class Cost:
    """Forward FLOPs per example and trainable parameter count of a layer (or part of one).

    Costs add up (``a + b``) and repeat (``n * a``), so a composite layer's cost is written as
    the sum of its parts.

    Attributes:
        flops: Analytic forward FLOPs for one example (see the module docstring for what counts).
        params: Number of trainable parameters.
    """

    flops: int = 0
    params: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.params + other.params)

    def __rmul__(self, repeats: int) -> Cost:
        return Cost(repeats * self.flops, repeats * self.params)


def dense_cost(input_dim: int, units: int, use_bias: bool = True, positions: int = 1) -> Cost:
    """Cost of ``y = x W (+ b)``, ``W`` of shape [input_dim, units].

    Args:
        input_dim: Input width.
        units: Output width.
        use_bias: Whether ``b`` exists (its add is not counted, its parameters are).
        positions: Number of vectors per example the same ``W`` is applied to (e.g. fields).

    Returns:
        ``2 * positions * input_dim * units`` FLOPs and the parameters of ``W`` and ``b``.
    """
    return Cost(
        flops=2 * positions * input_dim * units,
        params=input_dim * units + (units if use_bias else 0),
    )


def layer_norm_cost(dim: int) -> Cost:
    """Cost of a layer norm over ``dim`` features: no counted FLOPs, ``gamma`` and ``beta``."""
    return Cost(flops=0, params=2 * dim)


def measured_flops(layer: keras.layers.Layer, input_dim: int) -> int:
    """TensorFlow's op-level FLOP count of ``layer`` applied to one example of width ``input_dim``.

    Traces ``layer(x, training=False)`` for ``x`` of shape [1, input_dim] into a graph (building
    the layer first if needed) and sums the ``flops`` statistics TensorFlow registers per op
    (``tf.compat.v1.profiler`` with ``ProfileOptionBuilder.float_operation()``).

    Args:
        layer: A Keras layer mapping [batch, input_dim] to any output.
        input_dim: Width of the layer's input.

    Returns:
        Total float operations of the traced inference graph for one example.
    """
    spec = tf.TensorSpec([1, input_dim], tf.float32)
    if not layer.built:
        layer(tf.zeros(spec.shape), training=False)
    graph = tf.function(lambda x: layer(x, training=False)).get_concrete_function(spec).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)

"""Multi-head self-attention over the fields of a flat embedding vector (AutoInt/DHEN style)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.flops import Cost, dense_cost, layer_norm_cost
from cvr_tf.layers.norm import LayerNorm


@register_keras_serializable(package="cvr_tf")
class FieldSelfAttention(keras.layers.Layer):
    """Self-attention across fields, each field projected to a common width first.

    The flat input ``x`` [batch, D] is the concatenation of F fields ``x_f`` of widths
    ``field_dims`` (``sum(field_dims) == D``). With ``a = attention_dim`` and h heads of width
    ``d = a / h``:

        t_f = P_f x_f + c_f                       per-field projection, T in R^{F x a}
        [Q, K, V] = T W_qkv + b_qkv               each split into h heads of width d
        head_j = softmax(Q_j K_j^T / sqrt(d)) V_j
        Z = LN(T + concat_j(head_j) W_o + b_o)
        y = flatten(Z)                            [batch, F * a]

    It is written with ``MatMul`` rather than Keras ``MultiHeadAttention`` (``Einsum``) so that
    TensorFlow's profiler, which has no FLOP statistics for ``Einsum``, counts it. The heads run
    in one pair of batched products, without splitting them into their own axis (transposes,
    slow on CPU): the query is repeated per head with the other heads' columns zeroed, which
    gives the same numbers at h times the (small) FLOPs of the two products; :meth:`cost`
    counts the useful ones.

    Example:

        ```python
        attention = FieldSelfAttention(field_dims=[32, 8, 16], attention_dim=16, num_heads=2)
        tokens = attention(tf.random.normal([4, 56]))  # [4, 3 * 16]
        ```

    Args:
        field_dims: Widths of the fields concatenated in the input, all positive.
        attention_dim: Common field width ``a``; a multiple of ``num_heads``.
        num_heads: Number of attention heads h.
        kernel_initializer: Initializer of the projection kernels.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, sum(field_dims)]. Output shape: [batch, len(field_dims) * attention_dim].
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        attention_dim: int,
        num_heads: int = 2,
        kernel_initializer: str | Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        field_dims = [int(width) for width in field_dims]
        if not field_dims or min(field_dims) < 1:
            raise ValueError(
                f"field_dims must be a non-empty list of positive widths, got {field_dims}"
            )
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        if attention_dim < 1 or attention_dim % num_heads:
            raise ValueError(
                f"attention_dim must be a positive multiple of num_heads={num_heads}, "
                f"got {attention_dim}"
            )
        self._field_dims = field_dims
        self._attention_dim = int(attention_dim)
        self._num_heads = int(num_heads)
        self._kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )
        self._field_projections = [
            keras.layers.Dense(
                attention_dim, kernel_initializer=self._kernel_initializer,
                name=f"field_projection_{i}",
            )
            for i in range(len(field_dims))
        ]
        self._query_key_value = keras.layers.Dense(
            3 * attention_dim, kernel_initializer=self._kernel_initializer,
            name="query_key_value",
        )
        self._output_projection = keras.layers.Dense(
            attention_dim, kernel_initializer=self._kernel_initializer, name="output_projection"
        )
        self._norm = LayerNorm(name="norm")

    def build(self, input_shape: tf.TensorShape) -> None:
        width = int(input_shape[-1])
        if sum(self._field_dims) != width:
            raise ValueError(
                f"field_dims {list(self._field_dims)} sum to {sum(self._field_dims)} but the "
                f"input is {width} wide; pass the widths of the fields concatenated in the input"
            )
        super().build(input_shape)

    def _head_masks(self, dtype: tf.DType) -> tf.Tensor:
        """``[1, h, 1, a]``: 1 on the columns of head j (``j d .. (j + 1) d - 1``), else 0."""
        head_dim = self._attention_dim // self._num_heads
        columns = tf.range(self._attention_dim) // head_dim
        masks = tf.cast(tf.equal(columns[None, :], tf.range(self._num_heads)[:, None]), dtype)
        return tf.reshape(masks, [1, self._num_heads, 1, self._attention_dim])

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        num_fields, width, num_heads = len(self._field_dims), self._attention_dim, self._num_heads
        fields = tf.split(inputs, self._field_dims, axis=-1)
        pairs = zip(self._field_projections, fields, strict=True)
        tokens = tf.stack([project(field) for project, field in pairs], axis=1)  # [batch, F, a]
        query, key, value = tf.split(self._query_key_value(tokens), 3, axis=-1)
        # Every head at once, without transposes: the query repeated once per head with the
        # other heads' columns zeroed, so row (j, f) of Q_h K^T is Q_j[f] . K_j and row (j, f)
        # of A V holds head j's output in head j's columns (the others are masked out below).
        masks = self._head_masks(query.dtype)
        queries = tf.reshape(query[:, None] * masks, [-1, num_heads * num_fields, width])
        scores = tf.matmul(queries, key, transpose_b=True) / math.sqrt(width // num_heads)
        heads = tf.matmul(tf.nn.softmax(scores), value)  # [batch, h F, a]
        heads = tf.reduce_sum(tf.reshape(heads, [-1, num_heads, num_fields, width]) * masks, 1)
        attended = self._norm(tokens + self._output_projection(heads))
        return tf.reshape(attended, [-1, num_fields * width])

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        width = len(self._field_dims) * self._attention_dim
        return tf.TensorShape(input_shape)[:-1].concatenate([width])

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example (see :mod:`cvr_tf.flops`).

        ``2 a D`` (field projections) ``+ 8 F a^2`` (Q, K, V, output) ``+ 4 F^2 a`` (scores and
        weighted sum) FLOPs.
        """
        num_fields, width = len(self._field_dims), self._attention_dim
        fields = sum((dense_cost(dim, width) for dim in self._field_dims), Cost())
        projections = dense_cost(width, 3 * width, positions=num_fields) + dense_cost(
            width, width, positions=num_fields
        )
        products = Cost(flops=2 * 2 * num_fields * num_fields * width)
        return fields + projections + products + layer_norm_cost(width)

    def get_config(self) -> dict[str, Any]:
        config = {
            "field_dims": list(self._field_dims),
            "attention_dim": self._attention_dim,
            "num_heads": self._num_heads,
            "kernel_initializer": self._kernel_initializer,
        }
        return {**super().get_config(), **config}

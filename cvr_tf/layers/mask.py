"""MaskNet (Wang, She and Zhang 2021, https://arxiv.org/abs/2102.07619).

An instance-guided mask, computed from the feature embeddings, rescales a hidden vector
elementwise before a feed-forward layer (the MaskBlock). Blocks are chained (serial MaskNet)
or run side by side on the embeddings and concatenated before an MLP (parallel MaskNet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.flops import Cost, dense_cost, layer_norm_cost
from cvr_tf.layers.mlp import MLP
from cvr_tf.layers.norm import LayerNorm


def _check_reduction_ratio(reduction_ratio: float) -> float:
    if reduction_ratio <= 0:
        raise ValueError(f"reduction_ratio must be positive, got {reduction_ratio}")
    return float(reduction_ratio)


def aggregation_width(input_dim: int, reduction_ratio: float) -> int:
    """Width of a mask's aggregation layer: ``reduction_ratio * input_dim`` rounded half up,
    at least 1."""
    return max(1, int(reduction_ratio * input_dim + 0.5))


def mask_cost(input_dim: int, units: int, reduction_ratio: float) -> Cost:
    """Cost of an :class:`InstanceGuidedMask` from width ``input_dim`` to ``units``."""
    aggregation = aggregation_width(input_dim, reduction_ratio)
    return dense_cost(input_dim, aggregation) + dense_cost(aggregation, units)


@register_keras_serializable(package="cvr_tf")
class InstanceGuidedMask(keras.layers.Layer):
    """Instance-guided mask: a two-layer network from the embeddings to a mask.

        mask = W_2 ReLU(W_1 e + b_1) + b_2

    ``W_1`` aggregates the embedding ``e`` (width D) into ``reduction_ratio * D`` units
    (:func:`aggregation_width`), ``W_2`` projects back to ``units``, the width of the vector
    the mask multiplies.

    Args:
        units: Width of the mask (the width of the masked vector).
        reduction_ratio: Aggregation width over input width (the paper's reduction ratio).
        kernel_initializer: Initializer of both kernels.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, D]. Output shape: [batch, units].
    """

    def __init__(
        self,
        units: int,
        reduction_ratio: float = 2.0,
        kernel_initializer: str | Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"units must be positive, got {units}")
        self._units = int(units)
        self._reduction_ratio = _check_reduction_ratio(reduction_ratio)
        self._kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )

    def build(self, input_shape: tf.TensorShape) -> None:
        self._aggregation = keras.layers.Dense(
            aggregation_width(int(input_shape[-1]), self._reduction_ratio), activation="relu",
            kernel_initializer=self._kernel_initializer, name="aggregation",
        )
        self._projection = keras.layers.Dense(
            self._units, kernel_initializer=self._kernel_initializer, name="projection"
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return self._projection(self._aggregation(inputs))

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)[:-1].concatenate([self._units])

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        return mask_cost(input_dim, self._units, self._reduction_ratio)

    def get_config(self) -> dict[str, Any]:
        config = {
            "units": self._units,
            "reduction_ratio": self._reduction_ratio,
            "kernel_initializer": self._kernel_initializer,
        }
        return {**super().get_config(), **config}


@register_keras_serializable(package="cvr_tf")
class MaskBlock(keras.layers.Layer):
    """MaskBlock: a masked hidden vector through Dense, layer norm and ReLU.

    On the feature embeddings ``e`` (called with one tensor) and on a hidden vector ``h``
    (called with ``[e, h]``):

        y = ReLU(LN(W (mask(e) * LN_emb(e))))
        y = ReLU(LN(W (mask(e) * h)))

    ``mask`` is an :class:`InstanceGuidedMask` as wide as the masked vector, and ``W`` has no
    bias (the layer norm that follows would cancel it). The paper normalizes each field's
    embedding separately; here ``LN_emb`` normalizes the whole flat embedding, which also suits
    one-wide numeric fields (a per-field norm would set them to a constant).

    Example:

        ```python
        hidden = MaskBlock(units=128)(embeddings)        # a block on the embeddings
        hidden = MaskBlock(units=64)([embeddings, hidden])  # a block on a previous block
        ```

    Args:
        units: Output width.
        reduction_ratio: Aggregation width over input width in the mask.
        kernel_initializer: Initializer of the kernels.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, D], or [[batch, D], [batch, H]]. Output shape: [batch, units].
    """

    def __init__(
        self,
        units: int,
        reduction_ratio: float = 2.0,
        kernel_initializer: str | Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"units must be positive, got {units}")
        self._units = int(units)
        self._reduction_ratio = _check_reduction_ratio(reduction_ratio)
        self._kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )

    @staticmethod
    def _masked_shape(input_shape: Any) -> tuple[tf.TensorShape, tf.TensorShape | None]:
        """Splits the input shape into (embedding shape, hidden shape or None)."""
        shapes = isinstance(input_shape, list | tuple) and bool(input_shape)
        if shapes and isinstance(input_shape[0], list | tuple | tf.TensorShape):
            if len(input_shape) != 2:
                raise ValueError(
                    f"MaskBlock takes embeddings or [embeddings, hidden], got {len(input_shape)} "
                    "inputs"
                )
            return tf.TensorShape(input_shape[0]), tf.TensorShape(input_shape[1])
        return tf.TensorShape(input_shape), None

    def build(self, input_shape: Any) -> None:
        embedding_shape, hidden_shape = self._masked_shape(input_shape)
        on_embeddings = hidden_shape is None
        masked_width = int((embedding_shape if on_embeddings else hidden_shape)[-1])
        self._input_norm = (
            LayerNorm(name="input_norm") if on_embeddings else None
        )
        self._mask = InstanceGuidedMask(
            masked_width, self._reduction_ratio, kernel_initializer=self._kernel_initializer,
            name="mask",
        )
        self._dense = keras.layers.Dense(
            self._units, use_bias=False, kernel_initializer=self._kernel_initializer,
            name="dense",
        )
        self._output_norm = LayerNorm(name="output_norm")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor | Sequence[tf.Tensor]) -> tf.Tensor:
        if self._input_norm is not None:
            embeddings, hidden = inputs, self._input_norm(inputs)
        else:
            embeddings, hidden = inputs
        masked = self._mask(embeddings) * hidden
        return tf.nn.relu(self._output_norm(self._dense(masked)))

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        embedding_shape, _ = self._masked_shape(input_shape)
        return embedding_shape[:-1].concatenate([self._units])

    def cost(self, input_dim: int, hidden_dim: int | None = None) -> Cost:
        """Analytic cost for one example (see :mod:`cvr_tf.flops`).

        Args:
            input_dim: Width D of the embeddings.
            hidden_dim: Width of the hidden input; None for a block on the embeddings.
        """
        masked_width = input_dim if hidden_dim is None else hidden_dim
        mask = mask_cost(input_dim, masked_width, self._reduction_ratio)
        input_norm = layer_norm_cost(input_dim) if hidden_dim is None else Cost()
        dense = dense_cost(masked_width, self._units, use_bias=False)
        return input_norm + mask + dense + layer_norm_cost(self._units)

    def get_config(self) -> dict[str, Any]:
        config = {
            "units": self._units,
            "reduction_ratio": self._reduction_ratio,
            "kernel_initializer": self._kernel_initializer,
        }
        return {**super().get_config(), **config}


@register_keras_serializable(package="cvr_tf")
class SerialMaskNet(keras.layers.Layer):
    """Serial MaskNet: MaskBlocks chained, each masked by the embeddings.

        h_1 = MaskBlock_1(e),    h_{k+1} = MaskBlock_{k+1}([e, h_k]),    output h_K

    Args:
        block_units: Output width of each block, e.g. ``[256, 256, 128]``.
        reduction_ratio: Aggregation width over input width in every mask.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, D]. Output shape: [batch, block_units[-1]].
    """

    def __init__(
        self, block_units: Sequence[int], reduction_ratio: float = 2.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not block_units:
            raise ValueError("block_units must name at least one block width, got []")
        self._block_units = [int(units) for units in block_units]
        self._reduction_ratio = _check_reduction_ratio(reduction_ratio)
        self._blocks = [
            MaskBlock(units, reduction_ratio, name=f"mask_block_{i}")
            for i, units in enumerate(self._block_units)
        ]

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        hidden = self._blocks[0](inputs)
        for block in self._blocks[1:]:
            hidden = block([inputs, hidden])
        return hidden

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)[:-1].concatenate([self._block_units[-1]])

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        hidden_dims = [None, *self._block_units[:-1]]
        blocks = zip(self._blocks, hidden_dims, strict=True)
        return sum((block.cost(input_dim, hidden) for block, hidden in blocks), Cost())

    def get_config(self) -> dict[str, Any]:
        config = {"block_units": list(self._block_units), "reduction_ratio": self._reduction_ratio}
        return {**super().get_config(), **config}


@register_keras_serializable(package="cvr_tf")
class ParallelMaskNet(keras.layers.Layer):
    """Parallel MaskNet: MaskBlocks side by side on the embeddings, then an MLP.

        y = MLP(concat(MaskBlock_1(e), ..., MaskBlock_K(e)))

    Args:
        num_blocks: Number of blocks K.
        block_units: Output width of each block.
        mlp_units: Widths of the MLP on the concatenated blocks.
        reduction_ratio: Aggregation width over input width in every mask.
        dropout: Dropout rate in the MLP.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, D]. Output shape: [batch, mlp_units[-1]].
    """

    def __init__(
        self,
        num_blocks: int,
        block_units: int,
        mlp_units: Sequence[int],
        reduction_ratio: float = 2.0,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self._num_blocks = int(num_blocks)
        self._block_units = int(block_units)
        self._reduction_ratio = _check_reduction_ratio(reduction_ratio)
        self._blocks = [
            MaskBlock(self._block_units, reduction_ratio, name=f"mask_block_{i}")
            for i in range(self._num_blocks)
        ]
        self._mlp = MLP(mlp_units, dropout=dropout, name="mlp")

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        blocks = tf.concat([block(inputs) for block in self._blocks], axis=-1)
        return self._mlp(blocks, training=training)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return self._mlp.compute_output_shape(input_shape)

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        blocks = self._num_blocks * self._blocks[0].cost(input_dim)
        return blocks + self._mlp.cost(self._num_blocks * self._block_units)

    def get_config(self) -> dict[str, Any]:
        mlp = self._mlp.get_config()
        config = {
            "num_blocks": self._num_blocks,
            "block_units": self._block_units,
            "mlp_units": mlp["units"],
            "reduction_ratio": self._reduction_ratio,
            "dropout": mlp["dropout"],
        }
        return {**super().get_config(), **config}

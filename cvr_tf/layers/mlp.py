"""Multi-layer perceptron: a stack of Dense layers, each optionally layer-normed, with dropout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.flops import Cost, dense_cost, layer_norm_cost
from cvr_tf.layers.norm import LayerNorm


@register_keras_serializable(package="cvr_tf")
class MLP(keras.layers.Layer):
    """A stack of fully connected layers.

    With ``h_0 = x`` and one layer per entry of ``units``:

        h_{l+1} = dropout(activation(norm(W_l h_l + b_l)))

    where ``norm`` is a layer norm when ``use_layer_norm`` and the identity otherwise, and dropout
    is active only in training. Every layer, the last included, is activated, so the output is a
    hidden representation; put a ``Dense(1)`` on top for a logit.

    Example:

        ```python
        mlp = MLP([256, 128], dropout=0.1)
        hidden = mlp(tf.random.normal([32, 224]))  # [32, 128]
        ```

    Args:
        units: Width of each layer, e.g. ``[256, 128]``. Non-empty, all positive.
        activation: Activation after each layer (anything ``keras.activations.get`` accepts).
        dropout: Dropout rate after each layer, in [0, 1).
        use_layer_norm: Whether to layer-normalize each pre-activation.
        kernel_initializer: Initializer of the Dense kernels.
        **kwargs: Keras ``Layer`` arguments (``name``, ``dtype``, ...).

    Input shape: [batch, input_dim]. Output shape: [batch, units[-1]].
    """

    def __init__(
        self,
        units: Sequence[int],
        activation: str | Any = "relu",
        dropout: float = 0.0,
        use_layer_norm: bool = False,
        kernel_initializer: str | Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        units = [int(width) for width in units]
        if not units or min(units) < 1:
            raise ValueError(f"units must be a non-empty list of positive widths, got {units}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._units = units
        self._activation = keras.activations.get(activation)
        self._dropout_rate = float(dropout)
        self._use_layer_norm = bool(use_layer_norm)
        self._kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )
        self._dense_layers = [
            keras.layers.Dense(
                width, kernel_initializer=self._kernel_initializer, name=f"dense_{i}"
            )
            for i, width in enumerate(units)
        ]
        self._norms = (
            [LayerNorm(name=f"layer_norm_{i}") for i in range(len(units))]
            if use_layer_norm
            else []
        )
        self._dropout = keras.layers.Dropout(dropout) if dropout else None

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        hidden = inputs
        for i, dense in enumerate(self._dense_layers):
            hidden = dense(hidden)
            if self._norms:
                hidden = self._norms[i](hidden)
            hidden = self._activation(hidden)
            if self._dropout is not None:
                hidden = self._dropout(hidden, training=training)
        return hidden

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)[:-1].concatenate([self._units[-1]])

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        widths = [input_dim, *self._units]
        total = Cost()
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            total += dense_cost(width_in, width_out)
            if self._use_layer_norm:
                total += layer_norm_cost(width_out)
        return total

    def get_config(self) -> dict[str, Any]:
        config = {
            "units": list(self._units),
            "activation": keras.activations.serialize(self._activation),
            "dropout": self._dropout_rate,
            "use_layer_norm": self._use_layer_norm,
            "kernel_initializer": self._kernel_initializer,
        }
        return {**super().get_config(), **config}

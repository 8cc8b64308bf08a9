"""DCNv2 cross networks (Wang et al. 2021, https://arxiv.org/abs/2008.13535).

Three variants of the explicit feature cross, and the two ways DCNv2 joins it with an MLP:

- ``CrossNetwork(num_layers)``: ``num_layers`` tfrs ``Cross`` layers,
  ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``, with full-rank ``W_l`` (D x D), or low rank
  ``W_l = U_l V_l^T`` (U, V: D x r) when ``projection_dim=r``.
- ``CrossNetwork(num_layers, projection_dim=r, num_experts=K)``: DCN-Mix, each layer a
  :class:`MixtureOfExpertsCross` of K low-rank experts with softmax gating.
- :class:`DeepCrossNetwork`: "stacked" ``MLP(cross(x))`` or "parallel" ``[cross(x), MLP(x)]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tensorflow_recommenders.layers.feature_interaction.dcn import Cross

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.flops import Cost, dense_cost
from cvr_tf.layers.mlp import MLP

STRUCTURES = ("stacked", "parallel")


def cross_cost(input_dim: int, projection_dim: int | None = None, use_bias: bool = True) -> Cost:
    """Cost of one tfrs ``Cross`` layer on inputs of width ``input_dim``.

    Full rank: ``2 D^2`` FLOPs, ``D^2 (+ D bias)`` parameters. Low rank r: ``4 D r`` FLOPs
    (``V^T x`` then ``U (.)``), ``2 D r (+ D bias)`` parameters.
    """
    if projection_dim is None:
        return dense_cost(input_dim, input_dim, use_bias)
    return dense_cost(input_dim, projection_dim, use_bias=False) + dense_cost(
        projection_dim, input_dim, use_bias
    )


@register_keras_serializable(package="cvr_tf")
class MixtureOfExpertsCross(keras.layers.Layer):
    """One DCN-Mix layer: a softmax-gated mixture of low-rank cross experts.

    For inputs ``x_0, x_l`` of width D, K experts of rank r and activation g:

        E_i(x_l) = x_0 * (U_i g(C_i g(V_i^T x_l)) + b)         U_i, V_i: D x r, C_i: r x r
        G(x_l) = softmax(W_g x_l)                              W_g: K x D
        x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l

    The bias ``b`` is shared by the experts (as in the paper), so with gates summing to one the
    layer computes ``x_0 * (sum_i G_i U_i g(C_i g(V_i^T x_l)) + b) + x_l``. The K experts run
    as batched matrix products.

    Example:

        ```python
        first = MixtureOfExpertsCross(num_experts=4, projection_dim=32)
        second = MixtureOfExpertsCross(num_experts=4, projection_dim=32)
        x1 = first(x0)       # crosses x0 with itself
        x2 = second(x0, x1)  # crosses x0 with x1
        ```

    Args:
        num_experts: Number of experts K, at least 1.
        projection_dim: Rank r of each expert, at least 1.
        activation: The non-linearity g inside the experts.
        use_bias: Whether to add the shared bias ``b``.
        kernel_initializer: Initializer of the kernels V, C, U and W_g.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: ``x0`` and optional ``x``, both [batch, D]. Output shape: [batch, D].
    """

    def __init__(
        self,
        num_experts: int,
        projection_dim: int,
        activation: str | Any = "relu",
        use_bias: bool = True,
        kernel_initializer: str | Any = "truncated_normal",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"num_experts must be positive, got {num_experts}")
        if projection_dim < 1:
            raise ValueError(f"projection_dim must be positive, got {projection_dim}")
        self._num_experts = int(num_experts)
        self._projection_dim = int(projection_dim)
        self._activation = keras.activations.get(activation)
        self._use_bias = bool(use_bias)
        self._kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )

    def build(self, input_shape: tf.TensorShape) -> None:
        dim = int(input_shape[-1])
        experts, rank = self._num_experts, self._projection_dim
        self._down = keras.layers.Dense(
            experts * rank, use_bias=False, kernel_initializer=self._kernel_initializer,
            name="down_projection",
        )
        self._gate = keras.layers.Dense(
            experts, use_bias=False, kernel_initializer=self._kernel_initializer, name="gate"
        )
        self._inner_kernel = self.add_weight(
            "inner_kernel", shape=[experts, rank, rank],
            initializer=keras.initializers.get(self._kernel_initializer),
        )
        self._up_kernel = self.add_weight(
            "up_kernel", shape=[experts, rank, dim],
            initializer=keras.initializers.get(self._kernel_initializer),
        )
        self._bias = (
            self.add_weight("bias", shape=[dim], initializer="zeros") if self._use_bias else None
        )
        super().build(input_shape)

    def call(self, x0: tf.Tensor, x: tf.Tensor | None = None) -> tf.Tensor:
        """Crosses ``x0`` with ``x`` (with itself when ``x`` is None)."""
        if x is None:
            x = x0
        if x0.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"x0 and x must have the same width, got {x0.shape[-1]} and {x.shape[-1]}"
            )
        down = tf.reshape(self._down(x), [-1, self._num_experts, self._projection_dim])
        down = self._activation(tf.transpose(down, [1, 0, 2]))  # [K, batch, r]
        inner = self._activation(tf.matmul(down, self._inner_kernel))  # [K, batch, r]
        experts = tf.matmul(inner, self._up_kernel)  # [K, batch, D]
        gates = tf.nn.softmax(self._gate(x))  # [batch, K]
        mixed = tf.reduce_sum(tf.transpose(gates)[:, :, tf.newaxis] * experts, axis=0)
        if self._bias is not None:
            mixed = mixed + self._bias
        return x0 * mixed + x

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        experts, rank = self._num_experts, self._projection_dim
        down = dense_cost(input_dim, experts * rank, use_bias=False)
        inner = experts * dense_cost(rank, rank, use_bias=False)
        up = experts * dense_cost(rank, input_dim, use_bias=False)
        gate = dense_cost(input_dim, experts, use_bias=False)
        return down + inner + up + gate + Cost(params=input_dim if self._use_bias else 0)

    def get_config(self) -> dict[str, Any]:
        config = {
            "num_experts": self._num_experts,
            "projection_dim": self._projection_dim,
            "activation": keras.activations.serialize(self._activation),
            "use_bias": self._use_bias,
            "kernel_initializer": self._kernel_initializer,
        }
        return {**super().get_config(), **config}


@register_keras_serializable(package="cvr_tf")
class CrossNetwork(keras.layers.Layer):
    """A stack of DCNv2 cross layers: ``x_{l+1} = cross_l(x_0, x_l)``, output ``x_L``.

    Each ``cross_l`` is a tfrs ``Cross`` (``x_0 * (W x_l + b) + x_l``; ``W`` full rank, or
    ``U V^T`` of rank ``projection_dim``) when ``num_experts == 1``, and a
    :class:`MixtureOfExpertsCross` of ``num_experts`` rank-``projection_dim`` experts otherwise.

    Example:

        ```python
        cross = CrossNetwork(num_layers=3)                                   # full rank
        cross = CrossNetwork(num_layers=3, projection_dim=64)                # low rank
        cross = CrossNetwork(num_layers=2, projection_dim=32, num_experts=4) # DCN-Mix
        ```

    Args:
        num_layers: Number of cross layers L, at least 1.
        projection_dim: Rank of the low-rank kernels; None for full rank (not allowed with
            several experts).
        num_experts: Experts per layer; more than one selects DCN-Mix.
        expert_activation: The non-linearity inside DCN-Mix experts.
        use_bias: Whether each layer adds a bias.
        kernel_initializer: Initializer of the cross kernels.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, D]. Output shape: [batch, D].
    """

    def __init__(
        self,
        num_layers: int,
        projection_dim: int | None = None,
        num_experts: int = 1,
        expert_activation: str | Any = "relu",
        use_bias: bool = True,
        kernel_initializer: str | Any = "truncated_normal",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"num_layers must be positive, got {num_layers}")
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(
                f"projection_dim must be positive, got {projection_dim}; use None for full rank"
            )
        if num_experts < 1:
            raise ValueError(f"num_experts must be positive, got {num_experts}")
        if num_experts > 1 and projection_dim is None:
            raise ValueError(
                f"num_experts={num_experts} needs low-rank experts: set projection_dim "
                "(e.g. input width / 4)"
            )
        self._num_layers = int(num_layers)
        self._projection_dim = None if projection_dim is None else int(projection_dim)
        self._num_experts = int(num_experts)
        self._expert_activation = keras.activations.get(expert_activation)
        self._use_bias = bool(use_bias)
        self._kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )
        if self._num_experts == 1:
            self._layers = [
                Cross(
                    projection_dim=self._projection_dim,
                    use_bias=self._use_bias,
                    kernel_initializer=self._kernel_initializer,
                    name=f"cross_{i}",
                )
                for i in range(self._num_layers)
            ]
        else:
            self._layers = [
                MixtureOfExpertsCross(
                    num_experts=self._num_experts,
                    projection_dim=self._projection_dim,
                    activation=self._expert_activation,
                    use_bias=self._use_bias,
                    kernel_initializer=self._kernel_initializer,
                    name=f"mixture_cross_{i}",
                )
                for i in range(self._num_layers)
            ]

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        hidden = inputs
        for layer in self._layers:
            hidden = layer(inputs, hidden)
        return hidden

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        if self._num_experts == 1:
            return self._num_layers * cross_cost(input_dim, self._projection_dim, self._use_bias)
        return sum((layer.cost(input_dim) for layer in self._layers), Cost())

    def get_config(self) -> dict[str, Any]:
        config = {
            "num_layers": self._num_layers,
            "projection_dim": self._projection_dim,
            "num_experts": self._num_experts,
            "expert_activation": keras.activations.serialize(self._expert_activation),
            "use_bias": self._use_bias,
            "kernel_initializer": self._kernel_initializer,
        }
        return {**super().get_config(), **config}


@register_keras_serializable(package="cvr_tf")
class DeepCrossNetwork(keras.layers.Layer):
    """DCNv2: a cross network joined with an MLP, stacked or in parallel.

        stacked:   y = MLP(Cross(x))                  width = mlp_units[-1]
        parallel:  y = concat(Cross(x), MLP(x))       width = D + mlp_units[-1]

    Example:

        ```python
        dcn = DeepCrossNetwork(num_cross_layers=3, mlp_units=[256, 128])  # a production baseline
        hidden = dcn(flat_embeddings)  # [batch, 128]
        ```

    Args:
        num_cross_layers: Number of cross layers.
        mlp_units: Widths of the MLP layers.
        structure: "stacked" or "parallel".
        projection_dim: Rank of low-rank cross kernels; None for full rank.
        num_experts: Experts per cross layer (DCN-Mix when more than one).
        dropout: Dropout rate in the MLP.
        use_layer_norm: Whether the MLP layer-normalizes its pre-activations.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, D]. Output shape: [batch, width] as above.
    """

    def __init__(
        self,
        num_cross_layers: int,
        mlp_units: Sequence[int],
        structure: str = "stacked",
        projection_dim: int | None = None,
        num_experts: int = 1,
        dropout: float = 0.0,
        use_layer_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        self._structure = structure
        self._cross = CrossNetwork(
            num_cross_layers, projection_dim=projection_dim, num_experts=num_experts, name="cross"
        )
        self._mlp = MLP(mlp_units, dropout=dropout, use_layer_norm=use_layer_norm, name="mlp")

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        crossed = self._cross(inputs)
        if self._structure == "stacked":
            return self._mlp(crossed, training=training)
        return tf.concat([crossed, self._mlp(inputs, training=training)], axis=-1)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        input_shape = tf.TensorShape(input_shape)
        width = self._mlp.compute_output_shape(input_shape)[-1]
        if self._structure == "parallel":
            width += input_shape[-1]
        return input_shape[:-1].concatenate([width])

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        return self._cross.cost(input_dim) + self._mlp.cost(input_dim)

    def get_config(self) -> dict[str, Any]:
        cross, mlp = self._cross.get_config(), self._mlp.get_config()
        config = {
            "num_cross_layers": cross["num_layers"],
            "mlp_units": mlp["units"],
            "structure": self._structure,
            "projection_dim": cross["projection_dim"],
            "num_experts": cross["num_experts"],
            "dropout": mlp["dropout"],
            "use_layer_norm": mlp["use_layer_norm"],
        }
        return {**super().get_config(), **config}

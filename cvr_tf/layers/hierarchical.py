"""DHEN (Zhang et al. 2022, https://arxiv.org/abs/2203.11014): a deep hierarchical ensemble.

Each DHEN layer runs an ensemble of interaction modules on the same input, brings their outputs
to one width, combines them and adds a residual shortcut under a layer norm; layers are stacked.
The hidden vector between layers is read as F fields of ``field_width`` each, so the
self-attention module sees field structure at every depth, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tensorflow_recommenders.layers.feature_interaction.dcn import Cross

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.flops import Cost, dense_cost, layer_norm_cost
from cvr_tf.layers.attention import FieldSelfAttention
from cvr_tf.layers.cross import cross_cost
from cvr_tf.layers.mask import MaskBlock
from cvr_tf.layers.mlp import MLP
from cvr_tf.layers.norm import LayerNorm

MODULES = ("cross", "mask", "attention", "mlp")
COMBINES = ("concat", "sum")


@register_keras_serializable(package="cvr_tf")
class DHENLayer(keras.layers.Layer):
    """One DHEN layer: an ensemble of interaction modules with a residual shortcut.

    For input ``x`` of width W, modules ``f_1..f_M`` and output width O:

        m_j = P_j f_j(x)                    P_j: linear W_j -> O, identity when W_j == O
        c = W_c [m_1; ...; m_M] + b_c       combine="concat"
        c = m_1 + ... + m_M                 combine="sum"
        y = LN(c + S x)                     S: linear W -> O, identity when W == O

    The modules (``modules`` picks and orders them):

    - ``"cross"``: a DCNv2 cross ``x * (U x + b) + x`` (full rank, or rank
      ``cross_projection_dim``), width W.
    - ``"mask"``: a :class:`~cvr_tf.layers.mask.MaskBlock` on ``x`` with O units.
    - ``"attention"``: :class:`~cvr_tf.layers.attention.FieldSelfAttention` over the fields
      ``field_dims`` of ``x``, width ``len(field_dims) * attention_dim``.
    - ``"mlp"``: an :class:`~cvr_tf.layers.mlp.MLP` of ``mlp_units``, width ``mlp_units[-1]``.

    Example:

        ```python
        layer = DHENLayer(output_dim=64, field_dims=[16, 16, 32], attention_dim=16)
        hidden = layer(tf.random.normal([8, 64]))  # [8, 64]
        ```

    Args:
        output_dim: Output width O.
        field_dims: Widths of the fields concatenated in the input (summing to W).
        modules: Names of the modules of the ensemble, a non-empty subset of ``MODULES``.
        combine: "concat" (concatenate, then project to O) or "sum".
        cross_projection_dim: Rank of the cross kernel; None for full rank.
        mask_reduction_ratio: Aggregation width over input width in the mask.
        attention_dim: Common field width in the attention module.
        num_heads: Attention heads.
        mlp_units: Widths of the MLP module.
        mlp_dropout: Dropout rate in the MLP module (training only), in [0, 1).
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, W]. Output shape: [batch, O].
    """

    def __init__(
        self,
        output_dim: int,
        field_dims: Sequence[int],
        modules: Sequence[str] = MODULES,
        combine: str = "concat",
        cross_projection_dim: int | None = None,
        mask_reduction_ratio: float = 2.0,
        attention_dim: int = 16,
        num_heads: int = 2,
        mlp_units: Sequence[int] = (256,),
        mlp_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if output_dim < 1:
            raise ValueError(f"output_dim must be positive, got {output_dim}")
        modules = list(modules)
        unknown = sorted(set(modules) - set(MODULES))
        if not modules or unknown or len(set(modules)) != len(modules):
            raise ValueError(
                f"modules must be distinct names from {MODULES}, got {modules}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        if cross_projection_dim is not None and cross_projection_dim < 1:
            raise ValueError(
                f"cross_projection_dim must be positive, got {cross_projection_dim}; use None "
                "for a full-rank cross"
            )
        self._output_dim = int(output_dim)
        self._field_dims = [int(width) for width in field_dims]
        self._module_names = modules
        self._combine = combine
        self._cross_projection_dim = cross_projection_dim
        self._mask_reduction_ratio = float(mask_reduction_ratio)
        self._attention_dim = int(attention_dim)
        self._num_heads = int(num_heads)
        self._mlp_units = [int(width) for width in mlp_units]
        self._mlp_dropout = float(mlp_dropout)
        factories = {
            "cross": lambda: Cross(projection_dim=cross_projection_dim, name="cross"),
            "mask": lambda: MaskBlock(output_dim, mask_reduction_ratio, name="mask"),
            "attention": lambda: FieldSelfAttention(
                self._field_dims, attention_dim, num_heads, name="attention"
            ),
            "mlp": lambda: MLP(self._mlp_units, dropout=self._mlp_dropout, name="mlp"),
        }
        self._ensemble = [factories[name]() for name in modules]

    def _module_width(self, name: str, input_dim: int) -> int:
        """Output width of module ``name`` on inputs of width ``input_dim``."""
        widths = {
            "cross": input_dim,
            "mask": self._output_dim,
            "attention": len(self._field_dims) * self._attention_dim,
            "mlp": self._mlp_units[-1],
        }
        return widths[name]

    def _linear(self, name: str) -> keras.layers.Dense:
        return keras.layers.Dense(self._output_dim, use_bias=False, name=name)

    def build(self, input_shape: tf.TensorShape) -> None:
        width = int(input_shape[-1])
        self._projections = [
            self._linear(f"{name}_projection")
            if self._module_width(name, width) != self._output_dim
            else None
            for name in self._module_names
        ]
        self._combiner = (
            keras.layers.Dense(self._output_dim, name="combine")
            if self._combine == "concat"
            else None
        )
        self._shortcut = self._linear("shortcut") if width != self._output_dim else None
        self._norm = LayerNorm(name="norm")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        outputs = []
        for module, projection in zip(self._ensemble, self._projections, strict=True):
            output = module(inputs, training=training)
            outputs.append(output if projection is None else projection(output))
        if self._combiner is not None:
            combined = self._combiner(tf.concat(outputs, axis=-1))
        else:
            combined = tf.add_n(outputs)
        shortcut = inputs if self._shortcut is None else self._shortcut(inputs)
        return self._norm(combined + shortcut)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)[:-1].concatenate([self._output_dim])

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        total = layer_norm_cost(self._output_dim)
        for name, module in zip(self._module_names, self._ensemble, strict=True):
            if name == "cross":
                total += cross_cost(input_dim, self._cross_projection_dim)
            else:
                total += module.cost(input_dim)
            width = self._module_width(name, input_dim)
            if width != self._output_dim:
                total += dense_cost(width, self._output_dim, use_bias=False)
        if self._combine == "concat":
            total += dense_cost(len(self._ensemble) * self._output_dim, self._output_dim)
        if input_dim != self._output_dim:
            total += dense_cost(input_dim, self._output_dim, use_bias=False)
        return total

    def get_config(self) -> dict[str, Any]:
        config = {
            "output_dim": self._output_dim,
            "field_dims": list(self._field_dims),
            "modules": list(self._module_names),
            "combine": self._combine,
            "cross_projection_dim": self._cross_projection_dim,
            "mask_reduction_ratio": self._mask_reduction_ratio,
            "attention_dim": self._attention_dim,
            "num_heads": self._num_heads,
            "mlp_units": list(self._mlp_units),
            "mlp_dropout": self._mlp_dropout,
        }
        return {**super().get_config(), **config}


@register_keras_serializable(package="cvr_tf")
class DHEN(keras.layers.Layer):
    """A stack of :class:`DHENLayer` s.

    The first layer reads the input's fields ``field_dims``; every layer outputs
    ``F * field_width`` features (F = ``len(field_dims)``), read by the next layer as F fields of
    ``field_width``:

        h_0 = x,   h_{l+1} = DHENLayer_l(h_l),   output h_L  [batch, F * field_width]

    Example:

        ```python
        dhen = DHEN(num_layers=2, field_dims=[16] * 14, field_width=16)
        hidden = dhen(flat_embeddings)  # [batch, 224]
        ```

    Args:
        num_layers: Number of stacked layers L.
        field_dims: Widths of the fields concatenated in the input.
        field_width: Width of each field in the hidden layers.
        **layer_options: ``modules``, ``combine``, ``cross_projection_dim``,
            ``mask_reduction_ratio``, ``attention_dim``, ``num_heads``, ``mlp_units``,
            ``mlp_dropout`` of every :class:`DHENLayer`, and Keras ``Layer`` arguments.

    Input shape: [batch, sum(field_dims)]. Output shape: [batch, len(field_dims) * field_width].
    """

    _LAYER_OPTIONS = (
        "modules", "combine", "cross_projection_dim", "mask_reduction_ratio", "attention_dim",
        "num_heads", "mlp_units", "mlp_dropout",
    )

    def __init__(
        self, num_layers: int, field_dims: Sequence[int], field_width: int, **layer_options: Any
    ) -> None:
        options = {name: layer_options.pop(name) for name in self._LAYER_OPTIONS
                   if name in layer_options}
        super().__init__(**layer_options)
        if num_layers < 1:
            raise ValueError(f"num_layers must be positive, got {num_layers}")
        if field_width < 1:
            raise ValueError(f"field_width must be positive, got {field_width}")
        self._num_layers = int(num_layers)
        self._field_dims = [int(width) for width in field_dims]
        self._field_width = int(field_width)
        hidden_fields = [self._field_width] * len(self._field_dims)
        self._layers = [
            DHENLayer(
                self.output_dim, self._field_dims if i == 0 else hidden_fields,
                name=f"dhen_layer_{i}", **options,
            )
            for i in range(self._num_layers)
        ]

    @property
    def output_dim(self) -> int:
        """Output width ``len(field_dims) * field_width``."""
        return len(self._field_dims) * self._field_width

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        hidden = inputs
        for layer in self._layers:
            hidden = layer(hidden, training=training)
        return hidden

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)[:-1].concatenate([self.output_dim])

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see :mod:`cvr_tf.flops`)."""
        first, rest = self._layers[0], self._layers[1:]
        return first.cost(input_dim) + sum((layer.cost(self.output_dim) for layer in rest), Cost())

    def get_config(self) -> dict[str, Any]:
        layer_config = self._layers[0].get_config()
        config = {
            "num_layers": self._num_layers,
            "field_dims": list(self._field_dims),
            "field_width": self._field_width,
            **{name: layer_config[name] for name in self._LAYER_OPTIONS},
        }
        return {**super().get_config(), **config}

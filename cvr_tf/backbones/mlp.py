"""The ``mlp`` backbone: a plain MLP on the flat embeddings."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cvr_tf.backbones.base import BackboneKind, scaled_widths
from cvr_tf.backbones.options import dropout_option, option, widths_option
from cvr_tf.compat import keras
from cvr_tf.layers.mlp import MLP


@dataclasses.dataclass(frozen=True)
class MLPOptions:
    """Options of the ``mlp`` backbone (defaults: MLP [512, 256, 128]).

    Attributes:
        widths: Width of each layer at scale 1; scale ``s`` multiplies them by
            :func:`~cvr_tf.backbones.base.scaled_widths` (FLOPs x ``s``).
        layer_norm: Layer-normalize every pre-activation.
        dropout: Dropout rate after every layer, in training only.
    """

    widths: tuple[int, ...] = widths_option((512, 256, 128))
    layer_norm: bool = option(False)
    dropout: float = dropout_option()


class MLPBackbone(BackboneKind):
    """MLP ``widths`` (FLOPs x scale through :func:`scaled_widths`)."""

    name = "mlp"
    options_class = MLPOptions

    def build(self, input_dim: int, field_dims: Sequence[int], scale: float,
              options: MLPOptions) -> keras.layers.Layer:
        """The MLP on the flat input (``field_dims`` unused)."""
        widths = scaled_widths(input_dim, options.widths, scale)
        return MLP(widths, dropout=options.dropout, use_layer_norm=options.layer_norm,
                   name=self.name)

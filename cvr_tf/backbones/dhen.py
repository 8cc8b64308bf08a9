"""The ``dhen`` backbone: stacked DHEN layers, each an ensemble of interaction modules."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cvr_tf.backbones.base import BackboneKind, count, round_half_up
from cvr_tf.backbones.options import OptionError, dropout_option, option, widths_option
from cvr_tf.compat import keras
from cvr_tf.layers.hierarchical import COMBINES, DHEN, MODULES


@dataclasses.dataclass(frozen=True)
class DHENOptions:
    """Options of the ``dhen`` backbone (defaults: 2 layers of cross, mask, attention and MLP
    [4W, W] modules, combined by concatenation).

    Attributes:
        layers: Number of DHEN layers at scale 1; scale ``s`` makes it ``round(layers s)``.
        modules: The module kinds of every layer, distinct, in order: any of cross, mask,
            attention, mlp.
        combiner: How a layer joins its modules' outputs: ``concat`` (concatenate, then a
            linear map to the layer width) or ``sum``.
        mlp: Widths of the MLP module; default ``[4 W, W]`` for the layer width W. Not scaled.
        dropout: Dropout rate in the MLP module, in training only.
    """

    layers: int = option(2, minimum=1)
    modules: tuple[str, ...] = option(MODULES, choices=MODULES)
    combiner: str = option("concat", choices=COMBINES)
    mlp: tuple[int, ...] | None = widths_option(None)
    dropout: float = dropout_option()

    def __post_init__(self) -> None:
        if len(set(self.modules)) != len(self.modules):
            raise OptionError("modules", f"{list(self.modules)} names a module twice; list each "
                              "once")


class DHENBackbone(BackboneKind):
    """DHEN: ``round(layers * scale)`` layers; FLOPs grow with the number of layers.

    Hidden fields are ``k = round(D / F)`` wide (even, for 2 heads), the layer width is
    ``W = F k``, attention runs at width k over the F fields and the mask block has reduction
    ratio 2.
    """

    name = "dhen"
    options_class = DHENOptions

    def build(self, input_dim: int, field_dims: Sequence[int], scale: float,
              options: DHENOptions) -> keras.layers.Layer:
        field_width = max(2, 2 * round_half_up(input_dim / len(field_dims) / 2))
        width = len(field_dims) * field_width
        return DHEN(
            count(options.layers, scale), field_dims, field_width, attention_dim=field_width,
            num_heads=2, modules=list(options.modules), combine=options.combiner,
            mlp_units=list(options.mlp or (4 * width, width)), mlp_dropout=options.dropout,
            name=self.name,
        )

"""The ``masknet`` backbone: MaskBlocks in parallel (then an MLP) or in series."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cvr_tf.backbones.base import BackboneKind, count
from cvr_tf.backbones.options import OptionError, dropout_option, option, widths_option
from cvr_tf.compat import keras
from cvr_tf.layers.mask import ParallelMaskNet, SerialMaskNet

MASKNET_STRUCTURES = ("parallel", "serial")
DEFAULT_MLP = (256, 128)


@dataclasses.dataclass(frozen=True)
class MaskNetOptions:
    """Options of the ``masknet`` backbone (defaults: parallel, 3 MaskBlocks of 64, ratio 2,
    MLP [256, 128]).

    Attributes:
        structure: ``parallel`` (blocks side by side on the embeddings, concatenated, then the
            MLP) or ``serial`` (blocks chained, each masked by the embeddings; the last block's
            output is the backbone's, as in the paper: no MLP).
        blocks: Number of MaskBlocks at scale 1; scale ``s`` makes it ``round(blocks s)``.
        block_width: Output width of every MaskBlock. Not scaled.
        reduction_ratio: Aggregation width over input width in every instance-guided mask.
        mlp: Widths of the parallel MLP; default [256, 128]. Not scaled (the blocks are).
        dropout: Dropout rate in the parallel MLP, in training only.
    """

    structure: str = option("parallel", choices=MASKNET_STRUCTURES)
    blocks: int = option(3, minimum=1)
    block_width: int = option(64, minimum=1)
    reduction_ratio: float = option(2.0, above=0.0)
    mlp: tuple[int, ...] | None = widths_option(None)
    dropout: float = dropout_option()

    def __post_init__(self) -> None:
        if self.mlp is not None and self.structure == "serial":
            raise OptionError("mlp", "a serial MaskNet has no MLP (its last block feeds the "
                              "logit head); drop mlp, or set structure: parallel")


class MaskNetBackbone(BackboneKind):
    """MaskNet: ``round(blocks * scale)`` MaskBlocks; FLOPs grow with the number of blocks."""

    name = "masknet"
    options_class = MaskNetOptions

    def build(self, input_dim: int, field_dims: Sequence[int], scale: float,
              options: MaskNetOptions) -> keras.layers.Layer:
        del input_dim, field_dims  # the blocks see only the flat input
        blocks = count(options.blocks, scale)
        if options.structure == "serial":
            return SerialMaskNet([options.block_width] * blocks, options.reduction_ratio,
                                 name=self.name)
        return ParallelMaskNet(
            blocks, block_units=options.block_width, mlp_units=list(options.mlp or DEFAULT_MLP),
            reduction_ratio=options.reduction_ratio, dropout=options.dropout, name=self.name,
        )

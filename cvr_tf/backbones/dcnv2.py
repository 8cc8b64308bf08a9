"""The ``dcnv2`` backbone: a DCNv2 cross network with an MLP, stacked or in parallel."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cvr_tf.backbones.base import BackboneKind, count, round_half_up, scaled_widths
from cvr_tf.backbones.options import OptionError, dropout_option, option, widths_option
from cvr_tf.compat import keras
from cvr_tf.layers.cross import STRUCTURES, DeepCrossNetwork

CROSS_KINDS = ("full", "low_rank", "mixture")
DEFAULT_EXPERTS = 4


@dataclasses.dataclass(frozen=True)
class DCNv2Options:
    """Options of the ``dcnv2`` backbone (defaults: 3 full-rank cross layers, then MLP [256, 128]).

    Attributes:
        layers: Number of cross layers at scale 1; scale ``s`` makes it ``round(layers s)``.
        cross: ``full`` (``W`` is D x D), ``low_rank`` (``W = U V^T`` of rank ``rank``) or
            ``mixture`` (DCN-Mix: ``experts`` low-rank experts, softmax-gated).
        rank: Rank r of ``low_rank`` / ``mixture`` kernels; default ``round(D / 4)``. Not scaled.
        experts: Experts per ``mixture`` layer; default 4. Not scaled.
        structure: ``stacked`` (``MLP(cross(x))``) or ``parallel`` (``[cross(x), MLP(x)]``).
        mlp: MLP widths at scale 1, multiplied by :func:`scaled_widths` (FLOPs x ``s``).
        layer_norm: Layer-normalize the MLP's pre-activations.
        dropout: Dropout rate in the MLP, in training only.
    """

    layers: int = option(3, minimum=1)
    cross: str = option("full", choices=CROSS_KINDS)
    rank: int | None = option(None, minimum=1)
    experts: int | None = option(None, minimum=2)
    structure: str = option("stacked", choices=STRUCTURES)
    mlp: tuple[int, ...] = widths_option((256, 128))
    layer_norm: bool = option(False)
    dropout: float = dropout_option()

    def __post_init__(self) -> None:
        if self.rank is not None and self.cross == "full":
            raise OptionError("rank", "a full-rank cross has no rank; set cross: low_rank or "
                              "mixture, or drop rank")
        if self.experts is not None and self.cross != "mixture":
            raise OptionError("experts", f"only a mixture cross has experts (cross is "
                              f"{self.cross!r}); set cross: mixture, or drop experts")


class DCNv2Backbone(BackboneKind):
    """DCNv2: ``round(layers * scale)`` cross layers; MLP widths scaled for FLOPs x scale."""

    name = "dcnv2"
    options_class = DCNv2Options

    def build(self, input_dim: int, field_dims: Sequence[int], scale: float,
              options: DCNv2Options) -> keras.layers.Layer:
        del field_dims  # cross layers see only the flat input
        rank = None
        if options.cross != "full":
            rank = options.rank or max(1, round_half_up(input_dim / 4))
        experts = (options.experts or DEFAULT_EXPERTS) if options.cross == "mixture" else 1
        return DeepCrossNetwork(
            count(options.layers, scale), scaled_widths(input_dim, options.mlp, scale),
            structure=options.structure, projection_dim=rank, num_experts=experts,
            dropout=options.dropout, use_layer_norm=options.layer_norm, name=self.name,
        )

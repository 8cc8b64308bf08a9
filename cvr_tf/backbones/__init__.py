"""Backbones: name + options + scale -> the dense interaction network, with its compute accounted.

A backbone maps the flat embeddings [batch, D] (D = ``sum(field_dims)``) to a hidden vector;
``cvr_tf.model`` puts the logit head on top. Every backbone has one ``scale`` knob, applied so
that FLOPs per example grow about linearly in it (scale 2 ~ 2x FLOPs):

| name | at scale 1 | scale ``s`` sets |
| --- | --- | --- |
| ``mlp`` | MLP [512, 256, 128] | widths x ``m(s)`` (below) |
| ``dcnv2`` | 3 full-rank cross layers, MLP [256, 128] | ``round(3 s)`` layers, MLP x ``m(s)`` |
| ``masknet`` | parallel: 3 MaskBlocks of 64, ratio 2; MLP [256, 128] | ``round(3 s)`` blocks |
| ``dhen`` | 2 layers: cross, mask, attention, MLP [4W, W]; concat | ``round(2 s)`` layers |
| ``ensemble`` | ``dcnv2`` and ``masknet`` side by side, concatenated | every member at ``s`` |

``m(s)`` is the width multiplier that makes the MLP's FLOPs exactly ``s`` times (before
rounding), see :func:`scaled_widths`. DHEN's layer width is ``W = F k`` for F fields of hidden
width ``k = round(D / F)`` (even, for its two attention heads), so ``W ~ D``.
``ensemble:a+b+...`` picks the members, e.g. ``ensemble:dcnv2+masknet+dhen``.

Each backbone's options (``ModelConfig.backbone_config``, the ``--backbone_config`` file) are
the fields of its options dataclass: :class:`MLPOptions`, :class:`DCNv2Options`,
:class:`MaskNetOptions`, :class:`DHENOptions`, :class:`EnsembleOptions`. Their defaults are the
scale-1 architectures above; the scale applies on top (layer and block counts x ``s``, MLP
widths by :func:`scaled_widths`, as each options docstring says).

The package: :mod:`~cvr_tf.backbones.base` (the :class:`BackboneKind` interface and scale
helpers), :mod:`~cvr_tf.backbones.options` (checking options mappings), one module per backbone
and :mod:`~cvr_tf.backbones.registry` (name -> kind, :func:`build_backbone`).

At scale 1 with 14 fields of 16 (D = 224); FLOPs per the convention of :mod:`cvr_tf.flops`
(``python -m experiments.bench_backbones`` prints every scale):

| backbone | FLOPs/example | params | FLOPs / dcnv2 |
| --- | ---: | ---: | ---: |
| ``dcnv2`` | 481,280 | 241,696 | 1.00 |
| ``mlp`` | 557,056 | 279,424 | 1.16 |
| ``masknet`` | 1,454,080 | 731,168 | 3.02 |
| ``ensemble`` | 1,935,360 | 972,864 | 4.02 |
| ``dhen`` | 3,709,440 | 1,823,360 | 7.71 |

DHEN at scale 1 is the "8x inference compute" model of the paper (7.7x here, 8.2x on the
default feature spec's 217-wide input).
"""

from cvr_tf.backbones.base import Backbone, BackboneKind, scaled_widths
from cvr_tf.backbones.dcnv2 import DCNv2Options
from cvr_tf.backbones.dhen import DHENOptions
from cvr_tf.backbones.ensemble import BackboneEnsemble, EnsembleOptions
from cvr_tf.backbones.masknet import MaskNetOptions
from cvr_tf.backbones.mlp import MLPOptions
from cvr_tf.backbones.options import json_form, read_options_file
from cvr_tf.backbones.registry import (
    BACKBONES,
    available_backbones,
    build_backbone,
    parse_backbone_options,
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneEnsemble",
    "BackboneKind",
    "DCNv2Options",
    "DHENOptions",
    "EnsembleOptions",
    "MLPOptions",
    "MaskNetOptions",
    "available_backbones",
    "build_backbone",
    "json_form",
    "parse_backbone_options",
    "read_options_file",
    "scaled_widths",
]

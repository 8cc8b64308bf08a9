"""Backbones registry: name + scale -> the dense interaction network, with its compute accounted.

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

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.flops import Cost
from cvr_tf.layers.cross import DeepCrossNetwork
from cvr_tf.layers.hierarchical import DHEN
from cvr_tf.layers.mask import ParallelMaskNet
from cvr_tf.layers.mlp import MLP

ENSEMBLE = "ensemble"
DEFAULT_ENSEMBLE = ("dcnv2", "masknet")


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A built backbone and its compute.

    Attributes:
        name: The name it was built from, e.g. "dcnv2" or "ensemble:dcnv2+masknet".
        scale: Its scale knob.
        layer: Maps [batch, input_dim] float32 to [batch, output_dim].
        output_dim: Width of the layer's output.
        flops_per_example: Analytic forward FLOPs of ``layer`` for one example, 2 per multiply-add.
        param_count: Trainable parameters of ``layer``.
    """

    name: str
    scale: float
    layer: keras.layers.Layer
    output_dim: int
    flops_per_example: int
    param_count: int


@register_keras_serializable(package="cvr_tf")
class BackboneEnsemble(keras.layers.Layer):
    """Several backbones on the same input, outputs concatenated: ``[b_1(x); ...; b_n(x)]``.

    Args:
        members: The member layers, each mapping [batch, D] to [batch, D_i].
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, D]. Output shape: [batch, sum_i D_i].
    """

    def __init__(self, members: Sequence[keras.layers.Layer], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not members:
            raise ValueError("BackboneEnsemble needs at least one member, got none")
        self._members = list(members)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return tf.concat([member(inputs, training=training) for member in self._members], -1)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        input_shape = tf.TensorShape(input_shape)
        width = sum(member.compute_output_shape(input_shape)[-1] for member in self._members)
        return input_shape[:-1].concatenate([width])

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim``: the members' costs summed."""
        return sum((member.cost(input_dim) for member in self._members), Cost())

    def get_config(self) -> dict[str, Any]:
        members = [keras.layers.serialize(member) for member in self._members]
        return {**super().get_config(), "members": members}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BackboneEnsemble:
        config = dict(config)
        members = [keras.layers.deserialize(member) for member in config.pop("members")]
        return cls(members, **config)


def _round(value: float) -> int:
    """Rounds half up (Python's ``round`` rounds half to even: ``round(2.5) == 2``)."""
    return math.floor(value + 0.5)


def _count(base: int, scale: float) -> int:
    """``round(base * scale)``, at least 1: the number of repeated layers or blocks."""
    return max(1, _round(base * scale))


def scaled_widths(input_dim: int, units: Sequence[int], scale: float) -> list[int]:
    """MLP widths scaled so that the MLP's FLOPs on ``input_dim`` inputs grow ``scale``-fold.

    With every width multiplied by ``m``, the FLOPs are ``2 (a m + b m^2)`` for
    ``a = input_dim * units[0]`` and ``b = sum_i units[i] * units[i+1]``; ``m`` is the positive
    root of ``b m^2 + a m = scale (a + b)``, and widths are rounded.
    """
    linear = input_dim * units[0]
    quadratic = sum(a * b for a, b in zip(units[:-1], units[1:], strict=True))
    if quadratic == 0:
        multiplier = scale
    else:
        discriminant = linear**2 + 4 * quadratic * scale * (linear + quadratic)
        multiplier = (math.sqrt(discriminant) - linear) / (2 * quadratic)
    return [max(1, _round(width * multiplier)) for width in units]


def build_mlp(input_dim: int, field_dims: Sequence[int], scale: float) -> keras.layers.Layer:
    """MLP [512, 256, 128] at scale 1; ``scale`` multiplies its FLOPs through its widths."""
    del field_dims  # the MLP sees only the flat input
    return MLP(scaled_widths(input_dim, [512, 256, 128], scale), name="mlp")


def build_dcnv2(input_dim: int, field_dims: Sequence[int], scale: float) -> keras.layers.Layer:
    """Stacked DCNv2: ``round(3 scale)`` full-rank cross layers, then an MLP.

    The MLP is [256, 128] at scale 1, its widths scaled so its FLOPs grow ``scale``-fold; the
    cross layers' FLOPs grow with their number.
    """
    del field_dims  # cross layers see only the flat input
    return DeepCrossNetwork(
        _count(3, scale), scaled_widths(input_dim, [256, 128], scale), name="dcnv2"
    )


def build_masknet(input_dim: int, field_dims: Sequence[int], scale: float) -> keras.layers.Layer:
    """Parallel MaskNet: ``round(3 scale)`` MaskBlocks of 64 units (reduction ratio 2), then an
    MLP [256, 128] on their concatenation; FLOPs grow with the number of blocks."""
    del input_dim, field_dims  # the blocks see only the flat input
    return ParallelMaskNet(
        _count(3, scale), block_units=64, mlp_units=[256, 128], reduction_ratio=2.0,
        name="masknet",
    )


def build_dhen(input_dim: int, field_dims: Sequence[int], scale: float) -> keras.layers.Layer:
    """DHEN: ``round(2 scale)`` layers of (cross, mask, attention, MLP), concatenated.

    Hidden fields are ``k = round(D / F)`` wide (even, for 2 heads), the layer width is
    ``W = F k``, attention runs at width k over the F fields, the MLP module is [4W, W] and the
    mask block has reduction ratio 2. FLOPs grow with the number of layers.
    """
    field_width = max(2, 2 * _round(input_dim / len(field_dims) / 2))
    width = len(field_dims) * field_width
    return DHEN(
        _count(2, scale), field_dims, field_width, attention_dim=field_width, num_heads=2,
        mlp_units=[4 * width, width], name="dhen",
    )


BUILDERS: dict[str, Callable[[int, Sequence[int], float], keras.layers.Layer]] = {
    "dcnv2": build_dcnv2,
    "dhen": build_dhen,
    "masknet": build_masknet,
    "mlp": build_mlp,
}


def available_backbones() -> list[str]:
    """Names ``build_backbone`` accepts (``ensemble`` also as ``ensemble:a+b+...``)."""
    return sorted([*BUILDERS, ENSEMBLE])


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown backbone {name!r}; available: {', '.join(available_backbones())} "
        "(pick ensemble members as 'ensemble:dcnv2+masknet+dhen')"
    )


def _ensemble_members(name: str) -> list[str]:
    """Members of an ensemble name: "ensemble" -> the default pair, "ensemble:a+b" -> [a, b]."""
    if name == ENSEMBLE:
        return list(DEFAULT_ENSEMBLE)
    members = name.removeprefix(f"{ENSEMBLE}:").split("+")
    for member in members:
        if member not in BUILDERS:
            raise ValueError(
                f"unknown ensemble member {member!r} in {name!r}; members are "
                f"{', '.join(sorted(BUILDERS))}"
            )
    if len(set(members)) != len(members):
        raise ValueError(f"backbone {name!r} names a member twice; list each member once")
    return members


def build_backbone(
    name: str, input_dim: int, field_dims: Sequence[int], scale: float = 1.0
) -> Backbone:
    """Builds the backbone ``name`` at ``scale`` for flat inputs of width ``input_dim``.

    Args:
        name: One of :func:`available_backbones`, or ``"ensemble:a+b+..."``.
        input_dim: Width D of the flat embeddings.
        field_dims: Widths of the fields concatenated in the input (summing to D).
        scale: The backbone's scale knob (see the module docstring), positive.

    Returns:
        The :class:`Backbone` with its (unbuilt) layer, output width, FLOPs and parameters.

    Raises:
        ValueError: on an unknown name, a non-positive scale, or ``field_dims`` not summing to
            ``input_dim``.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    field_dims = [int(width) for width in field_dims]
    if not field_dims or sum(field_dims) != input_dim:
        raise ValueError(
            f"field_dims {field_dims} must sum to input_dim={input_dim}; pass the widths of the "
            "fields concatenated in the flat input"
        )
    if name == ENSEMBLE or name.startswith(f"{ENSEMBLE}:"):
        members = [BUILDERS[member](input_dim, field_dims, scale)
                   for member in _ensemble_members(name)]
        layer = BackboneEnsemble(members, name=ENSEMBLE)
    elif name in BUILDERS:
        layer = BUILDERS[name](input_dim, field_dims, scale)
    else:
        raise _unknown(name)
    cost = layer.cost(input_dim)
    return Backbone(
        name=name,
        scale=scale,
        layer=layer,
        output_dim=int(layer.compute_output_shape((None, input_dim))[-1]),
        flops_per_example=cost.flops,
        param_count=cost.params,
    )

"""The backbone interface: an options dataclass, a builder, and the built :class:`Backbone`.

A backbone kind is one :class:`BackboneKind` subclass (in its own module) naming its frozen
options dataclass and building its Keras layer; the registry (:mod:`cvr_tf.backbones.registry`)
maps names to kinds. Every built layer has ``cost(input_dim) -> cvr_tf.flops.Cost``.

The scale helpers here are shared by the kinds: :func:`count` multiplies a number of repeated
layers or blocks, :func:`scaled_widths` multiplies an MLP's FLOPs through its widths.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from cvr_tf.backbones.options import ROOT, parse_options
from cvr_tf.compat import keras

DROPOUT = "dropout"


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
        options: The checked options it was built with (its kind's options dataclass).
    """

    name: str
    scale: float
    layer: keras.layers.Layer
    output_dim: int
    flops_per_example: int
    param_count: int
    options: Any = None


class BackboneKind(abc.ABC):
    """One kind of backbone: its options and how to build its layer.

    Subclasses set ``name`` and ``options_class`` (a frozen dataclass whose defaults are the
    kind's scale-1 architecture; see :mod:`cvr_tf.backbones.options` for the field types) and
    implement :meth:`build`. A ``dropout: float`` field, when the options have one, takes the
    model-wide ``ModelConfig.dropout`` when that is set (not None) and the field's own default
    otherwise; a ``dropout`` key in the options overrides both.
    """

    name: ClassVar[str]
    options_class: ClassVar[type]

    def parse(self, raw: Mapping[str, Any], dropout: float | None = None, path: str = ROOT
              ) -> Any:
        """The checked options of ``raw`` (see :func:`~cvr_tf.backbones.options.parse_options`).

        Args:
            raw: Option key -> value; missing keys take their defaults.
            dropout: The model-wide dropout, replacing the default of a ``dropout`` field;
                None keeps the field's default.
            path: The key path of ``raw`` in error messages.
        """
        fields = {field.name for field in dataclasses.fields(self.options_class)}
        if dropout is not None and DROPOUT in fields and isinstance(raw, Mapping):
            raw = {DROPOUT: dropout, **raw}
        return parse_options(self.options_class, raw, path)

    @abc.abstractmethod
    def build(self, input_dim: int, field_dims: Sequence[int], scale: float, options: Any
              ) -> keras.layers.Layer:
        """The unbuilt layer for flat inputs of width ``input_dim`` made of ``field_dims``.

        Args:
            input_dim: Width D of the flat embeddings.
            field_dims: Widths of the fields concatenated in the input (summing to D).
            scale: The scale knob, positive; how it applies is the kind's docstring.
            options: An instance of ``options_class`` (from :meth:`parse`).
        """


def round_half_up(value: float) -> int:
    """Rounds half up (Python's ``round`` rounds half to even: ``round(2.5) == 2``)."""
    return math.floor(value + 0.5)


def count(base: int, scale: float) -> int:
    """``round(base * scale)``, at least 1: the number of repeated layers or blocks."""
    return max(1, round_half_up(base * scale))


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
    return [max(1, round_half_up(width * multiplier)) for width in units]

"""The ``ensemble`` backbone: several backbones on the same input, outputs concatenated."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf.backbones.base import BackboneKind
from cvr_tf.backbones.options import ROOT, dropout_option, option
from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.flops import Cost

ENSEMBLE = "ensemble"
DEFAULT_ENSEMBLE = ("dcnv2", "masknet")


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


@dataclasses.dataclass(frozen=True)
class EnsembleOptions:
    """Options of the ``ensemble`` backbone (defaults: ``dcnv2`` and ``masknet``, default options).

    Attributes:
        members: The members in order (a list, so that key-sorted JSON such as
            ``model_config.json`` keeps it), each a backbone name or a one-key mapping
            ``{name: its options}``, e.g. ``[{"dcnv2": {"cross": "low_rank"}}, "masknet"]``;
            each member at most once. Default: the members the backbone name picks
            (``ensemble:a+b``), else dcnv2 and masknet. Once parsed: ``(name, options
            dataclass)`` pairs.
        dropout: The members' dropout (a member's own ``dropout`` overrides it); default
            None: each member's own default.
    """

    members: list | None = option(None)
    dropout: float | None = dropout_option(None)


class EnsembleBackbone(BackboneKind):
    """Every member at the ensemble's scale, side by side; FLOPs and params are their sums.

    Args:
        kinds: The backbone kinds that can be members, by name.
    """

    name = ENSEMBLE
    options_class = EnsembleOptions

    def __init__(self, kinds: Mapping[str, BackboneKind]) -> None:
        self._kinds = dict(kinds)

    def members_of(self, name: str) -> list[str]:
        """Members of an ensemble name ``"ensemble:a+b+..."``: ``[a, b, ...]``, checked."""
        members = name.removeprefix(f"{ENSEMBLE}:").split("+")
        for member in members:
            if member not in self._kinds:
                raise ValueError(
                    f"unknown ensemble member {member!r} in {name!r}; members are "
                    f"{', '.join(sorted(self._kinds))}"
                )
        if len(set(members)) != len(members):
            raise ValueError(f"backbone {name!r} names a member twice; list each member once")
        return members

    def parse(self, raw: Mapping[str, Any], dropout: float | None = None, path: str = ROOT
              ) -> EnsembleOptions:
        """Checks the ensemble's keys, then every member's options against its kind."""
        options = super().parse(raw, dropout, path)
        members = list(DEFAULT_ENSEMBLE) if options.members is None else options.members
        if not members:
            raise ValueError(f"{path}.members: an ensemble needs at least one member; name "
                             f"some of {', '.join(sorted(self._kinds))}")
        parsed: list[tuple[str, Any]] = []
        for i, entry in enumerate(members):
            name, member_raw = self._entry(entry, f"{path}.members[{i}]")
            if name in dict(parsed):
                raise ValueError(f"{path}.members[{i}]: {name!r} is already a member; list "
                                 "each member once")
            parsed.append((name, self._kinds[name].parse(
                {} if member_raw is None else member_raw, options.dropout,
                f"{path}.members.{name}")))
        return dataclasses.replace(options, members=parsed)

    def _entry(self, entry: Any, path: str) -> tuple[str, Any]:
        """(name, raw options) of a members entry: ``"name"`` or ``{"name": options}``."""
        if isinstance(entry, Mapping) and len(entry) == 1:
            ((name, member_raw),) = entry.items()
        elif isinstance(entry, str):
            name, member_raw = entry, None
        else:
            raise ValueError(f"{path}: expected a backbone name or {{name: options}}, got "
                             f"{entry!r}")
        if name not in self._kinds:
            raise ValueError(f"{path}: unknown member {name!r}; members are "
                             f"{', '.join(sorted(self._kinds))}")
        return name, member_raw

    def build(self, input_dim: int, field_dims: Sequence[int], scale: float,
              options: EnsembleOptions) -> keras.layers.Layer:
        members = [self._kinds[name].build(input_dim, field_dims, scale, member_options)
                   for name, member_options in options.members]
        return BackboneEnsemble(members, name=self.name)

"""The backbone registry: name -> :class:`~cvr_tf.backbones.base.BackboneKind`, and the builder.

Adding a backbone is one module with its options dataclass and ``BackboneKind`` subclass, and
one line in ``MEMBERS`` below (members are what ``ensemble`` can combine: every kind but itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf.backbones.base import Backbone, BackboneKind
from cvr_tf.backbones.dcnv2 import DCNv2Backbone
from cvr_tf.backbones.dhen import DHENBackbone
from cvr_tf.backbones.ensemble import ENSEMBLE, EnsembleBackbone
from cvr_tf.backbones.masknet import MaskNetBackbone
from cvr_tf.backbones.mlp import MLPBackbone
from cvr_tf.backbones.options import ROOT

MEMBERS: dict[str, BackboneKind] = {
    "dcnv2": DCNv2Backbone(),
    "dhen": DHENBackbone(),
    "masknet": MaskNetBackbone(),
    "mlp": MLPBackbone(),
}
BACKBONES: dict[str, BackboneKind] = {**MEMBERS, ENSEMBLE: EnsembleBackbone(MEMBERS)}


def available_backbones() -> list[str]:
    """Names ``build_backbone`` accepts (``ensemble`` also as ``ensemble:a+b+...``)."""
    return sorted(BACKBONES)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown backbone {name!r}; available: {', '.join(available_backbones())} "
        "(pick ensemble members as 'ensemble:dcnv2+masknet+dhen')"
    )


def parse_backbone_options(name: str, options: Mapping[str, Any] | None = None,
                           dropout: float | None = None) -> tuple[BackboneKind, Any]:
    """The kind of backbone ``name`` and its checked options (see :func:`build_backbone`)."""
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"{ROOT}: expected a mapping of options, got {options!r}")
    raw = dict(options or {})
    if name.startswith(f"{ENSEMBLE}:"):
        ensemble = BACKBONES[ENSEMBLE]
        members = ensemble.members_of(name)
        if "members" in raw:
            raise ValueError(f"{ROOT}.members: backbone {name!r} already names the members; use "
                             f"--backbone={ENSEMBLE} with {ROOT}.members, or drop the key")
        return ensemble, ensemble.parse({"members": members, **raw}, dropout)
    if name not in BACKBONES:
        raise _unknown(name)
    return BACKBONES[name], BACKBONES[name].parse(raw, dropout)


def build_backbone(
    name: str, input_dim: int, field_dims: Sequence[int], scale: float = 1.0,
    options: Mapping[str, Any] | None = None, dropout: float | None = None,
) -> Backbone:
    """Builds the backbone ``name`` at ``scale`` for flat inputs of width ``input_dim``.

    Args:
        name: One of :func:`available_backbones`, or ``"ensemble:a+b+..."``.
        input_dim: Width D of the flat embeddings.
        field_dims: Widths of the fields concatenated in the input (summing to D).
        scale: The backbone's scale knob (see the module docstring), positive.
        options: The backbone's options (``ModelConfig.backbone_config``): key -> value of its
            kind's options dataclass; None or empty for the defaults.
        dropout: The dropout of every MLP in the backbone (training only), replacing each
            backbone's own default; None keeps the defaults. An options ``dropout`` key
            overrides it.

    Returns:
        The :class:`Backbone` with its (unbuilt) layer, output width, FLOPs and parameters.

    Raises:
        ValueError: on an unknown name, a bad option (one line with its key path), a
            non-positive scale, or ``field_dims`` not summing to ``input_dim``.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    field_dims = [int(width) for width in field_dims]
    if not field_dims or sum(field_dims) != input_dim:
        raise ValueError(
            f"field_dims {field_dims} must sum to input_dim={input_dim}; pass the widths of the "
            "fields concatenated in the flat input"
        )
    kind, parsed = parse_backbone_options(name, options, dropout)
    layer = kind.build(input_dim, field_dims, scale, parsed)
    cost = layer.cost(input_dim)
    return Backbone(
        name=name,
        scale=scale,
        layer=layer,
        output_dim=int(layer.compute_output_shape((None, input_dim))[-1]),
        flops_per_example=cost.flops,
        param_count=cost.params,
        options=parsed,
    )

"""absl flags generated from a config dataclass: one source of truth for names, defaults, help.

Each field of a frozen config dataclass becomes one flag of the same name. Its help text is the
field's ``metadata["help"]``; ``metadata["choices"]`` makes it an enum flag and
``metadata["flag"]`` renames it (a Python keyword: ``continue_training`` is ``--continue``).
A field whose type is itself a config dataclass (``TrainConfig.model``) contributes its own
fields as flags, flat (``--backbone``, not ``--model.backbone``), so the names users type stay
short.

    define_flags(TrainConfig, skip=("train_start", ...))   # at import time of the job
    config = build(TrainConfig, flags.FLAGS, train_start=...)  # in main()

Fields without a flag type of their own (dates) are ``skip``-ped and passed to :func:`build`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection
from typing import Any

from absl import flags

_DEFINERS = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
             float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def _flag_type(annotation: Any) -> type:
    """``int`` for ``int`` and ``int | None``; the dataclass itself for a nested config."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _fields(cls: type, skip: Collection[str]) -> list[tuple[dataclasses.Field, type]]:
    hints = typing.get_type_hints(cls)
    return [(field, _flag_type(hints[field.name])) for field in dataclasses.fields(cls)
            if field.name not in skip]


def flag_name(field: dataclasses.Field) -> str:
    """The flag of a config field: its name, or ``metadata["flag"]``."""
    return field.metadata.get("flag", field.name)


def define_flags(cls: type, skip: Collection[str] = (),
                 flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one flag per field of ``cls`` (recursively for nested config dataclasses).

    Raises:
      TypeError: a field has no help text or no flag type; name it in ``skip`` or fix it.
    """
    for field, kind in _fields(cls, skip):
        if dataclasses.is_dataclass(kind):
            define_flags(kind, skip, flag_values)
            continue
        if "help" not in field.metadata:
            raise TypeError(f"{cls.__name__}.{field.name} has no metadata['help']")
        name = flag_name(field)
        default = None if field.default is dataclasses.MISSING else field.default
        if "choices" in field.metadata:
            flags.DEFINE_enum(name, default, list(field.metadata["choices"]),
                              field.metadata["help"], flag_values=flag_values)
        elif kind in _DEFINERS:
            _DEFINERS[kind](name, default, field.metadata["help"], flag_values=flag_values)
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no absl flag for type {kind}; "
                            "skip it and pass it to build()")


def build(cls: type, flag_values: flags.FlagValues, **values: Any) -> Any:
    """An instance of ``cls`` from the parsed flags; ``values`` gives the skipped fields."""
    arguments = {}
    for field, kind in _fields(cls, values):
        arguments[field.name] = (build(kind, flag_values, **values)
                                 if dataclasses.is_dataclass(kind)
                                 else flag_values[flag_name(field)].value)
    return cls(**arguments, **{k: v for k, v in values.items()
                               if k in {f.name for f in dataclasses.fields(cls)}})

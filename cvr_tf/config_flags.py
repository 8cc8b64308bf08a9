"""absl flags generated from a config dataclass: one source of truth for names, defaults, help.

Each field of a frozen config dataclass becomes one flag of the same name. Its help text is the
field's ``metadata["help"]``; ``metadata["choices"]`` makes it an enum flag and
``metadata["flag"]`` renames it (a Python keyword: ``continue_training`` is ``--continue``).
``metadata["parse"]`` makes it a string flag whose value is ``parse(text)`` (a file path read
into a mapping: ``--backbone_config=FILE``); unset or empty, the field keeps its default, and a
``ValueError`` from ``parse`` becomes a one-line ``app.UsageError`` naming the flag. A
``tuple[int, ...]`` (or ``float``, ``str``) field is a comma-separated list flag, empty for ``()``
(``--allowed_batch_sizes=256,512``).
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

from absl import app, flags

_DEFINERS = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
             float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def _flag_type(annotation: Any) -> type:
    """``int`` for ``int`` and ``int | None``; the dataclass itself for a nested config."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _item_type(kind: Any) -> type | None:
    """``int`` for ``tuple[int, ...]`` (a list flag of ints; also float, str), else None."""
    arguments = typing.get_args(kind)
    if (typing.get_origin(kind) is tuple and len(arguments) == 2 and arguments[1] is Ellipsis
            and arguments[0] in (int, float, str)):
        return arguments[0]
    return None


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
        if "parse" in field.metadata:
            flags.DEFINE_string(name, None, field.metadata["help"], flag_values=flag_values)
        elif _item_type(kind) is not None:
            flags.DEFINE_list(name, [str(v) for v in default or ()], field.metadata["help"],
                              flag_values=flag_values)
        elif "choices" in field.metadata:
            flags.DEFINE_enum(name, default, list(field.metadata["choices"]),
                              field.metadata["help"], flag_values=flag_values)
        elif kind in _DEFINERS:
            _DEFINERS[kind](name, default, field.metadata["help"], flag_values=flag_values)
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no absl flag for type {kind}; "
                            "skip it and pass it to build()")


def _parsed(field: dataclasses.Field, text: str) -> Any:
    """``metadata["parse"](text)``; a ValueError becomes a UsageError naming the flag."""
    try:
        return field.metadata["parse"](text)
    except ValueError as error:
        raise app.UsageError(f"--{flag_name(field)}={text}: {error}") from None


def _items(field: dataclasses.Field, item: type, values: list[str]) -> tuple:
    """A list flag's values as a tuple of ``item``; a bad one is a UsageError naming the flag."""
    try:
        return tuple(item(value) for value in values)
    except ValueError:
        raise app.UsageError(f"--{flag_name(field)}={','.join(values)}: every item must be "
                             f"a {item.__name__}") from None


def build(cls: type, flag_values: flags.FlagValues, **values: Any) -> Any:
    """An instance of ``cls`` from the parsed flags; ``values`` gives the skipped fields.

    Raises:
      app.UsageError: a ``parse`` field's flag names a file its ``parse`` rejects.
    """
    arguments = {}
    for field, kind in _fields(cls, values):
        if dataclasses.is_dataclass(kind):
            arguments[field.name] = build(kind, flag_values, **values)
        elif (item := _item_type(kind)) is not None:
            arguments[field.name] = _items(field, item, flag_values[flag_name(field)].value)
        elif "parse" not in field.metadata:
            arguments[field.name] = flag_values[flag_name(field)].value
        elif text := flag_values[flag_name(field)].value:
            arguments[field.name] = _parsed(field, text)
    return cls(**arguments, **{k: v for k, v in values.items()
                               if k in {f.name for f in dataclasses.fields(cls)}})

"""Backbone options: a frozen dataclass per backbone, checked against a user's mapping.

Users give options as a mapping (``ModelConfig.backbone_config``, read from the
``--backbone_config`` JSON/YAML file). :func:`parse_options` turns it into the backbone's options
dataclass, checking every key and value against the dataclass's type hints and field metadata:

* an unknown key fails naming the key and the valid ones;
* a value of the wrong type, out of range, or not among the field's ``choices`` fails naming
  its key path (``backbone_config.cross: 'foo' is not one of full, low_rank, mixture``);
* checks across fields raise :class:`OptionError` from the dataclass's ``__post_init__`` and get
  the same key path.

Supported field types: ``bool``, ``int``, ``float`` (ints accepted), ``str``, ``tuple[X, ...]``
(from a non-empty list), ``X | None``, and ``list`` and ``dict`` (items checked by their owner).
Field metadata: ``choices`` (allowed strings, for ``str`` and ``tuple[str, ...]``), ``minimum``
and ``above`` (inclusive and exclusive lower bounds of numbers, element-wise for tuples) and
``below`` (exclusive upper bound).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml

ROOT = "backbone_config"


class OptionError(ValueError):
    """A bad option value, raised by an options dataclass; ``key`` is the offending field."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def option(default: Any, **metadata: Any) -> Any:
    """A field of an options dataclass with its checks (``choices``, ``minimum``, ``above``,
    ``below``)."""
    return dataclasses.field(default=default, metadata=metadata)


def dropout_option(default: float | None = 0.0) -> Any:
    """The ``dropout`` field: a rate in [0, 1), ``default`` being the backbone's own (tuned)
    rate; an explicit ``ModelConfig.dropout`` replaces the default."""
    return option(default, minimum=0.0, below=1.0)


def widths_option(default: tuple[int, ...] | None) -> Any:
    """A ``tuple[int, ...]`` field of layer widths, each at least 1."""
    return option(default, minimum=1)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_number(value: int | float, path: str, metadata: Mapping[str, Any]) -> None:
    if "minimum" in metadata and value < metadata["minimum"]:
        raise ValueError(f"{path}: must be >= {metadata['minimum']}, got {value!r}")
    if "above" in metadata and value <= metadata["above"]:
        raise ValueError(f"{path}: must be > {metadata['above']}, got {value!r}")
    if "below" in metadata and value >= metadata["below"]:
        raise ValueError(f"{path}: must be < {metadata['below']}, got {value!r}")


def _check(annotation: Any, value: Any, path: str, metadata: Mapping[str, Any]) -> Any:
    """``value`` as ``annotation`` (tuples from lists), or a ValueError naming ``path``."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        if value is None and type(None) in arguments:
            return None
        (member,) = [a for a in arguments if a is not type(None)]
        return _check(member, value, path, metadata)
    if origin is tuple:
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{path}: expected a non-empty list, got {value!r}")
        return tuple(_check(arguments[0], item, f"{path}[{i}]", metadata)
                     for i, item in enumerate(value))
    if annotation is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{path}: expected a list, got {value!r} ({_type_name(value)})")
        return list(value)
    if annotation is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {value!r} ({_type_name(value)})")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true or false, got {value!r}")
        return value
    if annotation in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                annotation is int and not isinstance(value, int)):
            kind = "an integer" if annotation is int else "a number"
            raise ValueError(f"{path}: expected {kind}, got {value!r} ({_type_name(value)})")
        _check_number(value, path, metadata)
        return annotation(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {value!r} ({_type_name(value)})")
        choices = metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"{path}: {value!r} is not one of {', '.join(choices)}")
        return value
    raise TypeError(f"{path}: options of type {annotation} are not supported")


def parse_options(cls: type, raw: Mapping[str, Any], path: str = ROOT) -> Any:
    """The options dataclass ``cls`` from the mapping ``raw``, every key and value checked.

    Args:
        cls: A frozen options dataclass (see the module docstring for its field types).
        raw: Key -> value, as read from JSON/YAML; missing keys take the field defaults.
        path: The key path of ``raw`` in error messages, e.g. ``backbone_config.members.dcnv2``.

    Raises:
        ValueError: one line naming the key path, the bad value and what is allowed.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping of options, got {raw!r} ({_type_name(raw)})")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ValueError(f"{path}: unknown option {key!r}; valid options: "
                             f"{', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {key: _check(hints[key], value, f"{path}.{key}", fields[key].metadata)
              for key, value in raw.items()}
    try:
        return cls(**values)
    except OptionError as error:
        raise ValueError(f"{path}.{error.key}: {error.message}") from None


def json_form(options: Any) -> Any:
    """A mapping of options as JSON gives it back (lists for tuples, string keys), else as is.

    ``ModelConfig`` keeps ``backbone_config`` in this form, so that the config it was trained
    with equals the one ``model_config.json`` returns (resuming compares the two). Values JSON
    has no type for (a YAML date) become strings, which the option checks then reject by name.
    """
    if not isinstance(options, Mapping):
        return options
    return json.loads(json.dumps(dict(options), default=str))


def read_options_file(file_path: str) -> dict[str, Any]:
    """The options mapping in a JSON (``.json``) or YAML (any other suffix) file.

    Raises:
        ValueError: the file cannot be read, does not parse, or holds no mapping; one line.
    """
    try:
        text = pathlib.Path(file_path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read {file_path!r}: {error.strerror}") from None
    is_json = file_path.endswith(".json")
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{file_path} is not valid {'JSON' if is_json else 'YAML'}: "
                         f"{detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{file_path} must hold a mapping of backbone options, got "
                         f"{_type_name(data)}")
    return data

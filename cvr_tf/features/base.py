"""The base of every feature kind: the fields all kinds share, type checks, the kind registry.

A feature kind is a subclass of :class:`Feature` naming its kind in ``KIND``; once registered
(:func:`register_kinds`, one line in ``cvr_tf/features/__init__.py``), ``Feature(name=...,
kind="text", ...)`` (as :func:`cvr_tf.features.spec_from_dict` calls it for each JSON entry)
builds a ``TextFeature``. A kind declares its own fields as dataclass fields and owns its
behaviour by overriding the hooks below (validation, table rows, lookup and field computation,
vocabulary tokens, warmup values, statistics resolution), so a new kind is one module plus its
import in ``cvr_tf/features/__init__.py``.

Field types are checked from the dataclass annotations (one source of truth): a JSON value of
the wrong type (``"32"``, ``8.5`` for an integer, ``true`` for a number) is refused, never
coerced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn

from absl import logging

DTYPES = ("string", "int64", "float32")

_REGISTRY: dict[str, type[Feature]] = {}
# Fields of the one class every kind shared before the kinds were split. On a kind without them
# they never had an effect (the old validation let them through), so a spec or a saved model
# holding them still loads: they are dropped with a warning. The vocabulary sources were refused
# on kinds without a vocabulary unless null, and still are.
_OLD_SHARED_FIELDS = ("combiner", "max_tokens", "boundaries", "transform", "mean", "std")
_OLD_VOCABULARY_FIELDS = ("vocabulary_size", "vocabulary_file", "hash_buckets")


class FeatureSpecError(ValueError):
    """An invalid feature spec; the message names the feature and the fix."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Annotation (without "| None") -> (check, what the error asks for).
_TYPE_CHECKS = {
    "int": (_is_int, "an integer"),
    "float": (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "a boolean (true or false)"),
}


def kind_class(kind: Any, name: Any = "?") -> type[Feature]:
    """The registered class of ``kind``; raises naming the feature and the known kinds."""
    if not isinstance(kind, str):
        raise FeatureSpecError(f"feature {name!r}: kind must be a string, got {kind!r} "
                               f"({type(kind).__name__}); use one of {', '.join(_REGISTRY)}")
    if kind not in _REGISTRY:
        raise FeatureSpecError(f"feature {name!r}: unknown kind {kind!r}; use one of "
                               f"{', '.join(_REGISTRY)}")
    return _REGISTRY[kind]


def register_kinds(*classes: type[Feature]) -> None:
    """Registers feature classes under their ``KIND`` (in this order, the order messages list)."""
    for cls in classes:
        _REGISTRY[cls.KIND] = cls


def registered_kinds() -> tuple[str, ...]:
    """Kind names, in registration order."""
    return tuple(_REGISTRY)


@dataclasses.dataclass(frozen=True)
class Feature:
    """One field of the model input, read from one log column (fields every kind has).

    ``Feature(name=..., kind=..., **fields)`` builds the class registered for ``kind``.

    Attributes:
      name: unique feature name (also the embedding table name unless shared).
      kind: the registered kind name (``categorical``, ``text``, ``numeric``).
      column: log / tf.Example column it reads (default: ``name``).
      dtype: column type in the tf.Example: ``string``, ``int64`` or ``float32``.
      embedding_dim: width of the field's embedding (when it has a table).
      shared_embedding: name of a table shared with other features.
      min_value: smallest valid value; rows below go to the pipeline's dead-letter output.
      max_value: largest valid value.
      train_only: present in training logs only; feeds the bias tower, never the served model.
      default_value: what a null (or NaN) in the column stands for: the pipeline writes it
        instead of dead-lettering the row (a missing title, brand or price is common in real
        logs). A string for a string column, a number for a numeric one (an integer for
        int64), within ``min_value``/``max_value``; features reading one column agree on it.
        Serving callers send it for a missing value: a request holds every input.
    """

    KIND: ClassVar[str] = ""

    name: str
    kind: str
    column: str = ""
    dtype: str = "string"
    embedding_dim: int = 16
    shared_embedding: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    train_only: bool = False
    default_value: str | float | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Feature:
        # Dispatch on the kind only from the base class: a registered class builds itself (and
        # pickling / copying, which call __new__ without arguments, keep the class).
        if cls is Feature:
            kind = kwargs.get("kind", args[1] if len(args) > 1 else None)
            if isinstance(kind, str) and kind in _REGISTRY:
                cls = _REGISTRY[kind]
        return object.__new__(cls)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise FeatureSpecError(f"every feature needs a non-empty string 'name', got "
                                   f"{self.name!r}")
        if not self.column:
            object.__setattr__(self, "column", self.name)
        self._check_types()
        kind_class(self.kind, self.name)
        if self.kind != self.KIND:
            self.fail(f"a {type(self).__name__} has kind {self.KIND!r}, not {self.kind!r}")
        if self.dtype not in DTYPES:
            self.fail(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.embedding_dim <= 0:
            self.fail(f"embedding_dim must be positive, got {self.embedding_dim}")
        if self.default_value is not None:
            self._check_default()
        self.validate()

    def _check_default(self) -> None:
        value, dtype = self.default_value, self.dtype
        fits = {"string": isinstance(value, str),
                "int64": _is_int(value),
                "float32": _is_number(value) and math.isfinite(value)}[dtype]
        if not fits:
            wanted = {"string": "a string", "int64": "an integer",
                      "float32": "a finite number"}[dtype]
            self.fail(f"default_value must be {wanted} for the {dtype} column {self.column!r}, "
                      f"got {value!r}")
        if dtype != "string" and not ((self.min_value is None or value >= self.min_value)
                                      and (self.max_value is None or value <= self.max_value)):
            self.fail(f"default_value {value} is outside [min_value, max_value] = "
                      f"[{self.min_value}, {self.max_value}]; the filled rows would be rejected")

    def fail(self, message: str) -> NoReturn:
        """Raises a :class:`FeatureSpecError` naming this feature."""
        raise FeatureSpecError(f"feature {self.name!r}: {message}")

    def _check_types(self) -> None:
        for field in dataclasses.fields(self):
            annotation = str(field.type)
            optional = annotation.endswith(" | None")
            check = _TYPE_CHECKS.get(annotation.removesuffix(" | None"))
            value = getattr(self, field.name)
            if check is None or (optional and value is None) or check[0](value):
                continue
            self.fail(f"{field.name} must be {check[1]}, got {value!r} ({type(value).__name__}); "
                      f"write it as {check[1]} in JSON")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Feature:
        """The feature of a dict (``name`` and ``kind`` present), as specs and layer configs
        hold them; unknown fields are refused naming the kind's fields."""
        name, kind = raw["name"], raw["kind"]
        target = kind_class(kind, name)
        fields = set(target.field_names())
        values = dict(raw)
        for field in [f for f in values if f not in fields]:
            if field in _OLD_SHARED_FIELDS or (field in _OLD_VOCABULARY_FIELDS
                                               and values[field] is None):
                logging.warning("feature %r: ignoring %s, which has no effect on a %s feature; "
                                "drop it from the spec", name, field, kind)
                del values[field]
        unknown = sorted(set(values) - fields)
        if unknown:
            raise FeatureSpecError(
                f"feature {name!r}: unknown field(s) {', '.join(unknown)} for a {kind} "
                f"feature; its fields are {', '.join(sorted(fields))}")
        return target(**values)

    # ------------------------------------------------------------------------------------------
    # Hooks a kind overrides
    def validate(self) -> None:
        """Kind-specific checks; raise through :meth:`fail`."""

    @property
    def input_column(self) -> str:
        """The column the model reads: ``column``, or the column the pipeline derives from it
        (``request_relative``)."""
        return self.column

    @property
    def input_dtype(self) -> str:
        """dtype of :attr:`input_column`."""
        return self.dtype

    @property
    def table(self) -> str | None:
        """Name of the embedding table this feature looks up (None when it has none)."""
        return self.shared_embedding or self.name

    @property
    def uses_vocabulary(self) -> bool:
        """Whether the table's rows are a vocabulary's tokens."""
        return False

    @property
    def computes_vocabulary(self) -> bool:
        """Whether the pipeline counts this feature's tokens into its table's vocabulary."""
        return False

    @property
    def field_dim(self) -> int:
        """Width of this feature's slice of the flat embedding vector."""
        return 1 if self.table is None else self.embedding_dim

    def table_rows(self, vocabulary: Sequence[str] | None = None) -> int:
        """Rows of this feature's table (see each kind)."""
        raise NotImplementedError(f"{type(self).__name__} has no table")

    def table_signature(self) -> tuple:
        """What features sharing one table must agree on."""
        return (self.embedding_dim, self.dtype, self.train_only)

    def scaled(self, embedding_dim_scale: float, vocab_scale: float) -> Feature:
        """The feature with its embedding dim (and, for lookups, its sizes) scaled."""
        return dataclasses.replace(self, embedding_dim=scale_size(self.embedding_dim,
                                                                   embedding_dim_scale))

    def with_base_dir(self, base_dir: str) -> Feature:
        """The feature with relative paths it names made absolute against ``base_dir``."""
        return self

    def make_lookup(self, vocabulary: Sequence[str] | None) -> Any:
        """The Keras layer mapping raw values to table rows (None when the kind needs none)."""
        return None

    def embed(self, x: Any, table: Any, lookup: Any) -> Any:
        """The field ``[batch, field_dim]`` of raw values ``x`` ``[batch]`` (see each kind).

        Every registered kind overrides it (a test builds every kind's field).
        """
        raise NotImplementedError(f"feature kind {self.KIND!r} ({type(self).__name__}) does not "
                                  "implement embed")

    def vocabulary_tokens(self, values: Any) -> Any:
        """The vocabulary tokens an Arrow column contributes (vocabulary kinds only)."""
        raise NotImplementedError(f"{type(self).__name__} {self.name!r} has no vocabulary")

    def warmup_values(self, rng: Any, tokens: Sequence[str], rows: int) -> Any:
        """Plausible raw serving values, a numpy array ``[rows]``; every registered kind
        overrides it."""
        raise NotImplementedError(f"feature kind {self.KIND!r} ({type(self).__name__}) does not "
                                  "implement warmup_values")

    @property
    def computes_statistics(self) -> bool:
        """Whether the pipeline describes this column (:mod:`cvr_tf.statistics`)."""
        return False

    @property
    def needs_statistics(self) -> bool:
        """Whether numbers of the spec come from a training window (``auto``, ``quantiles:N``)."""
        return False

    def resolved(self, statistics: Any) -> Feature:
        """The feature with window statistics (of its column) filled in."""
        return self

    def schema_domain(self, column: Any) -> None:
        """Adds this feature's value domain to its column's tensorflow-metadata Feature proto."""

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Non-default fields, the form :func:`cvr_tf.features.spec_from_dict` reads back."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in out or (field.name == "column" and value == self.name):
                continue
            if value != field.default:
                out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


def scale_size(value: int | None, factor: float) -> int | None:
    """``round(value * factor)``, at least 1 (None stays None)."""
    return None if value is None else max(1, round(value * factor))


__all__ = ["DTYPES", "Feature", "FeatureSpecError", "kind_class", "register_kinds",
           "registered_kinds", "scale_size"]

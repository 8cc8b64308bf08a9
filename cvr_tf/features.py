"""Declarative feature spec: the contract between the logs, the pipeline, the model and serving.

A spec names the log columns a model reads and how each becomes an embedding field. It is loaded
from JSON/YAML (:func:`load_spec`) or built in Python (:class:`FeatureSpec`), and produces:

* the ``tf.io`` parsing spec of the pipeline's tf.Examples (:meth:`FeatureSpec.parsing_spec`),
* Keras Inputs for the raw columns (:meth:`FeatureSpec.keras_inputs`),
* the embedding layer (:meth:`FeatureSpec.embedding_layer`, see :mod:`cvr_tf.embedding`),
* a tensorflow-metadata Schema (:meth:`FeatureSpec.tfmd_schema`),
* parameter counts (:meth:`FeatureSpec.embedding_parameter_count`).

Feature kinds (every feature is one *field* of the flat embedding vector):

``categorical``
    A string or int64 column looked up in a vocabulary (``vocabulary_size``: the top-K tokens by
    frequency that the pipeline computes, or an explicit ``vocabulary_file``) with one
    out-of-vocabulary row, or hashed into ``hash_buckets`` rows. Field width ``embedding_dim``.
``text``
    A free-text string column (e.g. the query), split by :func:`cvr_tf.tokenizer.tokenize`
    (Unicode lower-casing, punctuation dropped, one token per CJK character) into at most
    ``max_tokens`` tokens; token embeddings are combined by ``combiner`` (mean, sum, or sqrtn:
    sum / sqrt(n)). Empty text gives a zero vector. Field width ``embedding_dim``.
``numeric``
    A float/int column. With ``boundaries`` it is bucketized into ``len(boundaries) + 1`` rows of an
    embedding (field width ``embedding_dim``); without, it is normalized,
    ``(transform(x) - mean) / std`` with ``transform`` identity or log1p (field width 1).

Features sharing ``shared_embedding: NAME`` look up one table (and one vocabulary) called NAME;
they must agree on the table's shape. Features marked ``train_only`` (e.g. ``position``) exist in
the logs but not at serving time: the model feeds them to a training-only bias tower.

Scaling knobs (:meth:`FeatureSpec.scaled`): ``embedding_dim_scale`` multiplies every embedding
dim, ``vocab_scale`` every vocabulary cap and hash-bucket count (rounded, at least 1). Embedding
parameters therefore grow linearly in each knob:
``params = sum_tables rows(vocab_scale) * dim(embedding_dim_scale)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

KINDS = ("categorical", "text", "numeric")
DTYPES = ("string", "int64", "float32")
COMBINERS = ("mean", "sum", "sqrtn")
TRANSFORMS = ("identity", "log1p")
# The pipeline writes at most this many times `vocabulary_size` tokens per vocabulary, so that a
# model trained with vocab_scale up to this factor finds the tokens it needs.
MAX_VOCAB_SCALE = 16


class FeatureSpecError(ValueError):
    """An invalid feature spec; the message names the feature and the fix."""


@dataclasses.dataclass(frozen=True)
class Feature:
    """One field of the model input, read from one log column.

    Attributes:
      name: unique feature name (also the embedding table name unless shared).
      kind: ``categorical``, ``text`` or ``numeric``.
      column: log / tf.Example column it reads (default: ``name``).
      dtype: column type in the tf.Example: ``string``, ``int64`` or ``float32``.
      embedding_dim: width of the field's embedding (not used by normalized numerics).
      vocabulary_size: top-K cap of a pipeline-computed vocabulary (categorical/text).
      vocabulary_file: explicit vocabulary file, one token per line, most frequent first.
      hash_buckets: hash into this many rows instead of a vocabulary.
      shared_embedding: name of a table shared with other features.
      combiner: how ``text`` token embeddings are pooled.
      max_tokens: tokens kept per ``text`` value.
      boundaries: bucket boundaries of a bucketized ``numeric`` feature.
      transform: ``identity`` or ``log1p`` before normalization (``numeric``).
      mean: subtracted after the transform (``numeric``).
      std: divides after centering (``numeric``).
      min_value: smallest valid value; rows below go to the pipeline's dead-letter output.
      max_value: largest valid value.
      train_only: present in training logs only; feeds the bias tower, never the served model.
    """

    name: str
    kind: str
    column: str = ""
    dtype: str = "string"
    embedding_dim: int = 16
    vocabulary_size: int | None = None
    vocabulary_file: str | None = None
    hash_buckets: int | None = None
    shared_embedding: str | None = None
    combiner: str = "mean"
    max_tokens: int = 8
    boundaries: tuple[float, ...] | None = None
    transform: str = "identity"
    mean: float = 0.0
    std: float = 1.0
    min_value: float | None = None
    max_value: float | None = None
    train_only: bool = False

    def __post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", self.name)
        _validate_feature(self)
        if self.boundaries is not None:
            object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))

    @property
    def table(self) -> str | None:
        """Name of the embedding table this feature looks up (None for normalized numerics)."""
        if self.kind == "numeric" and self.boundaries is None:
            return None
        return self.shared_embedding or self.name

    @property
    def uses_vocabulary(self) -> bool:
        return self.kind in ("categorical", "text") and self.hash_buckets is None

    @property
    def field_dim(self) -> int:
        """Width of this feature's slice of the flat embedding vector."""
        return 1 if self.table is None else self.embedding_dim

    def table_rows(self, vocabulary: Sequence[str] | None = None) -> int:
        """Rows of this feature's table, the one place they are counted.

        ``hash_buckets`` rows, ``len(boundaries) + 1`` buckets, or a vocabulary's tokens plus one
        out-of-vocabulary row (the loaded ``vocabulary`` if given, else the ``vocabulary_size``
        cap).
        """
        if self.hash_buckets is not None:
            return self.hash_buckets
        if self.boundaries is not None:
            return len(self.boundaries) + 1
        if vocabulary is not None:
            return len(vocabulary) + 1
        if self.vocabulary_size is None:
            raise FeatureSpecError(
                f"feature {self.name!r}: the size of vocabulary_file tables is known only once "
                "loaded; pass vocabularies=spec.load_vocabularies(...)")
        return self.vocabulary_size + 1

    def to_dict(self) -> dict[str, Any]:
        """Non-default fields, the form :func:`spec_from_dict` reads back."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        defaults = Feature.__dataclass_fields__
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in out or (field.name == "column" and value == self.name):
                continue
            if value != defaults[field.name].default:
                out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


_INT_FIELDS = ("embedding_dim", "vocabulary_size", "hash_buckets", "max_tokens")
_NUMBER_FIELDS = ("mean", "std", "min_value", "max_value")
_STRING_FIELDS = ("kind", "column", "dtype", "vocabulary_file", "shared_embedding", "combiner",
                  "transform")


def _check_field_types(f: Feature) -> None:
    """Refuses a field of the wrong JSON type (``"32"``, ``8.5``, ``true``), never coerces it."""
    def fail(field: str, expected: str) -> None:
        value = getattr(f, field)
        raise FeatureSpecError(f"feature {f.name!r}: {field} must be {expected}, got {value!r} "
                               f"({type(value).__name__}); write it as a bare JSON {expected}")

    for field in _INT_FIELDS:
        value = getattr(f, field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            fail(field, "an integer")
    for field in _NUMBER_FIELDS:
        value = getattr(f, field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            fail(field, "a number")
    for field in _STRING_FIELDS:
        value = getattr(f, field)
        if value is not None and not isinstance(value, str):
            fail(field, "a string")
    if not isinstance(f.train_only, bool):
        fail("train_only", "a boolean (true or false)")
    if f.boundaries is not None and (
            isinstance(f.boundaries, str | bytes) or not isinstance(f.boundaries, Sequence)
            or any(isinstance(b, bool) or not isinstance(b, int | float) for b in f.boundaries)):
        fail("boundaries", "a list of numbers")


def _validate_feature(f: Feature) -> None:
    def fail(message: str) -> None:
        raise FeatureSpecError(f"feature {f.name!r}: {message}")

    if not f.name or not isinstance(f.name, str):
        raise FeatureSpecError(f"every feature needs a non-empty string 'name', got {f.name!r}")
    _check_field_types(f)
    if f.kind not in KINDS:
        fail(f"unknown kind {f.kind!r}; use one of {', '.join(KINDS)}")
    if f.dtype not in DTYPES:
        fail(f"unknown dtype {f.dtype!r}; use one of {', '.join(DTYPES)}")
    if f.embedding_dim <= 0:
        fail(f"embedding_dim must be positive, got {f.embedding_dim}")
    if f.kind in ("categorical", "text"):
        sources = [f.vocabulary_size is not None, f.vocabulary_file is not None,
                   f.hash_buckets is not None]
        if f.kind == "text" and f.dtype != "string":
            fail(f"text features read string columns, got dtype {f.dtype!r}")
        if f.dtype == "float32":
            fail("categorical features read string or int64 columns; declare float columns numeric")
        if sum(sources) == 0:
            fail("needs one of vocabulary_size (computed by the pipeline), vocabulary_file or "
                 "hash_buckets")
        if f.hash_buckets is not None and sum(sources) > 1:
            fail("hash_buckets excludes vocabulary_size/vocabulary_file; pick one")
        for knob in ("vocabulary_size", "hash_buckets"):
            value = getattr(f, knob)
            if value is not None and value <= 0:
                fail(f"{knob} must be positive, got {value}")
        if f.combiner not in COMBINERS:
            fail(f"unknown combiner {f.combiner!r}; use one of {', '.join(COMBINERS)}")
        if f.max_tokens <= 0:
            fail(f"max_tokens must be positive, got {f.max_tokens}")
    else:
        if f.dtype == "string":
            fail("numeric features read int64 or float32 columns, got dtype 'string'")
        if f.shared_embedding and f.boundaries is None:
            fail("only bucketized numerics (with boundaries) have an embedding to share")
        if f.transform not in TRANSFORMS:
            fail(f"unknown transform {f.transform!r}; use one of {', '.join(TRANSFORMS)}")
        if not f.std > 0:
            fail(f"std must be positive, got {f.std}")
        if f.boundaries is not None:
            if not f.boundaries or list(f.boundaries) != sorted(set(f.boundaries)):
                fail("boundaries must be non-empty and strictly increasing, "
                     f"got {list(f.boundaries)}")
        for knob in ("vocabulary_size", "vocabulary_file", "hash_buckets"):
            if getattr(f, knob) is not None:
                fail(f"{knob} applies to categorical/text features, not numeric")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """All model features plus the label, the request key and an optional weight column.

    Attributes:
      features: the model's fields, in the order of the flat embedding vector.
      label: int64 0/1 label column (``converted``).
      group_key: string column grouping the candidates of one request (``request_id``).
      weight: optional float32 example-weight column.
      base_dir: directory relative ``vocabulary_file`` paths resolve against.
    """

    features: tuple[Feature, ...]
    label: str = "converted"
    group_key: str = "request_id"
    weight: str | None = None
    base_dir: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        if not self.features:
            raise FeatureSpecError("a feature spec needs at least one feature")
        seen: set[str] = set()
        for f in self.features:
            if f.name in seen:
                raise FeatureSpecError(f"duplicate feature name {f.name!r}; names must be unique")
            seen.add(f.name)
        reserved = {self.label, self.group_key} | ({self.weight} if self.weight else set())
        for f in self.features:
            if f.column in reserved:
                raise FeatureSpecError(
                    f"feature {f.name!r} reads column {f.column!r}, which is the label, group key "
                    "or weight; models must not see them as inputs")
        self._check_column_dtypes()
        self._check_shared_tables()
        if not self.serving_features:
            raise FeatureSpecError(
                "every feature is train_only; the served model needs at least one")

    def _check_column_dtypes(self) -> None:
        dtypes: dict[str, tuple[str, str]] = {}
        for f in self.features:
            other = dtypes.setdefault(f.column, (f.dtype, f.name))
            if other[0] != f.dtype:
                raise FeatureSpecError(
                    f"feature {f.name!r} reads column {f.column!r} as {f.dtype} but feature "
                    f"{other[1]!r} reads it as {other[0]}; one column has one dtype")

    def _check_shared_tables(self) -> None:
        tables: dict[str, Feature] = {}
        for f in self.features:
            if f.table is None:
                continue
            first = tables.setdefault(f.table, f)
            shape = (f.embedding_dim, f.vocabulary_size, f.vocabulary_file, f.hash_buckets,
                     f.boundaries, f.dtype, f.train_only)
            first_shape = (first.embedding_dim, first.vocabulary_size, first.vocabulary_file,
                           first.hash_buckets, first.boundaries, first.dtype, first.train_only)
            if shape != first_shape:
                raise FeatureSpecError(
                    f"features {first.name!r} and {f.name!r} share embedding table {f.table!r} but "
                    "differ in embedding_dim, vocabulary, hash_buckets, boundaries, dtype or "
                    "train_only; make them equal or use separate tables")

    # ----------------------------------------------------------------------------------------
    # Views
    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def serving_features(self) -> tuple[Feature, ...]:
        """Features the served model reads (everything not ``train_only``)."""
        return tuple(f for f in self.features if not f.train_only)

    @property
    def train_only_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.train_only)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r} in the spec; features are {', '.join(self.names)}")

    def column_dtypes(self, train_only: bool = True) -> dict[str, str]:
        """Raw input column -> dtype of the model features (serving columns if not train_only)."""
        features = self.features if train_only else self.serving_features
        return {f.column: f.dtype for f in features}

    def log_columns(self) -> dict[str, str]:
        """Every column the pipeline writes to tf.Examples -> dtype (features, key, label...)."""
        columns = {self.group_key: "string", **self.column_dtypes(), self.label: "int64"}
        if self.weight:
            columns[self.weight] = "float32"
        return columns

    def tables(self, features: Iterable[Feature] | None = None) -> dict[str, Feature]:
        """Embedding table name -> the first feature that defines it."""
        out: dict[str, Feature] = {}
        for f in self.features if features is None else features:
            if f.table is not None:
                out.setdefault(f.table, f)
        return out

    def vocabulary_tables(self) -> dict[str, list[Feature]]:
        """Tables whose vocabulary the pipeline computes -> the features (columns) feeding it."""
        out: dict[str, list[Feature]] = {}
        for f in self.features:
            if f.uses_vocabulary and f.vocabulary_file is None:
                out.setdefault(f.table, []).append(f)
        return out

    def field_dims(self, train_only: bool = False) -> list[int]:
        """Widths of the fields of the flat embedding vector, in order."""
        features = self.train_only_features if train_only else self.serving_features
        return [f.field_dim for f in features]

    # ----------------------------------------------------------------------------------------
    # Scaling
    def scaled(self, embedding_dim_scale: float = 1.0, vocab_scale: float = 1.0) -> FeatureSpec:
        """The spec with every embedding dim and every vocabulary/hash size multiplied."""
        for knob, value in (("embedding_dim_scale", embedding_dim_scale),
                            ("vocab_scale", vocab_scale)):
            if not value > 0:
                raise FeatureSpecError(f"{knob} must be positive, got {value}")
        if vocab_scale > MAX_VOCAB_SCALE:
            raise FeatureSpecError(
                f"vocab_scale {vocab_scale} exceeds {MAX_VOCAB_SCALE}, the most the pipeline's "
                "vocabularies support; use hash_buckets for larger tables")

        def scale(value: int | None, factor: float) -> int | None:
            return None if value is None else max(1, round(value * factor))

        features = []
        for f in self.features:
            changes: dict[str, Any] = {"embedding_dim": scale(f.embedding_dim, embedding_dim_scale)}
            if f.kind != "numeric":
                changes["vocabulary_size"] = scale(f.vocabulary_size, vocab_scale)
                changes["hash_buckets"] = scale(f.hash_buckets, vocab_scale)
            features.append(dataclasses.replace(f, **changes))
        return dataclasses.replace(self, features=tuple(features))

    # ----------------------------------------------------------------------------------------
    # TensorFlow artefacts
    def parsing_spec(self, train_only: bool = True, label: bool = True) -> dict[str, Any]:
        """``tf.io.parse_example`` spec: one scalar FixedLenFeature per column."""
        from cvr_tf.compat import tf

        tf_dtypes = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
        columns = dict(self.column_dtypes(train_only=train_only))
        if label:
            columns[self.group_key] = "string"
            columns[self.label] = "int64"
            if self.weight:
                columns[self.weight] = "float32"
        return {c: tf.io.FixedLenFeature([], tf_dtypes[d]) for c, d in columns.items()}

    def keras_inputs(self, train_only: bool = False) -> dict[str, Any]:
        """One scalar ``keras.Input`` per raw column the (served, or training) model reads."""
        from cvr_tf.compat import keras

        return {c: keras.Input(shape=(), dtype=d, name=c)
                for c, d in self.column_dtypes(train_only=train_only).items()}

    def embedding_layer(self, vocabularies: Mapping[str, Sequence[str]] | None = None,
                        train_only: bool = False, name: str | None = None):
        """The Keras layer mapping raw columns to ``[batch, sum(field_dims)]``.

        Args:
          vocabularies: table -> tokens, from :meth:`load_vocabularies`.
          train_only: build the training-only features' layer instead of the serving one.
          name: layer name.
        """
        from cvr_tf.embedding import FeatureEmbedding

        features = self.train_only_features if train_only else self.serving_features
        vocabularies = dict(vocabularies or {})
        needed = {f.table for f in features if f.uses_vocabulary}
        missing = sorted(needed - set(vocabularies))
        if missing:
            raise FeatureSpecError(
                f"no vocabulary given for table(s) {', '.join(missing)}; load them with "
                "spec.load_vocabularies(<pipeline output>/vocab/<window>)")
        return FeatureEmbedding(
            features=[f.to_dict() for f in features],
            vocabularies={t: list(vocabularies[t]) for t in sorted(needed)},
            name=name or ("train_only_embedding" if train_only else "feature_embedding"))

    def tfmd_schema(self):
        """A tensorflow-metadata Schema of the pipeline's tf.Examples."""
        from tensorflow_metadata.proto.v0 import schema_pb2

        types = {"string": schema_pb2.BYTES, "int64": schema_pb2.INT, "float32": schema_pb2.FLOAT}
        schema = schema_pb2.Schema()
        for column, dtype in self.log_columns().items():
            feature = schema.feature.add(name=column, type=types[dtype])
            feature.presence.min_fraction = 1.0
            feature.presence.min_count = 1
            feature.shape.dim.add(size=1)
        for f in self.features:
            if f.kind == "numeric" and (f.min_value is not None or f.max_value is not None):
                column = next(c for c in schema.feature if c.name == f.column)
                domain = column.float_domain if f.dtype == "float32" else column.int_domain
                if f.min_value is not None:
                    domain.min = f.min_value if f.dtype == "float32" else int(f.min_value)
                if f.max_value is not None:
                    domain.max = f.max_value if f.dtype == "float32" else int(f.max_value)
        label = next(c for c in schema.feature if c.name == self.label)
        label.int_domain.min, label.int_domain.max, label.int_domain.is_categorical = 0, 1, True
        return schema

    # ----------------------------------------------------------------------------------------
    # Vocabularies and parameter counts
    def vocabulary_path(self, table: str, vocab_dir: str | os.PathLike) -> str:
        """File of ``table``'s vocabulary: the explicit file or ``<vocab_dir>/<table>.txt``."""
        f = self.tables()[table]
        if f.vocabulary_file:
            return os.path.join(self.base_dir, os.path.expanduser(f.vocabulary_file))
        return os.path.join(os.fspath(vocab_dir), f"{table}.txt")

    def load_vocabularies(self, vocab_dir: str | os.PathLike = "") -> dict[str, list[str]]:
        """Reads each vocabulary table's tokens, most frequent first, cut at ``vocabulary_size``."""
        out: dict[str, list[str]] = {}
        for table, f in self.tables().items():
            if not f.uses_vocabulary:
                continue
            path = self.vocabulary_path(table, vocab_dir)
            if not os.path.exists(path):
                source = ("its vocabulary_file" if f.vocabulary_file else
                          "the pipeline writes it; run pipelines.build_tfrecords for the window or "
                          "point vocab_dir at its vocab/ folder")
                raise FeatureSpecError(
                    f"feature {f.name!r}: vocabulary file {path} does not exist ({source})")
            with open(path, encoding="utf-8") as handle:
                tokens = [line.rstrip("\n") for line in handle]
            out[table] = [t for t in tokens if t]
        return self.cut_vocabularies(out)

    def cut_vocabularies(self, vocabularies: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Each table's tokens (most frequent first) cut at its ``vocabulary_size``.

        This is where ``vocab_scale`` takes effect for computed vocabularies: a spec scaled by 2
        keeps twice as many of the pipeline's tokens.
        """
        out: dict[str, list[str]] = {}
        for table, tokens in vocabularies.items():
            f = self.tables().get(table)
            if f is None:
                raise FeatureSpecError(f"vocabulary given for unknown table {table!r}; tables are "
                                       f"{', '.join(self.tables())}")
            out[table] = list(tokens[: f.vocabulary_size] if f.vocabulary_size else tokens)
        return out

    def table_rows(self, table: str,
                   vocabularies: Mapping[str, Sequence[str]] | None = None) -> int:
        """Rows of a table: vocabulary + 1 OOV row, hash buckets, or buckets of the boundaries."""
        vocabulary = None if vocabularies is None else vocabularies.get(table)
        return self.tables()[table].table_rows(vocabulary)

    def embedding_parameter_count(self, vocabularies: Mapping[str, Sequence[str]] | None = None,
                                  train_only: bool = False) -> int:
        """Parameters of the embedding tables: ``sum_tables rows * dim``.

        Without ``vocabularies`` computed tables count at their cap (``vocabulary_size + 1``).
        """
        features = self.train_only_features if train_only else self.serving_features
        return sum(self.table_rows(t, vocabularies) * f.embedding_dim
                   for t, f in self.tables(features).items())

    # ----------------------------------------------------------------------------------------
    # Serialization
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "group_key": self.group_key}
        if self.weight:
            out["weight"] = self.weight
        out["features"] = [f.to_dict() for f in self.features]
        return out

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2)
            handle.write("\n")


def spec_from_dict(data: Mapping[str, Any], base_dir: str = "") -> FeatureSpec:
    """Builds a spec from its dict form (as in the JSON/YAML files)."""
    if not isinstance(data, Mapping) or "features" not in data:
        raise FeatureSpecError("a feature spec is a mapping with a 'features' list")
    known = {f.name for f in dataclasses.fields(Feature)}
    features = []
    for i, raw in enumerate(data["features"]):
        name = raw.get("name", f"#{i}") if isinstance(raw, Mapping) else f"#{i}"
        if not isinstance(raw, Mapping):
            raise FeatureSpecError(f"feature {name}: each feature is a mapping, got {raw!r}")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise FeatureSpecError(
                f"feature {name!r}: unknown field(s) {', '.join(unknown)}; known fields are "
                f"{', '.join(sorted(known))}")
        if "name" not in raw:
            raise FeatureSpecError(f"feature {name}: missing 'name'; give every feature a unique "
                                   "\"name\"")
        if "kind" not in raw:
            raise FeatureSpecError(f"feature {name!r}: missing 'kind' (one of {', '.join(KINDS)})")
        features.append(Feature(**raw))
    extra = sorted(set(data) - {"features", "label", "group_key", "weight"})
    if extra:
        raise FeatureSpecError(f"unknown top-level spec field(s): {', '.join(extra)}")
    return FeatureSpec(features=tuple(features), label=data.get("label", "converted"),
                       group_key=data.get("group_key", "request_id"),
                       weight=data.get("weight"), base_dir=base_dir)


def load_spec(path: str | os.PathLike) -> FeatureSpec:
    """Loads a spec from a ``.json``, ``.yaml`` or ``.yml`` file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FeatureSpecError(f"feature spec file {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(handle)
        else:
            data = json.load(handle)
    return spec_from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)))


def default_spec() -> FeatureSpec:
    """The spec for the simulator's logs, shipped in the package (``cvr_tf/specs``)."""
    text = resources.files("cvr_tf").joinpath("specs/search_default.json").read_text("utf-8")
    return spec_from_dict(json.loads(text))


def resolve_spec(path_or_empty: str | None) -> FeatureSpec:
    """A spec file's contents, or the default spec for an empty path (for ``--feature_spec``)."""
    return load_spec(path_or_empty) if path_or_empty else default_spec()


__all__ = ["Feature", "FeatureSpec", "FeatureSpecError", "MAX_VOCAB_SCALE", "default_spec",
           "load_spec", "resolve_spec", "spec_from_dict"]

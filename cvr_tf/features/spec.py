"""The feature spec: all of a model's features, the label, the request key and the weight.

See :mod:`cvr_tf.features` for the JSON format and the kinds. Scaling knobs
(:meth:`FeatureSpec.scaled`): ``embedding_dim_scale`` multiplies every embedding dim,
``vocab_scale`` every vocabulary cap and hash-bucket count (rounded, at least 1). Embedding
parameters therefore grow linearly in each knob:
``params = sum_tables rows(vocab_scale) * dim(embedding_dim_scale)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from cvr_tf.features.base import Feature, FeatureSpecError, registered_kinds
from cvr_tf.features.labels import LabelSpec, labels_from_dict
from cvr_tf.features.relative import RequestRelativeFeature

# TensorFlow's node names (what a SavedModel signature's inputs must be), without the scope
# separators '/', '>' and '\\'.
SERVING_INPUT_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.-]*")

# The pipeline writes at most this many times `vocabulary_size` tokens per vocabulary, so that a
# model trained with vocab_scale up to this factor finds the tokens it needs.
MAX_VOCAB_SCALE = 16


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """All model features plus the labels, the request key and an optional weight column.

    Attributes:
      features: the model's fields, in the order of the flat embedding vector.
      label: the int64 0/1 label column single-task models train on (``converted``).
      group_key: string column grouping the candidates of one request (``request_id``).
      weight: optional float32 example-weight column.
      base_dir: directory relative ``vocabulary_file`` paths resolve against.
      labels: every label column of the spans and how the pipeline derives it
        (:mod:`cvr_tf.features.labels`), ``label`` among them; empty: ``label`` alone, joined
        with conversions within the pipeline's ``--attribution_days``.
    """

    features: tuple[Feature, ...]
    label: str = "converted"
    group_key: str = "request_id"
    weight: str | None = None
    base_dir: str = ""
    labels: tuple[LabelSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        if not self.features:
            raise FeatureSpecError("a feature spec needs at least one feature")
        seen: set[str] = set()
        for f in self.features:
            if f.name in seen:
                raise FeatureSpecError(f"duplicate feature name {f.name!r}; names must be unique")
            seen.add(f.name)
        object.__setattr__(self, "labels", tuple(self.labels))
        self._check_labels()
        reserved = {*self.label_names, self.group_key} | ({self.weight} if self.weight else set())
        for f in self.features:
            if f.column in reserved or f.input_column in reserved:
                raise FeatureSpecError(
                    f"feature {f.name!r} reads column {f.column!r}, which is a label, the group "
                    "key or the weight; models must not see them as inputs")
        self._check_column_dtypes()
        self._check_shared_tables()
        self._check_serving_names()
        if not self.serving_features:
            raise FeatureSpecError(
                "every feature is train_only; the served model needs at least one")

    def _check_labels(self) -> None:
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise FeatureSpecError(f"labels {names} name a label twice; names must be unique")
        if self.labels and self.label not in names:
            raise FeatureSpecError(
                f"label {self.label!r} is not one of the spec's labels ({', '.join(names)}); set "
                "\"label\" to the one single-task models train on")
        if self.group_key in names or (self.weight and self.weight in names):
            raise FeatureSpecError(f"a label is named like the group key or the weight "
                                   f"({self.group_key!r}, {self.weight!r}); rename it")

    def _check_column_dtypes(self) -> None:
        dtypes: dict[str, tuple[str, str]] = {}
        defaults: dict[str, tuple[str | float, str]] = {}
        for f in self.features:
            other = dtypes.setdefault(f.column, (f.dtype, f.name))
            if other[0] != f.dtype:
                raise FeatureSpecError(
                    f"feature {f.name!r} reads column {f.column!r} as {f.dtype} but feature "
                    f"{other[1]!r} reads it as {other[0]}; one column has one dtype")
            if f.default_value is None:
                continue
            default = defaults.setdefault(f.column, (f.default_value, f.name))
            if default[0] != f.default_value:
                raise FeatureSpecError(
                    f"features {default[1]!r} and {f.name!r} read column {f.column!r} with "
                    f"default_value {default[0]!r} and {f.default_value!r}; one column has one "
                    "default")
        for f in self.request_features:
            if f.input_column in dtypes:
                raise FeatureSpecError(
                    f"feature {f.name!r} derives column {f.input_column!r}, which feature "
                    f"{dtypes[f.input_column][1]!r} reads from the logs; rename that log column")

    def _check_shared_tables(self) -> None:
        tables: dict[str, Feature] = {}
        for f in self.features:
            if f.table is None:
                continue
            first = tables.setdefault(f.table, f)
            if f.table_signature() != first.table_signature():
                raise FeatureSpecError(
                    f"features {first.name!r} and {f.name!r} share embedding table {f.table!r} but "
                    "differ in embedding_dim, vocabulary, hash_buckets, boundaries, dtype or "
                    "train_only; make them equal or use separate tables")

    def _check_serving_names(self) -> None:
        """The served model's inputs are named by their columns, and a SavedModel signature
        takes only TensorFlow node names: refused here, before any pipeline or training work,
        rather than when the trained model is exported."""
        for column in self.serving_columns():
            if not SERVING_INPUT_NAME.fullmatch(column):
                readers = ", ".join(repr(f.name) for f in self.serving_features
                                    if f.column == column) or "the group key"
                renamed = re.sub(r"[^A-Za-z0-9_.-]", "_", column).lstrip("_-") or "column"
                raise FeatureSpecError(
                    f"column {column!r} (read by {readers}) "
                    "cannot name an input of the served model: SavedModel signature inputs "
                    f"match {SERVING_INPUT_NAME.pattern}; rename the log column (e.g. "
                    f"{renamed!r}), or make its features train_only")

    # ----------------------------------------------------------------------------------------
    # Views
    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def label_names(self) -> tuple[str, ...]:
        """Every label column of the spans: the ``labels``' names, or ``(label,)``."""
        return tuple(label.name for label in self.labels) or (self.label,)

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

    @property
    def request_features(self) -> tuple[RequestRelativeFeature, ...]:
        """Features whose column the pipeline derives per request (``request_relative``)."""
        return tuple(f for f in self.features if isinstance(f, RequestRelativeFeature))

    def column_dtypes(self, train_only: bool = True) -> dict[str, str]:
        """Model input column -> dtype (of the serving features if not train_only): the raw
        columns, and for ``request_relative`` features the derived ``<column>__<relation>``
        the pipeline writes."""
        features = self.features if train_only else self.serving_features
        return {f.input_column: f.input_dtype for f in features}

    def serving_columns(self) -> dict[str, str]:
        """Column -> dtype of what clients send the served model: its raw columns, including
        the source column and the group key of each ``request_relative`` feature instead of
        the derived column (:meth:`derive_serving_columns` maps them to the model's)."""
        columns: dict[str, str] = {}
        for f in self.serving_features:
            columns[f.column] = f.dtype
            if isinstance(f, RequestRelativeFeature):
                columns[self.group_key] = "string"
        return columns

    def derive_serving_columns(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The served model's input columns (:meth:`column_dtypes` with ``train_only=False``) of
        the serving inputs (:meth:`serving_columns`), as tensors ``[n]``.

        A derived column is computed from the rows of ``inputs`` grouped by the group key
        (:func:`cvr_tf.features.relative.derive`), so ``inputs`` must hold whole requests.
        """
        derived = {f.input_column: f for f in self.request_features}
        return {column: (derived[column].derive(inputs[derived[column].column],
                                                inputs[self.group_key])
                         if column in derived else inputs[column])
                for column in self.column_dtypes(train_only=False)}

    def derive_request_columns(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """The derived columns (name -> float32 numpy ``[n]``) of raw numpy ``columns`` holding
        whole requests (the pipeline's: :func:`cvr_tf.features.relative.derive_numpy`)."""
        derived = {f.input_column: f for f in self.request_features}
        return {column: f.derive_numpy(columns[f.column], columns[self.group_key])
                for column, f in derived.items()}

    def log_columns(self) -> dict[str, str]:
        """Every column the pipeline writes to tf.Examples -> dtype (features, key, label...)."""
        columns = {self.group_key: "string", **self.column_dtypes(),
                   **dict.fromkeys(self.label_names, "int64")}
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
            if f.computes_vocabulary:
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
        return dataclasses.replace(self, features=tuple(
            f.scaled(embedding_dim_scale, vocab_scale) for f in self.features))

    # ----------------------------------------------------------------------------------------
    # TensorFlow artefacts
    def parsing_spec(self, train_only: bool = True, label: bool = True) -> dict[str, Any]:
        """``tf.io.parse_example`` spec: one scalar FixedLenFeature per column."""
        from cvr_tf.compat import tf

        tf_dtypes = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
        columns = dict(self.column_dtypes(train_only=train_only))
        if label:
            columns[self.group_key] = "string"
            columns.update(dict.fromkeys(self.label_names, "int64"))
            if self.weight:
                columns[self.weight] = "float32"
        return {c: tf.io.FixedLenFeature([], tf_dtypes[d]) for c, d in columns.items()}

    def keras_inputs(self, train_only: bool = False) -> dict[str, Any]:
        """One scalar ``keras.Input`` per raw column the (served, or training) model reads."""
        from cvr_tf.compat import keras

        return {c: keras.Input(shape=(), dtype=d, name=c)
                for c, d in self.column_dtypes(train_only=train_only).items()}

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
        by_column = {c.name: c for c in schema.feature}
        for f in self.features:
            f.schema_domain(by_column[f.input_column])
        for label in self.label_names:
            domain = by_column[label].int_domain
            domain.min, domain.max, domain.is_categorical = 0, 1, True
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
            if f is None or not f.uses_vocabulary:
                raise FeatureSpecError(
                    f"vocabulary given for table {table!r}, which is no vocabulary table of the "
                    f"spec; vocabulary tables are {', '.join(self.vocabulary_tables())}")
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
        if self.labels:
            out["labels"] = {label.name: label.to_dict() for label in self.labels}
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
    features = []
    for i, raw in enumerate(data["features"]):
        name = raw.get("name", f"#{i}") if isinstance(raw, Mapping) else f"#{i}"
        if not isinstance(raw, Mapping):
            raise FeatureSpecError(f"feature {name}: each feature is a mapping, got {raw!r}")
        if "name" not in raw:
            raise FeatureSpecError(f"feature {name}: missing 'name'; give every feature a unique "
                                   "\"name\"")
        if "kind" not in raw:
            raise FeatureSpecError(f"feature {name!r}: missing 'kind' (one of "
                                   f"{', '.join(registered_kinds())})")
        features.append(Feature.from_dict(raw))
    extra = sorted(set(data) - {"features", "label", "labels", "group_key", "weight"})
    if extra:
        raise FeatureSpecError(f"unknown top-level spec field(s): {', '.join(extra)}")
    labels = labels_from_dict(data["labels"]) if "labels" in data else ()
    return FeatureSpec(features=tuple(features), label=data.get("label", "converted"),
                       group_key=data.get("group_key", "request_id"),
                       weight=data.get("weight"), base_dir=base_dir, labels=labels)


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


__all__ = ["FeatureSpec", "MAX_VOCAB_SCALE", "default_spec", "load_spec", "resolve_spec",
           "spec_from_dict"]

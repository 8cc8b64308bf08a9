"""The embedding part: raw feature columns -> one flat float vector per example.

This is the sparse half of the serving split (DLRM's "sparse arch"): vocabulary lookups, hashing,
tokenization and table gathers, all of which run on the CPU in the ``embed`` signature. Nothing
dense lives here, and no table is read outside it.

For features ``f_1..f_n`` of :class:`cvr_tf.features.FeatureSpec`, the output is
``concat(e_1(x), ..., e_n(x))`` of width ``sum_i field_dim_i`` where, with ``E_t`` the table of
feature ``f_i`` and ``id(.)`` its lookup (vocabulary index with OOV at row 0, hash bucket, or
bucket of the boundaries):

* categorical: ``e_i = E_t[id(x_i)]``
* text with tokens ``w_1..w_m`` (m <= max_tokens): ``s = sum_j E_t[id(w_j)]`` and
  ``e_i = s / max(m, 1)`` (mean), ``s`` (sum) or ``s / sqrt(max(m, 1))`` (sqrtn)
* bucketized numeric: ``e_i = E_t[bucket(x_i)]``
* normalized numeric: ``e_i = (g(x_i) - mean) / std`` with ``g`` identity or log1p.
* request_relative: as numeric, of the derived column ``<column>__<relation>``
  (:mod:`cvr_tf.features.relative`), which the layer reads like any column.

Each kind computes its own lookup and field (:meth:`cvr_tf.features.Feature.make_lookup`,
:meth:`~cvr_tf.features.Feature.embed`); this layer owns the tables and the concatenation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.features import Feature, FeatureSpec, FeatureSpecError


@register_keras_serializable(package="cvr_tf")
class FeatureEmbedding(keras.layers.Layer):
    """Maps a dict of raw column tensors ``[batch]`` to ``[batch, sum(field_dims)]``.

    Build it with :meth:`from_spec`, which checks the spec and supplies the vocabularies.

    Args:
      features: the features, as ``Feature.to_dict()`` mappings, in field order.
      vocabularies: table name -> tokens (most frequent first) for vocabulary tables.
      embeddings_initializer: initializer of every table.
    """

    def __init__(self, features: Sequence[Mapping[str, Any]],
                 vocabularies: Mapping[str, Sequence[str]] | None = None,
                 embeddings_initializer: Any = "uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._feature_configs = [dict(f) for f in features]
        self._features = [Feature.from_dict(f) for f in self._feature_configs]
        if not self._features:
            raise ValueError("FeatureEmbedding needs at least one feature")
        self._vocabularies = {t: list(v) for t, v in (vocabularies or {}).items()}
        self._initializer = keras.initializers.get(embeddings_initializer)
        table_features: dict[str, Feature] = {}
        for f in self._features:
            if f.table is not None:
                table_features.setdefault(f.table, f)
        # Assigned whole: Keras wraps dict attributes for tracking, and setdefault bypasses it.
        self._table_features = table_features
        lookups = {table: f.make_lookup(self._vocabularies.get(table))
                   for table, f in self._table_features.items()}
        self._lookups = {table: lookup for table, lookup in lookups.items() if lookup is not None}
        self.tables: dict[str, tf.Variable] = {}

    @classmethod
    def from_spec(cls, spec: FeatureSpec,
                  vocabularies: Mapping[str, Sequence[str]] | None = None,
                  train_only: bool = False, name: str | None = None) -> FeatureEmbedding:
        """The layer of ``spec``'s serving (or ``train_only``) features.

        Args:
          spec: a spec whose window statistics are resolved (:mod:`cvr_tf.resolve`).
          vocabularies: table -> tokens, from ``spec.load_vocabularies`` or the window.
          train_only: build the training-only features' layer instead of the serving one.
          name: layer name (default ``feature_embedding`` / ``train_only_embedding``).
        """
        features = spec.train_only_features if train_only else spec.serving_features
        vocabularies = dict(vocabularies or {})
        needed = {f.table for f in features if f.uses_vocabulary}
        missing = sorted(needed - set(vocabularies))
        if missing:
            raise FeatureSpecError(
                f"no vocabulary given for table(s) {', '.join(missing)}; load them with "
                "spec.load_vocabularies(<pipeline output>/vocab/<window>)")
        unresolved = [f.name for f in features if f.needs_statistics]
        if unresolved:
            raise FeatureSpecError(
                f"feature(s) {', '.join(unresolved)} take numbers from a training window "
                "(normalization auto / quantiles:N); resolve the spec first with "
                "cvr_tf.resolve.resolve_for_window(spec, data_dir, start, end)")
        return cls(features=[f.to_dict() for f in features],
                   vocabularies={t: list(vocabularies[t]) for t in sorted(needed)},
                   name=name or ("train_only_embedding" if train_only else "feature_embedding"))

    def table_rows(self, table: str) -> int:
        return self._table_features[table].table_rows(self._vocabularies.get(table))

    def build(self, input_shape: Any) -> None:
        for table, f in self._table_features.items():
            self.tables[table] = self.add_weight(
                name=f"{table}_embedding", shape=(self.table_rows(table), f.embedding_dim),
                # A fresh initializer per table: one instance would give every same-shaped
                # table the same values.
                initializer=self._initializer.__class__.from_config(self._initializer.get_config()),
                trainable=True)
        super().build(input_shape)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self._features]

    @property
    def field_dims(self) -> list[int]:
        return [f.field_dim for f in self._features]

    @property
    def output_dim(self) -> int:
        return sum(self.field_dims)

    @property
    def input_columns(self) -> list[str]:
        return list(dict.fromkeys(f.input_column for f in self._features))

    def vocabulary(self, table: str) -> list[str]:
        """Tokens of a vocabulary table; row ``i + 1`` of its embedding is token ``i``."""
        return list(self._vocabularies[table])

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        missing = [c for c in self.input_columns if c not in inputs]
        if missing:
            raise ValueError(f"{self.name}: missing input column(s) {', '.join(missing)}; "
                             f"expected {', '.join(self.input_columns)}")
        fields = []
        for f in self._features:
            x = inputs[f.input_column]
            if x.shape.rank == 2:
                x = tf.squeeze(x, axis=-1)
            fields.append(f.embed(x, self.tables.get(f.table), self._lookups.get(f.table)))
        return tf.concat(fields, axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "features": self._feature_configs,
            "vocabularies": self._vocabularies,
            "embeddings_initializer": keras.initializers.serialize(self._initializer),
        })
        return config

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.features import Feature
from cvr_tf.tokenizer import tokenize


@register_keras_serializable(package="cvr_tf")
class FeatureEmbedding(keras.layers.Layer):
    """Maps a dict of raw column tensors ``[batch]`` to ``[batch, sum(field_dims)]``.

    Build it with :meth:`cvr_tf.features.FeatureSpec.embedding_layer`, which checks the spec and
    supplies the vocabularies.

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
        self._features = [Feature(**f) for f in self._feature_configs]
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
        self._lookups = {table: self._make_lookup(f) for table, f in self._table_features.items()
                         if f.kind != "numeric"}
        self.tables: dict[str, tf.Variable] = {}

    def _make_lookup(self, f: Feature) -> keras.layers.Layer:
        if f.hash_buckets is not None:
            return keras.layers.Hashing(num_bins=f.hash_buckets, name=f"{f.table}_hashing")
        if f.table not in self._vocabularies:
            raise ValueError(f"feature {f.name!r}: no vocabulary for table {f.table!r}")
        tokens = self._vocabularies[f.table]
        if f.dtype == "int64":
            return keras.layers.IntegerLookup(vocabulary=[int(t) for t in tokens],
                                              num_oov_indices=1, mask_token=None,
                                              name=f"{f.table}_lookup")
        return keras.layers.StringLookup(vocabulary=tokens, num_oov_indices=1, mask_token=None,
                                         name=f"{f.table}_lookup")

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
        return list(dict.fromkeys(f.column for f in self._features))

    def vocabulary(self, table: str) -> list[str]:
        """Tokens of a vocabulary table; row ``i + 1`` of its embedding is token ``i``."""
        return list(self._vocabularies[table])

    def _field(self, f: Feature, x: tf.Tensor) -> tf.Tensor:
        if f.kind == "numeric":
            values = tf.cast(x, tf.float32)
            if f.boundaries is None:
                if f.transform == "log1p":
                    values = tf.math.log1p(tf.maximum(values, 0.0))
                return tf.expand_dims((values - f.mean) / f.std, -1)
            ids = tf.raw_ops.Bucketize(input=values, boundaries=list(f.boundaries))
            return tf.nn.embedding_lookup(self.tables[f.table], ids)
        lookup = self._lookups[f.table]
        if f.kind == "categorical":
            return tf.nn.embedding_lookup(self.tables[f.table], lookup(x))
        tokens = tokenize(x, f.max_tokens)
        ids = lookup(tokens)
        vectors = tf.nn.embedding_lookup(self.tables[f.table], ids.flat_values)
        summed = tf.math.unsorted_segment_sum(vectors, ids.value_rowids(), ids.nrows())
        count = tf.cast(tf.maximum(ids.row_lengths(), 1), tf.float32)[:, None]
        if f.combiner == "mean":
            return summed / count
        if f.combiner == "sqrtn":
            return summed / tf.sqrt(count)
        return summed

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        missing = [c for c in self.input_columns if c not in inputs]
        if missing:
            raise ValueError(f"{self.name}: missing input column(s) {', '.join(missing)}; "
                             f"expected {', '.join(self.input_columns)}")
        fields = []
        for f in self._features:
            x = inputs[f.column]
            if x.shape.rank == 2:
                x = tf.squeeze(x, axis=-1)
            fields.append(self._field(f, x))
        return tf.concat(fields, axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "features": self._feature_configs,
            "vocabularies": self._vocabularies,
            "embeddings_initializer": keras.initializers.serialize(self._initializer),
        })
        return config

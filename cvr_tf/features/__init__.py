"""Declarative feature spec: the contract between the logs, the pipeline, the model and serving.

A spec names the log columns a model reads and how each becomes an embedding field. It is loaded
from JSON/YAML (:func:`load_spec`) or built in Python (:class:`FeatureSpec`), and produces:

* the ``tf.io`` parsing spec of the pipeline's tf.Examples (:meth:`FeatureSpec.parsing_spec`),
* Keras Inputs for the raw columns (:meth:`FeatureSpec.keras_inputs`),
* a tensorflow-metadata Schema (:meth:`FeatureSpec.tfmd_schema`),
* parameter counts (:meth:`FeatureSpec.embedding_parameter_count`);

the embedding layer is built from it by :meth:`cvr_tf.embedding.FeatureEmbedding.from_spec`
(this package never imports the embedding module: the dependency goes one way).

Every feature is one *field* of the flat embedding vector and one class per kind, each in its
module (its fields, validation, table rows, lookup and field maths, vocabulary tokens, warmup
values):

``categorical`` (:mod:`cvr_tf.features.categorical`)
    A string or int64 column looked up in a vocabulary (``vocabulary_size``: the top-K tokens by
    frequency that the pipeline computes, seen at least ``min_count`` times, or an explicit
    ``vocabulary_file``) with one out-of-vocabulary row, or hashed into ``hash_buckets`` rows.
    Field width ``embedding_dim``.
``text`` (:mod:`cvr_tf.features.text`)
    A free-text string column split by :func:`cvr_tf.tokenizer.tokenize` into at most
    ``max_tokens`` tokens, whose embeddings are pooled by ``combiner`` (mean, sum, sqrtn).
    Vocabulary fields as ``categorical``. Field width ``embedding_dim``.
``numeric`` (:mod:`cvr_tf.features.numeric`)
    A float/int column, bucketized by ``boundaries`` into ``len(boundaries) + 1`` rows (field
    width ``embedding_dim``) or normalized, ``(transform(x) - mean) / std`` (field width 1);
    ``"normalization": "auto"`` and ``"boundaries": "quantiles:N"`` take the numbers from the
    training window (:func:`cvr_tf.resolve.resolve_for_window`).
``request_relative`` (:mod:`cvr_tf.features.relative`)
    A float/int column relative to the other rows of its request (``group_key``): its
    ``relation`` ``rank``, ``percentile`` or ``diff_median``, which the pipeline writes as the
    column ``<column>__<relation>`` and the served model derives from the raw column and the
    group key of a call; then embedded as a numeric (normalized or ``boundaries``).

A kind is a :class:`Feature` subclass naming its ``KIND``; adding one is its module plus its
entry in the ``register_kinds`` line below. ``Feature(name=..., kind=..., ...)`` builds the
kind's class.

The spec's labels (:mod:`cvr_tf.features.labels`) are int64 0/1 columns of the spans: a spec
may name several in ``"labels"``, each joined by the pipeline with an event log (clicks,
conversions) within its own window, or read from a column; ``label`` is the one single-task
models train on.

Features sharing ``shared_embedding: NAME`` look up one table (and one vocabulary) called NAME;
they must agree on the table's shape. Features marked ``train_only`` (e.g. ``position``) exist in
the logs but not at serving time: the model feeds them to a training-only bias tower.
"""

from cvr_tf.features.base import (
    DTYPES,
    Feature,
    FeatureSpecError,
    register_kinds,
    registered_kinds,
)
from cvr_tf.features.categorical import CategoricalFeature
from cvr_tf.features.labels import LabelSpec
from cvr_tf.features.lookup import LookupFeature
from cvr_tf.features.numeric import TRANSFORMS, NumericFeature
from cvr_tf.features.relative import RELATIONS, RequestRelativeFeature
from cvr_tf.features.spec import (
    MAX_VOCAB_SCALE,
    FeatureSpec,
    default_spec,
    load_spec,
    resolve_spec,
    spec_from_dict,
)
from cvr_tf.features.text import COMBINERS, TextFeature

register_kinds(CategoricalFeature, TextFeature, NumericFeature, RequestRelativeFeature)
KINDS = registered_kinds()

__all__ = ["COMBINERS", "DTYPES", "KINDS", "MAX_VOCAB_SCALE", "RELATIONS", "TRANSFORMS",
           "CategoricalFeature", "Feature", "FeatureSpec", "FeatureSpecError", "LabelSpec",
           "LookupFeature",
           "NumericFeature", "RequestRelativeFeature", "TextFeature", "default_spec",
           "load_spec", "resolve_spec", "spec_from_dict"]

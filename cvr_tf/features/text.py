"""``text``: a free-text string column, tokenized, its token embeddings pooled.

:func:`cvr_tf.tokenizer.tokenize` (Unicode lower-casing, punctuation dropped, one token per CJK
character) splits the value into at most ``max_tokens`` tokens ``w_1..w_m``; with
``s = sum_j E[id(w_j)]`` the field (width ``embedding_dim``) is

* ``mean``:  ``s / max(m, 1)``
* ``sum``:   ``s``
* ``sqrtn``: ``s / sqrt(max(m, 1))``

so empty text gives a zero vector. The pipeline counts the very tokens the model looks up, from
the same tokenizer (:func:`cvr_tf.tokenizer.arrow_tokens`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cvr_tf.features.lookup import LookupFeature

COMBINERS = ("mean", "sum", "sqrtn")


@dataclasses.dataclass(frozen=True)
class TextFeature(LookupFeature):
    """A text feature.

    Attributes:
      combiner: how token embeddings are pooled: ``mean``, ``sum`` or ``sqrtn``.
      max_tokens: tokens kept per value, the first ones.
    """

    KIND: ClassVar[str] = "text"

    combiner: str = "mean"
    max_tokens: int = 8

    def validate(self) -> None:
        if self.dtype != "string":
            self.fail(f"text features read string columns, got dtype {self.dtype!r}")
        super().validate()
        if self.combiner not in COMBINERS:
            self.fail(f"unknown combiner {self.combiner!r}; use one of {', '.join(COMBINERS)}")
        if self.max_tokens <= 0:
            self.fail(f"max_tokens must be positive, got {self.max_tokens}")

    def embed(self, x: Any, table: Any, lookup: Any) -> Any:
        """The pooled field of each value, each distinct value tokenized once (a query repeats
        over its request's candidates)."""
        from cvr_tf.compat import tf
        from cvr_tf.tokenizer import tokenize

        distinct = tf.unique(x)
        ids = lookup(tokenize(distinct.y, self.max_tokens))
        vectors = tf.nn.embedding_lookup(table, ids.flat_values)
        summed = tf.math.unsorted_segment_sum(vectors, ids.value_rowids(), ids.nrows())
        count = tf.cast(tf.maximum(ids.row_lengths(), 1), tf.float32)[:, None]
        if self.combiner == "mean":
            summed = summed / count
        elif self.combiner == "sqrtn":
            summed = summed / tf.sqrt(count)
        return tf.gather(summed, distinct.idx)

    def vocabulary_tokens(self, values: Any) -> Any:
        """Every token of the non-null values (the tokenizer drops empty tokens and splits at
        line breaks)."""
        from cvr_tf.tokenizer import arrow_tokens

        return arrow_tokens(values, self.max_tokens)

    def warmup_values(self, rng: Any, tokens: Sequence[str], rows: int) -> np.ndarray:
        """Two vocabulary tokens per value, space-separated, UTF-8 encoded."""
        picks = rng.choice(len(tokens), size=(rows, 2))
        return np.array([f"{tokens[a]} {tokens[b]}".encode() for a, b in picks], dtype=object)


__all__ = ["COMBINERS", "TextFeature"]

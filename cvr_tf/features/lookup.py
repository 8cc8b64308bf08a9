"""What the vocabulary kinds (categorical, text) share: a table of tokens or hash buckets.

A lookup feature's table has either ``hash_buckets`` rows (``Hashing``: a value's row is its
FarmHash fingerprint mod ``hash_buckets``) or one row per vocabulary token plus row 0 for
out-of-vocabulary values (``StringLookup`` / ``IntegerLookup`` with one OOV index). The
vocabulary is an explicit ``vocabulary_file`` or the ``vocabulary_size`` most frequent tokens of
the training window that the pipeline counts (:mod:`cvr_tf.vocabulary`); tokens seen fewer than
``min_count`` times in the window are left out, so they map to the OOV row.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from cvr_tf.features.base import Feature, scale_size


@dataclasses.dataclass(frozen=True)
class LookupFeature(Feature):
    """A feature whose values (or tokens) index a vocabulary or hash table.

    Attributes:
      vocabulary_size: top-K cap of a pipeline-computed vocabulary.
      vocabulary_file: explicit vocabulary file, one token per line, most frequent first.
      hash_buckets: hash into this many rows instead of a vocabulary.
      min_count: tokens seen fewer times in the training window are out of vocabulary
        (pipeline-computed vocabularies only).
    """

    vocabulary_size: int | None = None
    vocabulary_file: str | None = None
    hash_buckets: int | None = None
    min_count: int = 1

    def validate(self) -> None:
        if self.dtype == "float32":
            self.fail(f"{self.kind} features read string or int64 columns; declare float columns "
                      "numeric")
        sources = [self.vocabulary_size is not None, self.vocabulary_file is not None,
                   self.hash_buckets is not None]
        if sum(sources) == 0:
            self.fail("needs one of vocabulary_size (computed by the pipeline), vocabulary_file "
                      "or hash_buckets")
        if self.hash_buckets is not None and sum(sources) > 1:
            self.fail("hash_buckets excludes vocabulary_size/vocabulary_file; pick one")
        for knob in ("vocabulary_size", "hash_buckets", "min_count"):
            value = getattr(self, knob)
            if value is not None and value <= 0:
                self.fail(f"{knob} must be positive, got {value}")
        if self.min_count != 1 and self.vocabulary_size is None:
            self.fail("min_count applies to the vocabularies the pipeline computes "
                      "(vocabulary_size); drop it for hash_buckets or a vocabulary_file")

    @property
    def uses_vocabulary(self) -> bool:
        return self.hash_buckets is None

    @property
    def computes_vocabulary(self) -> bool:
        return self.hash_buckets is None and self.vocabulary_file is None

    def table_rows(self, vocabulary: Sequence[str] | None = None) -> int:
        """``hash_buckets`` rows, or a vocabulary's tokens plus one out-of-vocabulary row (the
        loaded ``vocabulary`` if given, else the ``vocabulary_size`` cap)."""
        if self.hash_buckets is not None:
            return self.hash_buckets
        if vocabulary is not None:
            return len(vocabulary) + 1
        if self.vocabulary_size is None:
            self.fail("the size of vocabulary_file tables is known only once loaded; pass "
                      "vocabularies=spec.load_vocabularies(...)")
        return self.vocabulary_size + 1

    def table_signature(self) -> tuple:
        return (*super().table_signature(), self.vocabulary_size, self.vocabulary_file,
                self.hash_buckets, self.min_count)

    def scaled(self, embedding_dim_scale: float, vocab_scale: float) -> LookupFeature:
        return dataclasses.replace(
            super().scaled(embedding_dim_scale, vocab_scale),
            vocabulary_size=scale_size(self.vocabulary_size, vocab_scale),
            hash_buckets=scale_size(self.hash_buckets, vocab_scale))

    def with_base_dir(self, base_dir: str) -> LookupFeature:
        if not self.vocabulary_file:
            return self
        return dataclasses.replace(self, vocabulary_file=os.path.abspath(
            os.path.join(base_dir, os.path.expanduser(self.vocabulary_file))))

    def make_lookup(self, vocabulary: Sequence[str] | None) -> Any:
        """``Hashing``, or a vocabulary lookup with OOV at index 0 (``int64`` tokens parsed)."""
        from cvr_tf.compat import keras

        if self.hash_buckets is not None:
            return keras.layers.Hashing(num_bins=self.hash_buckets, name=f"{self.table}_hashing")
        if vocabulary is None:
            raise ValueError(f"feature {self.name!r}: no vocabulary for table {self.table!r}")
        if self.dtype == "int64":
            return keras.layers.IntegerLookup(vocabulary=[int(t) for t in vocabulary],
                                              num_oov_indices=1, mask_token=None,
                                              name=f"{self.table}_lookup")
        return keras.layers.StringLookup(vocabulary=list(vocabulary), num_oov_indices=1,
                                         mask_token=None, name=f"{self.table}_lookup")


__all__ = ["LookupFeature"]

"""``categorical``: a string or int64 column looked up in a vocabulary or hashed.

The field is the value's table row, ``e = E[id(x)]`` (width ``embedding_dim``), with ``id`` the
vocabulary index (OOV at row 0) or the hash bucket (see :mod:`cvr_tf.features.lookup`).
Vocabulary tokens are the values themselves (int64 values as decimal strings); empty values and
values holding a line break are never counted, since one line of a vocabulary file cannot hold
them, so the model maps them to the OOV row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cvr_tf.features.lookup import LookupFeature


@dataclasses.dataclass(frozen=True)
class CategoricalFeature(LookupFeature):
    """A categorical feature (fields: :class:`~cvr_tf.features.lookup.LookupFeature`)."""

    KIND: ClassVar[str] = "categorical"

    def embed(self, x: Any, table: Any, lookup: Any) -> Any:
        from cvr_tf.compat import tf

        return tf.nn.embedding_lookup(table, lookup(x))

    def vocabulary_tokens(self, values: Any) -> Any:
        """Non-null values as strings, without empty ones and ones holding a line break."""
        import pyarrow as pa
        import pyarrow.compute as pc

        tokens = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
        line_break = pc.or_(pc.match_substring(tokens, "\n"), pc.match_substring(tokens, "\r"))
        return tokens.filter(pc.and_(pc.not_equal(tokens, ""), pc.invert(line_break)))

    def warmup_values(self, rng: Any, tokens: Sequence[str], rows: int) -> np.ndarray:
        """Vocabulary tokens drawn uniformly (int64 parsed, strings UTF-8 encoded)."""
        values = [tokens[i] for i in rng.choice(len(tokens), size=rows)]
        if self.dtype == "int64":
            return np.array(values, dtype=np.int64)
        return np.array([v.encode() for v in values], dtype=object)


__all__ = ["CategoricalFeature"]

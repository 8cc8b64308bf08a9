"""``numeric``: a float32 / int64 column, bucketized or normalized.

With ``boundaries`` ``b_1 < ... < b_k`` the value is bucketized, ``bucket(x) = #{i : b_i <= x}``
(``tf.raw_ops.Bucketize``), into ``k + 1`` rows of a table and the field is ``E[bucket(x)]``
(width ``embedding_dim``). Without, the field (width 1) is the normalized value

    e = (g(x) - mean) / std,    g = identity, or g(x) = log1p(max(x, 0)) for ``transform: log1p``

Both can come from the training window instead of the spec (:mod:`cvr_tf.statistics`,
resolved by :func:`cvr_tf.resolve.resolve_for_window`):

* ``"normalization": "auto"``: ``mean`` and ``std`` of ``g(x)`` over the window's train splits
  (population std; a constant column gets ``std = 1``, as scikit-learn's ``StandardScaler``,
  so its field is 0 rather than a division by zero);
* ``"boundaries": "quantiles:N"``: the ``N - 1`` boundaries splitting the window's values into
  ``N`` buckets of about equal counts (as ``tft.quantiles(x, num_buckets=N)``); equal
  boundaries (a value holding more than ``1/N`` of the rows) are merged, so the resolved table
  has at most ``N`` rows.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cvr_tf.features.base import Feature

# transform -> its numpy form, for the pipeline's statistics (the model's is in `embed`).
NUMPY_TRANSFORMS = {"identity": lambda v: v, "log1p": lambda v: np.log1p(np.maximum(v, 0.0))}
TRANSFORMS = tuple(NUMPY_TRANSFORMS)
NORMALIZATIONS = ("auto",)
_QUANTILES = re.compile(r"quantiles:(\d+)")


@dataclasses.dataclass(frozen=True)
class NumericFeature(Feature):
    """A numeric feature.

    Attributes:
      boundaries: bucket boundaries (a list of numbers), or ``"quantiles:N"``.
      transform: ``identity`` or ``log1p`` before normalization.
      mean: subtracted after the transform.
      std: divides after centering.
      normalization: ``"auto"`` to take ``mean`` and ``std`` from the training window.
    """

    KIND: ClassVar[str] = "numeric"

    boundaries: tuple[float, ...] | str | None = None
    transform: str = "identity"
    mean: float = 0.0
    std: float = 1.0
    normalization: str | None = None

    def validate(self) -> None:
        if self.dtype == "string":
            self.fail("numeric features read int64 or float32 columns, got dtype 'string'")
        if self.shared_embedding and self.boundaries is None:
            self.fail("only bucketized numerics (with boundaries) have an embedding to share")
        if self.transform not in TRANSFORMS:
            self.fail(f"unknown transform {self.transform!r}; use one of {', '.join(TRANSFORMS)}")
        if not self.std > 0:
            self.fail(f"std must be positive, got {self.std}")
        if self.normalization is not None:
            if self.normalization not in NORMALIZATIONS:
                self.fail(f"unknown normalization {self.normalization!r}; use \"auto\" (mean and "
                          "std of the training window) or drop it and give mean and std")
            if self.boundaries is not None:
                self.fail("normalization applies to normalized numerics; drop it or boundaries")
            if (self.mean, self.std) != (0.0, 1.0):
                self.fail("normalization \"auto\" computes mean and std; drop them (or it)")
        if isinstance(self.boundaries, str):
            if self.quantile_buckets is None or self.quantile_buckets < 2:
                self.fail(f"boundaries must be a list of numbers or \"quantiles:N\" with N >= 2 "
                          f"buckets, got {self.boundaries!r}")
        elif self.boundaries is not None:
            if not isinstance(self.boundaries, Sequence) or any(
                    isinstance(b, bool) or not isinstance(b, int | float)
                    for b in self.boundaries):
                self.fail(f"boundaries must be a list of numbers, got {self.boundaries!r}")
            if not self.boundaries or list(self.boundaries) != sorted(set(self.boundaries)):
                self.fail("boundaries must be non-empty and strictly increasing, "
                          f"got {list(self.boundaries)}")
            object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))

    @property
    def quantile_buckets(self) -> int | None:
        """N of ``boundaries: "quantiles:N"`` (None otherwise)."""
        match = _QUANTILES.fullmatch(self.boundaries) if isinstance(self.boundaries, str) else None
        return int(match.group(1)) if match else None

    @property
    def table(self) -> str | None:
        return None if self.boundaries is None else (self.shared_embedding or self.name)

    def table_rows(self, vocabulary: Sequence[str] | None = None) -> int:
        """``len(boundaries) + 1`` buckets (for ``quantiles:N``, at most N before resolution)."""
        if self.boundaries is None:
            return super().table_rows(vocabulary)
        if isinstance(self.boundaries, str):
            return int(self.quantile_buckets or 0)
        return len(self.boundaries) + 1

    def table_signature(self) -> tuple:
        return (*super().table_signature(), self.boundaries)

    @property
    def computes_statistics(self) -> bool:
        return True

    @property
    def needs_statistics(self) -> bool:
        return self.normalization is not None or isinstance(self.boundaries, str)

    def resolved(self, statistics: Any) -> NumericFeature:
        """The feature with ``auto`` mean/std and ``quantiles:N`` boundaries computed.

        Args:
          statistics: the window's :class:`cvr_tf.statistics.ColumnStatistics` of the column.
        """
        if not self.needs_statistics:
            return self
        if statistics.count == 0:
            self.fail(f"column {self.column!r} has no values in the training window, so "
                      f"{self.normalization or self.boundaries!r} cannot be computed; give "
                      "explicit numbers or train on days holding the column")
        if self.normalization is not None:
            moments = statistics.moments(self.transform)
            return dataclasses.replace(self, normalization=None, mean=moments.mean,
                                       std=moments.std if moments.std > 0 else 1.0)
        boundaries = statistics.sketch.boundaries(int(self.quantile_buckets or 0))
        return dataclasses.replace(self, boundaries=tuple(boundaries))

    def embed(self, x: Any, table: Any, lookup: Any) -> Any:
        from cvr_tf.compat import tf

        if self.needs_statistics:
            self.fail("normalization \"auto\" and boundaries \"quantiles:N\" come from a training "
                      "window; build the model from cvr_tf.resolve.resolve_for_window(...)")
        values = tf.cast(x, tf.float32)
        if self.boundaries is None:
            if self.transform == "log1p":
                values = tf.math.log1p(tf.maximum(values, 0.0))
            return tf.expand_dims((values - self.mean) / self.std, -1)
        ids = tf.raw_ops.Bucketize(input=values, boundaries=list(self.boundaries))
        return tf.nn.embedding_lookup(table, ids)

    def warmup_values(self, rng: Any, tokens: Sequence[str], rows: int) -> np.ndarray:
        """Uniform in ``[min_value, max_value]`` (``[0, 100]`` by default), int64 rounded."""
        low = self.min_value if self.min_value is not None else 0.0
        high = self.max_value if self.max_value is not None else low + 100.0
        values = rng.uniform(low, high, size=rows)
        if self.dtype == "int64":
            return np.round(values).astype(np.int64)
        return values.astype(np.float32)

    def schema_domain(self, column: Any) -> None:
        """``float_domain`` / ``int_domain`` min and max from ``min_value`` / ``max_value``."""
        if self.min_value is None and self.max_value is None:
            return
        is_float = self.dtype == "float32"
        domain = column.float_domain if is_float else column.int_domain
        if self.min_value is not None:
            domain.min = self.min_value if is_float else int(self.min_value)
        if self.max_value is not None:
            domain.max = self.max_value if is_float else int(self.max_value)


__all__ = ["NORMALIZATIONS", "NUMPY_TRANSFORMS", "NumericFeature", "TRANSFORMS"]

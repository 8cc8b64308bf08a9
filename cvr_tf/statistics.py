"""Per-span statistics of the numeric columns, mergeable over any window of days.

Beside its token counts, the pipeline writes for each span ``span=D/numeric_statistics.json``:
for every column a numeric feature reads, over the span's *training* split (as the
vocabularies, so eval days never leak into a model), the moments of ``x`` and of
``log1p(max(x, 0))`` (the ``transform: log1p`` the model applies) and a quantile sketch of ``x``
(:mod:`cvr_tf.quantiles`). A window's statistics are the merge of its spans':

* moments ``(n, mean, M2 = sum (x - mean)^2, min, max)`` merge exactly (Chan et al.'s pairwise
  update, numerically safer than sums of squares): with ``d = mean_b - mean_a``,
  ``n = n_a + n_b``, ``mean = mean_a + d n_b / n``, ``M2 = M2_a + M2_b + d^2 n_a n_b / n``;
  ``std = sqrt(M2 / n)`` (population std, as ``numpy.std``, ``tft.scale_to_z_score``);
* quantile sketches merge by union, their rank errors adding in counts, so the window's
  relative rank error is at most the largest span's. Within a span, each chunk's sketch is
  compressed to 1024 points (relative error ``<= 1/2048`` plus half a count) and every level of
  Beam's combine adds at most ``1/1024`` (plus half a count): with Beam's two or three levels a
  span's rank error stays below ``4/1024`` of its rows. Each sketch records its exact bound
  (``rank_error``), which is what the tests check the boundaries against.

NaNs are ignored (as ``tft.quantiles``). :func:`cvr_tf.resolve.resolve_for_window` turns a
window's statistics into a spec's ``normalization: auto`` and ``quantiles:N`` numbers.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from cvr_tf.features import FeatureSpec
from cvr_tf.features.numeric import NUMPY_TRANSFORMS
from cvr_tf.input import list_spans
from cvr_tf.quantiles import SKETCH_SIZE, QuantileSketch, merge_sketches

STATISTICS_FILE = "numeric_statistics.json"


@dataclasses.dataclass(frozen=True)
class Moments:
    """Count, mean, sum of squared deviations ``m2``, min and max of a sample."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        if not len(values):
            return cls()
        mean = float(values.mean())
        return cls(len(values), mean, float(((values - mean) ** 2).sum()), float(values.min()),
                   float(values.max()))

    @property
    def std(self) -> float:
        """Population standard deviation, ``sqrt(m2 / count)`` (0 for an empty sample)."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def merge(self, other: Moments) -> Moments:
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        return Moments(count, self.mean + delta * other.count / count,
                       self.m2 + other.m2 + delta * delta * self.count * other.count / count,
                       min(self.min, other.min), max(self.max, other.max))

    def to_dict(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0}
        return {"count": self.count, "mean": self.mean, "std": self.std, "min": self.min,
                "max": self.max}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Moments:
        count = int(data["count"])
        if not count:
            return cls()
        return cls(count, float(data["mean"]), float(data["std"]) ** 2 * count,
                   float(data["min"]), float(data["max"]))


@dataclasses.dataclass(frozen=True, eq=False)
class ColumnStatistics:
    """Moments of each transform of a column and a quantile sketch of its raw values."""

    transforms: dict[str, Moments]
    sketch: QuantileSketch

    @property
    def count(self) -> int:
        return self.transforms["identity"].count

    def moments(self, transform: str) -> Moments:
        """Moments of ``transform(x)``."""
        return self.transforms[transform]

    @classmethod
    def of(cls, values: np.ndarray, size: int = SKETCH_SIZE) -> ColumnStatistics:
        values = np.asarray(values, np.float64)
        values = values[~np.isnan(values)]
        return cls({t: Moments.of(g(values)) for t, g in NUMPY_TRANSFORMS.items()},
                   QuantileSketch.from_values(values, size))

    def merge(self, other: ColumnStatistics, size: int | None = SKETCH_SIZE
              ) -> ColumnStatistics:
        return ColumnStatistics({t: self.transforms[t].merge(other.transforms[t])
                                 for t in NUMPY_TRANSFORMS},
                                merge_sketches([self.sketch, other.sketch], size))

    def to_dict(self) -> dict[str, Any]:
        return {**{t: self.transforms[t].to_dict() for t in NUMPY_TRANSFORMS},
                "quantiles": self.sketch.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnStatistics:
        return cls({t: Moments.from_dict(data[t]) for t in NUMPY_TRANSFORMS},
                   QuantileSketch.from_dict(data["quantiles"]))


Statistics = dict[str, ColumnStatistics]


def numeric_columns(spec: FeatureSpec) -> list[str]:
    """Columns read by the spec's numeric features, the ones the pipeline describes."""
    return list(dict.fromkeys(f.column for f in spec.features if f.computes_statistics))


def compute_statistics(table: pa.Table, spec: FeatureSpec) -> Statistics:
    """Statistics of every numeric column of ``spec`` in ``table`` (nulls skipped)."""
    out: Statistics = {}
    for column in numeric_columns(spec):
        values = table.column(column).drop_null().to_numpy()
        out[column] = ColumnStatistics.of(values)
    return out


def merge_statistics(parts: Iterable[Mapping[str, ColumnStatistics]],
                     size: int | None = SKETCH_SIZE) -> Statistics:
    """Per-column merge (a Beam ``CombinePerKey`` function); sketches compressed to ``size``."""
    merged: Statistics = {}
    for part in parts:
        for column, stats in part.items():
            merged[column] = merged[column].merge(stats, size) if column in merged else stats
    return merged


def write_statistics(directory: str | os.PathLike, statistics: Mapping[str, ColumnStatistics]
                     ) -> None:
    """Writes ``<directory>/numeric_statistics.json`` (under a temporary name, then renamed)."""
    path = os.path.join(os.fspath(directory), STATISTICS_FILE)
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        json.dump({"columns": {c: s.to_dict() for c, s in statistics.items()}}, handle)
        handle.write("\n")
    os.replace(f"{path}.tmp", path)


def read_statistics(span: str | os.PathLike, columns: Iterable[str]) -> Statistics:
    """The statistics :func:`write_statistics` wrote in a span, for ``columns``.

    Raises:
      FileNotFoundError: the span has no statistics (an older pipeline) or lacks a column
        (built with another spec); the message names the span and the fix.
    """
    path = os.path.join(os.fspath(span), STATISTICS_FILE)
    fix = ("rebuild it with pipelines.build_tfrecords --overwrite (and the current "
           "--feature_spec)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"span {os.fspath(span)} has no {STATISTICS_FILE} (built by an "
                                f"older pipeline), which normalization auto / quantiles:N "
                                f"need; {fix}")
    with open(path, encoding="utf-8") as handle:
        recorded = json.load(handle)["columns"]
    missing = [c for c in columns if c not in recorded]
    if missing:
        raise FileNotFoundError(f"span {os.fspath(span)} has no statistics of column(s) "
                                f"{', '.join(missing)} (built with a spec not reading them as "
                                f"numeric); {fix}")
    return {c: ColumnStatistics.from_dict(recorded[c]) for c in columns}


def window_statistics(data_dir: str | os.PathLike, columns: Iterable[str],
                      start: datetime.date, end: datetime.date) -> Statistics:
    """Statistics of ``columns`` over the complete spans of ``start..end`` (sketches unioned,
    not compressed again, so their rank error stays the spans')."""
    columns = list(columns)
    return merge_statistics((read_statistics(span, columns)
                             for span in list_spans(data_dir, start, end)), size=None)


__all__ = ["STATISTICS_FILE", "ColumnStatistics", "Moments", "Statistics", "compute_statistics",
           "merge_statistics", "numeric_columns", "read_statistics", "window_statistics",
           "write_statistics"]

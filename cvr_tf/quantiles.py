"""A mergeable weighted quantile sketch with an exact, tracked rank-error bound.

A sketch of ``N`` values is a list of weighted points ``(v_i, w_i)``, ``v`` sorted and distinct,
``sum_i w_i = N``, plus ``E``, its *rank error*: for every threshold ``x`` the sketch's counts
``Ĉ(<= x) = sum_{v_i <= x} w_i`` and ``Ĉ(< x)`` differ from the true counts by at most ``E``.
The design follows the weighted quantile summaries of TensorFlow's boosted trees that
``tft.quantiles`` builds on (two operations, *merge* and *compress*), written from the idea,
not the code:

* ``from_values``: distinct values with their counts, ``E = 0``, then compressed;
* ``merge(a, b)``: the union of the points (equal values add), ``E = E_a + E_b`` (the counts
  of the union are the sums of the counts, so the errors add in counts, i.e. the relative error
  ``E / N`` is at most the larger of the two);
* ``compress(K)``: cut the points, in value order, into blocks of weight about ``N / K``
  (``block = floor(W_before * K / N)``) and keep each block's weighted median with the block's
  weight. A threshold falls inside at most one block, and the median errs on it by at most half
  the block's weight, so ``E`` grows by ``max_block_weight / 2 <= (N / K + w_max) / 2``. For a
  sketch made from raw values (``w_max = 1``) that is ``E <= N / (2K) + 1/2``.

:meth:`QuantileSketch.boundaries` returns, for ``q = j / B`` (``j = 1..B-1``), the first point
``b`` whose cumulative weight reaches ``qN``; then ``#{x < b} < qN + E`` and
``#{x <= b} >= qN - E``: ``b`` is a ``q``-quantile within rank error ``E`` (``E / N`` as a
fraction; the pipeline's 1024-point sketches give about ``1/2048`` per compression).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

SKETCH_SIZE = 1024  # points a span's sketch keeps


@dataclasses.dataclass(frozen=True, eq=False)  # numpy fields: no elementwise ==
class QuantileSketch:
    """Weighted points of a sample and the rank error of their counts.

    Attributes:
      values: distinct values, increasing (float64).
      weights: how many sample values each point stands for (positive).
      rank_error: ``E``, the most the sketch's counts below/at any threshold are off.
    """

    values: np.ndarray
    weights: np.ndarray
    rank_error: float = 0.0

    @property
    def count(self) -> float:
        """``N``, the number of values sketched."""
        return float(self.weights.sum())

    @classmethod
    def from_values(cls, values: Any, size: int = SKETCH_SIZE) -> QuantileSketch:
        """The sketch of a sample (NaNs ignored), compressed to at most ``size`` points."""
        array = np.asarray(values, dtype=np.float64)
        distinct, counts = np.unique(array[~np.isnan(array)], return_counts=True)
        return cls(distinct, counts.astype(np.float64)).compress(size)

    def compress(self, size: int = SKETCH_SIZE) -> QuantileSketch:
        """At most ``size`` points; the rank error grows by half the heaviest block."""
        if len(self.values) <= size:
            return self
        cumulative = np.cumsum(self.weights)
        before = cumulative - self.weights
        block = np.minimum(np.floor(before * size / cumulative[-1]), size - 1)
        starts = np.flatnonzero(np.r_[True, np.diff(block) != 0])
        block_weights = np.add.reduceat(self.weights, starts)
        medians = np.searchsorted(cumulative, before[starts] + block_weights / 2, side="left")
        return _collapsed(self.values[medians], block_weights,
                          self.rank_error + float(block_weights.max()) / 2)

    def boundaries(self, num_buckets: int) -> list[float]:
        """The distinct ``j / num_buckets`` quantiles, ``j = 1 .. num_buckets - 1``."""
        if num_buckets < 2:
            raise ValueError(f"num_buckets must be at least 2, got {num_buckets}")
        if not len(self.values):
            raise ValueError("the sketch is empty; there are no quantiles")
        cumulative = np.cumsum(self.weights)
        targets = np.arange(1, num_buckets) / num_buckets * cumulative[-1]
        picks = np.minimum(np.searchsorted(cumulative, targets, side="left"), len(cumulative) - 1)
        return [float(v) for v in np.unique(self.values[picks])]

    def to_dict(self) -> dict[str, Any]:
        return {"rank_error": self.rank_error, "values": self.values.tolist(),
                "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantileSketch:
        return cls(np.asarray(data["values"], np.float64), np.asarray(data["weights"], np.float64),
                   float(data["rank_error"]))


def _collapsed(values: np.ndarray, weights: np.ndarray, rank_error: float) -> QuantileSketch:
    """Sorted points with equal values merged (their weights added), which loses nothing."""
    order = np.argsort(values, kind="stable")
    distinct, inverse = np.unique(values[order], return_inverse=True)
    return QuantileSketch(distinct, np.bincount(inverse, weights=weights[order]), rank_error)


def merge_sketches(sketches: Iterable[QuantileSketch], size: int | None = SKETCH_SIZE
                   ) -> QuantileSketch:
    """The sketch of the union of the samples; compressed to ``size`` points unless None."""
    sketches = list(sketches)
    if not sketches:
        return QuantileSketch(np.zeros(0), np.zeros(0))
    merged = _collapsed(np.concatenate([s.values for s in sketches]),
                        np.concatenate([s.weights for s in sketches]),
                        sum(s.rank_error for s in sketches))
    return merged if size is None else merged.compress(size)


__all__ = ["QuantileSketch", "SKETCH_SIZE", "merge_sketches"]

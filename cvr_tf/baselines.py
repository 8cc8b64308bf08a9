"""A popularity baseline: each candidate scored by its item's smoothed training conversion rate.

    score(i) = (conversions_i + a * p) / (impressions_i + a)

with ``p`` the overall training conversion rate and ``a`` the smoothing strength (pseudo
impressions at rate ``p``); items never seen in training score ``p``. It is the bar a learned
model must clear: it knows what converts in general, nothing about the query or the user.
"""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pandas as pd

from cvr_tf import input as input_lib
from cvr_tf import metrics as metrics_lib
from cvr_tf.features import FeatureSpec


@dataclasses.dataclass(frozen=True)
class PopularityBaseline:
    """Smoothed conversion rate per key (item)."""

    rates: pd.Series  # key -> smoothed rate
    prior: float

    def score(self, keys: np.ndarray) -> np.ndarray:
        return self.rates.reindex(keys).fillna(self.prior).to_numpy(dtype=np.float64)


def fit_popularity(data_dir: str, start: datetime.date, end: datetime.date, spec: FeatureSpec,
                   key: str = "item_id", smoothing: float = 20.0) -> PopularityBaseline:
    """Counts impressions and conversions per ``key`` over the train split of ``start..end``."""
    if smoothing <= 0:
        raise ValueError(f"smoothing must be positive, got {smoothing}")
    data = input_lib.read_columns(data_dir, start, end, spec, [key, spec.label], ("train",))
    counts = pd.DataFrame({"key": data[key], "label": data[spec.label]}).groupby("key")["label"]
    prior = float(data[spec.label].mean())
    rates = (counts.sum() + smoothing * prior) / (counts.count() + smoothing)
    return PopularityBaseline(rates=rates, prior=prior)


def evaluate_popularity(baseline: PopularityBaseline, data_dir: str, start: datetime.date,
                        end: datetime.date, spec: FeatureSpec, key: str = "item_id"
                        ) -> dict[str, float | int | None]:
    """The baseline's metrics on every split of ``start..end`` (as the training job evaluates)."""
    data = input_lib.read_columns(data_dir, start, end, spec,
                                  [key, spec.label, spec.group_key])
    return metrics_lib.evaluate(data[spec.label], baseline.score(data[key]), data[spec.group_key])

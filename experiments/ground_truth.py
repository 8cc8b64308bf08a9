"""A trained model's served scores on simulated impressions, beside the simulator's ground truth.

Simulated with ``SimulatorConfig.with_ground_truth``, every impression row of the logs carries the
probabilities it was drawn from (``true_cvr``: an eventual conversion; with the funnel also
``true_ctr`` and ``true_cvr_given_click``). :func:`served_frame` scores the rows of some days of
those logs with a model's served probabilities (each task's, for a multi-task model), keyed like
the logs, and :func:`truth_metrics` compares predictions with a truth column:

    calibration_vs_truth = sum_i p_i / sum_i t_i
    rank_correlation     = Pearson correlation of the ranks of p and t (Spearman's rho; None
                           when either is constant)
    kl_to_truth          = mean_i [t_i log(t_i / p_i) + (1 - t_i) log((1 - t_i) / (1 - p_i))]

The last is the log loss a model pays over the Bayes-optimal one, in expectation over the
labels; unlike AUC on sampled labels it has no label noise.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cvr_tf.compat import tf
from cvr_tf.model import CVRModel

_EPS = 1e-7
BATCH_ROWS = 8192


def served_frame(model: CVRModel, logs: str, days: Sequence[datetime.date],
                 columns: Sequence[str]) -> pd.DataFrame:
    """One row per impression of ``days``: ``columns`` of the logs and the served
    probability, in ``p`` (single-task) or ``p_<task>`` (multi-task)."""
    spec = model.spec
    dtypes = spec.serving_columns()
    parts = []
    for day in days:
        path = os.path.join(logs, "impressions", f"date={day.isoformat()}")
        table = pq.read_table(path, columns=list(dict.fromkeys([*dtypes, *columns])))
        frame = table.to_pandas()
        scores: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(frame), BATCH_ROWS):
            rows = frame.iloc[start:start + BATCH_ROWS]
            inputs = {c: tf.constant(rows[c].to_numpy(), tf.dtypes.as_dtype(d))
                      for c, d in dtypes.items()}
            served = model.served_probabilities(spec.derive_serving_columns(inputs))
            for name, values in (served.items() if isinstance(served, dict)
                                 else [("", served)]):
                scores.setdefault(f"p_{name}" if name else "p", []).append(values.numpy())
        parts.append(frame[list(columns)].assign(
            **{name: np.concatenate(values) for name, values in scores.items()}))
    return pd.concat(parts, ignore_index=True)


def truth_metrics(predictions: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Predictions against true probabilities (see the module docstring)."""
    p = np.clip(np.asarray(predictions, np.float64), _EPS, 1 - _EPS)
    t = np.clip(np.asarray(truth, np.float64), _EPS, 1 - _EPS)
    if len(p) == 0:
        return {"calibration_vs_truth": None, "rank_correlation": None, "kl_to_truth": None}
    ranks = [pd.Series(values).rank().to_numpy() for values in (p, t)]
    constant = any(np.all(r == r[0]) for r in ranks)  # no rank correlation to speak of
    kl = t * np.log(t / p) + (1 - t) * np.log((1 - t) / (1 - p))
    return {"calibration_vs_truth": float(p.sum() / t.sum()),
            "rank_correlation": None if constant else float(np.corrcoef(*ranks)[0, 1]),
            "kl_to_truth": float(kl.mean())}


__all__ = ["served_frame", "truth_metrics"]

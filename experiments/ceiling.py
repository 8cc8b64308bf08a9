"""The Bayes ceiling of a simulated test window: what the true conversion probability scores.

The simulator knows each impression's probability of an eventual conversion (``true_cvr``,
with ``SimulatorConfig.with_ground_truth``). Scored against the label the spans carry
(``converted``: a conversion within ``attribution_days``), it gives the best AUC, mAP and gAUC
any model of the logged features could reach on those rows, and a near bound on the logloss
(``true_cvr`` counts conversions after the window too, so its rate is a little above the
label's). A cell's **gap** to the ceiling is how much of that a trained model leaves:

    gap_m = ceiling_m - model_m     for AUC, mAP, gAUC (higher is better)
    gap_m = model_m - ceiling_m     for logloss (lower is better)

so a positive gap is room left. Days are simulated independently of each other, so the test
days simulated again here, with ground truth, are the test spans' rows; :func:`gaps` refuses a
model evaluated on another number of rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import pyarrow.parquet as pq

from cvr_tf import metrics as metrics_lib
from experiments.grid import DataConfig, GridError
from pipelines.simulate import GROUND_TRUTH_COLUMN, LABEL_COLUMN, simulate_logs

METRICS = ("auc", "mean_average_precision", "group_auc", "logloss")
LOWER_IS_BETTER = ("logloss",)
CEILING_FILE = "bayes_ceiling.json"


def bayes_ceiling(data: DataConfig, root: str) -> dict[str, Any]:
    """The test window's ceiling metrics, computed once and kept in ``<root>/``.

    Args:
      data: a simulated grid's data (``data.simulated``).
      root: a directory for the ground-truth logs and the cached result.

    Returns:
      :data:`METRICS` of ``true_cvr`` against ``converted``, ``examples`` and
      ``positive_rate``.

    Raises:
      GridError: for a team's own spans, which have no ground truth.
    """
    if not data.simulated:
        raise GridError("the Bayes ceiling needs the simulator's ground truth; drop "
                        "--with_ground_truth for your own spans")
    path = os.path.join(root, CEILING_FILE)
    wanted = data.record(data.eval_start)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            cached = json.load(handle)
        if cached["data"] == wanted:
            return cached["ceiling"]
    logs = os.path.join(root, "ground_truth_logs")
    simulate_logs(logs, data.eval_start, data.eval_days, data.requests_per_day,
                  data.candidates_per_request,
                  data.simulator_config(with_ground_truth=True, with_label_column=True),
                  overwrite=True)
    table = pq.read_table(os.path.join(logs, "impressions"),
                          columns=["request_id", LABEL_COLUMN, GROUND_TRUTH_COLUMN])
    result = metrics_lib.evaluate(table[LABEL_COLUMN].to_numpy(),
                                  table[GROUND_TRUTH_COLUMN].to_numpy(),
                                  table["request_id"].to_numpy())
    ceiling = {k: result[k] for k in (*METRICS, "examples", "positive_rate")}
    os.makedirs(root, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"data": wanted, "ceiling": ceiling}, handle, indent=2)
    return ceiling


def gaps(model: Mapping[str, Any], ceiling: Mapping[str, Any]) -> dict[str, float | None]:
    """Room left to the ceiling per metric (module docstring); None where a metric is None.

    Raises:
      GridError: when ``model`` was evaluated on another number of rows than the ceiling.
    """
    if model["examples"] != ceiling["examples"]:
        raise GridError(f"the model was tested on {model['examples']} rows but the ceiling on "
                        f"{ceiling['examples']}: not the same test window; rebuild the spans")
    out: dict[str, float | None] = {}
    for metric in METRICS:
        if model[metric] is None or ceiling[metric] is None:
            out[metric] = None
        elif metric in LOWER_IS_BETTER:
            out[metric] = model[metric] - ceiling[metric]
        else:
            out[metric] = ceiling[metric] - model[metric]
    return out

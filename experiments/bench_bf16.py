"""bf16 for the dense part on this CPU: speed and accuracy of TensorFlow's oneDNN bfloat16
auto-mixed-precision rewrite, the one ``tensorflow_model_server --mixed_precision=bfloat16``
turns on, against fp32 on the same exports.

The rewrite is a process-wide Grappler option applied when a function is instantiated, so this
probe loads each export twice: first in fp32, then, after switching the option on, again. It
reports per export (``dcnv2`` and ``dhen``, unbatched, 100 and 1,600 rows a call) the median
latency of sequential ``serving_default`` calls in both precisions, the max and mean absolute
score difference, and the AUC of both on labels drawn from the fp32 probabilities
(``y ~ Bernoulli(p_fp32)``: untrained models have no labels, and this AUC shows whether bf16
rounding changes the ranking that matters)::

    python -m experiments.bench_bf16 [--calls 30] [--out experiments/results/bf16.json]
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags

from cvr_tf import metrics as metrics_lib
from cvr_tf.compat import tf
from experiments.serving_exports import Variant, export_variants, request_features
from serving import signatures

VARIANTS = (Variant("dcnv2_none", "dcnv2", "none"), Variant("dhen_none", "dhen", "none"))
ROWS = (100, 1600)
REWRITE = "auto_mixed_precision_onednn_bfloat16"

FLAGS = flags.FLAGS
flags.DEFINE_integer("calls", 30, "Timed sequential calls per export, precision and size.")
flags.DEFINE_integer("vocabulary_limit", None, "Cap every vocabulary (smoke runs only).")
flags.DEFINE_string("out", "experiments/results/bf16.json", "Where the JSON goes.")


def _scores_and_latency(function: Any, requests: Mapping[int, Sequence[Mapping[str, np.ndarray]]],
                        calls: int) -> tuple[np.ndarray, dict[int, float]]:
    """Scores of the 100-row requests, and the median ms per call at each size."""
    scores = np.concatenate([function(**r)[signatures.PROBABILITIES].numpy()
                             for r in requests[ROWS[0]]])
    latency = {}
    for rows, batch in requests.items():
        function(**batch[0])  # warm up this shape
        timings = []
        for index in range(calls):
            started = time.perf_counter()
            function(**batch[index % len(batch)])[signatures.PROBABILITIES].numpy()
            timings.append((time.perf_counter() - started) * 1e3)
        latency[rows] = round(statistics.median(timings), 3)
    return scores, latency


def compare(fp32: np.ndarray, bf16: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Max/mean |bf16 - fp32| and both AUCs on labels drawn from the fp32 probabilities."""
    labels = (np.random.default_rng(seed).random(fp32.size) < fp32).astype(np.int64)
    return {"rows": int(fp32.size), "max_abs_difference": float(np.max(np.abs(fp32 - bf16))),
            "mean_abs_difference": float(np.mean(np.abs(fp32 - bf16))),
            "auc_fp32": metrics_lib.auc(labels, fp32), "auc_bf16": metrics_lib.auc(labels, bf16)}


def main(argv: list[str]) -> None:
    del argv
    load_before = [round(x, 2) for x in os.getloadavg()]
    batching = signatures.BatchingConfig(scope="none", allowed_batch_sizes=())
    requests = {rows: request_features(rows, count=8 if rows == ROWS[0] else 2,
                                       vocabulary_limit=FLAGS.vocabulary_limit)
                for rows in ROWS}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        _, models = export_variants(workdir, batching, VARIANTS, FLAGS.vocabulary_limit)
        fp32 = {}
        for name, model in models.items():
            function = tf.saved_model.load(model["path"]).signatures[signatures.DEFAULT_SIGNATURE]
            fp32[name] = (function, *_scores_and_latency(function, requests, FLAGS.calls))
        tf.config.optimizer.set_experimental_options({REWRITE: True})
        for name, model in models.items():
            function = tf.saved_model.load(model["path"]).signatures[signatures.DEFAULT_SIGNATURE]
            scores, latency = _scores_and_latency(function, requests, FLAGS.calls)
            results[name] = {"fp32_ms": fp32[name][2], "bf16_ms": latency,
                             **compare(fp32[name][1], scores)}
    load_after = [round(x, 2) for x in os.getloadavg()]
    print(f"load average {load_before} before, {load_after} after; median ms per call\n")
    print("| export | rows | fp32 ms | bf16 ms | speedup | max abs diff | AUC fp32 | AUC bf16 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in results.items():
        for rows in ROWS:
            print(f"| {name} | {rows} | {row['fp32_ms'][rows]:.2f} | {row['bf16_ms'][rows]:.2f} | "
                  f"{row['fp32_ms'][rows] / row['bf16_ms'][rows]:.2f}x | "
                  f"{row['max_abs_difference']:.1e} | {metrics_lib.format_metric(row['auc_fp32'])}"
                  f" | {metrics_lib.format_metric(row['auc_bf16'])} |")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump({"load_average_before_after": [load_before, load_after], "exports": results},
                  handle, indent=1)


if __name__ == "__main__":
    app.run(main)

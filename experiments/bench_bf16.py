"""bfloat16 dense part (``serving.export --dense_precision=bfloat16``): speed and accuracy of
trained models on real (simulated) logs, against the float32 export of the same checkpoint.

1. simulate ``--days`` of search logs and build their spans (the demo's pipeline, a smaller
   world), unless ``--data_dir`` names spans already built;
2. train dcnv2 and dhen (``--steps``) on all days but the last;
3. export each checkpoint twice, unbatched: float32 and bfloat16;
4. score every request of the last day through both exports' ``serving_default`` (as TF Serving
   runs the SavedModel), and report per backbone the max and mean absolute score difference, the
   AUC and group AUC of both on the day's real labels, and the ms per sequential call at 100 and
   1,600 rows in both precisions (the fastest of 5 rounds, the precisions' rounds interleaved).

::

    python -m experiments.bench_bf16 [--steps 300] [--calls 6] [--data_dir SPANS]
        [--out experiments/results/bf16.json]
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import flags

from cvr_tf import input as input_lib
from cvr_tf import job, training
from cvr_tf import metrics as metrics_lib
from cvr_tf.compat import tf
from cvr_tf.features import default_spec
from cvr_tf.model import ModelConfig
from experiments.serving_exports import request_features
from pipelines.simulate import simulate_logs
from pipelines.span_pipeline import build_spans
from serving import export, signatures
from serving.batching import BatchingConfig

BACKBONES = ("dcnv2", "dhen")
PRECISIONS = signatures.DENSE_PRECISIONS
ROWS = (100, 1600)
FIRST_DAY = datetime.date(2026, 1, 5)

FLAGS = flags.FLAGS



def call_ms(functions: Mapping[str, Any], requests: Sequence[Mapping[str, np.ndarray]],
            calls: int, rounds: int = 5) -> dict[str, float]:
    """ms per sequential call of each function: the fastest of ``rounds`` rounds of ``calls``
    calls (the least disturbed by other jobs on a shared machine, as for the matmul peak), the
    functions' rounds interleaved so that a burst of load falls on all of them alike."""
    tensors = [{name: tf.constant(values) for name, values in r.items()} for r in requests]
    best = dict.fromkeys(functions, float("inf"))
    for function in functions.values():
        function(**tensors[0])  # this shape, warm
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            for index in range(calls):
                function(**tensors[index % len(tensors)])[signatures.PROBABILITIES].numpy()
            best[name] = min(best[name], (time.perf_counter() - started) / calls)
    return {name: round(seconds * 1e3, 3) for name, seconds in best.items()}


def compare(fp32: np.ndarray, bf16: np.ndarray, labels: np.ndarray, groups: np.ndarray
            ) -> dict[str, Any]:
    """Score differences, and AUC / group AUC of both precisions on the real labels."""
    difference = np.abs(fp32.astype(np.float64) - bf16)
    return {"rows": int(fp32.size), "max_abs_difference": float(difference.max()),
            "mean_abs_difference": float(difference.mean()),
            **{f"{metric}_{name}": function(labels, scores)
               for name, scores in (("fp32", fp32), ("bf16", bf16))
               for metric, function in (("auc", metrics_lib.auc),
                                        ("group_auc", lambda y, p: metrics_lib.group_auc(
                                            y, p, groups)))}}


def _spans(workdir: str) -> tuple[str, datetime.date, datetime.date]:
    """(spans dir, first day, last day): ``--data_dir``'s spans, or freshly simulated ones."""
    if FLAGS.data_dir:
        days = [datetime.date.fromisoformat(name.split("=", 1)[1])
                for name in sorted(os.listdir(FLAGS.data_dir))
                if name.startswith(input_lib.SPAN_PREFIX)]
        return FLAGS.data_dir, days[0], days[-1]
    last = FIRST_DAY + datetime.timedelta(days=FLAGS.days - 1)
    logs, spans = os.path.join(workdir, "logs"), os.path.join(workdir, "spans")
    simulate_logs(logs, FIRST_DAY, FLAGS.days, FLAGS.requests_per_day, 20)
    build_spans(logs, spans, FIRST_DAY, last)
    return spans, FIRST_DAY, last


def day_requests(spans: str, day: datetime.date
                 ) -> tuple[list[dict[str, np.ndarray]], np.ndarray, np.ndarray]:
    """The day's requests as a client sends them (its serving columns, one request per call),
    with their labels and request keys in the same row order."""
    spec = default_spec()
    data = input_lib.read_columns(spans, day, day, spec)
    order = np.argsort(data[spec.group_key], kind="stable")
    keys = data[spec.group_key][order]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    columns = {c: data[c][order] for c in spec.serving_columns()}
    requests = [{c: values[a:b] for c, values in columns.items()}
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return requests, data[spec.label][order], keys


def run(workdir: str) -> dict[str, Any]:
    spans, first, last = _spans(workdir)
    requests, labels, keys = day_requests(spans, last)
    timing_requests = {rows: request_features(rows, count=8 if rows == ROWS[0] else 2)
                       for rows in ROWS}
    results = {}
    for backbone in BACKBONES:
        model_dir = os.path.join(workdir, backbone)
        trained = training.train(training.TrainConfig(
            data_dir=spans, model_dir=model_dir, train_start=first,
            train_end=last - datetime.timedelta(days=1), eval_start=last, eval_end=last,
            model=ModelConfig(backbone=backbone), batch_size=512, steps=FLAGS.steps,
            log_every_steps=FLAGS.steps, overwrite=True))
        functions = {}
        for precision in PRECISIONS:
            path = export.export_model(
                model_dir, os.path.join(workdir, "export"), f"{backbone}_{precision}",
                batching=BatchingConfig(scope="none", allowed_batch_sizes=()),
                dense_device="cpu", dense_precision=precision)
            functions[precision] = tf.saved_model.load(path).signatures[
                signatures.DEFAULT_SIGNATURE]
        scores = {precision: np.concatenate([function(**r)[signatures.PROBABILITIES].numpy()
                                             for r in requests])
                  for precision, function in functions.items()}
        latency = {rows: call_ms(functions, timing_requests[rows], FLAGS.calls) for rows in ROWS}
        results[backbone] = {
            "trained_eval_auc": trained["eval"]["auc"],
            "fp32_ms": {rows: latency[rows][PRECISIONS[0]] for rows in ROWS},
            "bf16_ms": {rows: latency[rows][PRECISIONS[1]] for rows in ROWS},
            **compare(scores[PRECISIONS[0]], scores[PRECISIONS[1]], labels, keys)}
    return {"eval_day": last.isoformat(), "requests": len(requests), "exports": results}


def main(argv: list[str]) -> None:
    del argv
    load_before = [round(x, 2) for x in os.getloadavg()]
    if FLAGS.workdir:
        os.makedirs(FLAGS.workdir, exist_ok=True)
        result = run(FLAGS.workdir)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            result = run(workdir)
    load_after = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average {load_before} before, {load_after} after; {result['requests']} "
          f"requests of {result['eval_day']} scored; ms per sequential call, fastest of 5 rounds\n")
    print("| backbone | rows | fp32 ms | bf16 ms | speedup | max abs diff | mean abs diff "
          "| AUC fp32 | AUC bf16 | gAUC fp32 | gAUC bf16 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in result["exports"].items():
        for rows in ROWS:
            fp32, bf16 = row["fp32_ms"][rows], row["bf16_ms"][rows]
            print(f"| {name} | {rows} | {fp32:.2f} | {bf16:.2f} | {fp32 / bf16:.2f}x | "
                  f"{row['max_abs_difference']:.1e} | {row['mean_abs_difference']:.1e} | " +
                  " | ".join(metrics_lib.format_metric(row[f"{m}_{p}"])
                             for m in ("auc", "group_auc") for p in ("fp32", "bf16")) + " |")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump({"command": "python -m experiments.bench_bf16",
                   "load_average_before_after": [load_before, load_after], **result},
                  handle, indent=1)


def _define_flags() -> None:
    """The job's flags, defined when it runs (other benchmarks define --workdir and --out)."""
    flags.DEFINE_string("data_dir", "", "Spans to use (default: simulate --days into the workdir).")
    flags.DEFINE_integer("days", 8, "Days of simulated logs; the last one is scored.")
    flags.DEFINE_integer("requests_per_day", 1500, "Simulated search requests per day.")
    flags.DEFINE_integer("steps", 300, "Training steps per backbone (batch 512).")
    flags.DEFINE_integer("calls", 6, "Sequential calls per timed round (5 rounds, the fastest "
                         "counts) per export and size.")
    flags.DEFINE_string("workdir", "", "Keep everything here (default: a temporary directory).")
    flags.DEFINE_string("out", "experiments/results/bf16.json", "Where the JSON goes.")


if __name__ == "__main__":
    _define_flags()
    job.run(main)

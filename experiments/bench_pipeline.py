"""Pipeline benchmark: simulated logs -> TFRecord spans, rows/s vs a per-row Beam baseline.

Simulates ``days x requests_per_day x candidates_per_request`` impressions (1M by default) with
:func:`pipelines.simulate.simulate_logs`, then in one run on this machine:

* the real pipeline (:func:`pipelines.span_pipeline.build_spans`: validation, conversion join,
  split, tfx-bsl encoding, vocabularies, statistics) end to end, once per local Beam mode;
* a naive per-row Beam pipeline on the first ``baseline_rows`` impressions: one element per
  row, the conversion join as a CoGroupByKey per (request_id, item_id), a tf.train.Example
  built per row in Python, Beam's WriteToTFRecord;
* reading the written train split back with :func:`cvr_tf.input.make_dataset` (parse included).

Prints a table of rows per wall second and per CPU second of this process (all its threads; the
machine is shared, so CPU seconds are the steadier measure) and writes the rows as JSON.

    python -m experiments.bench_pipeline [--days=10] [--requests_per_day=5000]
        [--candidates_per_request=20] [--baseline_rows=50000] [--workdir=DIR]
        [--out=experiments/results/pipeline.json]
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import tempfile
import time
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from absl import app, flags
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from cvr_tf import job
from cvr_tf.compat import tf
from cvr_tf.features import default_spec
from cvr_tf.input import make_dataset
from pipelines.simulate import simulate_logs
from pipelines.span_pipeline import build_spans

START = datetime.date(2026, 1, 5)
ATTRIBUTION_MS = 3 * 86_400_000
MODES = {  # name -> Beam options of the local FnApiRunner
    "in_memory x1": {"direct_running_mode": "in_memory", "direct_num_workers": 1},
    "multi_threading x2": {"direct_running_mode": "multi_threading", "direct_num_workers": 2},
}


def _rates(rows: int, seconds: float, cpu_seconds: float) -> dict:
    return {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds,
            "cpu_seconds": cpu_seconds, "rows_per_cpu_second": rows / cpu_seconds}


def run_pipeline(logs: str, output: str, end: datetime.date, mode: dict[str, Any]) -> dict:
    """The real pipeline over the whole window, wall time from its own summary."""
    shutil.rmtree(output, ignore_errors=True)
    cpu = time.process_time()
    summary = build_spans(logs, output, START, end, default_spec(),
                          pipeline_options=PipelineOptions([], **mode))
    return _rates(summary.totals["rows_in"], summary.wall_seconds, time.process_time() - cpu)


def _example(row: dict[str, Any], columns: dict[str, str]) -> bytes:
    feature = {}
    for column, dtype in columns.items():
        value = row[column]
        if dtype == "string":
            feature[column] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[value.encode()]))
        elif dtype == "int64":
            feature[column] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        else:
            feature[column] = tf.train.Feature(float_list=tf.train.FloatList(
                value=[float(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _label(element, columns: dict[str, str]):
    _, grouped = element
    conversions = list(grouped["conversions"])
    for row in grouped["impressions"]:
        row = dict(row)
        row["converted"] = int(any(0 <= ts - row["ts"] <= ATTRIBUTION_MS for ts in conversions))
        yield _example(row, columns)


def run_baseline(logs: str, output: str, rows: int) -> dict:
    """One element per row, per-row Python tf.Examples (what the real pipeline avoids)."""
    columns = default_spec().log_columns()
    first_day = sorted(glob.glob(os.path.join(logs, "impressions", "date=*", "*.parquet")))[0]
    impressions = pq.read_table(first_day).slice(0, rows)
    conversion_files = sorted(  # the partitions the first day's labels need
        path for offset in range(4) for path in glob.glob(os.path.join(
            logs, "conversions", f"date={START + datetime.timedelta(days=offset)}", "*.parquet")))
    shutil.rmtree(output, ignore_errors=True)
    began, cpu = time.perf_counter(), time.process_time()
    options = PipelineOptions([], direct_running_mode="in_memory")
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        shown = (pipeline | "Impressions" >> beam.Create([impressions])
                 | "ImpressionRows" >> beam.FlatMap(lambda table: table.to_pylist())
                 | "KeyImpressions" >> beam.Map(lambda r: ((r["request_id"], r["item_id"]), r)))
        bought = (pipeline | "ConversionFiles" >> beam.Create(conversion_files)
                  | "ConversionRows" >> beam.FlatMap(lambda path: pq.read_table(
                      path, columns=["request_id", "item_id", "ts"]).to_pylist())
                  | "KeyConversions" >> beam.Map(
                      lambda r: ((r["request_id"], r["item_id"]), r["ts"])))
        _ = ({"impressions": shown, "conversions": bought} | beam.CoGroupByKey()
             | "Examples" >> beam.FlatMap(_label, columns)
             | beam.io.WriteToTFRecord(os.path.join(output, "train"), file_name_suffix=".gz",
                                       num_shards=1))
    return _rates(rows, time.perf_counter() - began, time.process_time() - cpu)


def run_reader(output: str, end: datetime.date, batch_size: int = 1024) -> dict:
    """tf.data read + parse of the train split, shuffled as training reads it."""
    dataset = make_dataset(output, START, end, default_spec(), batch_size=batch_size)
    began, cpu, rows = time.perf_counter(), time.process_time(), 0
    for batch in dataset:
        rows += int(batch["converted"].shape[0])
    return _rates(rows, time.perf_counter() - began, time.process_time() - cpu)


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="bench_pipeline_")
    logs, output = os.path.join(workdir, "logs"), os.path.join(workdir, "spans")
    end = START + datetime.timedelta(days=FLAGS.days - 1)
    shutil.rmtree(logs, ignore_errors=True)
    simulation = simulate_logs(logs, START, FLAGS.days, FLAGS.requests_per_day,
                               FLAGS.candidates_per_request)
    print(f"simulated {simulation.impressions:,} impressions in {simulation.wall_seconds:.1f} s",
          flush=True)
    rows = []
    for name, mode in MODES.items():
        rows.append({"what": f"pipeline ({name})", **run_pipeline(logs, output, end, mode)})
        print(rows[-1], flush=True)
    rows.append({"what": "tf.data read + parse (train split)", **run_reader(output, end)})
    baseline = {"what": "per-row Beam baseline (in_memory x1)",
                **run_baseline(logs, os.path.join(workdir, "baseline"), FLAGS.baseline_rows)}
    rows.append(baseline)
    pipelines = [r for r in rows if r["what"].startswith("pipeline")]
    result = {"impressions": simulation.impressions, "cpu_count": os.cpu_count(),
              "load_average_1m": os.getloadavg()[0], "rows": rows,
              "speedup_vs_per_row": max(r["rows_per_second"] for r in pipelines)
              / baseline["rows_per_second"],
              "cpu_speedup_vs_per_row": max(r["rows_per_cpu_second"] for r in pipelines)
              / baseline["rows_per_cpu_second"]}
    print("\n| what | rows | wall s | rows/s | CPU s | rows per CPU s |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['what']} | {row['rows']:,} | {row['seconds']:.1f} | "
              f"{row['rows_per_second']:,.0f} | {row['cpu_seconds']:.1f} | "
              f"{row['rows_per_cpu_second']:,.0f} |")
    print(f"\nbest pipeline / per-row baseline: {result['speedup_vs_per_row']:.1f}x rows/s, "
          f"{result['cpu_speedup_vs_per_row']:.1f}x rows per CPU s (load average "
          f"{result['load_average_1m']:.1f} on {os.cpu_count()} cores)")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    if not FLAGS.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def define_flags() -> None:
    """The benchmark's flags, defined when it runs (tests import the module beside others)."""
    flags.DEFINE_integer("days", 10, "Days of simulated logs.")
    flags.DEFINE_integer("requests_per_day", 5000, "Search requests per day.")
    flags.DEFINE_integer("candidates_per_request", 20, "Items shown per request.")
    flags.DEFINE_integer("baseline_rows", 50_000, "Impressions the per-row baseline processes.")
    flags.DEFINE_string("workdir", "", "Scratch directory (default: a temporary one, removed).")
    flags.DEFINE_string("out", "experiments/results/pipeline.json", "Where the JSON goes.")


if __name__ == "__main__":
    define_flags()
    job.run(main)

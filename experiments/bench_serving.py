"""Serving benchmark, in one run: the exported SavedModels in-process (the figure that transfers to
``tensorflow_model_server``), then the same exports behind the local gRPC server.

Exports (untrained models of the default spec, :mod:`experiments.serving_exports`):
``dcnv2_dense`` (in-graph batching of the dense part, embedding lookups in the request thread),
``dcnv2_none`` (no batching), ``dcnv2_whole`` (the whole model batched), ``dhen_dense`` (DHEN at
scale 1, ~8x the dense FLOPs) and ``dhen_none``, and the same two with the backbone in bfloat16
(``dhen_dense_bf16``, ``dhen_none_bf16``: ``serving.export --dense_precision=bfloat16``).
``--variants`` picks among them and ``dhen_dense_xla`` (the dense part compiled with XLA, padded
to :data:`XLA_BATCH_SIZES`).

* In-process (:mod:`experiments.inprocess_load`): each export's ``serving_default`` loaded here
  and called from ``--threads`` request threads at each offered QPS of ``--qps`` (open loop,
  Poisson arrivals, latency from the intended send time), climbing until a model stops keeping
  up (:func:`experiments.serving_sweep.sweep`). TensorFlow's thread pools are sized as
  tensorflow_model_server's ``--tensorflow_intra_op_parallelism`` /
  ``--tensorflow_inter_op_parallelism`` would size them (``--intra_op_threads``,
  ``--inter_op_threads``; 0 lets TensorFlow choose, as the server does by default).
* The targets of issue 16 (printed at the end of the in-process part): each batched dhen export's
  p99 <= 1.5x batched dcnv2's p99 at a QPS that dcnv2 sustains and the dhen export's unbatched
  twin (same precision) does not; each batched dhen export >= 2x its unbatched twin's throughput
  at equal or lower p99. Also every export's dense-part GFLOP/s at its best point against the
  fp32 and bf16 matmul peaks measured in this run (:mod:`experiments.matmul_peak`), and, before
  the sweep, the dense part alone of each unbatched export at 100, 400 and 1,600 rows a call
  (:mod:`experiments.dense_scan`): what batching can gain there, and its GFLOP/s.
  ``--eight_x`` names the batched dhen export of the summary tables and the plot.
* gRPC: one ``python -m serving.server`` subprocess on 127.0.0.1 serves dcnv2 (batched,
  unbatched, whole) and the ``--eight_x`` export; the same sweep through it gives the local
  server's own figures, and sequential Predicts vs in-process calls of the same signature give its
  overhead per request (median latency difference, and the server's CPU ms per request).

Batching defaults for 2 CPU cores and 100-row requests, from TF Serving's CPU advice and
measured here: a zero batch timeout (a lone request never waits; under load requests pile up
while the previous batch runs), ``--num_batch_threads`` 1 (TensorFlow's intra-op pool already
spreads a batch's matmuls over both cores, and request threads need CPU for the lookups), no
padded sizes (shapes are dynamic on CPU, so padding only adds work), batches of at most 1,600
rows (16 requests).

Prints markdown tables and writes every point and summary as JSON (``--out``)::

    python -m experiments.bench_serving [--qps 50,100,...] [--duration_s 3] [--threads 16]
        [--max_batch_size 1600] [--batch_timeout_micros 0] [--num_batch_threads 1]
        [--intra_op_threads 0] [--inter_op_threads 0] [--variants ...] [--eight_x ...]
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from absl import app, flags

from cvr_tf import job
from cvr_tf.compat import tf
from experiments import serving_report, serving_sweep
from experiments.dense_scan import dense_scan, scan_table
from experiments.inprocess_load import run_inprocess_load
from experiments.matmul_peak import matmul_peak_gflops
from experiments.serving_exports import Variant, export_variants, request_features
from serving import export, signatures
from serving import warmup as warmup_lib
from serving.batching import BatchingConfig
from serving.client import PredictionClient
from serving.loadtest import run_load

# XLA compiles one program per input shape: the XLA export pads its batches to these sizes (at
# most 2x the rows of the batch), which its warmup records compile before traffic.
XLA_BATCH_SIZES = (100, 200, 400, 800, 1600)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_START_TIMEOUT_S = 600.0
BF16 = "bfloat16"
VARIANTS = (Variant("dcnv2_dense", "dcnv2", "dense"), Variant("dcnv2_none", "dcnv2", "none"),
            Variant("dcnv2_whole", "dcnv2", "whole"), Variant("dhen_dense", "dhen", "dense"),
            Variant("dhen_none", "dhen", "none"),
            Variant("dhen_dense_bf16", "dhen", "dense", dense_precision=BF16),
            Variant("dhen_none_bf16", "dhen", "none", dense_precision=BF16))
XLA_VARIANT = Variant("dhen_dense_xla", "dhen", "dense", jit_compile_dense=True,
                      allowed_batch_sizes=XLA_BATCH_SIZES)
(BATCHED, UNBATCHED, WHOLE, EIGHT_X, EIGHT_X_UNBATCHED, EIGHT_X_BF16,
 EIGHT_X_BF16_UNBATCHED) = (v.name for v in VARIANTS)
EIGHT_X_XLA = XLA_VARIANT.name
# Each batched 8x export, and the unbatched export of the same precision it is judged against.
EIGHT_X_TWINS = {EIGHT_X: EIGHT_X_UNBATCHED, EIGHT_X_BF16: EIGHT_X_BF16_UNBATCHED,
                 EIGHT_X_XLA: EIGHT_X_UNBATCHED}
RATIO_TARGET, THROUGHPUT_TARGET = 1.5, 2.0

Point = serving_sweep.Point


# ----------------------------------------------------------------------------------------------
# In-process: what tensorflow_model_server would run


def load_signature(path: str, warmup: Sequence[Mapping[str, np.ndarray]] = ()) -> Any:
    """A SavedModel's ``serving_default``, warmed up as TF Serving does it: every Predict of the
    version's warmup records (each signature at each allowed batch size), then one call on each
    of ``warmup``, so that no measured call pays for tracing, graph optimization or an XLA
    compilation."""
    loaded = tf.saved_model.load(path)
    for log in warmup_lib.read_warmup_logs(path):
        request = log.predict_log.request
        loaded.signatures[request.model_spec.signature_name or signatures.DEFAULT_SIGNATURE](
            **{name: tf.make_ndarray(proto) for name, proto in request.inputs.items()})
    function = loaded.signatures[signatures.DEFAULT_SIGNATURE]
    for features in warmup:
        function(**features)
    return function


def _point(model: str, report: Any, duration_s: float, load_average: float,
           cpu_seconds: float, **extra: Any) -> Point:
    """A sweep point: the load report, the send window, the load average before it, and the
    CPU per request (``cpu_seconds`` of whichever process served)."""
    return {"model": model, **dataclasses.asdict(report), "send_window_s": duration_s,
            "load_average_1m": load_average, **extra,
            "cpu_ms_per_request": round(1e3 * cpu_seconds / max(report.requests, 1), 3)}


def inprocess_measure(functions: Mapping[str, Any], requests: Sequence[Mapping[str, np.ndarray]],
                      threads: int, timeout_s: float) -> serving_sweep.Measure:
    """A sweep's ``measure`` calling loaded signatures in this process.

    Each point's ``cpu_ms_per_request`` is this process's CPU time (model and load generator)
    per request sent.
    """

    def measure(model: str, qps: float, duration_s: float, seed: int) -> Point:
        load_average, cpu = round(os.getloadavg()[0], 2), time.process_time()
        report = run_inprocess_load(functions[model], requests, qps, duration_s, threads=threads,
                                    timeout_s=timeout_s, seed=seed)
        return _point(model, report, duration_s, load_average, time.process_time() - cpu)

    return measure


def dense_utilization(points: Sequence[Point], models: Mapping[str, Mapping[str, Any]],
                      names: Sequence[str]) -> list[dict[str, Any]]:
    """Dense-part GFLOP/s (forward FLOPs x candidates/s) at each model's best sustained point."""
    rows = []
    for name in names:
        best = serving_sweep.best_point([p for p in points if p["model"] == name])
        if best is None:
            continue
        flops = models[name]["dense_flops_per_example"]
        rows.append({"model": name, "requests_per_s": best["requests_per_s"],
                     "p99_ms": best["latency_ms"]["p99"],
                     "dense_gflops": flops * best["candidates_per_s"] / 1e9})
    return rows


def latency_target(points: Sequence[Point],
                   twins: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each batched dhen export's p99 over batched dcnv2's, against :data:`RATIO_TARGET`, at
    each QPS that dcnv2 sustains and the dhen export's unbatched twin (``twins[name]``, the same
    precision) does not sustain or never reached."""
    by_model: dict[str, dict[float, Point]] = {}
    for point in points:
        by_model.setdefault(point["model"], {})[point["target_qps"]] = point
    rows = []
    for qps, base in sorted(by_model.get(BATCHED, {}).items()):
        if not base["sustained"]:
            continue
        for name, twin in twins.items():
            other, unbatched = (by_model.get(n, {}).get(qps) for n in (name, twin))
            if other is None or twin not in by_model or (unbatched and unbatched["sustained"]):
                continue
            ratio = other["latency_ms"]["p99"] / base["latency_ms"]["p99"]
            rows.append({"qps": qps, "model": name, "dcnv2_p99_ms": base["latency_ms"]["p99"],
                         "p99_ms": other["latency_ms"]["p99"], "sustained": other["sustained"],
                         "p99_ratio": round(ratio, 2),
                         "met": bool(other["sustained"] and ratio <= RATIO_TARGET)})
    return rows


# ----------------------------------------------------------------------------------------------
# gRPC: the local development server


@dataclasses.dataclass(frozen=True)
class LocalServer:
    """A server subprocess: its gRPC target and process id."""

    target: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU seconds the server's live threads have run so far, to the nanosecond.

        The sum of ``/proc/<pid>/task/*/schedstat`` (time on a CPU, in ns): ``/proc/<pid>/stat``
        counts in clock ticks of 10 ms, coarser than a request's few ms, so a short probe could
        read 0. A thread that exits takes its time with it; the server's threads live as long as
        it does.
        """
        total_ns = 0
        task_dir = f"/proc/{self.pid}/task"
        for task in os.listdir(task_dir):
            try:
                with open(os.path.join(task_dir, task, "schedstat"), encoding="ascii") as stat:
                    total_ns += int(stat.read().split()[0])
            except FileNotFoundError:  # the thread exited since listdir
                continue
        return total_ns / 1e9

    def wait_until_idle(self, timeout_s: float, window_s: float = 0.5,
                        busy_share: float = 0.05) -> float:
        """Waits until the server uses less than ``busy_share`` of one core over ``window_s``:
        an overloaded sweep point leaves requests queued that the server still answers after
        their clients gave up, and a probe run meanwhile would measure the backlog. Returns
        the seconds waited (at most about ``timeout_s``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            before = self.cpu_seconds()
            time.sleep(window_s)
            if self.cpu_seconds() - before < busy_share * window_s:
                break
        return time.monotonic() - started


@contextlib.contextmanager
def server_process(models_config: str, model_names: Sequence[str], log_path: str,
                   timeout_s: float = SERVER_START_TIMEOUT_S) -> Iterator[LocalServer]:
    """Runs ``python -m serving.server`` on a free port of 127.0.0.1, yields it once every model
    answers GetModelMetadata, and terminates it (SIGTERM to its pid) on exit.

    Raises:
        RuntimeError: the server exited, or did not serve within ``timeout_s``; the message
            ends with the server's log.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "serving.server", f"--port={port}", "--host=127.0.0.1",
               f"--model_config_file={models_config}", "--file_system_poll_wait_seconds=0",
               # As many requests per model in flight as one batch merges (16 of 100 rows).
               "--max_in_flight_per_model=16"]
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    server = LocalServer(f"127.0.0.1:{port}", process.pid)
    try:
        deadline, pending = time.monotonic() + timeout_s, list(model_names)
        while pending:
            if process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, encoding="utf-8") as log:
                    tail = log.read()[-3000:]
                state = (f"exited with code {process.returncode}" if process.poll() is not None
                         else f"did not serve {pending} within {timeout_s:.0f} s")
                raise RuntimeError(f"the server at {server.target} {state}; its log ends:\n{tail}")
            try:
                with PredictionClient(server.target, pending[0], max_retries=0) as client:
                    client.input_specs()
                pending.pop(0)
            except grpc.RpcError:
                time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()




def grpc_measure(server: LocalServer, requests: Sequence[Mapping[str, np.ndarray]],
                 timeout_s: float) -> serving_sweep.Measure:
    """A sweep's ``measure`` through the server; ``cpu_ms_per_request`` is the server's CPU.

    Each point starts once the server has drained what the point before left queued
    (:meth:`LocalServer.wait_until_idle`): an overloaded point's backlog would otherwise load the
    next point and count in its CPU."""

    def measure(model: str, qps: float, duration_s: float, seed: int) -> Point:
        drained_s = server.wait_until_idle(timeout_s=duration_s + 4 * timeout_s)
        load_average, cpu = round(os.getloadavg()[0], 2), server.cpu_seconds()
        report = run_load(server.target, model, mode="open", qps=qps, duration_s=duration_s,
                          requests=requests, timeout_s=timeout_s, seed=seed)
        return _point(model, report, duration_s, load_average, server.cpu_seconds() - cpu,
                      server_drained_s=round(drained_s, 1))

    return measure


def server_overhead(server: LocalServer, model_name: str, saved_model_dir: str,
                    features: Mapping[str, np.ndarray], calls: int,
                    warmup_calls: int = 20) -> dict[str, Any]:
    """Median latency of a ``serving_default`` Predict through the server minus that of an
    in-process call of the same signature function of the same SavedModel, loaded here.

    The in-process call takes the request's numpy arrays and reads the outputs back as numpy,
    as the server does between decoding a request and encoding its answer. One call at a time,
    alternating between the two sides; the server's CPU seconds over its calls give its CPU
    cost per request (decoding, the model, encoding).

    Returns:
        Both sides' medians and p90s in ms, ``overhead_ms`` (difference of the medians),
        ``server_cpu_ms_per_request`` and the number of calls.
    """
    function = load_signature(saved_model_dir)
    drained_s = server.wait_until_idle(timeout_s=60.0)  # nothing left queued by a sweep
    timings: dict[str, list[float]] = {"grpc": [], "in_process": []}
    server_cpu = 0.0
    with PredictionClient(server.target, model_name, max_retries=0) as client:
        request = client.predict_request(features)
        for index in range(warmup_calls + calls):
            cpu, started = server.cpu_seconds(), time.perf_counter()
            client.predict_response(request)
            middle = time.perf_counter()
            if index >= warmup_calls:
                server_cpu += server.cpu_seconds() - cpu
            for value in function(**features).values():
                value.numpy()
            if index >= warmup_calls:
                timings["grpc"].append((middle - started) * 1e3)
                timings["in_process"].append((time.perf_counter() - middle) * 1e3)
    result: dict[str, Any] = {"model": model_name, "calls": calls,
                              "server_drained_s": round(drained_s, 1)}
    for side, values in timings.items():
        result[f"{side}_ms"] = round(statistics.median(values), 3)
        result[f"{side}_p90_ms"] = round(float(np.percentile(values, 90)), 3)
    result["overhead_ms"] = round(result["grpc_ms"] - result["in_process_ms"], 3)
    result["server_cpu_ms_per_request"] = round(1e3 * server_cpu / calls, 3)
    return result


# ----------------------------------------------------------------------------------------------
# The run


FLAGS = flags.FLAGS
flags.DEFINE_list("qps", ["50", "100", "150", "200", "250", "300", "400", "500", "650", "800",
                          "1000", "1300", "1600"], "Offered loads in requests/s, ascending.")
flags.DEFINE_list("grpc_qps", ["50", "100", "150", "200", "300", "400", "550", "700"],
                  "Offered loads of the gRPC part.")
flags.DEFINE_float("duration_s", 3.0, "Seconds per point (at least 200 requests).")
flags.DEFINE_integer("candidates", 100, "Rows per request.")
flags.DEFINE_integer("threads", 16, "Request threads of the in-process load.")
flags.DEFINE_float("timeout_s", 2.0, "Deadline of a request.")
flags.DEFINE_float("p99_budget_ms", 50.0, "Fixed p99 budget of the throughput comparison.")
flags.DEFINE_integer("max_batch_size", 1600, "In-graph batching: largest request and batch.")
flags.DEFINE_integer("batch_timeout_micros", 0, "In-graph batching timeout.")
flags.DEFINE_integer("num_batch_threads", 1, "In-graph batching threads.")
flags.DEFINE_integer("intra_op_threads", 0,
                     "TensorFlow's intra-op threads, as tensorflow_model_server's "
                     "--tensorflow_intra_op_parallelism (0: TensorFlow's choice, the cores).")
flags.DEFINE_integer("inter_op_threads", 0,
                     "TensorFlow's inter-op threads, as tensorflow_model_server's "
                     "--tensorflow_inter_op_parallelism (0: TensorFlow's choice, the cores).")
flags.DEFINE_list("variants", [v.name for v in VARIANTS],
                  f"Exports to measure, among {', '.join(v.name for v in VARIANTS)} and "
                  f"{XLA_VARIANT.name} (XLA, padded to {XLA_BATCH_SIZES}).")
flags.DEFINE_enum("eight_x", EIGHT_X_BF16, list(EIGHT_X_TWINS),
                  "The batched dhen export of the summaries and the plot.")
flags.DEFINE_integer("overhead_calls", 300, "Sequential calls of the server-overhead probe.")
flags.DEFINE_integer("vocabulary_limit", None, "Cap every vocabulary (smoke runs only).")
flags.DEFINE_bool("grpc", True, "Also run the gRPC part against the local server.")
flags.DEFINE_string("workdir", None, "An empty dir for the exports (default: a temp dir).")
flags.DEFINE_string("out", "experiments/results/serving.json", "Where the JSON goes.")


def _load_averages() -> list[float]:
    return [round(load, 2) for load in os.getloadavg()]


def run_inprocess(models: Mapping[str, Mapping[str, Any]],
                  requests: Sequence[Mapping[str, np.ndarray]], qps: Sequence[float]
                  ) -> dict[str, Any]:
    """The in-process sweep of every export, and its summaries against the targets."""
    functions = {name: load_signature(model["path"], requests) for name, model in models.items()}
    measure = inprocess_measure(functions, requests, FLAGS.threads, FLAGS.timeout_s)
    points = serving_sweep.sweep(measure, list(functions), qps, FLAGS.duration_s,
                                 FLAGS.timeout_s)
    twins = {name: twin for name, twin in EIGHT_X_TWINS.items() if name in models}
    summary = serving_sweep.summarize(points, FLAGS.p99_budget_ms, BATCHED, UNBATCHED, WHOLE,
                                      FLAGS.eight_x, twins.get(FLAGS.eight_x))
    summary["dhen_variants_batched_vs_unbatched"] = {
        name: serving_sweep.compare_at_equal_p99(
            [p for p in points if p["model"] == name],
            [p for p in points if p["model"] == twin], FLAGS.p99_budget_ms)
        for name, twin in twins.items()}
    return {"points": points, **summary,
            "latency_target": latency_target(points, twins),
            "dense_utilization": dense_utilization(points, models, list(models))}


def run_grpc(export_base: str, models: Mapping[str, Mapping[str, Any]], workdir: str,
             requests: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """The gRPC sweep through one local server, and its overhead over in-process calls."""
    config = os.path.join(export_base, export.MODELS_CONFIG)
    names = [name for name in (BATCHED, UNBATCHED, WHOLE, FLAGS.eight_x) if name in models]
    with server_process(config, names, os.path.join(workdir, "server.log")) as server:
        points = serving_sweep.sweep(grpc_measure(server, requests, FLAGS.timeout_s), names,
                                     [float(q) for q in FLAGS.grpc_qps], FLAGS.duration_s,
                                     FLAGS.timeout_s)
        overheads = [server_overhead(server, name, models[name]["path"], requests[0],
                                     FLAGS.overhead_calls) for name in (UNBATCHED, BATCHED)]
    summary = serving_sweep.summarize(points, FLAGS.p99_budget_ms, BATCHED, UNBATCHED, WHOLE,
                                      FLAGS.eight_x)
    return {"points": points, **summary, "server_overhead": overheads}


def _target_lines(inprocess: Mapping[str, Any]) -> list[str]:
    lines = [f"Targets (in-process): dhen p99 <= {RATIO_TARGET}x dcnv2 p99 at a QPS dcnv2 "
             "sustains and unbatched dhen (same precision) does not", "",
             "| QPS | model | dcnv2 p99 ms | p99 ms | sustained | ratio | met |",
             "| ---: | --- | ---: | ---: | --- | ---: | --- |"]
    lines += [f"| {r['qps']:g} | {r['model']} | {r['dcnv2_p99_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['sustained']} | {r['p99_ratio']} | {r['met']} |"
              for r in inprocess["latency_target"]]
    lines += ["", f"dhen batched >= {THROUGHPUT_TARGET}x unbatched throughput (same precision) "
              "at equal or lower p99 (budget: unbatched dhen's p99 at its best point):", ""]
    for name, rows in inprocess["dhen_variants_batched_vs_unbatched"].items():
        ratio = rows[0]["throughput_ratio"] if rows else None
        met = "met" if ratio and ratio >= THROUGHPUT_TARGET else "not met"
        lines.append(f"- {name} vs {EIGHT_X_TWINS[name]}: " + (
            f"{ratio:.2f}x (within {rows[0]['p99_budget_ms']:.1f} ms), {met}" if ratio
            else "no comparable points"))
    return lines


def _variants() -> list[Variant]:
    known = {variant.name: variant for variant in (*VARIANTS, XLA_VARIANT)}
    unknown = sorted(set(FLAGS.variants) - set(known))
    if unknown or BATCHED not in FLAGS.variants or FLAGS.eight_x not in FLAGS.variants:
        raise app.UsageError(
            f"--variants={','.join(FLAGS.variants)} must name {BATCHED} (the baseline) and "
            f"--eight_x={FLAGS.eight_x}, among {', '.join(known)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    return [known[name] for name in FLAGS.variants]


def main(argv: list[str]) -> None:
    del argv
    variants = _variants()
    # Before TensorFlow runs its first op: thread pools are sized once per process.
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    batching = BatchingConfig(
        max_batch_size=FLAGS.max_batch_size, batch_timeout_micros=FLAGS.batch_timeout_micros,
        num_batch_threads=FLAGS.num_batch_threads, allowed_batch_sizes=())
    load_before, started = _load_averages(), time.perf_counter()
    peaks = {dtype.name: round(matmul_peak_gflops(dtype), 1)
             for dtype in (tf.float32, tf.bfloat16)}
    print(f"matmul peak at 2048^2: fp32 {peaks['float32']:.0f}, bf16 {peaks['bfloat16']:.0f} "
          f"GFLOP/s; load average {load_before}", flush=True)
    with contextlib.ExitStack() as stack:
        workdir = FLAGS.workdir or stack.enter_context(tempfile.TemporaryDirectory())
        export_base, models = export_variants(workdir, batching, variants,
                                              vocabulary_limit=FLAGS.vocabulary_limit)
        ratio = (models[FLAGS.eight_x]["dense_flops_per_example"]
                 / models[BATCHED]["dense_flops_per_example"])
        print(f"exported in {time.perf_counter() - started:.0f} s; dense-part FLOPs per example "
              f"dhen / dcnv2: {ratio:.2f}x", flush=True)
        requests = request_features(FLAGS.candidates, vocabulary_limit=FLAGS.vocabulary_limit)
        scans = {name: dense_scan(model["path"], model["dense_flops_per_example"])
                 for name, model in models.items() if model["scope"] == "none"}
        inprocess = run_inprocess(models, requests, [float(q) for q in FLAGS.qps])
        load_middle = _load_averages()
        grpc_part = run_grpc(export_base, models, workdir, requests) if FLAGS.grpc else None
    load_after = _load_averages()
    print(f"\n{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, {FLAGS.candidates} candidates "
          f"per request; load average (1/5/15 min) {load_before} before, {load_middle} after "
          f"the in-process part, {load_after} after\n")
    lines = serving_report.summary_tables(inprocess, ratio, "In-process")
    lines += ["", *scan_table(scans, peaks), "",
              *serving_report.utilization_table(inprocess["dense_utilization"], peaks), "",
              *_target_lines(inprocess)]
    if grpc_part:
        lines += ["", *serving_report.summary_tables(grpc_part, ratio, "gRPC (local server)"),
                  "", *serving_report.overhead_table(grpc_part["server_overhead"])]
    print("\n".join(lines))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump({
            "command": " ".join(["python -m experiments.bench_serving", *sys.argv[1:]]),
            "cpus": os.cpu_count(), "tensorflow": tf.__version__,
            "load_average_before_middle_after": [load_before, load_middle, load_after],
            "wall_seconds": round(time.perf_counter() - started, 1),
            "matmul_peak_gflops": peaks, "candidates": FLAGS.candidates,
            "threads": FLAGS.threads, "batching": dataclasses.asdict(batching),
            "tensorflow_threads": {"intra_op": FLAGS.intra_op_threads,
                                   "inter_op": FLAGS.inter_op_threads},
            "eight_x": FLAGS.eight_x,
            "models": {name: {k: v for k, v in model.items() if k != "path"}
                       for name, model in models.items()},
            "dense_flops_ratio_dhen_vs_dcnv2": round(ratio, 3),
            "in_process": inprocess, "grpc": grpc_part,
            # The plot's series: the in-process figures, which transfer to TF Serving.
            "p99_vs_qps": inprocess["p99_vs_qps"], "dense_scan": scans,
        }, handle, indent=1)
    print(f"\nwrote {FLAGS.out}")


if __name__ == "__main__":
    job.run(main)

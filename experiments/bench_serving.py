"""Serving benchmark: batched vs unbatched, decoupled vs whole-model batching, 1x vs 8x FLOPs and
the local server's overhead, measured in one run against one local gRPC server.

Four exports of untrained models (latency does not depend on the weights; the vocabularies are
made-up tokens at the default spec's caps, so the embedding tables have their real sizes):
``dcnv2_dense`` (in-graph batching of the dense part, the embedding lookups in the request
thread), ``dcnv2_none`` (no batching), ``dcnv2_whole`` (the whole model batched) and
``dhen_dense`` (DHEN at scale 1, ~8x the dense FLOPs, batched like ``dcnv2_dense``). One
``python -m serving.server`` subprocess on 127.0.0.1 serves them all; the load comes from this
process (its own interpreter, so the load generator does not contend for the server's GIL).

* Load: open loop (:func:`serving.loadtest.run_load`, Poisson arrivals, latency from each
  request's intended send time) at each offered QPS of ``--qps``, for ``--duration_s`` (longer at
  low QPS, so every point has at least :data:`MIN_REQUESTS`). At each QPS every model still
  climbing runs once, in an order rotated per level so that background load on the shared
  machine spreads over the models. A point is *sustained* (:func:`sustained`) when no request
  failed and the answers kept pace with the sends; a model stops climbing after an unsustained
  point or a p99 over :data:`STOP_P99_MS`. Each point also records the CPU ms per
  request of the server process, the steadier measure on a shared machine.
* (a) Each model's highest sustained throughput whose p99 is within the unbatched model's p99
  at its own best point, and within the fixed ``--p99_budget_ms``.
* (b) Decoupled (``dense``) vs whole-model batching, and (c) ``dhen`` vs ``dcnv2`` (both
  batched): throughput, p50 and p99 at each common QPS, and the p99 ratio.
* (d) Median latency of sequential Predicts through the server minus the median of in-process
  calls of the same signature of the same SavedModel (loaded here), alternating the two.

Batching defaults for 2 CPU cores and 100-row requests: one batch thread (TensorFlow's intra-op
pool already spreads a batch's matmuls over both cores, and the request threads need CPU for the
lookups); batches of up to 1,600 rows (16 requests); a zero batch timeout, so a lone request
never waits while, under load, requests pile up into the next batch as long as the previous one
runs; no padded sizes (shapes are dynamic on CPU, so padding only adds work).

Prints a markdown table per part; writes every point, the summaries and the ``p99_vs_qps``
series ({batched, unbatched, dcnv2, dhen} -> [[offered qps, p99 ms], ...]; ``dcnv2`` is the
batched dcnv2 model, the same points as ``batched``) as JSON::

    python -m experiments.bench_serving [--qps 20,35,50,...] [--duration_s 5]
        [--max_batch_size 1600] [--batch_timeout_micros 0] [--num_batch_threads 1]
        [--out experiments/results/serving.json]
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import keras, tf
from cvr_tf.features import FeatureSpec, default_spec
from cvr_tf.model import CVRModel, ModelConfig, build_model
from serving import export, signatures, warmup
from serving.client import PredictionClient
from serving.loadtest import run_load

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_QPS = (20, 35, 50, 70, 100, 140, 200, 280, 400, 560, 800, 1100)
SUSTAINED_FRACTION = 0.95
STOP_P99_MS = 500.0
MIN_REQUESTS = 200
SERVER_START_TIMEOUT_S = 600.0
# (model name, backbone, batching scope)
VARIANTS = (("dcnv2_dense", "dcnv2", "dense"), ("dcnv2_none", "dcnv2", "none"),
            ("dcnv2_whole", "dcnv2", "whole"), ("dhen_dense", "dhen", "dense"))
BATCHED, UNBATCHED, WHOLE, EIGHT_X = (name for name, _, _ in VARIANTS)

Point = dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Models, exports, requests


def synthetic_vocabularies(spec: FeatureSpec, limit: int | None = None) -> dict[str, list[str]]:
    """``vocabulary_size`` made-up tokens per computed vocabulary (at most ``limit``)."""
    sizes = {table: features[0].vocabulary_size
             for table, features in spec.vocabulary_tables().items()}
    return {table: [f"{table}{index}" for index in range(min(size, limit or size))]
            for table, size in sizes.items()}


def make_model_dir(path: str, spec: FeatureSpec, vocabularies: Mapping[str, Sequence[str]],
                   backbone: str, seed: int = 0) -> CVRModel:
    """An untrained model dir as the training job leaves it (definition + one checkpoint)."""
    keras.utils.set_random_seed(seed)
    model = build_model(spec, vocabularies, ModelConfig(backbone=backbone))
    model_dir_lib.save_model_definition(path, model)
    tf.train.CheckpointManager(
        model_dir_lib.checkpoint(model), os.path.join(path, model_dir_lib.CHECKPOINT_DIR), 1
    ).save(checkpoint_number=1)
    return model


def export_variants(
    workdir: str, batching: signatures.BatchingConfig,
    variants: Sequence[tuple[str, str, str]] = VARIANTS, vocabulary_limit: int | None = None,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Builds one model dir per backbone and exports each variant as version 1 of its name.

    Returns:
        The export base (its ``models.config`` lists every variant) and, per variant, its
        version directory (``path``), backbone, scope, FLOPs per example and parameters.
    """
    spec = default_spec()
    vocabularies = synthetic_vocabularies(spec, vocabulary_limit)
    export_base = os.path.join(workdir, "export")
    built = {backbone: make_model_dir(os.path.join(workdir, backbone), spec, vocabularies,
                                      backbone)
             for backbone in sorted({backbone for _, backbone, _ in variants})}
    exported = {}
    for name, backbone, scope in variants:
        model = built[backbone]
        exported[name] = {
            "path": export.export_model(
                os.path.join(workdir, backbone), export_base, name, version=1,
                batching=dataclasses.replace(batching, scope=scope), dense_device="cpu"),
            "backbone": backbone,
            "scope": scope,
            "backbone_flops_per_example": model.backbone.flops_per_example,
            "dense_flops_per_example": model.dense_flops_per_example,
            "dense_params": model.dense_parameter_count,
            "embedding_params": model.embedding_parameter_count,
        }
    return export_base, exported


def request_features(candidates: int, count: int = 32, vocabulary_limit: int | None = None,
                     seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` requests of ``candidates`` rows of raw serving columns (vocabulary tokens)."""
    spec = default_spec()
    vocabularies = synthetic_vocabularies(spec, vocabulary_limit)
    return [warmup.synthetic_features(spec, vocabularies, candidates, seed=seed + index)
            for index in range(count)]


# ----------------------------------------------------------------------------------------------
# The server subprocess


@dataclasses.dataclass(frozen=True)
class LocalServer:
    """A server subprocess: its gRPC target and process id."""

    target: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process used so far (from ``/proc``)."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
               f"--model_config_file={models_config}", "--file_system_poll_wait_seconds=0"]
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


# ----------------------------------------------------------------------------------------------
# Load sweep


def sustained(point: Mapping[str, Any]) -> bool:
    """No failed request, and the answers kept pace with the sends: answers per second (first
    send to last answer) at least :data:`SUSTAINED_FRACTION` of requests sent per second of the
    send window. (The realized rate, not the nominal one: with Poisson arrivals a 5 s window at
    50 QPS sends 250 +- 16 requests.)"""
    sent_per_s = point["requests"] / point["send_window_s"]
    return not point["errors"] and point["requests_per_s"] >= SUSTAINED_FRACTION * sent_per_s


def measure(server: LocalServer, model_name: str, qps: float,
            requests: Sequence[Mapping[str, np.ndarray]], duration_s: float, timeout_s: float,
            seed: int = 0) -> Point:
    """One open-loop point: ``qps`` Poisson arrivals for ``duration_s`` against one model.

    Returns:
        The :class:`~serving.loadtest.LoadReport` fields, the model, the send window, the
        1-minute load average at the start, CPU ms per request of the server process and of
        this process (the load generator), and whether the point is :func:`sustained`.
    """
    load_average = round(os.getloadavg()[0], 2)
    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
    report = run_load(server.target, model_name, mode="open", qps=qps, duration_s=duration_s,
                      requests=requests, timeout_s=timeout_s, seed=seed)
    server_cpu, client_cpu = server.cpu_seconds() - server_cpu, time.process_time() - client_cpu
    sent = max(report.requests, 1)
    point = {"model": model_name, **dataclasses.asdict(report), "send_window_s": duration_s,
             "load_average_1m": load_average,
             "server_cpu_ms_per_request": round(1e3 * server_cpu / sent, 3),
             "client_cpu_ms_per_request": round(1e3 * client_cpu / sent, 3)}
    point["sustained"] = sustained(point)
    return point


def sweep(server: LocalServer, model_names: Sequence[str], qps_levels: Sequence[float],
          requests: Sequence[Mapping[str, np.ndarray]], duration_s: float, timeout_s: float,
          log: Callable[[str], None] = print) -> list[Point]:
    """Climbs the QPS ladder with every model until each stops keeping up.

    After a point that stops a model the server may still hold requests of the overload, so the
    sweep waits ``timeout_s`` (every request's deadline) before the next point.

    Returns:
        Every measured point (see :func:`measure`), in the order measured.
    """
    climbing, points = list(model_names), []
    for level, qps in enumerate(qps_levels):
        if not climbing:
            break
        shift = level % len(climbing)
        for name in climbing[shift:] + climbing[:shift]:
            point = measure(server, name, qps, requests, max(duration_s, MIN_REQUESTS / qps),
                            timeout_s, seed=level)
            points.append(point)
            latency = point["latency_ms"]
            log(f"{name:<12} {qps:>6g} QPS: {point['requests_per_s']:7.1f} req/s, p50 "
                f"{latency['p50']:7.1f} ms, p99 {latency['p99']:7.1f} ms, errors "
                f"{point['errors'] or 0}, server CPU {point['server_cpu_ms_per_request']:.2f} "
                f"ms/request, load {point['load_average_1m']}")
            if not point["sustained"] or latency["p99"] > STOP_P99_MS:
                climbing.remove(name)
                time.sleep(timeout_s)
    return points


# ----------------------------------------------------------------------------------------------
# Summaries


def brief(point: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fields of a point that the summaries quote."""
    if point is None:
        return None
    return {"target_qps": point["target_qps"], "requests_per_s": round(point["requests_per_s"], 1),
            "p50_ms": round(point["latency_ms"]["p50"], 2),
            "p99_ms": round(point["latency_ms"]["p99"], 2), "sustained": point["sustained"]}


def best_point(points: Sequence[Mapping[str, Any]],
               p99_budget_ms: float = float("inf")) -> Point | None:
    """The sustained point of highest throughput whose p99 is within the budget, if any."""
    eligible = [point for point in points
                if point["sustained"] and point["latency_ms"]["p99"] <= p99_budget_ms]
    return dict(max(eligible, key=lambda point: point["requests_per_s"])) if eligible else None


def compare_at_equal_p99(batched: Sequence[Point], unbatched: Sequence[Point],
                         p99_budget_ms: float) -> list[dict[str, Any]]:
    """Max throughput of each model within a p99 budget: the unbatched model's p99 at its own
    best point, then the fixed ``p99_budget_ms``.

    Returns:
        One row per budget: each model's best point within it (``None`` if none qualifies), the
        throughput ratio batched / unbatched, and whether the batched model still kept up at
        the last QPS it ran (its maximum is then only a lower bound).
    """
    reference = best_point(unbatched)
    budgets = [("unbatched p99 at its best point", reference["latency_ms"]["p99"])
               ] if reference else []
    rows = []
    for label, budget in [*budgets, (f"fixed {p99_budget_ms:g} ms", p99_budget_ms)]:
        fast, slow = best_point(batched, budget), best_point(unbatched, budget)
        rows.append({
            "budget": label, "p99_budget_ms": round(budget, 2),
            "batched": brief(fast), "unbatched": brief(slow),
            "throughput_ratio": round(fast["requests_per_s"] / slow["requests_per_s"], 2)
            if fast and slow else None,
            "batched_capped_by_ladder": bool(batched) and bool(batched[-1]["sustained"]),
        })
    return rows


def p99_ratios(baseline: Sequence[Point], other: Sequence[Point]) -> list[dict[str, Any]]:
    """At each offered QPS both models ran: both points and ``p99(other) / p99(baseline)``."""
    others = {point["target_qps"]: point for point in other}
    rows = []
    for base in baseline:
        big = others.get(base["target_qps"])
        if big is None:
            continue
        rows.append({
            "qps": base["target_qps"], "baseline": brief(base), "other": brief(big),
            "p99_ratio": round(big["latency_ms"]["p99"] / base["latency_ms"]["p99"], 2)
            if base["latency_ms"]["p99"] else None,
            "both_sustained": bool(base["sustained"] and big["sustained"]),
        })
    return rows


def summarize(points: Sequence[Point], p99_budget_ms: float) -> dict[str, Any]:
    """Parts (a)-(c) and the ``p99_vs_qps`` series, from the sweep's points."""
    series = {name: sorted((dict(point) for point in points if point["model"] == name),
                           key=lambda point: point["target_qps"])
              for name in (BATCHED, UNBATCHED, WHOLE, EIGHT_X)}

    def p99s(name: str) -> list[list[float]]:
        return [[point["target_qps"], round(point["latency_ms"]["p99"], 3)]
                for point in series[name]]

    return {
        "batched_vs_unbatched": compare_at_equal_p99(series[BATCHED], series[UNBATCHED],
                                                     p99_budget_ms),
        "decoupled_vs_whole": p99_ratios(series[BATCHED], series[WHOLE]),
        "dhen_vs_dcnv2": p99_ratios(series[BATCHED], series[EIGHT_X]),
        "p99_vs_qps": {"batched": p99s(BATCHED), "unbatched": p99s(UNBATCHED),
                       "dcnv2": p99s(BATCHED), "dhen": p99s(EIGHT_X)},
    }


# ----------------------------------------------------------------------------------------------
# Server overhead


def server_overhead(target: str, model_name: str, saved_model_dir: str,
                    features: Mapping[str, np.ndarray], calls: int,
                    warmup_calls: int = 20) -> dict[str, Any]:
    """Median latency of a ``serving_default`` Predict through the server minus that of an
    in-process call of the same signature function of the same SavedModel, loaded here.

    The in-process call takes the request's numpy arrays and reads the outputs back as numpy,
    as the server does between decoding a request and encoding its answer. One call at a time,
    alternating between the two sides.

    Returns:
        Both sides' medians and p90s in ms, ``overhead_ms`` (difference of the medians), calls.
    """
    function = tf.saved_model.load(saved_model_dir).signatures[signatures.DEFAULT_SIGNATURE]
    timings: dict[str, list[float]] = {"grpc": [], "in_process": []}
    with PredictionClient(target, model_name, max_retries=0) as client:
        request = client.predict_request(features)
        for index in range(warmup_calls + calls):
            started = time.perf_counter()
            client.predict_response(request)
            middle = time.perf_counter()
            for value in function(**features).values():
                value.numpy()
            if index >= warmup_calls:
                timings["grpc"].append((middle - started) * 1e3)
                timings["in_process"].append((time.perf_counter() - middle) * 1e3)
    result: dict[str, Any] = {"model": model_name, "calls": calls}
    for side, values in timings.items():
        result[f"{side}_ms"] = round(statistics.median(values), 3)
        result[f"{side}_p90_ms"] = round(float(np.percentile(values, 90)), 3)
    result["overhead_ms"] = round(result["grpc_ms"] - result["in_process_ms"], 3)
    return result


# ----------------------------------------------------------------------------------------------
# Report


def _cells(point: Mapping[str, Any] | None) -> str:
    if point is None:
        return "none | | "
    overloaded = "" if point["sustained"] else " (overloaded)"
    return f"{point['requests_per_s']:.1f}{overloaded} | {point['p50_ms']:.1f} | " \
           f"{point['p99_ms']:.1f}"


def markdown_tables(summary: Mapping[str, Any], flops_ratio: float,
                    overheads: Sequence[Mapping[str, Any]]) -> str:
    """One markdown table per part of the benchmark."""
    lines = ["(a) batched (dense part, in-graph) vs unbatched: max sustained throughput within a "
             "p99 budget", "",
             "| p99 budget | ms | batched req/s | p50 | p99 | unbatched req/s | p50 | p99 "
             "| ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in summary["batched_vs_unbatched"]:
        ratio = f"{row['throughput_ratio']:.2f}x" if row["throughput_ratio"] else "n/a"
        ratio = f">= {ratio} (batched never saturated)" if row["batched_capped_by_ladder"] \
            else ratio
        lines.append(f"| {row['budget']} | {row['p99_budget_ms']:.1f} | "
                     f"{_cells(row['batched'])} | {_cells(row['unbatched'])} | {ratio} |")
    for title, key, first, second in (
            ("(b) decoupled (embed in the request thread, dense batched) vs whole-model batching",
             "decoupled_vs_whole", "decoupled", "whole"),
            (f"(c) dhen (dense-part FLOPs {flops_ratio:.2f}x) vs dcnv2, both batched",
             "dhen_vs_dcnv2", "dcnv2", "dhen")):
        lines += ["", title, "",
                  f"| QPS | {first} req/s | p50 | p99 | {second} req/s | p50 | p99 | p99 ratio |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {row['qps']:g} | {_cells(row['baseline'])} | {_cells(row['other'])} | "
                  f"{row['p99_ratio'] if row['p99_ratio'] is not None else 'n/a'} |"
                  for row in summary[key]]
    lines += ["", "(d) server overhead: sequential Predicts through the server vs in-process calls "
              "of the same signature (medians)", "",
              "| model | calls | gRPC ms | in-process ms | overhead ms |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row['model']} | {row['calls']} | {row['grpc_ms']:.2f} | "
              f"{row['in_process_ms']:.2f} | {row['overhead_ms']:.2f} |" for row in overheads]
    return "\n".join(lines)


def _load_averages() -> list[float]:
    return [round(load, 2) for load in os.getloadavg()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qps", default=",".join(map(str, DEFAULT_QPS)),
                        help="offered loads in requests/s, ascending")
    parser.add_argument("--duration_s", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--candidates", type=int, default=100, help="rows per request")
    parser.add_argument("--timeout_s", type=float, default=2.0, help="deadline of a request")
    parser.add_argument("--p99_budget_ms", type=float, default=50.0)
    parser.add_argument("--max_batch_size", type=int, default=1600)
    parser.add_argument("--batch_timeout_micros", type=int, default=0)
    parser.add_argument("--num_batch_threads", type=int, default=1)
    parser.add_argument("--overhead_calls", type=int, default=300)
    parser.add_argument("--vocabulary_limit", type=int, default=None,
                        help="cap every vocabulary (smaller tables: smoke runs only)")
    parser.add_argument("--workdir", default=None,
                        help="an empty dir for the exports (default: a temp dir)")
    parser.add_argument("--out", default="experiments/results/serving.json")
    args = parser.parse_args(argv)

    batching = signatures.BatchingConfig(
        max_batch_size=args.max_batch_size, batch_timeout_micros=args.batch_timeout_micros,
        num_batch_threads=args.num_batch_threads, allowed_batch_sizes=())
    load_before, started = _load_averages(), time.perf_counter()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or stack.enter_context(tempfile.TemporaryDirectory())
        export_base, models = export_variants(workdir, batching,
                                              vocabulary_limit=args.vocabulary_limit)
        ratios = {kind: models[EIGHT_X][f"{kind}_flops_per_example"]
                  / models[BATCHED][f"{kind}_flops_per_example"] for kind in ("backbone", "dense")}
        print(f"exported in {time.perf_counter() - started:.0f} s; FLOPs per example dhen / "
              f"dcnv2: backbone {ratios['backbone']:.2f}x, dense part {ratios['dense']:.2f}x",
              flush=True)
        requests = request_features(args.candidates, vocabulary_limit=args.vocabulary_limit)
        with server_process(os.path.join(export_base, export.MODELS_CONFIG), list(models),
                            os.path.join(workdir, "server.log")) as server:
            points = sweep(server, list(models), [float(q) for q in args.qps.split(",")],
                           requests, args.duration_s, args.timeout_s)
            overheads = [server_overhead(server.target, name, models[name]["path"], requests[0],
                                         args.overhead_calls) for name in (UNBATCHED, BATCHED)]
    load_after = _load_averages()
    summary = summarize(points, args.p99_budget_ms)
    print(f"\n{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, {args.candidates} candidates "
          f"per request, server in a subprocess on 127.0.0.1; load average (1/5/15 min) "
          f"{load_before} before, {load_after} after\n")
    print(markdown_tables(summary, ratios["dense"], overheads))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({
            "command": " ".join(["python -m experiments.bench_serving",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "server": "python -m serving.server subprocess on 127.0.0.1; load from the bench",
            "cpus": os.cpu_count(), "tensorflow": tf.__version__,
            "load_average_before_after": [load_before, load_after],
            "wall_seconds": round(time.perf_counter() - started, 1),
            "candidates": args.candidates, "batching": dataclasses.asdict(batching),
            "models": {name: {k: v for k, v in model.items() if k != "path"}
                       for name, model in models.items()},
            "flops_ratio_dhen_vs_dcnv2": {k: round(v, 3) for k, v in ratios.items()},
            "points": points, **summary, "server_overhead": overheads,
        }, handle, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""End-to-end demo (``make demo``): logs -> spans -> training -> export -> gRPC serving.

1. simulate 14 days of search logs (the documented world of ``pipelines.simulate``);
2. build one TFRecord span per day with the Beam pipeline;
3. fit the popularity baseline (smoothed item conversion rate) on the training days;
4. train DCNv2 for up to two epochs, position-debiased (the default), and once without
   debiasing, validating every half epoch on the held-out requests of the training days and
   keeping the best validated checkpoint (early stopping);
5. export the debiased model as a split SavedModel and start the local TF Serving-compatible
   server (``python -m serving.server``, a separate process) on 127.0.0.1;
6. score every eval request through the gRPC client, check the served scores equal the offline
   ones, and print the served metrics and latency percentiles; stop the server;
7. simulate day 15 and run the daily retraining loop once (``python -m cvr_tf.retrain``'s
   function, :mod:`experiments.demo_retrain`): a candidate warm-started from the served model,
   the blessing gate against it on day 15, and the report.

Every step goes through the public functions the jobs use. The working directory is temporary
unless ``--workdir`` is given (then it is kept, and completed steps are reused).

With ``--multitask`` (``make demo-multitask``) it shows the entire-space multi-task model
instead: the same simulated days, spans with two labels (``clicked`` within an hour,
``converted`` within 3 days), DCNv2 trained as today's single-task conversion model and as ESMM
(``--tasks=ctr,ctcvr``), and every task's test metrics beside the single-task model's (pCVR also
on the clicked impressions only); then ESMM is exported as a split SavedModel and served, and
every task's served scores (``ctr``, ``cvr``, ``ctcvr`` by name) are checked against the offline
ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging as std_logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
from absl import flags

from cvr_tf import input as input_lib
from cvr_tf import job, training
from cvr_tf import metrics as metrics_lib
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.baselines import evaluate_popularity, fit_popularity
from cvr_tf.evaluation import count_examples, evaluate_tasks
from cvr_tf.features import FeatureSpec, default_spec
from cvr_tf.model import CVRModel, ModelConfig
from experiments import demo_retrain
from experiments.esmm import funnel_spec
from pipelines.simulate import simulate_logs
from pipelines.span_pipeline import build_spans
from serving import export
from serving.client import PredictionClient

FLAGS = flags.FLAGS
FIRST_DAY = datetime.date(2026, 1, 5)
METRICS = ("auc", "group_auc", "mean_average_precision", "logloss", "calibration")


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    print(f"\n== {title}", flush=True)
    began = time.perf_counter()
    yield
    print(f"   ({time.perf_counter() - began:.1f} s)", flush=True)


def metrics_table(rows: dict[str, dict[str, float | None]]) -> str:
    lines = ["| model | " + " | ".join(METRICS) + " |", "| --- |" + " ---: |" * len(METRICS)]
    for name, values in rows.items():
        cells = " | ".join(metrics_lib.format_metric(values[m]) for m in METRICS)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def eval_requests(data_dir: str, day: datetime.date, spec: FeatureSpec
                  ) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray], np.ndarray]:
    """(per-request serving inputs, label column -> labels, request keys) of the eval day, by
    request: what a client sends (``FeatureSpec.serving_columns``: raw columns, never a derived
    one)."""
    data = input_lib.read_columns(data_dir, day, day, spec)
    order = np.argsort(data[spec.group_key], kind="stable")
    keys = data[spec.group_key][order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    by_request = {c: data[c][order] for c in spec.serving_columns()}
    requests = [{c: values[a:b] for c, values in by_request.items()}
                for a, b in zip(starts, np.r_[starts[1:], len(keys)], strict=True)]
    return requests, {label: data[label][order] for label in spec.label_names}, keys


def offline_scores(model: CVRModel, requests: list[dict[str, np.ndarray]]
                   ) -> dict[str, np.ndarray]:
    """The Keras model's scores of the requests, by served output name (``probabilities``, or
    by task), in request order."""
    scores = model(model.spec.derive_serving_columns(
        {c: np.concatenate([r[c] for r in requests]) for c in requests[0]}))
    if not isinstance(scores, dict):
        scores = {"probabilities": scores}
    return {name: values.numpy() for name, values in scores.items()}


def served_difference(served: dict[str, np.ndarray], offline: dict[str, np.ndarray]
                      ) -> dict[str, float]:
    """Output -> max |served - offline|; exits when any output is missing or differs."""
    if sorted(served) != sorted(offline):
        raise SystemExit(f"served outputs {sorted(served)} are not the model's {sorted(offline)}")
    difference = {name: float(np.max(np.abs(served[name] - offline[name]))) for name in offline}
    if max(difference.values()) > 1e-5:
        raise SystemExit(f"served scores differ from offline ones: {difference}")
    return difference


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_and_score(export_base: str, requests: list[dict[str, np.ndarray]],
                    model_name: str = "cvr") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Runs ``python -m serving.server`` on the export and scores every request through it.

    Returns every output's scores (by output name, in request order) and each request's
    latency in seconds.
    """
    target = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "serving.server", f"--port={target.split(':')[1]}",
               "--host=127.0.0.1", f"--model_config_file={export_base}/models.config"]
    print("   $ " + shlex.join(command))
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        with grpc.insecure_channel(target) as channel:  # bound once every model is warm
            grpc.channel_ready_future(channel).result(timeout=180)
        with PredictionClient(target, model_name, timeout_s=10.0) as client:

            def timed(features: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
                began = time.perf_counter()
                scores = client.predict(features)  # every output
                return scores, time.perf_counter() - began

            with futures.ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(timed, requests))
    except grpc.FutureTimeoutError as error:
        server.kill()
        raise SystemExit(f"the server did not start: {server.communicate()[1][-2000:]}") from error
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)  # graceful: in-flight calls finish
            server.communicate(timeout=60)
    return ({name: np.concatenate([s[name] for s, _ in results]) for name in results[0][0]},
            np.array([t for _, t in results]))


def main(argv: list[str]) -> None:
    del argv
    # Our progress lines stay; TensorFlow's own INFO chatter (savers, signature renames) goes.
    std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
    with contextlib.ExitStack() as stack:
        workdir = FLAGS.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="cvr-"))
        (run_multitask if FLAGS.multitask else run)(
            workdir, FLAGS.days, FLAGS.requests_per_day, FLAGS.candidates_per_request, FLAGS.seed)


def train_once(config: training.TrainConfig) -> dict:
    """Trains, or reads the record of a run a kept ``--workdir`` already finished (the training
    job refuses to overwrite a finished model dir)."""
    if model_dir_lib.is_finished(config.model_dir):
        print(f"   already trained in {config.model_dir}")
        return model_dir_lib.read_json(model_dir_lib.path(config.model_dir, model_dir_lib.METRICS))
    return training.train(config)


def demo_training(spans: str, model_dir: str, train_end: datetime.date,
                  test_day: datetime.date, seed: int) -> training.TrainConfig:
    """DCNv2 on ``FIRST_DAY..train_end`` for up to two epochs, validated every half epoch (a
    pass is the spans' train rows over the batch size), early stopping on AUC, tested on
    ``test_day``: the schedule both demos train with."""
    config = training.TrainConfig(
        data_dir=spans, model_dir=model_dir, train_start=FIRST_DAY, train_end=train_end,
        eval_start=test_day, eval_end=test_day, model=ModelConfig(backbone="dcnv2"), epochs=2,
        seed=seed, log_every_steps=250, early_stopping_metric="auc", early_stopping_patience=2)
    pass_steps = count_examples(input_lib.list_spans(spans, FIRST_DAY, train_end),
                                "train") // config.batch_size
    return dataclasses.replace(config, eval_every_steps=pass_steps // 2)


def training_summary(record: dict) -> str:
    """One line: steps run, the restored step, early stopping, throughput."""
    stopped = ", stopped early" if record["stopped_early"] else ""
    return (f"{record['train_steps']} steps, best validated step {record['best_step']} "
            f"restored{stopped}; {record['train_examples_per_second']:,.0f} examples/s")


def run(workdir: str, days: int, requests_per_day: int, candidates: int, seed: int) -> None:
    logs, spans = os.path.join(workdir, "logs"), os.path.join(workdir, "spans")
    last_day = FIRST_DAY + datetime.timedelta(days=days - 1)
    train_end = last_day - datetime.timedelta(days=1)
    spec = default_spec()

    with step(f"1. Simulating {days} days of search logs into {logs}"):
        if not os.path.isdir(os.path.join(logs, "impressions")):
            summary = simulate_logs(logs, FIRST_DAY, days, requests_per_day, candidates)
            print(f"   {summary.impressions:,} impressions, conversion rate "
                  f"{summary.conversion_rate:.2%}, {summary.impressions_per_second:,.0f} "
                  f"impressions/s; top queries: {summary.top_queries[:3]}")
    with step("2. Building TFRecord spans with the Beam pipeline"):
        run_summary = build_spans(logs, spans, FIRST_DAY, last_day, spec)
        print(f"   built {len(run_summary.built)}, skipped {len(run_summary.skipped)} complete "
              f"spans; {run_summary.rows_per_second:,.0f} rows/s")
    with step(f"3. Popularity baseline: item conversion rates of {FIRST_DAY}..{train_end}"):
        baseline = fit_popularity(spans, FIRST_DAY, train_end, spec)
        results = {"popularity": evaluate_popularity(baseline, spans, last_day, last_day, spec)}
    config = demo_training(spans, os.path.join(workdir, "models", "dcnv2"), train_end,
                           last_day, seed)
    with step(f"4. Training DCNv2 on {FIRST_DAY}..{train_end}, up to two epochs, validated "
              "(position-debiased)"):
        record = train_once(config)
        print(f"   {training_summary(record)}")
    with step("   ... and without position debiasing, for comparison"):
        plain = dataclasses.replace(config, model_dir=config.model_dir + "_no_debiasing",
                                    model=ModelConfig(backbone="dcnv2", position_debiasing=False))
        plain_record = train_once(plain)
        print(f"   {training_summary(plain_record)}")
    validation = record["validation"]
    print(f"\nValidation: the held-out {validation['requests']} requests of the training days "
          f"(restored steps):\n" + metrics_table({
              "dcnv2 (debiased)": validation, "dcnv2 (no debiasing)": plain_record["validation"]}))
    results["dcnv2 (debiased, served)"] = record["eval"]
    results["dcnv2 (no debiasing)"] = plain_record["eval"]
    print(f"Test: eval day {last_day} ({record['eval']['requests']} requests, "
          f"{record['eval']['examples']} candidates):\n{metrics_table(results)}")
    print("Debiased scores rank as if every item were shown at the same position; the eval labels "
          "are position-biased, which favours models that absorb the position (see README).")

    export_base = os.path.join(workdir, "export")
    with step("5. Exporting the split SavedModel (embed on CPU, dense batched)"):
        if not export.existing_versions(os.path.join(export_base, "cvr")):
            print("   " + export.export_model(config.model_dir, export_base, "cvr"))
    with step("6. Scoring every eval request through the local gRPC server"):
        requests, labels, keys = eval_requests(spans, last_day, spec)
        served, latencies = serve_and_score(export_base, requests)
        difference = served_difference(
            served, offline_scores(model_dir_lib.load_model(config.model_dir), requests))
        served_metrics = metrics_lib.evaluate(labels[spec.label], served["probabilities"], keys)
        print(f"   {len(requests)} requests, max |served - offline| = "
              f"{difference['probabilities']:.2e}")
        print(metrics_table({"dcnv2 served over gRPC": served_metrics,
                             "dcnv2 offline eval": record["eval"]}))
        p50, p95, p99 = np.percentile(latencies * 1e3, [50, 95, 99])
        print(f"   client-side latency per request ({candidates} candidates, 8 in flight): "
              f"p50 {p50:.1f} ms, "
              f"p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {latencies.max() * 1e3:.1f} ms")
    print("\nServer stopped.")
    with step(f"7. Day {days + 1} arrives: the retraining loop (warm start, gate, push)"):
        demo_retrain.retraining_step(workdir, FIRST_DAY, days, requests_per_day, candidates, seed)


def task_table(single: dict, tasks: dict) -> str:
    """The single-task model's metrics beside every evaluation of a multi-task model."""
    rows = {"single-task dcnv2, conversion on every impression": single}
    names = {"ctr": "pCTR", "cvr": "pCVR, every impression", "ctcvr": "pCTCVR = pCTR x pCVR",
             "cvr_on_clicks": "pCVR, clicked impressions"}
    rows.update({f"ESMM {names.get(task, task)}": values for task, values in tasks.items()})
    return metrics_table(rows)


def run_multitask(workdir: str, days: int, requests_per_day: int, candidates: int,
                  seed: int) -> None:
    """The ``--multitask`` demo: single-task DCNv2 and ESMM on funnel spans, per-task metrics."""
    logs, spans = os.path.join(workdir, "logs"), os.path.join(workdir, "funnel_spans")
    last_day = FIRST_DAY + datetime.timedelta(days=days - 1)
    train_end = last_day - datetime.timedelta(days=1)
    with step(f"1. Simulating {days} days of search logs (impressions, clicks, conversions)"):
        if not os.path.isdir(os.path.join(logs, "impressions")):
            summary = simulate_logs(logs, FIRST_DAY, days, requests_per_day, candidates)
            print(f"   {summary.impressions:,} impressions, conversion rate "
                  f"{summary.conversion_rate:.2%}")
    with step("2. Building spans with two labels: clicked (1 hour), converted (3 days)"):
        run_summary = build_spans(logs, spans, FIRST_DAY, last_day, funnel_spec())
        positives = run_summary.totals["positives_by_label"]
        print("   positives: " + ", ".join(f"{label} {counts['positives']:,}"
                                            for label, counts in positives.items()))
    config = demo_training(spans, os.path.join(workdir, "models", "single_task"), train_end,
                           last_day, seed)
    with step("3. Training the single-task DCNv2 on the converted label"):
        single = train_once(config)
        print(f"   {training_summary(single)}")
    with step("4. Training ESMM (--tasks=ctr,ctcvr) on the same DCNv2, selected on pCTCVR"):
        esmm = train_once(dataclasses.replace(
            config, model_dir=os.path.join(workdir, "models", "esmm"),
            model=ModelConfig(backbone="dcnv2", tasks="ctr,ctcvr")))
        print(f"   {training_summary(esmm)}")
    print(f"\nTest: eval day {last_day} ({single['eval']['examples']} impressions; labels: "
          "converted for the single-task model and pCVR, clicked for pCTR, clicked and "
          f"converted for pCTCVR):\n{task_table(single['eval'], esmm['eval'])}")
    print("pCTCVR and the single-task model estimate the same quantity, P(conversion | "
          "impression); ESMM factors it into pCTR and pCVR.")

    export_base, esmm_dir = os.path.join(workdir, "export"), os.path.join(workdir, "models", "esmm")
    with step("5. Exporting ESMM as a split SavedModel: every task's probability by name"):
        if not export.existing_versions(os.path.join(export_base, "esmm")):
            print("   " + export.export_model(esmm_dir, export_base, "esmm"))
    with step("6. Scoring every eval request through the local gRPC server, every task"):
        spec = funnel_spec()
        requests, labels, keys = eval_requests(spans, last_day, spec)
        served, latencies = serve_and_score(export_base, requests, "esmm")
        model = model_dir_lib.load_model(esmm_dir)
        difference = served_difference(served, offline_scores(model, requests))
        print(f"   {len(requests)} requests; outputs {', '.join(difference)}; max |served - "
              "offline| " + ", ".join(f"{name} {value:.2e}" for name, value in difference.items()))
        served_metrics = evaluate_tasks(model.task_set, model.task_labels, labels, served, keys)
        print(metrics_table({f"ESMM {task} served over gRPC": served_metrics[task]
                             for task in model.task_set.evaluated}))
        p50, p99 = np.percentile(latencies * 1e3, [50, 99])
        print(f"   client-side latency per request ({candidates} candidates, every output, 8 in "
              f"flight): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print("\nServer stopped.")


def define_flags() -> None:
    """The demo's flags, defined when it runs (not on import: other experiments that tests
    import in the same process define flags of the same names)."""
    flags.DEFINE_string("workdir", "", "Keep everything here (default: a temporary directory).")
    flags.DEFINE_integer("days", 14, "Days of logs; the last one is the eval day.")
    flags.DEFINE_integer("requests_per_day", 4000, "Search requests per day.")
    flags.DEFINE_integer("candidates_per_request", 20, "Items shown per request.")
    flags.DEFINE_integer("seed", 0, "Seed of the simulated world and of training.")
    flags.DEFINE_bool("multitask", False, "Show ESMM (--tasks=ctr,ctcvr) beside the "
                      "single-task model, on spans with click and conversion labels, then serve "
                      "ESMM's every task.")


if __name__ == "__main__":
    define_flags()
    job.run(main)

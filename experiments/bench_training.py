"""Training benchmark: examples/s and dense FLOP/s of each backbone against the machine's peak.

    python -m experiments.bench_training [--days=3] [--requests_per_day=5000] [--batch_size=1024]
        [--steps=120] [--warmup_steps=20] [--backbones=dcnv2,masknet,dhen]

Measured in one run on this machine, in this order:

1. the fp32 matmul peak (:func:`experiments.matmul_peak.matmul_peak_gflops`), again at the end:
   the yardstick of every FLOP/s figure (the larger of the two);
2. the training job's input alone (:func:`cvr_tf.input.make_dataset` with the job's arguments:
   read, shuffle, batch, parse), before and after the training runs;
3. per backbone at scale 1, the training job itself (:func:`cvr_tf.training.train`: Keras
   ``fit``, callbacks, input in the loop), **before** (the tables on Keras' Adam, the old
   default) and **after** (the current defaults: Lazy Adam on the tables,
   :mod:`cvr_tf.lazy_adam`). Its examples/s are those ``metrics.json`` reports, leaving out the
   first ``--warmup_steps`` steps. Dense FLOP/s = 3 x forward FLOPs/example x examples/s (the
   usual forward + backward estimate), as a fraction of the peak;
4. per backbone, XLA: one training step on a fixed batch (no input pipeline), timed with the
   dense part's forward pass compiled by XLA (``tf.function(jit_compile=True)``, whose gradient
   XLA compiles too) and without. The embedding part stays outside XLA (string lookups).

The targets (docs/ARCHITECTURE.md §9): input >= 5x training examples/s, and a change adopted when
it makes training >= 1.3x faster without moving results beyond seed noise. The 1-minute load
average is recorded beside each figure. Prints markdown tables and writes JSON.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import app, flags

from cvr_tf import job, training
from cvr_tf.compat import keras, tf
from cvr_tf.features import FeatureSpec, default_spec
from cvr_tf.input import make_dataset
from cvr_tf.model import CVRModel, ModelConfig, build_model
from cvr_tf.optimization import OptimizerConfig, make_optimizers
from experiments.matmul_peak import matmul_peak_gflops
from experiments.serving_exports import synthetic_vocabularies
from pipelines.simulate import simulate_logs
from pipelines.span_pipeline import build_spans
from serving.warmup import synthetic_features

START = datetime.date(2026, 1, 5)
TARGET_RATIO = 5.0
# (name, embedding optimizer): the tables' optimizer before and after Lazy Adam.
VARIANTS = (("before: Keras Adam tables", "adam"), ("after: defaults", None))
TRAINING_FLOPS_PER_FORWARD_FLOP = 3


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def prepare_spans(workdir: str, days: int, requests_per_day: int, candidates: int) -> str:
    """Simulates the logs and builds their spans under ``workdir``, unless already there."""
    logs, spans = os.path.join(workdir, "logs"), os.path.join(workdir, "spans")
    if not os.path.isdir(logs):
        simulate_logs(logs, START, days, requests_per_day, candidates)
    build_spans(logs, spans, START, START + datetime.timedelta(days=days - 1))  # skips done spans
    return spans


def input_rate(data_dir: str, end: datetime.date, spec: FeatureSpec, batch_size: int,
               batches: int, warmup_batches: int) -> dict[str, Any]:
    """Examples/s of the training input alone (wall and CPU seconds of this process)."""
    dataset = make_dataset(data_dir, START, end, spec, split="train", batch_size=batch_size,
                           shuffle=True, num_epochs=None, drop_remainder=True)
    iterator = iter(dataset)
    for _ in range(warmup_batches):  # fills the shuffle buffer, starts the parallel stages
        next(iterator)
    load_before = _load()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"examples_per_second": round(batches * batch_size / wall),
            "examples_per_cpu_second": round(batches * batch_size / cpu),
            "load_average_before_after": [load_before, _load()]}


def training_rate(data_dir: str, end: datetime.date, backbone: str, embedding_optimizer: str | None,
                  batch_size: int, steps: int, warmup_steps: int, model_dir: str
                  ) -> dict[str, Any]:
    """The training job's examples/s on ``backbone`` at scale 1, as its metrics.json reports;
    ``embedding_optimizer`` None keeps the defaults."""
    optimization = (OptimizerConfig() if embedding_optimizer is None
                    else OptimizerConfig(embedding_optimizer=embedding_optimizer))
    config = training.TrainConfig(
        data_dir=data_dir, model_dir=model_dir, train_start=START,
        train_end=end - datetime.timedelta(days=1), eval_start=end, eval_end=end,
        model=ModelConfig(backbone=backbone), optimization=optimization, batch_size=batch_size,
        steps=steps, log_every_steps=warmup_steps,
        checkpoint_every_steps=steps + 1)  # no backup mid-timing
    load_before = _load()
    record = training.train(config)
    return {"examples_per_second": round(record["train_examples_per_second"]),
            "dense_flops_per_example": record["dense_flops_per_example"],
            "embedding_optimizer": record["config"]["optimization"]["embedding_optimizer"],
            "test_auc": record["eval"]["auc"],
            "load_average_before_after": [load_before, _load()]}


def _step_batch(model: CVRModel, batch_size: int) -> dict[str, tf.Tensor]:
    """A fixed training batch of plausible columns, labels and group keys."""
    spec = model.spec
    features = {c: tf.constant(v) for c, v in synthetic_features(
        spec, model.vocabularies, batch_size, seed=1).items()}
    rows = tf.range(batch_size, dtype=tf.int64)
    features[spec.label] = rows % 7 // 6  # 1 in 7 positive
    features[spec.group_key] = tf.strings.as_string(rows // 20)
    for feature in spec.train_only_features:
        features[feature.column] = tf.cast(rows % 20 + 1, tf.dtypes.as_dtype(feature.dtype))
    return features


def step_seconds(backbone: str, batch_size: int, jit_dense: bool, steps: int = 30) -> float:
    """Seconds of one training step of the default spec's model on a fixed batch, the dense
    forward pass compiled by XLA or not (the median of ``steps`` timed steps)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    spec = default_spec()
    model = build_model(spec, synthetic_vocabularies(spec), ModelConfig(backbone=backbone))
    dense, embedding = make_optimizers(OptimizerConfig(), total_steps=1000)
    model.compile(optimizer=dense, embedding_optimizer=embedding)
    if jit_dense:
        dense_logits = model.dense_logits
        model.dense_logits = tf.function(
            lambda x, training=False: dense_logits(x, training=training), jit_compile=True)
    step = tf.function(model.train_step)
    batch = _step_batch(model, batch_size)
    for _ in range(5):
        step(batch)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step(batch)["loss"].numpy()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def benchmark(data_dir: str, days: int, backbones: Sequence[str], batch_size: int, steps: int,
              warmup_steps: int, input_batches: int, warmup_batches: int, model_root: str,
              report: Callable[[str], None] = print, matmul_size: int = 2048,
              xla_steps: int = 30) -> dict[str, Any]:
    """Every measurement of the module docstring, in its order."""
    end = START + datetime.timedelta(days=days - 1)
    spec = default_spec()
    peak_before = {"gflops": round(matmul_peak_gflops(n=matmul_size), 1), "load_average": _load()}
    report(f"fp32 matmul peak {peak_before['gflops']} GFLOP/s (load {peak_before['load_average']})")
    before = input_rate(data_dir, end, spec, batch_size, input_batches, warmup_batches)
    report(f"input alone: {before['examples_per_second']:,} examples/s")
    rows = []
    for backbone in backbones:
        for name, optimizer in VARIANTS:
            row = {"backbone": backbone, "variant": name, **training_rate(
                data_dir, end, backbone, optimizer, batch_size, steps, warmup_steps,
                os.path.join(model_root, f"{backbone}-{optimizer or 'default'}"))}
            rows.append(row)
            report(f"training {backbone} ({name}): {row['examples_per_second']:,} examples/s")
    xla = []
    for backbone in backbones:
        load = _load()
        plain = step_seconds(backbone, batch_size, jit_dense=False, steps=xla_steps)
        compiled = step_seconds(backbone, batch_size, jit_dense=True, steps=xla_steps)
        xla.append({"backbone": backbone, "step_ms": round(1e3 * plain, 2),
                    "xla_step_ms": round(1e3 * compiled, 2),
                    "xla_speedup": round(plain / compiled, 2),
                    "load_average_before_after": [load, _load()]})
        report(f"XLA {backbone}: {xla[-1]['xla_speedup']}x")
    after = input_rate(data_dir, end, spec, batch_size, input_batches, warmup_batches)
    peak_after = {"gflops": round(matmul_peak_gflops(n=matmul_size), 1), "load_average": _load()}
    peak = max(peak_before["gflops"], peak_after["gflops"])
    slower_input = min(before["examples_per_second"], after["examples_per_second"])
    baseline = {r["backbone"]: r["examples_per_second"] for r in rows
                if r["variant"] == VARIANTS[0][0]}
    for row in rows:
        gflops = (TRAINING_FLOPS_PER_FORWARD_FLOP * row["dense_flops_per_example"]
                  * row["examples_per_second"] / 1e9)
        row.update(dense_gflops=round(gflops, 1), fraction_of_peak=round(gflops / peak, 3),
                   speedup=round(row["examples_per_second"] / baseline[row["backbone"]], 2),
                   input_to_training_ratio=round(slower_input / row["examples_per_second"], 2))
    return {"matmul_peak_before": peak_before, "matmul_peak_after": peak_after,
            "matmul_peak_gflops": peak, "input_before": before, "input_after": after,
            "training": rows, "xla": xla}


def markdown_tables(result: Mapping[str, Any]) -> str:
    """The figures as markdown tables."""
    lines = ["| run | examples/s | speedup | dense GFLOP/s | of fp32 peak | input / training | "
             "load avg before, after |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name in ("input_before", "input_after"):
        row = result[name]
        lines.append(f"| input only ({name.split('_')[1]} training) | "
                     f"{row['examples_per_second']:,} | | | | | "
                     f"{', '.join(map(str, row['load_average_before_after']))} |")
    for row in result["training"]:
        lines.append(f"| {row['backbone']} x1, {row['variant']} | "
                     f"{row['examples_per_second']:,} | {row['speedup']:.2f}x | "
                     f"{row['dense_gflops']:.1f} | {100 * row['fraction_of_peak']:.1f} % | "
                     f"{row['input_to_training_ratio']:.1f}x | "
                     f"{', '.join(map(str, row['load_average_before_after']))} |")
    lines += ["", "| backbone | step ms | step ms, dense part under XLA | XLA speedup | "
              "load avg before, after |", "| --- | ---: | ---: | ---: | --- |"]
    lines += [f"| {row['backbone']} | {row['step_ms']:.1f} | {row['xla_step_ms']:.1f} | "
              f"{row['xla_speedup']:.2f}x | "
              f"{', '.join(map(str, row['load_average_before_after']))} |"
              for row in result["xla"]]
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import)."""
    flags.DEFINE_integer("days", 3, "Simulated days; the last is the test day.", lower_bound=2)
    flags.DEFINE_integer("requests_per_day", 5000, "Simulated requests a day.")
    flags.DEFINE_integer("candidates_per_request", 20, "Items per request.")
    flags.DEFINE_integer("batch_size", 1024, "Training batch size.")
    flags.DEFINE_integer("steps", 120, "Training steps per run.")
    flags.DEFINE_integer("warmup_steps", 20, "First training steps left out of examples/s.")
    flags.DEFINE_integer("input_batches", 600, "Timed input batches.")
    flags.DEFINE_integer("warmup_batches", 10, "Input batches read before timing.")
    flags.DEFINE_list("backbones", ["dcnv2", "masknet", "dhen"], "Backbones at scale 1.")
    flags.DEFINE_string("workdir", "", "Keeps logs and spans for later runs; default a "
                        "temporary dir.")
    flags.DEFINE_string("out", "experiments/results/training.json", "The JSON written.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not 0 < FLAGS.warmup_steps < FLAGS.steps:
        raise app.UsageError(f"--warmup_steps must be in 1..--steps-1, got {FLAGS.warmup_steps}")
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = prepare_spans(FLAGS.workdir or scratch, FLAGS.days, FLAGS.requests_per_day,
                                 FLAGS.candidates_per_request)
        result = benchmark(data_dir, FLAGS.days, FLAGS.backbones, FLAGS.batch_size, FLAGS.steps,
                           FLAGS.warmup_steps, FLAGS.input_batches, FLAGS.warmup_batches,
                           os.path.join(scratch, "models"),
                           report=lambda line: print(line, flush=True))
    impressions = FLAGS.days * FLAGS.requests_per_day * FLAGS.candidates_per_request
    print(f"\nBatch {FLAGS.batch_size}, {impressions:,} simulated impressions over {FLAGS.days} "
          f"days ({FLAGS.days - 1} trained on), {os.cpu_count()} CPUs, TensorFlow "
          f"{tf.__version__}; training timed over steps {FLAGS.warmup_steps + 1}..{FLAGS.steps}; "
          f"fp32 matmul peak {result['matmul_peak_gflops']} GFLOP/s; target input >= "
          f"{TARGET_RATIO:g}x training\n")
    print(markdown_tables(result))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump({"command": " ".join(["python -m experiments.bench_training", *sys.argv[1:]]),
                   "batch_size": FLAGS.batch_size, "days": FLAGS.days,
                   "impressions": impressions, "steps": FLAGS.steps,
                   "warmup_steps": FLAGS.warmup_steps, "cpus": os.cpu_count(),
                   "tensorflow": tf.__version__, "target_input_to_training_ratio": TARGET_RATIO,
                   **result}, handle, indent=2)
        handle.write("\n")
    print(f"\nwrote {FLAGS.out}")


if __name__ == "__main__":
    define_flags()
    job.run(main)

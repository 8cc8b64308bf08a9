"""Training benchmark: training examples/s of dcnv2, masknet and dhen vs input-only examples/s.

Builds spans from simulated logs (``days x requests_per_day x candidates_per_request``
impressions, 300k by default), trains on all days but the last and evaluates on the last, and
measures in one run on this machine:

* input only: the training job's input (:func:`cvr_tf.input.make_dataset` with the arguments of
  the job: read, shuffle, batch, parse) iterated without a model, after ``--warmup_batches``;
* training: :func:`cvr_tf.training.train` per backbone at scale 1, the job's own code path
  (Keras ``fit``, callbacks, input in the loop). Its examples/s are those the job reports in
  ``metrics.json``, which leave out the first ``--warmup_steps`` steps (tracing, warm-up).

The input is measured before and after the training runs, and the input/training ratio uses the
lower of the two. The target (docs/ARCHITECTURE.md §9) is input >= 5x training examples/s:
reading and parsing must not be what limits training. The machine may be shared, so the
1-minute load average is recorded beside each figure. Prints a markdown table and writes the
results as JSON.

    python -m experiments.bench_training [--days 3] [--requests_per_day 5000]
        [--candidates_per_request 20] [--batch_size 1024] [--steps 120] [--warmup_steps 20]
        [--input_batches 600] [--warmup_batches 10] [--backbones dcnv2,masknet,dhen]
        [--workdir DIR] [--out experiments/results/training.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from cvr_tf import training
from cvr_tf.compat import tf
from cvr_tf.features import FeatureSpec, default_spec
from cvr_tf.input import make_dataset
from cvr_tf.model import ModelConfig
from pipelines.simulate import simulate_logs
from pipelines.span_pipeline import build_spans

START = datetime.date(2026, 1, 5)
TARGET_RATIO = 5.0


def prepare_spans(workdir: str, days: int, requests_per_day: int, candidates: int) -> str:
    """Simulates the logs and builds their spans under ``workdir``, unless already there."""
    logs, spans = os.path.join(workdir, "logs"), os.path.join(workdir, "spans")
    if not os.path.isdir(logs):
        simulate_logs(logs, START, days, requests_per_day, candidates)
    build_spans(logs, spans, START, START + datetime.timedelta(days=days - 1))  # skips done spans
    return spans


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def input_rate(data_dir: str, end: datetime.date, spec: FeatureSpec, batch_size: int,
               batches: int, warmup_batches: int) -> dict[str, float]:
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


def training_rate(data_dir: str, end: datetime.date, backbone: str, batch_size: int, steps: int,
                  warmup_steps: int, model_dir: str) -> dict[str, Any]:
    """Examples/s of the training job on ``backbone`` at scale 1, as its metrics.json reports."""
    config = training.TrainConfig(
        data_dir=data_dir, model_dir=model_dir, train_start=START,
        train_end=end - datetime.timedelta(days=1), eval_start=end, eval_end=end,
        model=ModelConfig(backbone=backbone), batch_size=batch_size, steps=steps,
        log_every_steps=warmup_steps, checkpoint_every_steps=steps + 1)  # no backup mid-timing
    load_before = _load()
    record = training.train(config)
    return {"backbone": backbone, "scale": 1,
            "examples_per_second": round(record["train_examples_per_second"]),
            "dense_flops_per_example": record["dense_flops_per_example"],
            "dense_params": record["dense_params"],
            "embedding_params": record["embedding_params"],
            "eval_auc": (None if record["eval"]["auc"] is None
                         else round(record["eval"]["auc"], 4)),
            "load_average_before_after": [load_before, _load()]}


def benchmark(data_dir: str, days: int, backbones: Sequence[str], batch_size: int, steps: int,
              warmup_steps: int, input_batches: int, warmup_batches: int,
              model_root: str) -> dict[str, Any]:
    """Input before, each backbone's training, input after; ratios against the slower input."""
    end = START + datetime.timedelta(days=days - 1)
    spec = default_spec()
    before = input_rate(data_dir, end, spec, batch_size, input_batches, warmup_batches)
    rows = [training_rate(data_dir, end, name, batch_size, steps, warmup_steps,
                          os.path.join(model_root, name)) for name in backbones]
    after = input_rate(data_dir, end, spec, batch_size, input_batches, warmup_batches)
    slower_input = min(before["examples_per_second"], after["examples_per_second"])
    for row in rows:
        row["input_to_training_ratio"] = round(slower_input / row["examples_per_second"], 2)
    return {"input_before": before, "input_after": after, "training": rows}


def markdown_table(result: dict[str, Any]) -> str:
    """The figures as a markdown table."""
    lines = ["| run | examples/s | input / training | load avg before, after |",
             "| --- | ---: | ---: | --- |"]
    for name in ("input_before", "input_after"):
        row = result[name]
        lines.append(f"| input only ({name.split('_')[1]} training) | "
                     f"{row['examples_per_second']:,} | | "
                     f"{', '.join(map(str, row['load_average_before_after']))} |")
    for row in result["training"]:
        lines.append(f"| training {row['backbone']} x{row['scale']} | "
                     f"{row['examples_per_second']:,} | {row['input_to_training_ratio']:.1f}x | "
                     f"{', '.join(map(str, row['load_average_before_after']))} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=3, help="simulated days; the last is eval")
    parser.add_argument("--requests_per_day", type=int, default=5000)
    parser.add_argument("--candidates_per_request", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=120, help="training steps per backbone")
    parser.add_argument("--warmup_steps", type=int, default=20,
                        help="first training steps left out of examples/s")
    parser.add_argument("--input_batches", type=int, default=600, help="timed input batches")
    parser.add_argument("--warmup_batches", type=int, default=10,
                        help="input batches read before timing")
    parser.add_argument("--backbones", default="dcnv2,masknet,dhen")
    parser.add_argument("--workdir", default="",
                        help="keeps logs and spans for later runs; default a temporary dir")
    parser.add_argument("--out", default="experiments/results/training.json")
    args = parser.parse_args(argv)
    if args.days < 2:
        parser.error(f"--days must be >= 2 (training days + one eval day), got {args.days}")
    if not 0 < args.warmup_steps < args.steps:
        parser.error(f"--warmup_steps must be in 1..--steps-1, got {args.warmup_steps}")

    backbones = args.backbones.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = prepare_spans(args.workdir or scratch, args.days, args.requests_per_day,
                                 args.candidates_per_request)
        result = benchmark(data_dir, args.days, backbones, args.batch_size, args.steps,
                           args.warmup_steps, args.input_batches, args.warmup_batches,
                           os.path.join(scratch, "models"))
    impressions = args.days * args.requests_per_day * args.candidates_per_request
    print(f"\nBatch {args.batch_size}, {impressions:,} simulated impressions over {args.days} days "
          f"({args.days - 1} trained on), {os.cpu_count()} CPUs, TensorFlow {tf.__version__}; "
          f"training timed over steps {args.warmup_steps + 1}..{args.steps}; target input >= "
          f"{TARGET_RATIO:g}x training\n")
    print(markdown_table(result))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({
            "command": " ".join(["python -m experiments.bench_training",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "batch_size": args.batch_size, "days": args.days,
            "impressions": impressions, "steps": args.steps, "warmup_steps": args.warmup_steps,
            "input_batches": args.input_batches, "cpus": os.cpu_count(),
            "tensorflow": tf.__version__, "target_input_to_training_ratio": TARGET_RATIO,
            **result,
        }, handle, indent=2)
        handle.write("\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

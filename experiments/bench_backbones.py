"""Backbone benchmark: parameters, FLOPs per example and forward throughput per backbone and scale.

For every backbone of :func:`cvr_tf.backbones.available_backbones` at each scale, builds it on a
flat input of the given fields, and times the forward pass (inference, ``tf.function``) at one
batch size on this machine: warm-up calls, then the median of several timed rounds. Prints a
markdown table and writes the rows as JSON.

    python -m experiments.bench_backbones [--scales=1,2,4,8] [--batch_size=512]
        [--field_dims=16x14] [--runs=5] [--out=experiments/results/backbones.json]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from cvr_tf import job
from cvr_tf.backbones import available_backbones, build_backbone
from cvr_tf.compat import tf

BASELINE = "dcnv2"


def parse_field_dims(text: str) -> list[int]:
    """Parses "16x14" (14 fields of 16) or "32,8,8,16" into field widths."""
    if "x" in text:
        width, count = text.split("x")
        return [int(width)] * int(count)
    return [int(width) for width in text.split(",")]


def timed_rate(
    forward: Callable[[tf.Tensor], tf.Tensor], inputs: tf.Tensor, min_seconds: float
) -> float:
    """Examples/s of ``forward`` on ``inputs``, repeating calls until ``min_seconds`` pass."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or calls == 0:
        forward(inputs).numpy()
        calls += 1
    return calls * int(inputs.shape[0]) / elapsed


def benchmark(
    field_dims: Sequence[int], scales: Sequence[float], batch_size: int, runs: int,
    min_seconds: float = 0.3,
) -> list[dict[str, Any]]:
    """One row per (backbone, scale): params, FLOPs/example, ratio to DCNv2 at scale 1, speed.

    Every backbone is built, traced and warmed up first; then ``runs`` rounds time each of them
    in turn, so that load from other processes spreads over all rows rather than skewing a few,
    and each row reports its median rate.
    """
    input_dim = sum(field_dims)
    inputs = tf.random.stateless_normal([batch_size, input_dim], seed=[0, 1])
    baseline = build_backbone(BASELINE, input_dim, field_dims, 1.0).flops_per_example
    backbones, forwards = [], []
    for name in available_backbones():
        for scale in scales:
            backbone = build_backbone(name, input_dim, field_dims, scale)
            forward = tf.function(lambda x, layer=backbone.layer: layer(x, training=False))
            for _ in range(3):
                forward(inputs).numpy()
            backbones.append(backbone)
            forwards.append(forward)
    rates = [[] for _ in backbones]
    for _ in range(runs):
        for forward, rate in zip(forwards, rates, strict=True):
            rate.append(timed_rate(forward, inputs, min_seconds))
    rows = []
    for backbone, rate in zip(backbones, rates, strict=True):
        median = statistics.median(rate)
        rows.append({
            "backbone": backbone.name,
            "scale": backbone.scale,
            "params": backbone.param_count,
            "flops_per_example": backbone.flops_per_example,
            "flops_vs_dcnv2_scale_1": round(backbone.flops_per_example / baseline, 2),
            "examples_per_second": round(median),
            "gflops_per_second": round(median * backbone.flops_per_example / 1e9, 2),
        })
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| backbone | scale | params | FLOPs/example | x dcnv2@1 | examples/s | GFLOP/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['backbone']} | {row['scale']:g} | {row['params']:,} | "
            f"{row['flops_per_example']:,} | {row['flops_vs_dcnv2_scale_1']:.2f} | "
            f"{row['examples_per_second']:,} | {row['gflops_per_second']:.1f} |"
        )
    return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    field_dims = parse_field_dims(FLAGS.field_dims)
    scales = [float(scale) for scale in FLAGS.scales]
    load_before = os.getloadavg()[0]
    rows = benchmark(field_dims, scales, FLAGS.batch_size, FLAGS.runs)
    load_after = os.getloadavg()[0]
    print(
        f"Forward pass, batch {FLAGS.batch_size}, D={sum(field_dims)} ({len(field_dims)} fields), "
        f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, 1-minute load average "
        f"{load_before:.1f} before and {load_after:.1f} after (other work on the machine skews "
        "examples/s)\n"
    )
    print(markdown_table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
        json.dump(
            {
                "command": " ".join(["python -m experiments.bench_backbones", *sys.argv[1:]]),
                "batch_size": FLAGS.batch_size,
                "field_dims": field_dims,
                "input_dim": sum(field_dims),
                "cpus": os.cpu_count(),
                "load_average_before_after": [load_before, load_after],
                "tensorflow": tf.__version__,
                "rows": rows,
            },
            f,
            indent=2,
        )
    print(f"\nwrote {FLAGS.out}")


def define_flags() -> None:
    """The benchmark's flags, defined when it runs (tests import the module beside others)."""
    flags.DEFINE_list("scales", ["1", "2", "4", "8"], "Backbone scales.")
    flags.DEFINE_integer("batch_size", 512, "Batch size of the timed forward pass.")
    flags.DEFINE_string("field_dims", "16x14", 'Field widths: "16x14" (14 fields of 16) or '
                        '"32,8,8,16".')
    flags.DEFINE_integer("runs", 5, "Timed rounds; the median is reported.")
    flags.DEFINE_string("out", "experiments/results/backbones.json", "Where the JSON goes.")


if __name__ == "__main__":
    define_flags()
    job.run(main)

"""This machine's TensorFlow matmul peak, the yardstick of the benchmarks' FLOP/s figures.

A square ``n x n`` matmul costs ``2 n^3`` FLOPs; :func:`matmul_peak_gflops` runs it back to back
inside one ``tf.function`` (so Python dispatch is out of the figure) and reports the best of a
few repeats. Benchmarks measure it in the same run as the figures they compare with it, because
the peak moves with the machine's load and clock. ``python -m experiments.matmul_peak`` prints
fp32 and bf16 (oneDNN's AVX512_BF16 kernels, where the CPU has them).
"""

from __future__ import annotations

import time

from absl import flags

from cvr_tf import job
from cvr_tf.compat import tf


def matmul_peak_gflops(dtype: tf.DType = tf.float32, n: int = 2048, chained: int = 8,
                       repeats: int = 5) -> float:
    """Best GFLOP/s of ``chained`` dependent ``n x n`` matmuls, over ``repeats`` runs."""
    a = tf.random.stateless_uniform([n, n], seed=(1, 2), dtype=tf.float32)
    a = tf.cast(a / tf.sqrt(float(n)), dtype)

    @tf.function
    def run(x: tf.Tensor) -> tf.Tensor:
        for _ in range(chained):
            x = tf.matmul(x, a)
        return x

    run(a).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run(a).numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * n**3 * chained / best / 1e9


FLAGS = flags.FLAGS
flags.DEFINE_integer("n", 2048, "Matrix side.")


def main(argv: list[str]) -> None:
    del argv
    for dtype in (tf.float32, tf.bfloat16):
        print(f"{dtype.name}: {matmul_peak_gflops(dtype, FLAGS.n):.0f} GFLOP/s at {FLAGS.n}^2")


if __name__ == "__main__":
    job.run(main)

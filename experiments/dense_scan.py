"""The dense part alone, by batch size: what in-graph batching can gain, and its FLOP/s.

The ``dense`` signature of an unbatched export (``embeddings [rows, D]`` -> probabilities) is
called sequentially at each batch size; the figure is the fastest of ``repeats`` rounds of
``calls`` calls (the least disturbed by other jobs on a shared machine, as the matmul peak is),
as ms per call, ms per 100 rows and GFLOP/s (dense forward FLOPs per example x rows / time).
The ratio of ms per 100 rows at 100 rows to that at the largest size is the most that batching
100-row requests can save in the dense part.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cvr_tf.compat import tf
from serving import signatures

BATCH_SIZES = (100, 400, 1600)


def dense_scan(path: str, dense_flops_per_example: int, sizes: Sequence[int] = BATCH_SIZES,
               calls: int = 5, repeats: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """ms per call and GFLOP/s of the ``dense`` signature of the SavedModel at ``path``.

    Args:
      path: a version directory (an unbatched export, so that no batch queue is timed).
      dense_flops_per_example: the dense part's forward FLOPs per example.
      sizes: rows per call.
      calls: calls per round.
      repeats: rounds; the fastest counts.
      seed: seed of the random embeddings.

    Returns:
      One row per size: ``rows``, ``ms`` per call, ``ms_per_100_rows``, ``gflops``.
    """
    function = tf.saved_model.load(path).signatures[signatures.DENSE_SIGNATURE]
    width = function.structured_input_signature[1][signatures.EMBEDDINGS].shape[1]
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        embeddings = tf.constant(rng.normal(size=(size, width)).astype(np.float32))
        function(embeddings=embeddings)  # this shape, warm
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                function(embeddings=embeddings)[signatures.PROBABILITIES].numpy()
            best = min(best, (time.perf_counter() - started) / calls)
        rows.append({"rows": size, "ms": round(best * 1e3, 3),
                     "ms_per_100_rows": round(best * 1e3 * 100 / size, 3),
                     "gflops": round(dense_flops_per_example * size / best / 1e9, 1)})
    return rows


def scan_table(scans: Mapping[str, Sequence[Mapping[str, Any]]],
               peaks: Mapping[str, float]) -> list[str]:
    """Markdown: each export's dense part by batch size, against the matmul peaks."""
    lines = [f"(f) dense part alone (the dense signature of unbatched exports, sequential calls, "
             f"fastest of several rounds); matmul peak fp32 {peaks['float32']:.0f}, bf16 "
             f"{peaks['bfloat16']:.0f} GFLOP/s", "",
             "| export | rows | ms per call | ms per 100 rows | GFLOP/s | of fp32 peak |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, rows in scans.items():
        lines += [f"| {name} | {row['rows']} | {row['ms']:.2f} | {row['ms_per_100_rows']:.2f} | "
                  f"{row['gflops']:.0f} | {row['gflops'] / peaks['float32']:.1%} |"
                  for row in rows]
        lines.append(f"| {name} | batching headroom | | "
                     f"{rows[0]['ms_per_100_rows'] / rows[-1]['ms_per_100_rows']:.2f}x | | |")
    return lines

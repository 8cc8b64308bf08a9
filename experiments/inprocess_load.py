"""Open-loop load on a SavedModel signature loaded in this process: the figure that transfers to
``tensorflow_model_server``, without the local Python server's own cost in it.

TF Serving's C++ server decodes a request, calls the SavedModel's signature function and
encodes the answer on one of many request threads; what it adds to the function call is small
and does not hold a GIL. :func:`run_inprocess_load` reproduces that: a dispatcher thread releases
requests at their intended send times (Poisson or fixed inter-arrival times at ``qps``), a pool of
``threads`` workers runs the signature on them (TensorFlow releases the GIL while the graph
runs, so in-graph batching sees concurrent requests as it would in the server), and each
latency is measured from the request's *intended* send time. A request that waits for a free
worker therefore counts its wait, as an open loop must (no coordinated omission).

A call that raises a TensorFlow error counts under its gRPC status name (``UNAVAILABLE`` for a
full batch queue, ``INVALID_ARGUMENT`` for a refused input), and one answered after
``timeout_s`` as ``DEADLINE_EXCEEDED``, as a client with that deadline would see it.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import grpc
import numpy as np

from cvr_tf.compat import tf
from serving.loadtest import LoadReport, latency_summary

_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _arrival_times(qps: float, duration_s: float, arrival: str, seed: int) -> np.ndarray:
    """Intended send offsets in seconds, in ``[0, duration_s)``."""
    if arrival == "fixed":
        return np.arange(0.0, duration_s, 1.0 / qps)
    if arrival != "poisson":
        raise ValueError(f"arrival={arrival!r} must be poisson or fixed")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / qps, size=int(qps * duration_s * 1.5) + 16)
    times = np.cumsum(gaps) - gaps[0]
    return times[times < duration_s]


def run_inprocess_load(
    function: Callable[..., Mapping[str, tf.Tensor]],
    requests: Sequence[Mapping[str, np.ndarray]],
    qps: float,
    duration_s: float,
    threads: int = 16,
    timeout_s: float = 2.0,
    arrival: str = "poisson",
    seed: int = 0,
) -> LoadReport:
    """Offers ``qps`` requests/s to ``function`` for ``duration_s``; reports what it answered.

    Args:
      function: a signature function of a loaded SavedModel (keyword tensors -> outputs).
      requests: raw request columns to cycle through. They are converted to tensors once, up
        front: tensorflow_model_server parses a request's protos into tensors in C++ in tens of
        microseconds, while converting 100-row numpy object arrays from Python costs ~0.13 ms a
        request, a cost of this harness and not of the model.
      qps: offered requests per second.
      duration_s: how long requests are released; the run ends when all are answered.
      threads: request threads (TF Serving runs many; they wait on the batch queue, not CPU).
      timeout_s: a request answered later than this counts as ``DEADLINE_EXCEEDED``.
      arrival: ``poisson`` or ``fixed`` inter-arrival times.
      seed: seed of the Poisson arrivals.

    Returns:
        A :class:`~serving.loadtest.LoadReport` (``mode="open"``), latency from intended send
        times.
    """
    if qps <= 0 or duration_s <= 0 or threads < 1:
        raise ValueError(f"qps={qps}, duration_s={duration_s} and threads={threads} must be > 0")
    offsets = _arrival_times(qps, duration_s, arrival, seed)
    tensors = [{name: tf.constant(values) for name, values in request.items()}
               for request in requests]
    pending: queue.SimpleQueue[tuple[float, int] | None] = queue.SimpleQueue()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    answered = {"candidates": 0, "last": 0.0}

    def work() -> None:
        while (item := pending.get()) is not None:
            intended, index = item
            features = tensors[index % len(tensors)]
            error = None
            try:
                for value in function(**features).values():
                    value.numpy()
            except tf.errors.OpError as op_error:
                error = _STATUS_NAMES.get(op_error.error_code, "UNKNOWN")
            except (TypeError, ValueError):  # inputs the signature cannot take
                error = "INVALID_ARGUMENT"
            done = time.perf_counter()
            latency = done - intended
            if error is None and latency > timeout_s:
                error = "DEADLINE_EXCEEDED"
            with lock:
                answered["last"] = max(answered["last"], done)
                if error is None:
                    latencies.append(latency)
                    answered["candidates"] += len(next(iter(features.values())))
                else:
                    errors[error] += 1

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start = time.perf_counter()
    for index, offset in enumerate(offsets):
        intended = start + offset
        delay = intended - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pending.put((intended, index))
    for _ in workers:
        pending.put(None)
    for worker in workers:
        worker.join()

    duration = max(answered["last"] - start, 1e-9)
    return LoadReport(
        mode="open", concurrency=threads, target_qps=qps, arrival=arrival,
        offered_qps=len(offsets) / duration_s, requests=len(offsets), ok=len(latencies),
        errors=dict(errors), retries=0,
        candidates=answered["candidates"], duration_s=duration,
        latency_ms=latency_summary(latencies),
        requests_per_s=len(latencies) / duration,
        candidates_per_s=answered["candidates"] / duration,
    )

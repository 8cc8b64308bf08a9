"""``python -m serving.loadtest``: closed- and open-loop load against a local server.

* Closed loop: ``--concurrency`` clients each send a request, wait for the answer, and send the
  next, as fast as the server allows. Measures capacity.
* Open loop: requests leave at ``--qps`` regardless of answers, with Poisson (exponential gaps)
  or fixed arrivals. A request's latency runs from its *intended* send time, so a stalled
  server is charged for the requests it held up (no coordinated omission).

* Overload (:func:`run_overload`): the closed loop measures capacity, then the open loop offers
  ``--overload_factor`` times it, once without retries and once with the client's retry
  (``UNAVAILABLE`` only, jittered exponential backoff, at most ``--max_retries`` and never past
  the request's ``--timeout_s`` from its intended send time). The reports give offered and
  served rates, requests shed by status code and the p99 of served requests: with fast
  refusals, the served rate stays near capacity and served latency stays bounded.

Both stop by themselves after ``--duration_s`` or ``--num_requests``. Requests are synthesised
from the signature's inputs (GetModelMetadata) with ``--candidates`` rows each, or read from a
JSON/TFRecord file (:mod:`serving.request_files`). The report gives p50/p95/p99/max latency of
successful requests in ms, achieved throughput in requests/s and candidates/s, and errors by gRPC
status code; every request sent is either ``ok`` or counted in ``errors``. Load goes to
127.0.0.1 only::

    python -m serving.loadtest --server=127.0.0.1:8500 --model_name=cvr --mode=open --qps=200 \\
        --candidates=100 --duration_s=30 --output_json=load.json
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
from absl import app, flags
from tensorflow_serving.apis import predict_pb2

from cvr_tf import job
from cvr_tf.compat import tf
from serving.client import PredictionClient, rpc_error_line
from serving.request_files import read_requests
from serving.tensors import InputSpec

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
SYNTHETIC_REQUESTS = 32


@dataclasses.dataclass
class LoadReport:
    """What a load run measured.

    Attributes:
        mode: ``closed`` or ``open``.
        concurrency: Clients (closed loop).
        target_qps: Intended request rate (open loop).
        arrival: ``poisson`` or ``fixed`` (open loop).
        offered_qps: Requests sent per second of sending (open loop).
        requests: Requests sent; always ``ok + sum(errors.values())``.
        ok: Requests answered successfully.
        errors: gRPC status code name -> count (after retries): the requests shed or failed.
        retries: Retries made after ``UNAVAILABLE``.
        candidates: Candidates scored in successful requests.
        duration_s: From the first send to the last answer.
        latency_ms: ``p50``, ``p95``, ``p99``, ``max``, ``mean`` of successful requests.
        requests_per_s: Successful requests per second.
        candidates_per_s: Candidates scored per second.
    """

    mode: str
    concurrency: int
    target_qps: float | None
    arrival: str | None
    offered_qps: float | None
    requests: int
    ok: int
    errors: dict[str, int]
    retries: int
    candidates: int
    duration_s: float
    latency_ms: dict[str, float]
    requests_per_s: float
    candidates_per_s: float

    def to_json(self) -> str:
        """The report as a JSON object."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def table(self) -> str:
        """The report as an aligned two-column text table."""
        load = (
            f"closed loop, {self.concurrency} clients"
            if self.mode == "closed"
            else f"open loop, {self.target_qps:g} QPS target ({self.offered_qps:.1f} offered), "
            f"{self.arrival} arrivals"
        )
        errors = ", ".join(f"{code}={count}" for code, count in sorted(self.errors.items()))
        latency = self.latency_ms
        rows = [
            ("load", load),
            ("requests", f"{self.requests} sent, {self.ok} ok, {self.requests - self.ok} failed"),
            ("errors", errors or "none"),
            ("retries", str(self.retries)),
            (
                "latency (ms)",
                f"p50 {latency['p50']:.2f}  p95 {latency['p95']:.2f}  p99 {latency['p99']:.2f}  "
                f"max {latency['max']:.2f}",
            ),
            (
                "throughput",
                f"{self.requests_per_s:.1f} requests/s, {self.candidates_per_s:.0f} candidates/s",
            ),
            ("duration", f"{self.duration_s:.2f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """``p50``, ``p95``, ``p99``, ``max`` and ``mean`` in ms of latencies in seconds (zeros if
    there are none): the ``latency_ms`` of a :class:`LoadReport`."""
    if not latencies_s:
        return dict.fromkeys(("p50", "p95", "p99", "max", "mean"), 0.0)
    milliseconds = np.asarray(latencies_s) * 1e3
    p50, p95, p99 = np.percentile(milliseconds, [50, 95, 99]).tolist()
    return {"p50": p50, "p95": p95, "p99": p99, "max": float(milliseconds.max()),
            "mean": float(milliseconds.mean())}


def synthetic_requests(
    specs: Mapping[str, InputSpec], candidates: int, count: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Random requests shaped by a signature: dimension 0 is ``candidates``, others 1 if free.

    Strings are ``b"<input>_<k>"`` with ``k < 1000``, integers in ``[0, 100)``, floats in
    ``[0, 100)``, so hashed or bucketized features see varied but plausible values.
    """
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        request = {}
        for name, spec in specs.items():
            dims = spec.dims if spec.dims is not None else (-1,)
            shape = tuple(
                candidates if axis == 0 and size == -1 else max(size, 1)
                for axis, size in enumerate(dims)
            )
            if spec.dtype == tf.string:
                ids = rng.integers(0, 1000, shape)
                values = np.vectorize(lambda k, n=name: f"{n}_{k}".encode(), otypes=[object])(ids)
            elif spec.dtype.is_floating:
                values = rng.uniform(0, 100, shape).astype(spec.dtype.as_numpy_dtype)
            elif spec.dtype.is_bool:
                values = rng.integers(0, 2, shape).astype(bool)
            else:
                values = rng.integers(0, 100, shape).astype(spec.dtype.as_numpy_dtype)
            request[name] = values
        requests.append(request)
    return requests


class _Recorder:
    """Thread-safe tally of answers."""

    def __init__(self) -> None:
        self._answered = threading.Condition()
        self.answers = 0
        self.latencies: list[float] = []
        self.candidates = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.last_answer = 0.0

    def record(self, started: float, rows: int, error: grpc.RpcError | None) -> None:
        now = time.perf_counter()
        with self._answered:
            self.answers += 1
            self.last_answer = max(self.last_answer, now)
            if error is None:
                self.latencies.append(now - started)
                self.candidates += rows
            else:
                self.errors[error.code().name] += 1
            self._answered.notify_all()

    def wait_for(self, answers: int) -> None:
        """Blocks until ``answers`` answers were recorded (asynchronous calls)."""
        with self._answered:
            self._answered.wait_for(lambda: self.answers >= answers)


def _check_loopback(target: str) -> None:
    host = target.rsplit(":", 1)[0]
    if host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"load tests run against a local server only; got --server={target}, use "
            "127.0.0.1:<port>"
        )


@dataclasses.dataclass
class _Plan:
    """The requests of a run and when it ends; both loops draw request ``index`` from it."""

    client: PredictionClient
    requests: list[predict_pb2.PredictRequest]
    rows: list[int]
    start: float
    deadline: float
    budget: int
    recorder: _Recorder
    max_retries: int = 0
    timeout_s: float = 5.0

    def request(self, index: int) -> tuple[predict_pb2.PredictRequest, int]:
        position = index % len(self.requests)
        return self.requests[position], self.rows[position]


def _closed_loop(plan: _Plan, concurrency: int) -> None:
    """``concurrency`` threads, each sending its next request when the previous one answered."""
    counter = itertools.count()

    def worker() -> None:
        while time.perf_counter() < plan.deadline:
            index = next(counter)
            if index >= plan.budget:
                return
            request, rows = plan.request(index)
            started = time.perf_counter()
            try:
                plan.client.predict_response(request)
            except grpc.RpcError as error:
                plan.recorder.record(started, 0, error)
            else:
                plan.recorder.record(started, rows, None)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _send(plan: _Plan, request: predict_pb2.PredictRequest, rows: int, due: float, attempt: int):
    """Sends one request asynchronously; ``UNAVAILABLE`` is retried after a backoff, as the
    client's retry policy and throttle allow, within the request's deadline."""

    def done(future: grpc.Future) -> None:
        error = future.exception()
        delay = plan.client.retry_delay(error, attempt)
        if delay is not None:
            if time.perf_counter() + delay - due < plan.timeout_s:
                retry = threading.Timer(delay, _send, (plan, request, rows, due, attempt + 1))
                retry.daemon = True
                retry.start()
                return
        plan.recorder.record(due, rows, error)

    plan.client.predict_future(request).add_done_callback(done)


def _open_loop(plan: _Plan, qps: float, arrival: str, seed: int) -> float:
    """Sends at the intended times; returns the offered rate (requests per second of sending)."""
    """Sends at intended times ``qps`` apart on average; latency counts from those times."""
    rng = np.random.default_rng(seed)
    sent = 0
    offset = 0.0
    for index in range(plan.budget):
        # Fixed arrivals from the index, not a running sum: summed 1/qps steps drift by a
        # rounding error and could send one request more or less before the deadline.
        offset = offset + rng.exponential(1.0 / qps) if arrival == "poisson" else (index + 1) / qps
        intended = plan.start + offset
        if intended >= plan.deadline:
            break
        delay = intended - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        request, rows = plan.request(index)
        _send(plan, request, rows, intended, 0)
        sent += 1
    sending = time.perf_counter() - plan.start
    plan.recorder.wait_for(sent)
    return sent / max(sending, 1e-9)


def run_load(
    target: str,
    model_name: str,
    *,
    signature_name: str = "serving_default",
    mode: str = "closed",
    concurrency: int = 8,
    qps: float | None = None,
    arrival: str = "poisson",
    candidates: int = 100,
    duration_s: float | None = 10.0,
    num_requests: int | None = None,
    requests: Sequence[Mapping[str, np.ndarray]] | None = None,
    timeout_s: float = 5.0,
    max_retries: int = 0,
    seed: int = 0,
) -> LoadReport:
    """Runs one load test and reports it.

    Args:
        target: ``127.0.0.1:<port>`` (load goes to the local machine only).
        model_name: The model to call.
        signature_name: The signature to call.
        mode: ``closed`` (``concurrency`` clients back to back) or ``open`` (``qps`` arrivals).
        concurrency: Clients of the closed loop.
        qps: Target request rate of the open loop.
        arrival: ``poisson`` or ``fixed`` inter-arrival times (open loop).
        candidates: Rows per synthesised request (ignored with ``requests``).
        duration_s: Stop sending after this long (``None``: only ``num_requests`` bounds it).
        num_requests: Stop after this many requests (``None``: only ``duration_s`` bounds it).
        requests: Requests to cycle through; ``None`` synthesises them from GetModelMetadata.
        timeout_s: Deadline of each request (with retries: of all its attempts, open loop).
        max_retries: Retries after ``UNAVAILABLE`` with the client's jittered backoff.
        seed: Seed of synthetic inputs, Poisson arrivals and backoff jitter.

    Returns:
        The :class:`LoadReport`.

    Raises:
        ValueError: for a non-local target, an unknown mode or arrival, a missing ``qps`` in
            open loop, or neither ``duration_s`` nor ``num_requests``.
    """
    _check_loopback(target)
    if mode not in ("closed", "open") or arrival not in ("poisson", "fixed"):
        raise ValueError(f"mode={mode!r} must be closed|open and arrival={arrival!r} poisson|fixed")
    if mode == "open" and not qps:
        raise ValueError("the open loop needs qps > 0")
    if duration_s is None and num_requests is None:
        raise ValueError("pass duration_s or num_requests so the load test ends")
    with PredictionClient(
        target, model_name, signature_name, timeout_s=timeout_s, max_retries=max_retries, seed=seed
    ) as client:
        if requests is None:
            requests = synthetic_requests(
                client.input_specs(), candidates, SYNTHETIC_REQUESTS, seed
            )
        protos = [client.predict_request(features) for features in requests]
        start = time.perf_counter()
        plan = _Plan(
            client=client,
            requests=protos,
            rows=[len(next(iter(features.values()))) for features in requests],
            start=start,
            deadline=start + duration_s if duration_s is not None else float("inf"),
            budget=num_requests if num_requests is not None else sys.maxsize,
            recorder=_Recorder(),
            max_retries=max_retries,
            timeout_s=timeout_s,
        )
        offered = None
        if mode == "closed":
            _closed_loop(plan, concurrency)
        else:
            offered = _open_loop(plan, qps, arrival, seed)
        retries = client.retries
    recorder = plan.recorder
    duration = max(recorder.last_answer - start, 1e-9)
    percentiles = latency_summary(recorder.latencies)
    ok = len(recorder.latencies)
    return LoadReport(
        mode=mode,
        concurrency=concurrency if mode == "closed" else 0,
        target_qps=qps if mode == "open" else None,
        arrival=arrival if mode == "open" else None,
        offered_qps=offered,
        requests=ok + sum(recorder.errors.values()),
        ok=ok,
        errors=dict(recorder.errors),
        retries=retries,
        candidates=recorder.candidates,
        duration_s=duration,
        latency_ms=percentiles,
        requests_per_s=ok / duration,
        candidates_per_s=recorder.candidates / duration,
    )


def run_overload(
    target: str,
    model_name: str,
    *,
    overload_factor: float = 2.0,
    concurrency: int = 8,
    candidates: int = 100,
    duration_s: float = 10.0,
    timeout_s: float = 1.0,
    max_retries: int = 3,
    seed: int = 0,
    **load_options,
) -> dict[str, LoadReport]:
    """Measures capacity, then offers ``overload_factor`` times it without and with retries.

    Args:
        target: ``127.0.0.1:<port>``.
        model_name: The model to call.
        overload_factor: Offered rate as a multiple of the measured capacity (> 1 overloads).
        concurrency: Clients of the capacity run (closed loop).
        candidates: Rows per synthesised request.
        duration_s: Length of each of the three runs.
        timeout_s: Deadline of each request in the open-loop runs.
        max_retries: Retries after ``UNAVAILABLE`` in the run with retries.
        seed: Seed of inputs, arrivals and jitter.
        **load_options: Passed to every :func:`run_load` (e.g. ``signature_name``).

    Returns:
        ``capacity`` (closed loop), ``overload`` (open loop, no retries) and
        ``overload_with_retries`` reports.

    Raises:
        ValueError: for ``overload_factor <= 0`` or what :func:`run_load` refuses.
    """
    if overload_factor <= 0:
        raise ValueError(f"--overload_factor={overload_factor} must be > 0")
    common = dict(candidates=candidates, duration_s=duration_s, seed=seed, **load_options)
    capacity = run_load(target, model_name, mode="closed", concurrency=concurrency, **common)
    qps = max(capacity.requests_per_s, 1.0) * overload_factor
    reports = {"capacity": capacity}
    for name, retries in (("overload", 0), ("overload_with_retries", max_retries)):
        reports[name] = run_load(
            target,
            model_name,
            mode="open",
            qps=qps,
            timeout_s=timeout_s,
            max_retries=retries,
            **common,
        )
    return reports


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the job's flags (only when run as a program)."""
    flags.DEFINE_string("server", "127.0.0.1:8500", "127.0.0.1:<port> of the server.")
    flags.DEFINE_string("model_name", "cvr", "Model to call.")
    flags.DEFINE_string("signature_name", "serving_default", "Signature to call.")
    flags.DEFINE_enum(
        "mode", "closed", ["closed", "open", "overload"], "Closed loop, open loop or overload."
    )
    flags.DEFINE_integer("concurrency", 8, "Clients of the closed loop.")
    flags.DEFINE_float("qps", None, "Target requests/s of the open loop.")
    flags.DEFINE_enum("arrival", "poisson", ["poisson", "fixed"], "Open-loop arrivals.")
    flags.DEFINE_integer("candidates", 100, "Candidates per synthesised request.")
    flags.DEFINE_float("duration_s", 10.0, "Seconds of load (0: bounded by --num_requests).")
    flags.DEFINE_integer("num_requests", None, "Requests to send.")
    flags.DEFINE_string("input", "", "JSON or TFRecord requests instead of synthetic ones.")
    flags.DEFINE_string("group_key", "request_id", "Feature grouping TFRecord rows.")
    flags.DEFINE_float("timeout_s", 5.0, "Deadline of each request.")
    flags.DEFINE_integer("seed", 0, "Seed of synthetic inputs and arrivals.")
    flags.DEFINE_integer("max_retries", 0, "Retries after UNAVAILABLE (overload: its retry run).")
    flags.DEFINE_float("overload_factor", 2.0, "Overload: offered rate / measured capacity.")
    flags.DEFINE_string("output_json", "", "Also write the report here as JSON.")


def _run_from_flags() -> dict[str, LoadReport]:
    """The load the flags describe, by phase name."""
    requests = None
    if FLAGS.input:
        with PredictionClient(FLAGS.server, FLAGS.model_name, FLAGS.signature_name) as client:
            _, requests = read_requests(FLAGS.input, client.input_specs(), FLAGS.group_key)
    if FLAGS.mode == "overload":
        return run_overload(
            FLAGS.server,
            FLAGS.model_name,
            overload_factor=FLAGS.overload_factor,
            concurrency=FLAGS.concurrency,
            candidates=FLAGS.candidates,
            duration_s=FLAGS.duration_s or 10.0,
            timeout_s=FLAGS.timeout_s,
            max_retries=FLAGS.max_retries or 3,
            seed=FLAGS.seed,
            signature_name=FLAGS.signature_name,
            requests=requests,
        )
    return {
        FLAGS.mode: run_load(
            FLAGS.server,
            FLAGS.model_name,
            signature_name=FLAGS.signature_name,
            mode=FLAGS.mode,
            concurrency=FLAGS.concurrency,
            qps=FLAGS.qps,
            arrival=FLAGS.arrival,
            candidates=FLAGS.candidates,
            duration_s=FLAGS.duration_s or None,
            num_requests=FLAGS.num_requests,
            requests=requests,
            timeout_s=FLAGS.timeout_s,
            max_retries=FLAGS.max_retries,
            seed=FLAGS.seed,
        )
    }


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        reports = _run_from_flags()
    except grpc.RpcError as error:  # the server's metadata, read before any load is sent
        raise app.UsageError(rpc_error_line(error, FLAGS.server, FLAGS.model_name)) from None
    for name, report in reports.items():
        print(f"== {name}\n{report.table()}" if len(reports) > 1 else report.table())
    if FLAGS.output_json:
        payload = {name: dataclasses.asdict(report) for name, report in reports.items()}
        if len(payload) == 1:
            (payload,) = payload.values()
        with open(FLAGS.output_json, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    define_flags()
    job.run(main)

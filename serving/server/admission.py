"""Admission control: refuse fast what the server cannot serve in time, and count every answer.

Every request, gRPC or REST, passes one :class:`RequestGate` before any work starts:

1. the ``ModelSpec`` is resolved (``NOT_FOUND`` for an unknown model or version);
2. at most ``max_in_flight_per_model`` requests of a model run at once; the next
   ``max_queued_per_model`` wait for a slot in a bounded queue, and past that a request is refused
   at once with ``UNAVAILABLE``, TF Serving's code for a full queue, so clients back off or fail
   over instead of piling up behind a saturated model;
3. a request whose remaining deadline is shorter than the model's recent service time ``s``
   (before it runs, or while it waits for a slot) is refused with ``DEADLINE_EXCEEDED``: it would
   time out anyway, after taking a slot. ``s`` is an exponentially weighted mean of served
   requests' times, ``s <- (1 - a) s + a t`` with ``a = 0.1``;
4. the answer's status and latency go to :class:`~serving.server.metrics.ServingMetrics`.

The in-graph ``BatchFunction`` queue bounds itself: past its ``max_enqueued_batches`` TensorFlow
raises ``UNAVAILABLE``, which :func:`serving.errors.from_tf_error` keeps.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import grpc
from tensorflow_serving.apis import model_pb2

from serving.errors import ServingError
from serving.limits import ServerLimits
from serving.server import metrics
from serving.server.model_manager import ModelManager
from serving.server.servable import Servable

SERVICE_TIME_WEIGHT = 0.1
METADATA_API = "metadata"  # answered from memory: counted, never shed


class _ModelGate:
    """Running and waiting counts and service-time estimate of one model (under its condition)."""

    __slots__ = ("condition", "in_flight", "service_s", "waiting")

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.in_flight = 0
        self.waiting = 0
        self.service_s = 0.0


class RequestGate:
    """The admission and accounting every request goes through (see the module docstring).

    Args:
        manager: Resolves model specs to loaded versions.
        limits: ``max_in_flight_per_model`` is read from it.
        serving_metrics: Where answers are counted.
    """

    def __init__(
        self,
        manager: ModelManager,
        limits: ServerLimits,
        serving_metrics: metrics.ServingMetrics,
    ) -> None:
        self.manager = manager
        self.limits = limits
        self.metrics = serving_metrics
        self._gates: dict[str, _ModelGate] = {}
        self._lock = threading.Lock()

    def _gate(self, model_name: str) -> _ModelGate:
        gate = self._gates.get(model_name)
        if gate is None:
            with self._lock:
                gate = self._gates.setdefault(model_name, _ModelGate())
        return gate

    def service_time_s(self, model_name: str) -> float:
        """The model's current service-time estimate ``s`` in seconds (0 before any request)."""
        return self._gate(model_name).service_s

    def _refuse(self, model_name: str, code: grpc.StatusCode, message: str) -> ServingError:
        self.metrics.increment(metrics.SHED_COUNT, model_name=model_name, status=code.name)
        return ServingError(code, message)

    def _hopeless(self, model_name: str, gate: _ModelGate) -> ServingError:
        return self._refuse(
            model_name,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the request's remaining deadline is shorter than model '{model_name}''s recent "
            f"service time ({gate.service_s * 1e3:.1f} ms); refused before running it. Give the "
            "request a longer deadline",
        )

    def _wait_for_slot(self, model_name: str, gate: _ModelGate, deadline: float | None) -> None:
        """Queues for a running slot (caller holds the condition); refuses when hopeless."""
        depth = self.limits.max_queued_per_model
        if gate.waiting >= depth:
            raise self._refuse(
                model_name,
                grpc.StatusCode.UNAVAILABLE,
                f"model '{model_name}' has {self.limits.max_in_flight_per_model} requests running "
                f"and {depth} queued, its limits (--max_in_flight_per_model, "
                "--max_queued_per_model); retry with backoff",
            )
        gate.waiting += 1
        try:
            while gate.in_flight >= self.limits.max_in_flight_per_model:
                timeout = None
                if deadline is not None:
                    timeout = deadline - time.monotonic() - gate.service_s
                    if timeout <= 0:
                        raise self._hopeless(model_name, gate)
                gate.condition.wait(timeout)
        finally:
            gate.waiting -= 1

    @contextlib.contextmanager
    def _admit(self, model_name: str, deadline: float | None) -> Iterator[None]:
        gate = self._gate(model_name)
        with gate.condition:
            if gate.in_flight >= self.limits.max_in_flight_per_model:
                self._wait_for_slot(model_name, gate, deadline)
            if deadline is not None and deadline - time.monotonic() < gate.service_s:
                raise self._hopeless(model_name, gate)
            gate.in_flight += 1
        started = time.monotonic()
        served = False
        try:
            yield
            served = True
        finally:
            elapsed = time.monotonic() - started
            with gate.condition:
                gate.in_flight -= 1
                if served:
                    gate.service_s += SERVICE_TIME_WEIGHT * (elapsed - gate.service_s)
                gate.condition.notify()

    @contextlib.contextmanager
    def serve(
        self,
        model_spec: model_pb2.ModelSpec,
        api: str,
        entrypoint: str,
        deadline: float | None = None,
    ) -> Iterator[Servable]:
        """Admits one request and holds its version while it runs.

        Args:
            model_spec: The request's model spec.
            api: ``predict``, ``classify``, ``regress`` or ``metadata`` (the metrics' ``API``);
                metadata calls are counted but not admitted against the in-flight limit.
            entrypoint: ``GRPC`` or ``REST``.
            deadline: ``time.monotonic()`` deadline of the call, if any.

        Yields:
            The version serving the request.

        Raises:
            ServingError: ``NOT_FOUND`` for an unknown model or version, ``UNAVAILABLE`` past
                ``max_in_flight_per_model``, ``DEADLINE_EXCEEDED`` for a deadline that cannot be
                met, or the error of the request itself.
        """
        started = time.perf_counter()
        status = "OK"
        try:
            with contextlib.ExitStack() as stack:
                servable = stack.enter_context(self.manager.servable(model_spec))
                if api != METADATA_API:
                    stack.enter_context(self._admit(model_spec.name, deadline))
                yield servable
        except ServingError as error:
            status = error.code.name
            raise
        except BaseException:
            status = grpc.StatusCode.INTERNAL.name
            raise
        finally:
            self.metrics.record_request(
                model_spec.name, api, entrypoint, status, time.perf_counter() - started
            )

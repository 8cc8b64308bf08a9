"""Starting and stopping the local server: the gRPC services, the REST API, the models.

:func:`start_server` loads the models and serves TF Serving's gRPC API (and optionally its REST
API) on 127.0.0.1 or any interface, returning a :class:`RunningServer`; tests, benchmarks and
the demo use it directly, ``python -m serving.server`` (:mod:`serving.server.__main__`) from the
command line.
"""

from __future__ import annotations

import errno
import os
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.batching import BatchingConfig
from serving.limits import ServerLimits
from serving.server.admission import RequestGate
from serving.server.batch_scheduler import BatchScheduler
from serving.server.metrics import ServingMetrics
from serving.server.model_manager import LOAD_RETRY_INTERVAL_S, MAX_NUM_LOAD_RETRIES, ModelManager
from serving.server.model_service import ModelService
from serving.server.prediction_service import PredictionService
from serving.server.rest_api import RestServer
from serving.tf_serving_config import ModelServerConfig, read_models_config

CONCURRENT_RPCS_PER_THREAD = 2
# Enough threads that a model's running and queued requests (ServerLimits: 2 per core running,
# 32 queued) each hold one and a few more answer refusals at once, so that past capacity the
# admission gate's fast UNAVAILABLE (which clients retry) comes before gRPC's own
# RESOURCE_EXHAUSTED, and 32 closed-loop clients (the soak target) are served, not refused.
# Measured at twice capacity on 2 cores: fewer threads (8) shed mostly RESOURCE_EXHAUSTED and
# failed a 16-client soak; far more (64+) let parsing threads contend for the GIL.
DEFAULT_GRPC_MAX_THREADS = 48


def grpc_options(limits: ServerLimits) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments: message size bound, no port sharing."""
    return [
        ("grpc.max_receive_message_length", limits.grpc_max_receive_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
    ]


class RunningServer:
    """A started server; stop it with :meth:`stop` or by leaving a ``with`` block.

    Attributes:
        port: The bound gRPC port.
        target: ``host:port`` for ``grpc.insecure_channel``.
        rest_api_port: The bound REST port, or ``None`` without the REST API.
        manager: The model manager (versions, status, reload).
        batch_scheduler: The server-side batching scheduler (``None`` without batching).
        gate: Admission control and metrics of every request.
    """

    def __init__(
        self,
        grpc_server: grpc.Server,
        gate: RequestGate,
        batch_scheduler: BatchScheduler | None,
        rest_server: RestServer | None,
        host: str,
        port: int,
    ) -> None:
        self._grpc_server = grpc_server
        self._rest_server = rest_server
        self.rest_api_port = rest_server.port if rest_server is not None else None
        self.batch_scheduler = batch_scheduler
        self.gate = gate
        self.manager = gate.manager
        self.port = port
        self.target = f"{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{port}"

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Refuses new calls, waits up to ``grace_seconds`` for calls in flight, then unloads."""
        if self._rest_server is not None:
            self._rest_server.stop()
        self._grpc_server.stop(grace_seconds).wait()
        self.manager.stop()
        if self.batch_scheduler is not None:
            self.batch_scheduler.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_server(
    config: ModelServerConfig | str | os.PathLike,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    batching: BatchingConfig | None = None,
    file_system_poll_wait_seconds: float = 1.0,
    grpc_max_threads: int = DEFAULT_GRPC_MAX_THREADS,
    rest_api_port: int | None = None,
    limits: ServerLimits | None = None,
    prometheus_path: str | None = None,
    max_num_load_retries: int = MAX_NUM_LOAD_RETRIES,
    load_retry_interval_s: float = LOAD_RETRY_INTERVAL_S,
) -> RunningServer:
    """Loads the models and starts serving TF Serving's gRPC API.

    Args:
        config: A ``ModelServerConfig`` or the path of a ``models.config`` text proto.
        port: gRPC port; 0 picks a free one.
        host: Interface to bind (``0.0.0.0`` for all, as ``tensorflow_model_server`` does).
        batching: Server-side batching options (``--enable_batching``); ``None`` runs each
            request on its own.
        file_system_poll_wait_seconds: Seconds between polls for new versions; 0 polls once.
        grpc_max_threads: Worker threads, hence the number of calls served concurrently.
            Calls beyond ``CONCURRENT_RPCS_PER_THREAD`` per thread (running or waiting for a
            thread) are refused by gRPC at once with ``RESOURCE_EXHAUSTED``, as a
            ``tensorflow_model_server`` whose thread quota is exhausted does.
        rest_api_port: Also serve TF Serving's REST API on this port (0: a free one).
        limits: Resource limits (:class:`~serving.limits.ServerLimits`); ``None``: defaults.
        prometheus_path: Serve Prometheus metrics at this REST path (from
            ``--monitoring_config_file``); ``None`` serves none.
        max_num_load_retries: Retries of a version that failed to load.
        load_retry_interval_s: Backoff before the first retry (doubling after each failure).

    Returns:
        The running server, every aspired version loaded and warmed up.

    Raises:
        ServingError: when a model fails to load (including a model with in-graph batching
            while ``batching`` is set); nothing is left running.
        OSError: when the gRPC or the REST port cannot be bound.
    """
    if not isinstance(config, ModelServerConfig):
        config = read_models_config(config)
    scheduler = BatchScheduler(batching) if batching is not None else None
    limits = limits if limits is not None else ServerLimits()
    serving_metrics = ServingMetrics()
    manager = ModelManager(
        config,
        scheduler,
        file_system_poll_wait_seconds,
        serving_metrics,
        max_num_load_retries,
        load_retry_interval_s,
    )
    gate = RequestGate(manager, limits, serving_metrics)
    try:
        manager.start()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=grpc_max_threads, thread_name_prefix="grpc"),
            options=grpc_options(limits),
            maximum_concurrent_rpcs=CONCURRENT_RPCS_PER_THREAD * grpc_max_threads,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(gate), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
        bound = _bind(server, host, port)
        rest = (
            RestServer(gate, host, rest_api_port, prometheus_path)
            if rest_api_port is not None
            else None
        )
    except BaseException:
        manager.stop()
        if scheduler is not None:
            scheduler.stop()
        raise
    server.start()
    return RunningServer(server, gate, scheduler, rest, host, bound)


def _bind(server: grpc.Server, host: str, port: int) -> int:
    message = f"could not bind gRPC to {host}:{port}; is another server using it?"
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise OSError(errno.EADDRINUSE, message) from error
    if not bound:
        raise OSError(errno.EADDRINUSE, message)
    return bound

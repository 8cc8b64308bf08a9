"""``python -m serving.server``: a local server of TF Serving's gRPC API over SavedModel base paths.

Flags are named as ``tensorflow_model_server``'s, so one command line serves with either::

    python -m serving.server --port=8500 --model_name=cvr --model_base_path=/models/cvr
    python -m serving.server --port=8500 --rest_api_port=8501 --model_config_file=models.config \\
        --enable_batching --batching_parameters_file=batching_parameters.txt \\
        --file_system_poll_wait_seconds=1

SIGTERM or SIGINT stops accepting calls, lets calls in flight finish (up to
``--shutdown_grace_seconds``) and exits 0. Tests, benchmarks and the demo use
:func:`start_server` instead, which returns a :class:`RunningServer` on a free port.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures

import grpc
from absl import app, flags
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from cvr_tf.compat import tf
from serving.admission import RequestGate
from serving.limits import ServerLimits
from serving.metrics import ServingMetrics
from serving.model_manager import LOAD_RETRY_INTERVAL_S, MAX_NUM_LOAD_RETRIES, ModelManager
from serving.model_service import ModelService
from serving.prediction_service import PredictionService
from serving.rest_api import RestServer
from serving.server_batching import BatchingOptions, BatchScheduler
from serving.tf_serving_config import (
    PROMETHEUS_METRICS_PATH,
    ModelServerConfig,
    read_batching_parameters,
    read_models_config,
    read_monitoring_config,
    single_model_config,
)

_log = logging.getLogger(__name__)

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
    batching: BatchingOptions | None = None,
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
        RuntimeError: when the gRPC port cannot be bound.
        OSError: when the REST port cannot be bound.
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
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise RuntimeError(f"could not bind {host}:{port}; is another server using it?") from error
    if not bound:
        raise RuntimeError(f"could not bind {host}:{port}; is another server using it?")
    return bound


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the job's flags (only when run as a program, so importing stays side-effect free)."""
    flags.DEFINE_integer("port", 8500, "gRPC port.")
    flags.DEFINE_integer("rest_api_port", 0, "REST API port (0: no REST API).")
    flags.DEFINE_string("host", "0.0.0.0", "Interface to bind the gRPC port to.")
    flags.DEFINE_string("model_name", "default", "Model name, with --model_base_path.")
    flags.DEFINE_string("model_base_path", "", "Directory of numbered version directories.")
    flags.DEFINE_string("model_config_file", "", "models.config (ModelServerConfig text proto).")
    flags.DEFINE_bool("enable_batching", False, "Merge concurrent requests (server-side batching).")
    flags.DEFINE_string("batching_parameters_file", "", "BatchingParameters text proto.")
    flags.DEFINE_float("file_system_poll_wait_seconds", 1.0, "Seconds between polls; 0: once.")
    flags.DEFINE_integer(
        "grpc_max_threads", DEFAULT_GRPC_MAX_THREADS,
        "gRPC worker threads; calls past twice this many get RESOURCE_EXHAUSTED.",
    )
    flags.DEFINE_float("shutdown_grace_seconds", 10.0, "Time calls in flight get to finish.")
    flags.DEFINE_integer(
        "max_num_load_retries", MAX_NUM_LOAD_RETRIES, "Retries of a version that failed to load."
    )
    flags.DEFINE_integer(
        "load_retry_interval_micros",
        int(LOAD_RETRY_INTERVAL_S * 1e6),
        "Backoff before the first load retry (doubles after each failure).",
    )
    defaults = ServerLimits()
    for name, value in vars(defaults).items():
        flags.DEFINE_integer(name, value, f"Resource limit (serving.limits.ServerLimits.{name}).")
    flags.DEFINE_string(
        "monitoring_config_file", "", "MonitoringConfig text proto (Prometheus on the REST port)."
    )
    flags.DEFINE_integer(
        "tensorflow_intra_op_parallelism", 0, "Threads of one op (0: TensorFlow's default)."
    )
    flags.DEFINE_integer(
        "tensorflow_inter_op_parallelism", 0, "Ops run in parallel (0: TensorFlow's default)."
    )


def _config_from_flags() -> ModelServerConfig:
    if bool(FLAGS.model_config_file) == bool(FLAGS.model_base_path):
        raise app.UsageError("pass exactly one of --model_config_file or --model_base_path")
    try:
        if FLAGS.model_config_file:
            return read_models_config(FLAGS.model_config_file)
        return single_model_config(FLAGS.model_name, FLAGS.model_base_path)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def _batching_from_flags() -> BatchingOptions | None:
    if not FLAGS.enable_batching:
        if FLAGS.batching_parameters_file:
            raise app.UsageError("--batching_parameters_file needs --enable_batching")
        return None
    if not FLAGS.batching_parameters_file:
        return BatchingOptions()
    return BatchingOptions.from_proto(read_batching_parameters(FLAGS.batching_parameters_file))


def _limits_from_flags() -> ServerLimits:
    try:
        return ServerLimits(**{name: FLAGS[name].value for name in vars(ServerLimits())})
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def _prometheus_path_from_flags() -> str | None:
    if not FLAGS.monitoring_config_file:
        return None
    prometheus = read_monitoring_config(FLAGS.monitoring_config_file).prometheus_config
    if not prometheus.enable:
        return None
    if not FLAGS.rest_api_port:
        raise app.UsageError("Prometheus monitoring needs --rest_api_port (it serves on it)")
    return prometheus.path or PROMETHEUS_METRICS_PATH


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.tensorflow_inter_op_parallelism)
    server = start_server(
        _config_from_flags(),
        FLAGS.port,
        host=FLAGS.host,
        batching=_batching_from_flags(),
        file_system_poll_wait_seconds=FLAGS.file_system_poll_wait_seconds,
        grpc_max_threads=FLAGS.grpc_max_threads,
        rest_api_port=FLAGS.rest_api_port or None,
        limits=_limits_from_flags(),
        prometheus_path=_prometheus_path_from_flags(),
        max_num_load_retries=FLAGS.max_num_load_retries,
        load_retry_interval_s=FLAGS.load_retry_interval_micros / 1e6,
    )
    stopping = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stopping.set())
    _log.info("Running gRPC ModelServer at %s:%d", FLAGS.host, server.port)
    if server.rest_api_port is not None:
        _log.info("Exporting HTTP/REST API at %s:%d", FLAGS.host, server.rest_api_port)
    while not stopping.wait(0.5):
        pass
    _log.info("shutting down: finishing calls in flight")
    server.stop(FLAGS.shutdown_grace_seconds)
    _log.info("stopped")


if __name__ == "__main__":
    define_flags()
    app.run(main)

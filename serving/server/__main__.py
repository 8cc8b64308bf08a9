"""``python -m serving.server``: a local server of TF Serving's gRPC API over SavedModel base paths.

Flags are named as ``tensorflow_model_server``'s, so one command line serves with either::

    python -m serving.server --port=8500 --model_name=cvr --model_base_path=/models/cvr
    python -m serving.server --port=8500 --rest_api_port=8501 --model_config_file=models.config \\
        --enable_batching --batching_parameters_file=batching_parameters.txt \\
        --file_system_poll_wait_seconds=1

SIGTERM or SIGINT stops accepting calls, lets calls in flight finish (up to
``--shutdown_grace_seconds``) and exits 0. The logic is
:func:`serving.server.server.start_server`.
"""

from __future__ import annotations

import logging
import signal
import threading

from absl import app, flags

from cvr_tf import job
from cvr_tf.compat import tf
from serving.batching import TF_SERVING_DEFAULTS, BatchingConfig, read_batching_parameters
from serving.errors import ServingError
from serving.limits import ServerLimits
from serving.server.model_manager import LOAD_RETRY_INTERVAL_S, MAX_NUM_LOAD_RETRIES
from serving.server.server import DEFAULT_GRPC_MAX_THREADS, start_server
from serving.tf_serving_config import (
    PROMETHEUS_METRICS_PATH,
    ModelServerConfig,
    read_models_config,
    read_monitoring_config,
    single_model_config,
)

_log = logging.getLogger(__name__)

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
    except (ValueError, OSError) as error:
        where = "--model_config_file: " if FLAGS.model_config_file else ""
        raise app.UsageError(f"{where}{error}") from error


def _batching_from_flags() -> BatchingConfig | None:
    if not FLAGS.enable_batching:
        if FLAGS.batching_parameters_file:
            raise app.UsageError("--batching_parameters_file needs --enable_batching")
        return None
    if not FLAGS.batching_parameters_file:
        return TF_SERVING_DEFAULTS
    try:
        batching = read_batching_parameters(FLAGS.batching_parameters_file)
        batching.check_server_side()
    except (ValueError, OSError) as error:
        raise app.UsageError(f"--batching_parameters_file: {error}") from error
    return batching


def _limits_from_flags() -> ServerLimits:
    try:
        return ServerLimits(**{name: FLAGS[name].value for name in vars(ServerLimits())})
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def _prometheus_path_from_flags() -> str | None:
    if not FLAGS.monitoring_config_file:
        return None
    try:
        prometheus = read_monitoring_config(FLAGS.monitoring_config_file).prometheus_config
    except (ValueError, OSError) as error:
        raise app.UsageError(f"--monitoring_config_file: {error}") from error
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
    config, batching = _config_from_flags(), _batching_from_flags()
    limits, prometheus_path = _limits_from_flags(), _prometheus_path_from_flags()
    try:
        server = start_server(
            config,
            FLAGS.port,
            host=FLAGS.host,
            batching=batching,
            file_system_poll_wait_seconds=FLAGS.file_system_poll_wait_seconds,
            grpc_max_threads=FLAGS.grpc_max_threads,
            rest_api_port=FLAGS.rest_api_port or None,
            limits=limits,
            prometheus_path=prometheus_path,
            max_num_load_retries=FLAGS.max_num_load_retries,
            load_retry_interval_s=FLAGS.load_retry_interval_micros / 1e6,
        )
    except (ServingError, OSError) as error:  # a model that cannot load, a port in use
        raise app.UsageError(str(error)) from error
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


define_flags()
job.run(main)

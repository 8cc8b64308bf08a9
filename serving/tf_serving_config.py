"""TF Serving's config files: ``models.config``, ``batching_parameters.txt``, ``monitoring.config``.

Each file is a text-format protocol buffer that ``tensorflow_model_server`` reads. This module
writes them (the exporter calls the writers), reads and validates them (the local server calls the
readers), and returns the ``tensorflow_model_server`` command line that serves them::

    write_models_config("models.config", [ModelEntry("cvr", "/models/cvr", latest_versions(2))])
    write_batching_parameters("batching_parameters.txt", max_batch_size=128,
                              batch_timeout_micros=2000, num_batch_threads=2)
    write_monitoring_config("monitoring.config")
    print(model_server_command("models.config", batching_parameters_file="batching_parameters.txt",
                               monitoring_config_file="monitoring.config"))

``ModelServerConfig`` comes from the tensorflow-serving-api package. Its pip package does not
ship ``BatchingParameters``
(``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``) nor ``MonitoringConfig``
(``tensorflow_serving/config/monitoring_config.proto``), so both are declared here with TF
Serving's package, message names and field numbers, in a private descriptor pool: the text files
are interchangeable with the real server's.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from google.protobuf.message import Message
from tensorflow_serving.config import file_system_storage_path_source_pb2, model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ServableVersionPolicy = (
    file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
)

PROMETHEUS_METRICS_PATH = "/monitoring/prometheus/metrics"
# A model name is a directory under the export base and a segment of REST paths
# (/v1/models/<name>:predict): letters, digits, '_', '-', '.', starting with a letter or digit.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")

_FieldType = descriptor_pb2.FieldDescriptorProto


def _declare_messages() -> tuple[type[Message], type[Message]]:
    """Builds the ``BatchingParameters`` and ``MonitoringConfig`` classes (TF Serving's layout)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    batching_file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = batching_file.message_type.add(name="BatchingParameters")
    wrapped = [
        ("max_batch_size", "Int64Value"),
        ("batch_timeout_micros", "Int64Value"),
        ("max_enqueued_batches", "Int64Value"),
        ("num_batch_threads", "Int64Value"),
        ("thread_pool_name", "StringValue"),
    ]
    for number, (name, wrapper) in enumerate(wrapped, start=1):
        batching.field.add(
            name=name,
            number=number,
            label=_FieldType.LABEL_OPTIONAL,
            type=_FieldType.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    batching.field.add(
        name="allowed_batch_sizes",
        number=6,
        label=_FieldType.LABEL_REPEATED,
        type=_FieldType.TYPE_INT64,
    )
    batching.field.add(
        name="pad_variable_length_inputs",
        number=7,
        label=_FieldType.LABEL_OPTIONAL,
        type=_FieldType.TYPE_BOOL,
    )
    pool.Add(batching_file)

    monitoring_file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = monitoring_file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(
        name="enable", number=1, label=_FieldType.LABEL_OPTIONAL, type=_FieldType.TYPE_BOOL
    )
    prometheus.field.add(
        name="path", number=2, label=_FieldType.LABEL_OPTIONAL, type=_FieldType.TYPE_STRING
    )
    monitoring = monitoring_file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        label=_FieldType.LABEL_OPTIONAL,
        type=_FieldType.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool.Add(monitoring_file)
    return (
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
        ),
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
        ),
    )


BatchingParameters, MonitoringConfig = _declare_messages()


class ModelEntry(NamedTuple):
    """One model of a ``models.config``; a plain ``(name, base_path, policy)`` tuple works too.

    Attributes:
        name: The model name clients put in ``ModelSpec.name``.
        base_path: The directory holding one numbered subdirectory per version.
        policy: Which versions to serve (:func:`latest_versions`, :func:`specific_versions`,
            :func:`all_versions`); ``None`` serves the latest version only.
        version_labels: Optional label -> version, e.g. ``{"stable": 1, "canary": 2}``.
    """

    name: str
    base_path: str
    policy: ServableVersionPolicy | None = None
    version_labels: Mapping[str, int] | None = None


def latest_versions(num_versions: int = 1) -> ServableVersionPolicy:
    """Serve the ``num_versions`` highest-numbered versions (TF Serving's default is 1)."""
    if num_versions < 1:
        raise ValueError(f"num_versions={num_versions} must be >= 1")
    return ServableVersionPolicy(latest=ServableVersionPolicy.Latest(num_versions=num_versions))


def specific_versions(versions: Iterable[int]) -> ServableVersionPolicy:
    """Serve exactly the listed versions (those present on disk)."""
    versions = sorted(set(versions))
    if not versions:
        raise ValueError("specific_versions needs at least one version number")
    return ServableVersionPolicy(specific=ServableVersionPolicy.Specific(versions=versions))


def all_versions() -> ServableVersionPolicy:
    """Serve every version present on disk."""
    return ServableVersionPolicy(all=ServableVersionPolicy.All())


def validate_model_name(name: str) -> None:
    """Checks a model name: one path segment of TF Serving's characters.

    Raises:
        ValueError: for an empty name, a path separator or ``..``, or another character, naming
            the rule (e.g. ``../escape`` would write outside ``--export_base``).
    """
    if not _MODEL_NAME.match(name or "") or ".." in name:
        raise ValueError(
            f"model name {name!r} is invalid: use 1-255 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, without '/' or '..' (e.g. --model_name=cvr)"
        )


def validate_models_config(config: ModelServerConfig) -> None:
    """Checks a ``ModelServerConfig`` the way ``tensorflow_model_server`` does before serving it.

    Raises:
        ValueError: naming the offending model and field.
    """
    if config.HasField("custom_model_config"):
        raise ValueError(
            "custom_model_config is not supported; list the models in model_config_list"
        )
    seen = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ValueError(
                f"a model config has no name (base_path={model.base_path!r}); set name"
            )
        validate_model_name(model.name)
        if model.name in seen:
            raise ValueError(f"model name {model.name!r} appears twice in model_config_list")
        seen.add(model.name)
        if not model.base_path:
            raise ValueError(
                f"model {model.name!r} has no base_path; set it to the versions directory"
            )
        if model.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"model {model.name!r} has model_platform {model.model_platform!r}; only "
                "'tensorflow' SavedModels are served"
            )
        for label, version in model.version_labels.items():
            if version < 0:
                raise ValueError(
                    f"model {model.name!r} label {label!r} points at version {version} < 0"
                )


def models_config(models: Iterable[ModelEntry | tuple]) -> ModelServerConfig:
    """Builds a validated ``ModelServerConfig`` from model entries.

    Args:
        models: :class:`ModelEntry` values or ``(name, base_path[, policy[, version_labels]])``
            tuples.

    Returns:
        The config, with ``model_platform: "tensorflow"`` on every model.
    """
    config = ModelServerConfig()
    for entry in models:
        entry = ModelEntry(*entry)
        model = config.model_config_list.config.add(
            name=entry.name, base_path=os.fspath(entry.base_path), model_platform="tensorflow"
        )
        if entry.policy is not None:
            model.model_version_policy.CopyFrom(entry.policy)
        for label, version in (entry.version_labels or {}).items():
            model.version_labels[label] = version
    validate_models_config(config)
    return config


def single_model_config(name: str, base_path: str | os.PathLike) -> ModelServerConfig:
    """The config ``--model_name/--model_base_path`` stand for: one model, latest version."""
    return models_config([ModelEntry(name, os.fspath(base_path))])


def _write_text(path: str | os.PathLike, message: Message) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text_format.MessageToString(message))


def _read_text(path: str | os.PathLike, message: Message) -> Message:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ValueError(
            f"{path} is not a valid {message.DESCRIPTOR.full_name} text proto: {error}"
        ) from error
    return message


def write_models_config(
    path: str | os.PathLike, models: Iterable[ModelEntry | tuple]
) -> ModelServerConfig:
    """Writes ``models.config`` (a ``ModelServerConfig`` text proto) for ``--model_config_file``.

    Args:
        path: Where to write.
        models: See :func:`models_config`.

    Returns:
        The config written.
    """
    config = models_config(models)
    _write_text(path, config)
    return config


def read_models_config(path: str | os.PathLike) -> ModelServerConfig:
    """Reads and validates a ``models.config`` text proto."""
    config = _read_text(path, ModelServerConfig())
    validate_models_config(config)
    return config


def validate_batching_parameters(params: Message) -> None:
    """Checks ``BatchingParameters`` as TF Serving does when it creates the batch scheduler.

    Raises:
        ValueError: naming the offending field and value.
    """
    for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if params.HasField(field) and getattr(params, field).value < 1:
            raise ValueError(f"{field}={getattr(params, field).value} must be >= 1")
    if params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value < 0:
        raise ValueError(f"batch_timeout_micros={params.batch_timeout_micros.value} must be >= 0")
    sizes = list(params.allowed_batch_sizes)
    if sizes:
        if sizes != sorted(set(sizes)) or sizes[0] < 1:
            raise ValueError(
                f"allowed_batch_sizes={sizes} must be positive and strictly increasing"
            )
        if not params.HasField("max_batch_size") or sizes[-1] != params.max_batch_size.value:
            raise ValueError(
                f"the last entry of allowed_batch_sizes={sizes} must equal max_batch_size "
                f"({params.max_batch_size.value if params.HasField('max_batch_size') else 'unset'})"
            )


def batching_parameters(
    max_batch_size: int,
    batch_timeout_micros: int,
    max_enqueued_batches: int = 10,
    num_batch_threads: int | None = None,
    allowed_batch_sizes: Iterable[int] = (),
    pad_variable_length_inputs: bool = False,
) -> Message:
    """Builds validated ``BatchingParameters`` (server-side batching, ``--enable_batching``).

    Args:
        max_batch_size: Largest merged batch, and largest single request accepted.
        batch_timeout_micros: How long the first request of a batch may wait for others.
        max_enqueued_batches: Queue depth (in batches) beyond which requests get ``UNAVAILABLE``.
        num_batch_threads: Batches run in parallel; ``None`` keeps TF Serving's default (all
            cores).
        allowed_batch_sizes: Sizes a merged batch is padded up to; the last must equal
            ``max_batch_size``.
        pad_variable_length_inputs: Pad inputs whose non-batch dimensions differ across requests.

    Returns:
        A ``tensorflow.serving.BatchingParameters`` message.
    """
    params = BatchingParameters()
    params.max_batch_size.value = max_batch_size
    params.batch_timeout_micros.value = batch_timeout_micros
    params.max_enqueued_batches.value = max_enqueued_batches
    if num_batch_threads is not None:
        params.num_batch_threads.value = num_batch_threads
    params.allowed_batch_sizes.extend(allowed_batch_sizes)
    params.pad_variable_length_inputs = pad_variable_length_inputs
    validate_batching_parameters(params)
    return params


def write_batching_parameters(path: str | os.PathLike, **kwargs) -> Message:
    """Writes ``batching_parameters.txt`` for ``--batching_parameters_file``.

    Args:
        path: Where to write.
        **kwargs: The arguments of :func:`batching_parameters`.

    Returns:
        The parameters written.
    """
    params = batching_parameters(**kwargs)
    _write_text(path, params)
    return params


def read_batching_parameters(path: str | os.PathLike) -> Message:
    """Reads and validates a ``batching_parameters.txt`` text proto."""
    params = _read_text(path, BatchingParameters())
    validate_batching_parameters(params)
    return params


def write_monitoring_config(
    path: str | os.PathLike, metrics_path: str = PROMETHEUS_METRICS_PATH
) -> Message:
    """Writes ``monitoring.config``, enabling TF Serving's Prometheus endpoint on the REST port.

    Args:
        path: Where to write.
        metrics_path: The HTTP path of the metrics page.

    Returns:
        The ``tensorflow.serving.MonitoringConfig`` written.
    """
    if not metrics_path.startswith("/"):
        raise ValueError(f"metrics_path={metrics_path!r} must start with '/'")
    config = MonitoringConfig()
    config.prometheus_config.enable = True
    config.prometheus_config.path = metrics_path
    _write_text(path, config)
    return config


def read_monitoring_config(path: str | os.PathLike) -> Message:
    """Reads a ``monitoring.config`` text proto."""
    return _read_text(path, MonitoringConfig())


def model_server_command(
    model_config_file: str | os.PathLike,
    port: int = 8500,
    rest_api_port: int = 8501,
    batching_parameters_file: str | os.PathLike | None = None,
    monitoring_config_file: str | os.PathLike | None = None,
    file_system_poll_wait_seconds: int = 1,
    xla_cpu_compilation_enabled: bool = False,
) -> str:
    """Returns the ``tensorflow_model_server`` command line serving the given config files.

    Args:
        model_config_file: The ``models.config`` path.
        port: gRPC port.
        rest_api_port: REST port (also serves the Prometheus page when monitoring is configured).
        batching_parameters_file: If given, server-side batching is enabled with these parameters.
        monitoring_config_file: If given, the ``monitoring.config`` path.
        file_system_poll_wait_seconds: Seconds between polls for new version directories.
        xla_cpu_compilation_enabled: Add the flag without which tensorflow_model_server refuses
            to run ``jit_compile`` functions on CPU (exports with ``--jit_compile_dense``).

    Returns:
        One shell-quoted line, e.g. ``tensorflow_model_server --port=8500 --rest_api_port=8501
        --model_config_file=/m/models.config --file_system_poll_wait_seconds=1``.
    """
    args = [
        "tensorflow_model_server",
        f"--port={port}",
        f"--rest_api_port={rest_api_port}",
        f"--model_config_file={os.fspath(model_config_file)}",
        f"--file_system_poll_wait_seconds={file_system_poll_wait_seconds}",
    ]
    if batching_parameters_file is not None:
        args += [
            "--enable_batching=true",
            f"--batching_parameters_file={os.fspath(batching_parameters_file)}",
        ]
    if monitoring_config_file is not None:
        args.append(f"--monitoring_config_file={os.fspath(monitoring_config_file)}")
    if xla_cpu_compilation_enabled:
        args.append("--xla_cpu_compilation_enabled=true")
    return shlex.join(args)

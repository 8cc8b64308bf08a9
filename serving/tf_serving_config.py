"""TF Serving's config files: ``models.config``, ``batching_parameters.txt``, ``monitoring.config``.

Each file is a text-format protocol buffer that ``tensorflow_model_server`` reads. This module
writes them (the exporter calls the writers), reads and validates them (the local server calls the
readers), and returns the ``tensorflow_model_server`` command line that serves them::

    write_models_config("models.config", [ModelEntry("cvr", "/models/cvr", latest_versions(2))])
    write_monitoring_config("monitoring.config")
    print(model_server_command("models.config", batching_parameters_file="batching_parameters.txt",
                               monitoring_config_file="monitoring.config"))

``ModelServerConfig`` comes from the tensorflow-serving-api package. Its pip package does not
ship ``BatchingParameters``
(``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``) nor ``MonitoringConfig``
(``tensorflow_serving/config/monitoring_config.proto``), so both are declared here with TF
Serving's package, message names and field numbers, in a private descriptor pool: the text files
are interchangeable with the real server's. ``batching_parameters.txt`` is read and written as a
:class:`serving.batching.BatchingConfig` by :mod:`serving.batching`.
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
from tensorflow_serving.config import (
    file_system_storage_path_source_pb2,
    logging_config_pb2,
    model_server_config_pb2,
)

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
        logging: Optional ``logging_config`` (request logging, :mod:`serving.request_log`).
    """

    name: str
    base_path: str
    policy: ServableVersionPolicy | None = None
    version_labels: Mapping[str, int] | None = None
    logging: logging_config_pb2.LoggingConfig | None = None


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
        models: :class:`ModelEntry` values or ``(name, base_path[, policy[, version_labels[,
            logging]]])`` tuples.

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
        if entry.logging is not None:
            model.logging_config.CopyFrom(entry.logging)
    validate_models_config(config)
    return config


def single_model_config(name: str, base_path: str | os.PathLike) -> ModelServerConfig:
    """The config ``--model_name/--model_base_path`` stand for: one model, latest version."""
    return models_config([ModelEntry(name, os.fspath(base_path))])


def write_text_proto(path: str | os.PathLike, message: Message) -> None:
    """Writes ``message`` as a text proto file, as TF Serving's config files are."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text_format.MessageToString(message))


def read_text_proto(path: str | os.PathLike, message: Message) -> Message:
    """Parses a text proto file into ``message``; ValueError names the file and the message."""
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
    write_text_proto(path, config)
    return config


def read_models_config(path: str | os.PathLike) -> ModelServerConfig:
    """Reads and validates a ``models.config`` text proto."""
    config = read_text_proto(path, ModelServerConfig())
    validate_models_config(config)
    return config


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
    write_text_proto(path, config)
    return config


def read_monitoring_config(path: str | os.PathLike) -> Message:
    """Reads a ``monitoring.config`` text proto."""
    return read_text_proto(path, MonitoringConfig())


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

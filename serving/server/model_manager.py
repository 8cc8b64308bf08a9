"""Model versions: which to serve, loading them, polling for new ones, and hot reload.

For each model of the ``ModelServerConfig`` the manager lists ``<base_path>/<version>``
directories that hold a complete SavedModel (:func:`~serving.server.servable.is_complete_version`:
``saved_model.pb`` plus a readable variables index and every data shard it names; a half-written
directory is ignored until it is complete), applies the model's version policy
(``latest {num_versions}``, the default ``latest 1``; ``specific {versions}``; ``all``),
and reconciles:

1. aspired versions not loaded yet are loaded and warmed up *beside* the ones serving;
2. the request-routing view switches atomically to include them;
3. versions no longer aspired leave the view, wait for their requests in flight, and unload.

A version is unloaded only once an aspired version serves (TF Serving's availability-preserving
policy), so no request fails across a version switch.

A failed load is retried on later polls while the version stays aspired, after a backoff of
``load_retry_interval * 2**(k - 1)`` (capped at ``MAX_BACKOFF_FACTOR`` intervals) following the
``k``-th failure, up to ``max_num_load_retries`` retries (TF Serving's flags and defaults: 5
retries, 60 s). A version whose files change (a corrupt copy replaced by a valid one) is retried
at once with a fresh budget; a version no longer aspired (superseded) is forgotten. Differences
from TF Serving: it retries at a fixed interval inside the loading thread and, once the retries
are spent, never again until the version is re-aspired; here retries run between polls (the
served versions keep serving meanwhile) and a changed directory restarts them. Status reports
the last error while the version is failed and clears it once it loads.

Polling runs every ``file_system_poll_wait_seconds``; ``reload_config`` swaps the whole config at
runtime (ModelService.HandleReloadConfigRequest). A model whose config has a ``logging_config``
gets a :class:`~serving.request_log.RequestLogger` (:meth:`ModelManager.request_logger`).

Requests resolve ``ModelSpec`` (name; version, version_label or latest) against an immutable
snapshot of what serves, so the request path takes no lock beyond the version's in-flight count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from cvr_tf.compat import tf
from serving.errors import ServingError, from_tf_error
from serving.request_log import RequestLogger
from serving.server import metrics
from serving.server.batch_scheduler import BatchScheduler
from serving.server.servable import (
    Servable,
    is_complete_version,
    load_servable,
    version_fingerprint,
)
from serving.server.warmup_replay import warm_up
from serving.tf_serving_config import ServableVersionPolicy, validate_models_config

MAX_NUM_LOAD_RETRIES = 5  # TF Serving's --max_num_load_retries default
LOAD_RETRY_INTERVAL_S = 60.0  # TF Serving's --load_retry_interval_micros default, in seconds
MAX_BACKOFF_FACTOR = 32

State = get_model_status_pb2.ModelVersionStatus.State
_log = logging.getLogger(__name__)


def list_versions(model_name: str, base_path: str) -> dict[int, str]:
    """Finds the complete versions under a model's base path.

    Args:
        model_name: For the error message.
        base_path: The directory holding numbered version directories.

    Returns:
        Version number -> directory, for directories named by an integer that hold a
        ``saved_model.pb`` (or ``.pbtxt``).

    Raises:
        ServingError: ``NOT_FOUND`` when the base path does not exist.
    """
    if not os.path.isdir(base_path):
        raise ServingError(
            grpc.StatusCode.NOT_FOUND,
            f"Could not find base path {base_path} for servable {model_name}; create it or fix "
            "base_path in the model config",
        )
    versions = {}
    with os.scandir(base_path) as entries:
        for entry in entries:
            if entry.name.isdigit() and entry.is_dir() and is_complete_version(entry.path):
                versions[int(entry.name)] = entry.path
    return versions


def select_versions(
    policy: ServableVersionPolicy, available: set[int] | dict[int, str]
) -> set[int]:
    """Applies a version policy to the versions present on disk.

    Args:
        policy: ``latest {num_versions}`` (default, 1 version), ``specific {versions}`` or ``all``.
        available: The version numbers present.

    Returns:
        The aspired versions.
    """
    versions = sorted(available)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(versions)
    if choice == "specific":
        return set(policy.specific.versions) & set(versions)
    count = policy.latest.num_versions if choice == "latest" else 1
    return set(versions[-max(count, 1) :])


@dataclass
class _Failure:
    """Failed loads of one version: how many, when to retry, and the files they saw."""

    count: int
    retry_at: float
    fingerprint: tuple


@dataclass
class _Model:
    """What the manager knows of one configured model (guarded by the manager's locks)."""

    config: model_server_config_pb2.ModelConfig
    servables: dict[int, Servable] = field(default_factory=dict)
    states: dict[int, tuple[int, ServingError | None]] = field(default_factory=dict)
    failures: dict[int, _Failure] = field(default_factory=dict)


@dataclass(frozen=True)
class _ModelView:
    """An immutable snapshot of what one model serves, read by requests without locking."""

    servables: dict[int, Servable]
    labels: dict[str, int]

    @property
    def latest(self) -> int | None:
        return max(self.servables) if self.servables else None


def _spec_text(name: str, version: int | None) -> str:
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


def _failure(what: str, error: Exception) -> ServingError:
    """``error`` as a :class:`ServingError` whose message starts with ``<what> failed:``."""
    if isinstance(error, ServingError):
        code, message = error.code, error.message
    elif isinstance(error, tf.errors.OpError):
        converted = from_tf_error(error)
        code, message = converted.code, converted.message
    else:
        code, message = grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}"
    return ServingError(code, f"{what} failed: {message}")


def _request_loggers(config: model_server_config_pb2.ModelServerConfig,
                     current: dict[str, RequestLogger]) -> dict[str, RequestLogger]:
    """A request logger per model with a ``logging_config``; a model whose logging config is
    unchanged keeps its logger (and files).

    Raises:
        ValueError: a logging config the local server cannot run, naming the model and field.
    """
    loggers = {}
    for model in config.model_config_list.config:
        if not model.HasField("logging_config"):
            continue
        kept = current.get(model.name)
        loggers[model.name] = (kept if kept is not None and kept.config == model.logging_config
                               else RequestLogger(model.name, model.logging_config))
    return loggers


class ModelManager:
    """Loads, serves and hot-swaps the versions of the configured models.

    Args:
        config: The models to serve (``model_config_list``).
        batch_scheduler: Server-side batching scheduler, or ``None`` to run requests directly.
        poll_wait_seconds: Seconds between polls of the base paths; ``0`` polls once at start.
        serving_metrics: Counts load attempts (``None``: not counted).
        max_num_load_retries: Retries of a failed version (see the module docstring).
        load_retry_interval_s: Backoff before the first retry; it doubles with each failure.
    """

    def __init__(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        batch_scheduler: BatchScheduler | None = None,
        poll_wait_seconds: float = 1.0,
        serving_metrics: metrics.ServingMetrics | None = None,
        max_num_load_retries: int = MAX_NUM_LOAD_RETRIES,
        load_retry_interval_s: float = LOAD_RETRY_INTERVAL_S,
    ) -> None:
        validate_models_config(config)
        if max_num_load_retries < 0 or load_retry_interval_s < 0:
            raise ValueError(
                f"--max_num_load_retries={max_num_load_retries} and --load_retry_interval_micros"
                f"={load_retry_interval_s * 1e6:g} must be >= 0"
            )
        self._batch_scheduler = batch_scheduler
        self._poll_wait_seconds = poll_wait_seconds
        self._metrics = serving_metrics
        self._max_retries = max_num_load_retries
        self._retry_interval_s = load_retry_interval_s
        self._models = {model.name: _Model(model) for model in config.model_config_list.config}
        self._loggers = _request_loggers(config, {})
        self._views: dict[str, _ModelView] = {}
        self._lock = threading.Lock()  # guards _models states and publishing _views
        self._reconcile_lock = threading.Lock()  # one load/unload pass at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self) -> None:
        """Loads every model's aspired versions, then starts polling.

        Raises:
            ServingError: when a base path is missing, a version fails to load or warm up, or a
                version label points at a version that is not available; nothing is served.
        """
        with self._reconcile_lock:
            errors = self._reconcile_all() + self._label_errors()
        if errors:
            self.stop()
            raise ServingError(errors[0].code, "; ".join(error.message for error in errors))
        if self._poll_wait_seconds > 0:
            self._poller = threading.Thread(
                target=self._poll_loop, name="version-poller", daemon=True
            )
            self._poller.start()

    def stop(self) -> None:
        """Stops polling and unloads every version (after its requests in flight)."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        with self._reconcile_lock:
            for model in self._models.values():
                self._unload(model, set(model.servables))
        for logger in self._loggers.values():
            logger.close()

    def request_logger(self, model_name: str) -> RequestLogger | None:
        """The model's request logger, or None when its config logs nothing."""
        return self._loggers.get(model_name)

    def poll(self) -> None:
        """Runs one polling pass over every model now (errors are logged and kept in status)."""
        with self._reconcile_lock:
            self._reconcile_all()

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Replaces the served models by those of ``config`` and waits for them to load.

        Models that disappear are unloaded, new ones loaded, and changed ones (base path, policy,
        labels) re-evaluated; failed loads are retried afresh.

        Raises:
            ServingError: ``INVALID_ARGUMENT`` for an invalid config, or the first load or label
                error (the other models keep their new config).
        """
        try:
            validate_models_config(config)
            loggers = _request_loggers(config, self._loggers)
        except ValueError as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from error
        for name, logger in self._loggers.items():
            if loggers.get(name) is not logger:
                logger.close()
        self._loggers = loggers
        wanted = {model.name: model for model in config.model_config_list.config}
        with self._reconcile_lock:
            for name in list(self._models):
                if name not in wanted:
                    removed = self._models[name]
                    with self._lock:
                        del self._models[name]
                        self._views.pop(name, None)
                    self._unload(removed, set(removed.servables))
            for name, model_config in wanted.items():
                model = self._models.get(name)
                if model is None:
                    with self._lock:
                        self._models[name] = _Model(model_config)
                else:
                    model.config = model_config
                    model.failures.clear()
            errors = self._reconcile_all()
            with self._lock:
                for model in self._models.values():
                    self._publish(model)
            errors += self._label_errors()
        if errors:
            raise ServingError(errors[0].code, "; ".join(error.message for error in errors))

    @contextlib.contextmanager
    def servable(self, model_spec: model_pb2.ModelSpec) -> Iterator[Servable]:
        """Resolves a ``ModelSpec`` and holds the version for the duration of a request.

        Args:
            model_spec: ``name`` plus ``version``, ``version_label`` or neither (latest).

        Yields:
            The serving version; it cannot unload until the ``with`` block exits.

        Raises:
            ServingError: ``NOT_FOUND`` for an unknown model or version, ``INVALID_ARGUMENT``
                for an unknown version label.
        """
        while True:
            servable = self._resolve(model_spec)
            if servable.try_acquire():
                break
        try:
            yield servable
        finally:
            servable.release()

    def _resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        view = self._views.get(spec.name)
        version = spec.version.value if spec.HasField("version") else None
        if view is None:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {_spec_text(spec.name, version)}; served "
                f"models: {sorted(self._views)}",
            )
        if version is None and spec.version_label:
            version = view.labels.get(spec.version_label)
            if version is None:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {spec.version_label}; labels of "
                    f"{spec.name}: {sorted(view.labels)}",
                )
        servable = view.servables.get(view.latest if version is None else version)
        if servable is None:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {_spec_text(spec.name, version)}; available "
                f"versions: {sorted(view.servables)}",
            )
        return servable

    def model_status(
        self, model_spec: model_pb2.ModelSpec
    ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """The state of every known version of a model (or of the version ``model_spec`` names).

        Raises:
            ServingError: ``NOT_FOUND`` for an unknown model or version.
        """
        with self._lock:
            model = self._models.get(model_spec.name)
            states = dict(model.states) if model is not None else {}
        if not states:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {model_spec.name}"
            )
        if model_spec.HasField("version"):
            wanted = model_spec.version.value
            if wanted not in states:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {wanted} of model {model_spec.name}",
                )
            states = {wanted: states[wanted]}
        statuses = []
        for version, (state, error) in sorted(states.items()):
            status = get_model_status_pb2.ModelVersionStatus(version=version, state=state)
            status.status.SetInParent()  # TF Serving always reports a status, OK or not
            if error is not None:
                status.status.error_code = error.code_number
                status.status.error_message = error.message
            statuses.append(status)
        return statuses

    def _set_state(
        self, model: _Model, version: int, state: int, error: ServingError | None = None
    ) -> None:
        with self._lock:
            model.states[version] = (state, error)

    def _publish(self, model: _Model) -> None:
        """Makes the model's loaded versions visible to requests (caller holds ``_lock``)."""
        if model.config.name in self._models:
            self._views = {
                **self._views,
                model.config.name: _ModelView(
                    dict(model.servables), dict(model.config.version_labels)
                ),
            }

    def _reconcile_all(self) -> list[ServingError]:
        """Reconciles every model (caller holds ``_reconcile_lock``); returns the errors."""
        errors = []
        for model in list(self._models.values()):
            try:
                errors += self._reconcile(model)
            except ServingError as error:
                _log.error("%s: %s", model.config.name, error)
                errors.append(error)
        return errors

    def _reconcile(self, model: _Model) -> list[ServingError]:
        """Loads aspired versions, then unloads versions no longer aspired (see module doc)."""
        name = model.config.name
        on_disk = list_versions(name, model.config.base_path)
        aspired = select_versions(model.config.model_version_policy, on_disk)
        errors = []
        for version in list(model.failures):
            if version not in aspired:  # superseded or deleted: forget its failures
                del model.failures[version]
        for version in sorted(aspired - set(model.servables), reverse=True):
            path = on_disk[version]
            fingerprint = version_fingerprint(path)
            if not self._due(model.failures.get(version), fingerprint):
                continue
            self._set_state(model, version, State.LOADING)
            try:
                servable, records = self._load(name, version, path)
            except ServingError as failure:
                self._count_load(path, "fail")
                self._record_failure(model, version, fingerprint)
                self._set_state(model, version, State.END, failure)
                _log.error("%s", failure)
                errors.append(failure)
                continue
            self._count_load(path, "success")
            model.failures.pop(version, None)
            model.servables[version] = servable
            with self._lock:
                model.states[version] = (State.AVAILABLE, None)
                self._publish(model)
            _log.info("serving %s version %d (%d warmup records)", name, version, records)
        stale = set(model.servables) - aspired
        if stale and (not aspired or aspired & set(model.servables)):
            self._unload(model, stale)
        return errors

    def _due(self, failure: _Failure | None, fingerprint: tuple) -> bool:
        """Whether a not-yet-loaded version should be (re)loaded now."""
        if failure is None or failure.fingerprint != fingerprint:
            return True
        return failure.count <= self._max_retries and time.monotonic() >= failure.retry_at

    def _record_failure(self, model: _Model, version: int, fingerprint: tuple) -> None:
        previous = model.failures.get(version)
        count = 1 if previous is None or previous.fingerprint != fingerprint else previous.count + 1
        backoff = self._retry_interval_s * min(2 ** (count - 1), MAX_BACKOFF_FACTOR)
        model.failures[version] = _Failure(count, time.monotonic() + backoff, fingerprint)

    def _count_load(self, path: str, status: str) -> None:
        if self._metrics is not None:
            self._metrics.increment(metrics.LOAD_ATTEMPT_COUNT, model_path=path, status=status)

    def _load(self, name: str, version: int, path: str) -> tuple[Servable, int]:
        """Loads and warms up one version; returns it and the number of warmup records."""
        try:
            servable = load_servable(name, version, path, self._batch_scheduler, self._metrics)
        except Exception as error:  # every load failure is reported in status
            raise _failure(f"loading {name} version {version} from {path}", error) from error
        try:
            return servable, warm_up(servable)
        except Exception as error:  # a failing warmup fails the load, as in TF Serving
            servable.retire()
            raise _failure(f"warmup of {name} version {version}", error) from error

    def _unload(self, model: _Model, versions: set[int]) -> None:
        """Removes versions from the view, waits for their requests in flight, and unloads them."""
        retiring = []
        with self._lock:
            for version in versions:
                retiring.append((version, model.servables.pop(version)))
                model.states[version] = (State.UNLOADING, None)
            self._publish(model)
        for version, servable in retiring:
            servable.retire()
            self._set_state(model, version, State.END)
            _log.info("unloaded %s version %d", model.config.name, version)

    def _label_errors(self) -> list[ServingError]:
        errors = []
        with self._lock:
            for model in self._models.values():
                for label, version in model.config.version_labels.items():
                    if version not in model.servables:
                        errors.append(
                            ServingError(
                                grpc.StatusCode.FAILED_PRECONDITION,
                                f"Request to assign label {label!r} to version {version} of model "
                                f"{model.config.name}, which is not currently available for "
                                f"inference; available: {sorted(model.servables)}",
                            )
                        )
        return errors

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait_seconds):
            self.poll()

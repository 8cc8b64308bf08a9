"""Batching parameters: one dataclass, and the one reader/writer of TF Serving's proto file.

:class:`BatchingConfig` carries TF Serving's ``BatchingParameters`` (``max_batch_size``,
``batch_timeout_micros``, ``num_batch_threads``, ``max_enqueued_batches``,
``allowed_batch_sizes``, ``pad_variable_length_inputs``) and, for exports, the ``scope`` of
in-graph batching. It configures both places a request can be batched:

* in the graph (:mod:`serving.signatures`, TensorFlow's ``BatchFunction``): ``scope`` ``dense``
  or ``whole``; ``max_batch_size`` is the largest request accepted and the last of
  ``allowed_batch_sizes`` the largest batch that runs (larger requests are split);
* in the local server (``--enable_batching``, :mod:`serving.server.batch_scheduler`), for
  exports without in-graph batching, where, as in ``tensorflow_model_server``, the last allowed
  size must equal ``max_batch_size`` (:meth:`BatchingConfig.check_server_side`).

Its fields are ``serving.export``'s batching flags (``cvr_tf.config_flags``; ``scope`` is
``--batch_scope``). ``batching_parameters.txt`` is read by :func:`read_batching_parameters`
(fields the file leaves out keep the given defaults: :data:`TF_SERVING_DEFAULTS` for the server,
the export's flags for ``serving.export --batching_parameters_file``) and written by
:func:`write_batching_parameters`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from serving.tf_serving_config import BatchingParameters, read_text_proto, write_text_proto

BATCH_SCOPES = ("dense", "whole", "none")


def _field(default: Any, help_text: str, **metadata: Any) -> Any:
    """A field whose help text is its ``serving.export`` flag's (``cvr_tf.config_flags``)."""
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})

_WRAPPED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """Batching parameters with TF Serving's ``BatchingParameters`` names and meaning.

    The defaults are the export's in-graph batching of the dense part (for a GPU host).
    ``max_batch_size`` is the largest request accepted, in rows. The last of
    ``allowed_batch_sizes`` is the largest batch that runs (TF Serving's
    ``max_execution_batch_size``): in the graph a larger request is split into tasks of at most
    that many rows (``enable_large_batch_splitting``, always on), which are batched, possibly
    with other requests' tasks, and concatenated back in order. Smaller batches are padded up to
    the next allowed size. Without ``allowed_batch_sizes`` nothing is padded and nothing is
    split, so the execution limit is ``max_batch_size`` itself.

    Attributes:
      scope: in-graph batching of an export: ``dense`` (decoupled: the dense part only),
        ``whole`` (the whole model) or ``none``; the server's batching ignores it.
      max_batch_size: the largest request accepted, in rows.
      batch_timeout_micros: how long the first request of a batch waits for others.
      num_batch_threads: batches run in parallel.
      max_enqueued_batches: queue depth beyond which requests fail with UNAVAILABLE.
      allowed_batch_sizes: sizes a batch is padded up to, strictly increasing; the last one,
        at most ``max_batch_size``, is the execution limit. Empty: no padding, no splitting.
      pad_variable_length_inputs: (server) pad inputs whose non-batch dimensions differ.
    """

    scope: str = _field("dense", "In-graph batching: the dense part only, the whole model, or "
                        "none.", choices=BATCH_SCOPES, flag="batch_scope")
    max_batch_size: int = _field(16384, "Largest request accepted, in rows; requests over the "
                                 "last --allowed_batch_sizes are split into batches of at most "
                                 "that size.")
    batch_timeout_micros: int = _field(2000, "How long a batch waits for more requests.")
    num_batch_threads: int = _field(2, "Batches in parallel.")
    max_enqueued_batches: int = _field(64, "Queue depth, in batches.")
    allowed_batch_sizes: tuple[int, ...] = _field(
        (256, 512, 1024, 2048, 4096), "Padded batch sizes, increasing; the last (at most "
        "--max_batch_size) is the largest batch that runs. Empty: no padding and no splitting.")
    pad_variable_length_inputs: bool = _field(False, "Server-side batching: pad inputs whose "
                                              "non-batch dimensions differ across requests.")

    def __post_init__(self) -> None:
        if self.scope not in BATCH_SCOPES:
            raise ValueError(f"batching scope {self.scope!r} unknown; use one of {BATCH_SCOPES}")
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros={self.batch_timeout_micros} must be >= 0")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[0] < 1
                      or sizes[-1] > self.max_batch_size):
            raise ValueError(
                f"allowed_batch_sizes={sizes} must be positive, increase strictly and end at "
                f"most at max_batch_size={self.max_batch_size}")

    @property
    def max_execution_batch_size(self) -> int:
        """The largest batch that runs: the last allowed size, else ``max_batch_size``."""
        return self.allowed_batch_sizes[-1] if self.allowed_batch_sizes else self.max_batch_size

    def padded_size(self, size: int) -> int:
        """The size a batch of ``size`` rows is padded to."""
        return next((allowed for allowed in self.allowed_batch_sizes if allowed >= size), size)

    def check_server_side(self) -> None:
        """Raises ValueError unless the server can batch with these parameters: it does not
        split requests, so the last allowed size must be ``max_batch_size`` (TF Serving's rule)."""
        sizes = list(self.allowed_batch_sizes)
        if sizes and sizes[-1] != self.max_batch_size:
            raise ValueError(f"the last entry of allowed_batch_sizes={sizes} must equal "
                             f"max_batch_size ({self.max_batch_size})")

    def server_side(self) -> BatchingConfig:
        """The parameters for the server's batching of the same requests (``scope`` none):
        requests are not split there, so they are capped at the largest batch that runs."""
        return dataclasses.replace(self, scope="none", max_batch_size=self.max_execution_batch_size)

    def to_proto(self) -> BatchingParameters:
        params = BatchingParameters()
        for name in _WRAPPED:
            getattr(params, name).value = getattr(self, name)
        params.allowed_batch_sizes.extend(self.allowed_batch_sizes)
        params.pad_variable_length_inputs = self.pad_variable_length_inputs
        return params


TF_SERVING_DEFAULTS = BatchingConfig(
    scope="none", max_batch_size=1000, batch_timeout_micros=0,
    num_batch_threads=os.cpu_count() or 1, max_enqueued_batches=10, allowed_batch_sizes=())
"""``tensorflow_model_server --enable_batching``'s parameters where no file sets them."""


def from_proto(params: BatchingParameters, defaults: BatchingConfig = TF_SERVING_DEFAULTS
               ) -> BatchingConfig:
    """The config a ``BatchingParameters`` message sets; fields it leaves out keep ``defaults``.

    Raises:
      ValueError: a value out of range, naming the field.
    """
    values = {name: getattr(params, name).value for name in _WRAPPED if params.HasField(name)}
    return dataclasses.replace(defaults, **values,  # a file lists all its allowed sizes
                               allowed_batch_sizes=tuple(params.allowed_batch_sizes),
                               pad_variable_length_inputs=params.pad_variable_length_inputs)


def read_batching_parameters(path: str | os.PathLike,
                             defaults: BatchingConfig = TF_SERVING_DEFAULTS) -> BatchingConfig:
    """Reads a ``batching_parameters.txt`` text proto (see :func:`from_proto`).

    Raises:
      ValueError: the file does not parse or holds a value out of range, naming the file.
    """
    params = read_text_proto(path, BatchingParameters())
    try:
        return from_proto(params, defaults)
    except ValueError as error:
        raise ValueError(f"{os.fspath(path)}: {error}") from error


def write_batching_parameters(path: str | os.PathLike, config: BatchingConfig) -> None:
    """Writes ``config`` as TF Serving's ``--batching_parameters_file`` (staged, renamed)."""
    staging = f"{os.fspath(path)}.tmp"
    write_text_proto(staging, config.to_proto())
    os.replace(staging, path)

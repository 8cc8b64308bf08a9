"""Request logging as TF Serving configures it: sampled ``PredictionLog`` records per model.

A model of ``models.config`` turns it on with TF Serving's ``logging_config``
(``tensorflow_serving/config/logging_config.proto``)::

    config {
      name: "cvr" base_path: "/serving/cvr" model_platform: "tensorflow"
      logging_config {
        log_collector_config { type: "tfrecord" filename_prefix: "/logs/cvr/requests" }
        sampling_config { sampling_rate: 0.05 }
      }
    }

Each request is logged with probability ``sampling_rate`` (independently, as TF Serving
samples). The local server's collector (``type`` ``tfrecord`` or empty; stock TF Serving needs a
collector of that type registered) appends, for every sampled successful Predict, a
``tensorflow.serving.PredictionLog`` holding the request, the response and ``LogMetadata`` (the
model spec with the version that answered and the signature, the sampling config and the time)
to ``<filename_prefix>-<YYYY-MM-DD>-<id>.tfrecord``: one file per UTC day and logger, flushed
after every record, so a reader sees whole records and a killed server loses at most the one it
was writing (:func:`read_request_logs` stops at such a torn tail). The same records are what
TF Serving's warmup file holds, which :mod:`serving.logged_warmup` uses.
"""

from __future__ import annotations

import datetime
import glob
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

from absl import logging
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tensorflow_serving.config import logging_config_pb2

from cvr_tf.compat import tf

COLLECTOR_TYPES = ("", "tfrecord")
FILE_SUFFIX = ".tfrecord"


def check_logging_config(model_name: str, config: logging_config_pb2.LoggingConfig) -> None:
    """Raises ValueError, naming the model and the field, for a config the server cannot run."""
    where = f"models.config: model {model_name!r} logging_config"
    collector = config.log_collector_config
    if collector.type not in COLLECTOR_TYPES:
        raise ValueError(f"{where}.log_collector_config.type {collector.type!r} is unknown to the "
                         f"local server; use {' or '.join(repr(t) for t in COLLECTOR_TYPES)}")
    if not collector.filename_prefix:
        raise ValueError(f"{where}.log_collector_config.filename_prefix is empty; name where the "
                         "records go, e.g. \"/logs/cvr/requests\"")
    rate = config.sampling_config.sampling_rate
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{where}.sampling_config.sampling_rate must be in [0, 1], got {rate}")


def log_path(filename_prefix: str, day: datetime.date, logger_id: str) -> str:
    return f"{filename_prefix}-{day.isoformat()}-{logger_id}{FILE_SUFFIX}"


def log_files(filename_prefix: str, day: datetime.date | None = None) -> list[str]:
    """The record files of ``filename_prefix`` (of one UTC ``day``, or every day), sorted."""
    pattern = f"{filename_prefix}-{day.isoformat() if day else '*'}-*{FILE_SUFFIX}"
    return sorted(glob.glob(pattern))


class RequestLogger:
    """Samples and writes one model's requests (thread-safe).

    Args:
      model_name: the model whose requests it logs.
      config: its ``logging_config`` (checked by :func:`check_logging_config`).
      seed: seed of the sampling; None draws one.
    """

    def __init__(self, model_name: str, config: logging_config_pb2.LoggingConfig,
                 seed: int | None = None) -> None:
        check_logging_config(model_name, config)
        self.model_name = model_name
        self.config = config
        self._random = random.Random(seed)
        self._id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._writer: tf.io.TFRecordWriter | None = None
        self._day: datetime.date | None = None
        self._closed = False
        self.logged = 0

    def sampled(self) -> bool:
        """Whether to log the next request: true with probability ``sampling_rate``."""
        rate = self.config.sampling_config.sampling_rate
        with self._lock:
            return rate >= 1.0 or self._random.random() < rate

    def log_predict(self, request: predict_pb2.PredictRequest,
                    response: predict_pb2.PredictResponse, now: float | None = None) -> None:
        """Writes one answered Predict (the caller sampled it with :meth:`sampled`)."""
        now = time.time() if now is None else now
        record = prediction_log_pb2.PredictionLog()
        metadata = record.log_metadata
        metadata.model_spec.CopyFrom(response.model_spec)
        metadata.model_spec.name = self.model_name
        metadata.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        metadata.sampling_config.CopyFrom(self.config.sampling_config)
        metadata.timestamp_secs = int(now)
        record.predict_log.request.CopyFrom(request)
        record.predict_log.response.CopyFrom(response)
        self._write(record.SerializeToString(), datetime.datetime.fromtimestamp(
            now, datetime.UTC).date())

    def _write(self, serialized: bytes, day: datetime.date) -> None:
        with self._lock:
            if self._closed:  # a request finishing after a config reload replaced this logger
                return
            if self._day != day:
                self._close_locked()
                path = log_path(self.config.log_collector_config.filename_prefix, day, self._id)
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                self._writer, self._day = tf.io.TFRecordWriter(path), day
            self._writer.write(serialized)
            self._writer.flush()
            self.logged += 1

    def _close_locked(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer, self._day = None, None

    def close(self) -> None:
        """Closes the current file; later records are dropped."""
        with self._lock:
            self._close_locked()
            self._closed = True


def read_request_logs(paths: Iterable[str]) -> Iterator[prediction_log_pb2.PredictionLog]:
    """The records of ``paths``, in order; a torn last record (a server killed while writing
    it) ends its file with a warning instead of an error."""
    for path in paths:
        try:
            for record in tf.data.TFRecordDataset(path):
                yield prediction_log_pb2.PredictionLog.FromString(record.numpy())
        except tf.errors.DataLossError:
            logging.warning("%s ends in a torn record (its writer was killed); skipped it.", path)

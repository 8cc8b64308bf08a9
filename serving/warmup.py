"""Warmup requests (``assets.extra/tf_serving_warmup_requests``): writing and reading them, and
the synthetic request rows they are made of.

TF Serving replays the PredictionLog records of the warmup file when it loads a version, before
the version takes traffic, so that the first real requests do not pay for graph optimization,
lazy table initialization or batch-size-specific kernels. The exporter writes one Predict
request per signature and batch size (every allowed batch size of the in-graph batching, since
padded batches run at those sizes); the local server replays them
(:mod:`serving.server.warmup_replay`), as tensorflow_model_server does (at most
:data:`MAX_WARMUP_RECORDS`, Predict/Classify/Regress). This module is on the export side: it
imports nothing of the server.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from cvr_tf.compat import tf
from cvr_tf.features import FeatureSpec

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # tensorflow_model_server's limit
WARMUP_REQUEST_ROWS = 25  # candidates per synthetic search request (its group key)


def synthetic_features(
    spec: FeatureSpec, vocabularies: Mapping[str, Sequence[str]], rows: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Plausible raw serving columns, as each kind makes them (``Feature.warmup_values``):
    vocabulary tokens, short texts, numbers in the valid range; and, when the spec has
    ``request_relative`` features, its group key, :data:`WARMUP_REQUEST_ROWS` rows a request."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for f in spec.serving_features:
        if f.column in columns:
            continue
        tokens = list(vocabularies.get(f.table or "", ())) or [f"{f.name}_{i}" for i in range(8)]
        columns[f.column] = f.warmup_values(rng, tokens, rows)
    if spec.group_key in spec.serving_columns():  # request_relative features group by it
        columns[spec.group_key] = np.array(
            [f"warmup-{row // WARMUP_REQUEST_ROWS}".encode() for row in range(rows)],
            dtype=object)
    return columns


def predict_request(
    model_name: str, signature_name: str, inputs: Mapping[str, np.ndarray]
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def write_warmup_requests(
    saved_model_dir: str | os.PathLike,
    model_name: str,
    requests: Iterable[tuple[str, Mapping[str, np.ndarray]]],
) -> str:
    """Writes ``(signature, inputs)`` pairs as PredictionLog records; returns the file path."""
    return write_warmup_logs(saved_model_dir, (
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
            request=predict_request(model_name, signature, inputs)))
        for signature, inputs in requests))


def write_warmup_logs(saved_model_dir: str | os.PathLike,
                      logs: Iterable[prediction_log_pb2.PredictionLog]) -> str:
    """Writes PredictionLog records as the SavedModel's warmup file; returns its path."""
    directory = os.path.join(os.fspath(saved_model_dir), WARMUP_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_logs(version_dir: str | os.PathLike) -> Iterator[prediction_log_pb2.PredictionLog]:
    """The ``PredictionLog`` records of a version's warmup file (none if it has no file).

    Raises:
      ValueError: there are more than :data:`MAX_WARMUP_RECORDS` (the version then fails to
        load, as in TF Serving).
    """
    path = os.path.join(version_dir, WARMUP_DIR, WARMUP_FILE)
    if not os.path.exists(path):
        return
    for count, record in enumerate(tf.data.TFRecordDataset(path), start=1):
        if count > MAX_WARMUP_RECORDS:
            raise ValueError(
                f"{path} holds more than {MAX_WARMUP_RECORDS} warmup records, "
                "TF Serving's limit; write fewer"
            )
        yield prediction_log_pb2.PredictionLog.FromString(record.numpy())

"""A TF Serving gRPC client (library + CLI): score the candidates of search requests.

Library::

    with PredictionClient("127.0.0.1:8500", "cvr") as client:
        outputs = client.predict({"user_id": ..., "item_id": ..., "item_price": ...})
        scores = outputs["probabilities"]   # a multi-task model: outputs["ctr"], ["ctcvr"], ...

Every call returns the signature's outputs by name: ``probabilities`` for a single-task export,
one output per task (``ctr``, ``cvr``, ``ctcvr``) for a multi-task one
(:func:`serving.signatures.output_names`); ``output_filter``/``output_names`` pick some, and
:meth:`PredictionClient.output_names` lists them (GetModelMetadata).

Every call has a deadline (``timeout_s``). A call answered ``UNAVAILABLE`` (server starting,
restarting, or its batching queue full) is retried up to ``max_retries`` times after a jittered
exponential backoff; every other status (``INVALID_ARGUMENT``, ``NOT_FOUND``, ...) is raised at
once, since retrying cannot change it.

CLI, scoring a file of requests (JSON, or TFRecords of ``tf.Example`` rows grouped by
``--group_key``; see :mod:`serving.request_files`) and writing one JSON line per request,
``{"request": key, "scores": [...]}`` with one output and ``{"request": key, "scores":
{output: [...], ...}}`` with several, as TF Serving's REST API answers
(``--output_names=ctcvr`` keeps one output of a multi-task model)::

    python -m serving.client --server=127.0.0.1:8500 --model_name=cvr --input=requests.json
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures

import grpc
import numpy as np
from absl import app, flags
from google.protobuf.message import Message
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from cvr_tf import job
from serving.request_files import read_requests
from serving.retry_throttle import RetryThrottle
from serving.tensors import InputSpec, fill_tensor_proto, input_specs, to_ndarray

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class PredictionClient:
    """Calls one model of a TF Serving-compatible server.

    Args:
        target: ``host:port`` of the server.
        model_name: ``ModelSpec.name``.
        signature_name: The signature to call.
        timeout_s: Deadline of each attempt, in seconds.
        max_retries: Retries after ``UNAVAILABLE`` (0 disables retrying).
        backoff_s: First backoff; attempt ``k`` waits between half and all of
            ``min(backoff_s * 2**k, max_backoff_s)``.
        max_backoff_s: Cap of the backoff.
        seed: Seed of the backoff jitter.
        retry_throttle: The token bucket that stops retries in sustained overload (gRPC's
            retry throttling); ``None`` retries every ``UNAVAILABLE`` up to ``max_retries``.

    Attributes:
        retries: Retries made so far, over all calls.
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        signature_name: str = "serving_default",
        timeout_s: float = 5.0,
        max_retries: int = 3,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        seed: int | None = None,
        retry_throttle: RetryThrottle | None = None,
    ) -> None:
        self.model_name = model_name
        self.retry_throttle = RetryThrottle() if retry_throttle is None else retry_throttle
        self.signature_name = signature_name
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.retries = 0
        self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def backoff_s(self, attempt: int) -> float:
        """The jittered wait before retry ``attempt`` (0-based); counts the retry."""
        ceiling = min(self._backoff_s * 2**attempt, self._max_backoff_s)
        with self._lock:
            self.retries += 1
            return ceiling * (0.5 + 0.5 * self._random.random())

    def retry_delay(self, error: grpc.RpcError | None, attempt: int) -> float | None:
        """Records a call's outcome; the backoff before retrying it, or None not to retry.

        Only ``UNAVAILABLE`` is retried, at most ``max_retries`` times, and only while the retry
        throttle allows it.
        """
        if error is None:
            self.retry_throttle.on_success()
            return None
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            return None
        allowed = self.retry_throttle.on_failure()
        return self.backoff_s(attempt) if allowed and attempt < self.max_retries else None

    def _call(self, method: Callable[..., Message], request: Message) -> Message:
        """Calls a stub method with the deadline and the retry policy.

        Raises:
            grpc.RpcError: the last error; ``UNAVAILABLE`` once retries are spent or throttled.
        """
        attempt = 0
        while True:
            try:
                response = method(request, timeout=self.timeout_s)
            except grpc.RpcError as error:
                delay = self.retry_delay(error, attempt)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1
            else:
                self.retry_delay(None, attempt)
                return response

    def predict_request(
        self,
        features: Mapping[str, np.ndarray],
        version: int | None = None,
        output_filter: Iterable[str] = (),
    ) -> predict_pb2.PredictRequest:
        """Builds the ``PredictRequest`` :meth:`predict` sends."""
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature_name
        if version is not None:
            request.model_spec.version.value = version
        for name, values in features.items():
            fill_tensor_proto(request.inputs[name], values)
        return request

    def predict_response(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Sends a prepared ``PredictRequest`` (deadline and retries apply)."""
        return self._call(self._stub.Predict, request)

    def predict_future(self, request: predict_pb2.PredictRequest) -> grpc.Future:
        """Sends a prepared ``PredictRequest`` asynchronously (deadline applies, no retries)."""
        return self._stub.Predict.future(request, timeout=self.timeout_s)

    def predict(
        self,
        features: Mapping[str, np.ndarray],
        version: int | None = None,
        output_filter: Iterable[str] = (),
    ) -> dict[str, np.ndarray]:
        """Runs the signature on one request.

        Args:
            features: Input name -> array (one row per candidate).
            version: A specific version; ``None`` asks for the latest.
            output_filter: Outputs to return; empty returns all.

        Returns:
            Output name -> array.
        """
        response = self.predict_response(self.predict_request(features, version, output_filter))
        return {name: to_ndarray(proto, name) for name, proto in response.outputs.items()}

    def score_requests(
        self,
        requests: Iterable[Mapping[str, np.ndarray]],
        output_names: Sequence[str] = (),
        max_in_flight: int = 8,
    ) -> list[dict[str, np.ndarray]]:
        """Scores the candidates of many requests, ``max_in_flight`` of them concurrently.

        Args:
            requests: One feature dict per request.
            output_names: The outputs to return (e.g. ``["ctcvr"]``); empty returns every one.
            max_in_flight: Concurrent calls.

        Returns:
            The scores of each request, in order, by output name.
        """
        with futures.ThreadPoolExecutor(max_workers=max_in_flight) as pool:
            return list(pool.map(
                lambda features: self.predict(features, output_filter=output_names), requests))

    def signature_defs(self, version: int | None = None) -> dict[str, meta_graph_pb2.SignatureDef]:
        """The model's signatures, from GetModelMetadata."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.model_name
        if version is not None:
            request.model_spec.version.value = version
        response = self._call(self._stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return dict(signature_map.signature_def)

    def signature_def(self) -> meta_graph_pb2.SignatureDef:
        """The client's signature, from GetModelMetadata.

        Raises:
            ValueError: the model has no such signature.
        """
        signatures = self.signature_defs()
        if self.signature_name not in signatures:
            raise ValueError(
                f"model '{self.model_name}' has no signature '{self.signature_name}'; it has "
                f"{sorted(name for name in signatures if not name.startswith('__'))}"
            )
        return signatures[self.signature_name]

    def input_specs(self) -> dict[str, InputSpec]:
        """The inputs (names, dtypes, shapes) of the client's signature, from GetModelMetadata."""
        return input_specs(self.signature_def())

    def output_names(self) -> list[str]:
        """The outputs of the client's signature, sorted (``probabilities``, or the tasks'
        ``ctcvr``, ``ctr``, ``cvr``), from GetModelMetadata."""
        return sorted(self.signature_def().outputs)


def score_file(
    client: PredictionClient,
    path: str,
    group_key: str = "request_id",
    output_names: Sequence[str] = (),
) -> list[dict]:
    """Scores every request of a JSON or TFRecord file.

    Args:
        client: The client.
        path: The requests (:mod:`serving.request_files`).
        group_key: The feature grouping TFRecord rows into requests.
        output_names: The outputs to keep; empty keeps every output of the signature.

    Returns:
        One record per request, in file order: ``{"request": key, "scores": [...]}`` when one
        output is kept, ``{"request": key, "scores": {output: [...]}}`` when several are (TF
        Serving's REST convention).
    """
    keys, requests = read_requests(path, client.input_specs(), group_key)
    records = []
    for key, outputs in zip(keys, client.score_requests(requests, output_names), strict=True):
        scores = {name: np.asarray(values).reshape(-1).tolist()
                  for name, values in sorted(outputs.items())}
        records.append({"request": key,
                        "scores": next(iter(scores.values())) if len(scores) == 1 else scores})
    return records


def rpc_error_line(error: grpc.RpcError, server: str, model_name: str) -> str:
    """A command-line tool's one-line report of a call that failed: the flags, the status and
    the server's message, and for UNAVAILABLE the likely cause."""
    hint = (f"; is a server listening on --server={server}?"
            if error.code() == grpc.StatusCode.UNAVAILABLE else "")
    return (f"--model_name={model_name} at --server={server}: {error.code().name}: "
            f"{error.details()}{hint}")


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the CLI's flags (only when run as a program)."""
    flags.DEFINE_string("server", "127.0.0.1:8500", "host:port of the gRPC server.")
    flags.DEFINE_string("model_name", "cvr", "Model to call.")
    flags.DEFINE_string("signature_name", "serving_default", "Signature to call.")
    flags.DEFINE_string("input", None, "JSON (.json) or TFRecord file of requests.", required=True)
    flags.DEFINE_string("group_key", "request_id", "Feature grouping TFRecord rows into requests.")
    flags.DEFINE_list("output_names", [], "Outputs to write (e.g. ctcvr); empty: every output "
                      "of the signature (probabilities, or one per task).")
    flags.DEFINE_string("output", "", "Write JSON lines here instead of stdout.")
    flags.DEFINE_float("timeout_s", 5.0, "Deadline of each call.")
    flags.DEFINE_integer("max_retries", 3, "Retries after UNAVAILABLE.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not os.path.isfile(FLAGS.input):
        raise app.UsageError(f"--input={FLAGS.input} is not a file; pass a .json or .tfrecord "
                             "file of requests")
    try:
        with PredictionClient(
            FLAGS.server,
            FLAGS.model_name,
            FLAGS.signature_name,
            timeout_s=FLAGS.timeout_s,
            max_retries=FLAGS.max_retries,
        ) as client:
            records = score_file(client, FLAGS.input, FLAGS.group_key, FLAGS.output_names)
    except grpc.RpcError as error:
        raise app.UsageError(rpc_error_line(error, FLAGS.server, FLAGS.model_name)) from None
    except ValueError as error:  # a request file that does not match the signature
        raise app.UsageError(f"--input={FLAGS.input}: {error}") from None
    lines = "".join(json.dumps(record) + "\n" for record in records)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        sys.stdout.write(lines)


if __name__ == "__main__":
    define_flags()
    job.run(main)

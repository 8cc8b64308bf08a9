"""TF Serving's REST API (``--rest_api_port``): predict, model status and metadata over JSON.

Routes, as ``tensorflow_model_server`` serves them::

    POST /v1/models/<name>[/versions/<v> | /labels/<label>]:predict
    GET  /v1/models/<name>[/versions/<v>]            (GetModelStatus)
    GET  /v1/models/<name>[/versions/<v>]/metadata   (GetModelMetadata)

A predict body is ``{"signature_name": ..., "instances": [...]}`` (row format: one object of
input -> value per candidate, or bare values for a one-input signature), answered by
``{"predictions": [...]}``; or ``{"inputs": {input: [values...]}}`` (columnar format), answered
by ``{"outputs": ...}``. Binary strings travel as ``{"b64": "..."}``. Errors answer
``{"error": message}`` with the HTTP status of the gRPC code (``google/rpc/code.proto``).
Requests run through the same signature runners, validation and batching as gRPC calls.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from cvr_tf.compat import tf
from serving import inference
from serving.errors import ServingError
from serving.model_manager import ModelManager
from serving.tensors import InputSpec

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
}
_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>:predict|/metadata)?$"
)


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _decode(value):
    """JSON value -> Python value, with strings as bytes and ``{"b64": ...}`` decoded."""
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise _invalid(f'an object value must be {{"b64": "..."}}, got keys {sorted(value)}')
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value.encode() if isinstance(value, str) else value


def _to_array(name: str, values, spec: InputSpec | None) -> np.ndarray:
    values = _decode(values)
    try:
        if spec is None:
            return np.asarray(values)  # not a signature input: validation reports it
        if spec.dtype == tf.string:
            return np.array(values, dtype=object)
        return np.asarray(values, dtype=spec.dtype.as_numpy_dtype)
    except (ValueError, TypeError) as error:
        raise _invalid(f"input '{name}' is not a {spec.dtype.name} array: {error}") from error


def _to_json(array: np.ndarray):
    if array.dtype != object:
        return array.tolist()
    if array.ndim:
        return [_to_json(item) for item in array]
    value = array.item()
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def _columns(body: dict, specs: dict[str, InputSpec]) -> tuple[dict, bool]:
    """The body's inputs as name -> JSON values, and whether it used the row format."""
    if ("instances" in body) == ("inputs" in body):
        raise _invalid('the body needs exactly one of "instances" (rows) or "inputs" (columns)')
    if "inputs" in body:
        columns = body["inputs"]
        if isinstance(columns, dict):
            return columns, False
        if len(specs) != 1:
            raise _invalid(f'"inputs" must be an object naming the inputs {sorted(specs)}')
        return {next(iter(specs)): columns}, False
    rows = body["instances"]
    if not isinstance(rows, list):
        raise _invalid('"instances" must be a list, one entry per candidate')
    if rows and all(isinstance(row, dict) and set(row) != {"b64"} for row in rows):
        names = dict.fromkeys(name for row in rows for name in row)
        missing = [name for name in names if any(name not in row for row in rows)]
        if missing:
            raise _invalid(f"every instance must name the same inputs; some lack {missing}")
        return {name: [row[name] for row in rows] for name in names}, True
    if len(specs) != 1:
        raise _invalid(f"instances must be objects naming the inputs {sorted(specs)}")
    return {next(iter(specs)): rows}, True


def predict_json(manager: ModelManager, model_spec: model_pb2.ModelSpec, body: dict) -> dict:
    """Answers a REST predict body (row or columnar format) with TF Serving's JSON.

    Raises:
        ServingError: as gRPC Predict would, or ``INVALID_ARGUMENT`` for a malformed body.
    """
    signature = body.get("signature_name", inference.DEFAULT_SIGNATURE)
    with manager.servable(model_spec) as servable:
        runner = servable.signature(signature)
        columns, rows = _columns(body, runner.specs)
        inputs = {
            name: _to_array(name, values, runner.specs.get(name))
            for name, values in columns.items()
        }
        outputs = {name: _to_json(array) for name, array in runner.run(inputs).items()}
    if not rows:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    count = len(next(iter(outputs.values())))
    return {
        "predictions": [
            {name: column[row] for name, column in outputs.items()} for row in range(count)
        ]
    }


def _message_json(message) -> dict:
    """A proto as TF Serving's REST API prints it (proto field names, defaults included)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class _Handler(BaseHTTPRequestHandler):
    manager: ModelManager

    def log_message(self, format, *args) -> None:
        """Keeps the access log quiet (one line per request would swamp the server log)."""

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str) -> None:
        match = _ROUTE.match(self.path)
        try:
            if match is None or (method == "POST") != (match["action"] == ":predict"):
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"no route for {method} {self.path}; see /v1/models/<name>[:predict|/metadata]",
                )
            spec = model_pb2.ModelSpec(name=match["name"])
            if match["version"]:
                spec.version.value = int(match["version"])
            elif match["label"]:
                spec.version_label = match["label"]
            self._reply(HTTPStatus.OK, self._answer(method, match["action"], spec))
        except ServingError as error:
            self._reply(
                HTTP_STATUS.get(error.code, HTTPStatus.INTERNAL_SERVER_ERROR),
                {"error": error.message},
            )

    def _answer(self, method: str, action: str | None, spec: model_pb2.ModelSpec) -> dict:
        if action == ":predict":
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as error:
                raise _invalid(f"the body is not JSON: {error}") from error
            if not isinstance(body, dict):
                raise _invalid("the body must be a JSON object")
            return predict_json(self.manager, spec, body)
        if action == "/metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=[inference.SIGNATURE_DEF_FIELD]
            )
            with self.manager.servable(spec) as servable:
                response = inference.model_metadata(servable, request)
            signature_defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata[inference.SIGNATURE_DEF_FIELD].Unpack(signature_defs)
            return {
                "model_spec": _message_json(response.model_spec),
                "metadata": {inference.SIGNATURE_DEF_FIELD: _message_json(signature_defs)},
            }
        statuses = self.manager.model_status(spec)
        return _message_json(
            get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)
        )

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


class RestServer:
    """The REST endpoint of a :class:`ModelManager`, served from a background thread.

    Args:
        manager: The models to serve.
        host: Interface to bind.
        port: TCP port; 0 picks a free one (see :attr:`port`).
    """

    def __init__(self, manager: ModelManager, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"manager": manager})
        self._http = ThreadingHTTPServer((host, port), handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="rest-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting requests and closes the socket."""
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

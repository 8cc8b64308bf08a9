"""TF Serving's REST API (``--rest_api_port``): predict, model status, metadata and metrics.

Routes, as ``tensorflow_model_server`` serves them::

    POST /v1/models/<name>[/versions/<v> | /labels/<label>]:predict
    GET  /v1/models/<name>[/versions/<v>]            (GetModelStatus)
    GET  /v1/models/<name>[/versions/<v>]/metadata   (GetModelMetadata)
    GET  /monitoring/prometheus/metrics              (with Prometheus enabled by monitoring config)

Bodies are converted by :mod:`serving.server.rest_json`. The server always answers, with TF
Serving's error shape ``{"error": message}`` and the HTTP status of the gRPC code
(``google/rpc/code.proto``), whatever arrives: malformed JSON or values, JSON nested past
``max_json_depth`` (400), a missing, non-numeric, oversized or repeated and conflicting
``Content-Length`` (400), a method a route does not take (404: only predict takes POST, the
others GET or HEAD), a malformed request line or headers (400, as Python's HTTP parser reports
them; 431 for overlong or too many header lines), a body that does
not arrive within ``rest_api_timeout_in_ms`` (408: a slow or short body cannot hold a thread),
more than ``rest_api_num_threads`` open connections (503 at once, from the accepting thread), and
any unexpected failure (500). Predict and metadata calls pass the same
:class:`~serving.server.admission.RequestGate` as gRPC calls (load shedding, metrics).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.errors import ServingError
from serving.server import inference
from serving.server.admission import METADATA_API, RequestGate
from serving.server.rest_json import invalid, predict_json

_log = logging.getLogger(__name__)
_READ_CHUNK = 1 << 16

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


def _message_json(message) -> dict:
    """A proto as TF Serving's REST API prints it (proto field names, defaults included)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class _BodyTimeout(Exception):
    """The body did not arrive within ``rest_api_timeout_in_ms``."""


class _Handler(BaseHTTPRequestHandler):
    gate: RequestGate
    prometheus_path: str | None

    def setup(self) -> None:
        self.timeout = self.gate.limits.rest_api_timeout_in_ms / 1e3  # per read of the headers
        super().setup()

    def log_message(self, format, *args) -> None:
        """Keeps the access log quiet (one line per request would swamp the server log)."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answers the HTTP parser's own refusals (bad request line, headers) in TF's shape."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # an unparsed request line still gets a status line
        try:
            self._reply(code, {"error": message or HTTPStatus(code).phrase})
        except OSError:  # the client is gone
            pass

    def _reply(self, status: int, payload: dict | str) -> None:
        if isinstance(payload, str):
            body, content_type = payload.encode(), "text/plain; version=0.0.4"
        else:
            body, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self, method: str) -> None:
        try:
            self._reply(HTTPStatus.OK, self._dispatch(method))
        except ServingError as error:
            self._reply(
                HTTP_STATUS.get(error.code, HTTPStatus.INTERNAL_SERVER_ERROR),
                {"error": error.message},
            )
        except _BodyTimeout as error:
            self.close_connection = True
            self._reply(HTTPStatus.REQUEST_TIMEOUT, {"error": str(error)})
        except OSError:  # the client closed the connection: nobody to answer
            self.close_connection = True
        except Exception as error:  # never drop a connection without an answer
            _log.exception("REST %s %s failed", method, self.path)
            self._reply(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": f"internal error: {type(error).__name__}: {error}"},
            )

    def _dispatch(self, method: str) -> dict | str:
        if (
            method == "GET"
            and self.prometheus_path is not None
            and self.path == (self.prometheus_path)
        ):
            return self.gate.metrics.prometheus_text()
        match = _ROUTE.match(self.path)
        allowed = ("POST",) if match and match["action"] == ":predict" else ("GET", "HEAD")
        if match is None or method not in allowed:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"no route for {method} {self.path}; see /v1/models/<name>[:predict|/metadata]",
            )
        spec = model_pb2.ModelSpec(name=match["name"])
        if match["version"]:
            spec.version.value = int(match["version"])
        elif match["label"]:
            spec.version_label = match["label"]
        return self._answer(match["action"], spec)

    def _read_body(self, deadline: float) -> bytes:
        """Reads exactly ``Content-Length`` bytes before ``deadline``."""
        limits = self.gate.limits
        header = self.headers.get("Content-Length")
        if header is None:
            raise invalid("a predict request needs a Content-Length header (the body's size)")
        if len(set(self.headers.get_all("Content-Length"))) > 1:  # which body? (smuggling)
            raise invalid(f"conflicting Content-Length headers "
                          f"{self.headers.get_all('Content-Length')}; send one")
        if not header.strip().isdigit():
            raise invalid(f"Content-Length {header!r} is not a non-negative integer")
        length = int(header)
        if length > limits.rest_api_max_body_bytes:
            raise invalid(
                f"the body has {length} bytes, over the limit of {limits.rest_api_max_body_bytes}"
                " bytes; send smaller requests or raise --rest_api_max_body_bytes"
            )
        chunks, received = [], 0
        while received < length:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _BodyTimeout(self._timeout_message(received, length))
            self.connection.settimeout(remaining)
            try:
                chunk = self.rfile.read1(min(length - received, _READ_CHUNK))
            except TimeoutError as error:
                raise _BodyTimeout(self._timeout_message(received, length)) from error
            if not chunk:
                raise invalid(f"the body ended after {received} of its {length} bytes")
            chunks.append(chunk)
            received += len(chunk)
        self.connection.settimeout(self.timeout)  # the answer is written under the usual timeout
        return b"".join(chunks)

    def _timeout_message(self, received: int, length: int) -> str:
        return (
            f"the body did not arrive within {self.gate.limits.rest_api_timeout_in_ms} ms "
            f"({received} of {length} bytes; --rest_api_timeout_in_ms)"
        )

    def _answer(self, action: str | None, spec: model_pb2.ModelSpec) -> dict:
        deadline = time.monotonic() + self.gate.limits.rest_api_timeout_in_ms / 1e3
        if action == ":predict":
            raw = self._read_body(deadline)
            try:
                body = json.loads(raw or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise invalid(f"the body is not JSON: {error}") from error
            except RecursionError as error:
                raise invalid("the body is JSON nested too deep to parse") from error
            if not isinstance(body, dict):
                raise invalid("the body must be a JSON object")
            with self.gate.serve(spec, "predict", "REST", deadline) as servable:
                return predict_json(servable, body, self.gate.limits, deadline,
                                    self.gate.manager.request_logger(spec.name))
        if action == "/metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=[inference.SIGNATURE_DEF_FIELD]
            )
            with self.gate.serve(spec, METADATA_API, "REST") as servable:
                response = inference.model_metadata(servable, request)
            signature_defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata[inference.SIGNATURE_DEF_FIELD].Unpack(signature_defs)
            return {
                "model_spec": _message_json(response.model_spec),
                "metadata": {inference.SIGNATURE_DEF_FIELD: _message_json(signature_defs)},
            }
        statuses = self.gate.manager.model_status(spec)
        return _message_json(
            get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)
        )

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``max_connections`` connections at once."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_connections = max_connections

    def process_request(self, request, client_address) -> None:
        if self._slots.acquire(blocking=False):
            super().process_request(request, client_address)
            return
        body = json.dumps(
            {
                "error": f"the REST server is at its limit of {self._max_connections} open "
                "connections (--rest_api_num_threads); retry with backoff"
            }
        ).encode()
        try:
            request.settimeout(1.0)
            request.sendall(
                b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class RestServer:
    """The REST endpoint of a :class:`RequestGate`, served from a background thread.

    Args:
        gate: Admission, metrics and the models to serve.
        host: Interface to bind.
        port: TCP port; 0 picks a free one (see :attr:`port`).
        prometheus_path: Serve Prometheus metrics at this path; ``None`` serves none.
    """

    def __init__(
        self, gate: RequestGate, host: str, port: int, prometheus_path: str | None = None
    ) -> None:
        handler = type("Handler", (_Handler,), {"gate": gate, "prometheus_path": prometheus_path})
        try:
            self._http = _BoundedHTTPServer((host, port), handler,
                                            gate.limits.rest_api_num_threads)
        except OSError as error:
            raise OSError(error.errno, f"could not bind the REST API to {host}:{port} "
                          f"({error.strerror}); is another server using it?") from error
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

"""The hostile-input set against a real server on 127.0.0.1: every bad request gets a fast answer.

gRPC: shapes declaring huge or negative sizes, too many rows, oversized messages. REST: malformed
JSON and values, ragged and deeply nested lists, bad base64, bad ``Content-Length``, bodies that
never arrive, too many connections, a malformed request line. After each, the server still serves.
"""

import json
import socket
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.client import PredictionClient
from serving.limits import ServerLimits
from serving.server import start_server
from serving.tf_serving_config import PROMETHEUS_METRICS_PATH, single_model_config
from tests.serving.conftest import candidates, install_version, predict_request

LIMITS = ServerLimits(
    grpc_max_receive_message_bytes=1 << 20,
    max_tensor_bytes=1 << 20,
    max_rows_per_request=50,
    rest_api_max_body_bytes=1 << 20,
    rest_api_timeout_in_ms=500,
    rest_api_num_threads=4,
)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory, saved_models):
    base = str(tmp_path_factory.mktemp("hostile") / "cvr")
    install_version(saved_models["v1"], base, 1)
    config = single_model_config("cvr", base)
    with start_server(
        config, rest_api_port=0, limits=LIMITS, prometheus_path=PROMETHEUS_METRICS_PATH
    ) as server:
        yield server


def _still_serves(server) -> None:
    with PredictionClient(server.target, "cvr", max_retries=0) as client:
        assert client.predict(candidates(2))["probabilities"].shape == (2,)


def _predict_error(server, request) -> grpc.RpcError:
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=10)
    return caught.value


def _with_input(name: str, proto: tensor_pb2.TensorProto):
    request = predict_request(candidates(3))
    request.inputs[name].CopyFrom(proto)
    return request


@pytest.mark.parametrize(
    ("dims", "dtype", "message"),
    [
        ([20, 1 << 20], types_pb2.DT_FLOAT, "--max_tensor_bytes"),
        ([1 << 40], types_pb2.DT_STRING, "--max_rows_per_request"),
        ([3, -1], types_pb2.DT_FLOAT, "negative dimension"),
        ([51], types_pb2.DT_FLOAT, "over the limit of 50 rows per request"),
    ],
)
def test_grpc_declared_sizes_are_refused_before_allocation(hostile_server, dims, dtype, message):
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    proto.float_val.append(1.0)
    error = _predict_error(hostile_server, _with_input("item_price", proto))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert "item_price" in error.details()
    _still_serves(hostile_server)


def test_grpc_message_over_the_receive_limit_is_refused_by_grpc(hostile_server):
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=bytes(2 << 20))
    proto.tensor_shape.dim.add(size=(2 << 20) // 4)
    error = _predict_error(hostile_server, _with_input("item_price", proto))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _still_serves(hostile_server)


def _http(server, raw: bytes, timeout: float = 5.0) -> tuple[int, dict, float]:
    """Sends raw bytes to the REST port; returns status, JSON body and seconds to answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.rest_api_port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), time.monotonic() - started


def _post(body: bytes, length: str | None = None) -> bytes:
    length_header = b"" if length is None else f"Content-Length: {length}\r\n".encode()
    return b"POST /v1/models/cvr:predict HTTP/1.1\r\nHost: x\r\n" + length_header + b"\r\n" + body


def _instances(**overrides) -> bytes:
    row = {"user_id": "u", "query": "q", "item_id": "i", "item_category": 3, "item_price": 9.5}
    row.update(overrides)
    return json.dumps({"instances": [row]}).encode()


def _nested(depth: int):
    value = 1.0
    for _ in range(depth):
        value = [value]
    return value


def _post_json(body: bytes) -> bytes:
    return _post(body, str(len(body)))


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (_post_json(_instances(user_id=7)), 400, "'user_id' is a string input; got int 7"),
        (_post_json(_instances(user_id=None)), 400, "'user_id' is a string input; got null"),
        (_post_json(_instances(item_price=None)), 400, "'item_price' is float32"),
        (_post_json(_instances(item_price="cheap")), 400, "'item_price' is float32"),
        (_post_json(_instances(item_category=1.5)), 400, "must be integers"),
        (_post_json(_instances(item_category=1 << 70)), 400, "does not fit int64"),
        (_post_json(_instances(item_id={"b64": "!!!"})), 400, "invalid base64"),
        (_post_json(_instances(item_id={"b64": 5})), 400, "'item_id' is a string input"),
        (_post_json(_instances(item_price=[[1.0], [2.0, 3.0]])), 400, "ragged"),
        (_post_json(_instances(item_price=_nested(33))), 400, "deeper than 32"),
        (_post_json(b"[" * 100_000 + b"]" * 100_000), 400, "nested too deep"),
        (_post_json(b"{not json"), 400, "not JSON"),
        (_post_json(b"\xff\xfe"), 400, "not JSON"),
        (_post_json(b'["a list"]'), 400, "must be a JSON object"),
        (_post_json(b'{"instances": 3}'), 400, '"instances" must be a list'),
        (_post_json(b'{"signature_name": 5, "instances": []}'), 400, '"signature_name"'),
        (_post(b"{}", "abc"), 400, "Content-Length 'abc'"),
        (_post(b"{}", "-5"), 400, "Content-Length '-5'"),
        (_post(b"{}", "2\r\nContent-Length: 5000"), 400, "conflicting Content-Length headers"),
        (_post_json(_instances(query="\ud800")), 400,
         "input 'query' holds a string that is not valid Unicode (surrogates not allowed at "
         "character 0)"),
        (b"DELETE /v1/models/cvr HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no route for DELETE"),
        (_post(b"{}"), 400, "needs a Content-Length"),
        (_post(b"{}", str(2 << 20)), 400, "--rest_api_max_body_bytes"),
        (b"BROKEN\r\n\r\n", 400, "Bad request syntax"),
        (b"GET / HTTP/abc\r\n\r\n", 400, "Bad request version"),
    ],
)
def test_rest_answers_every_malformed_request_with_tf_serving_error_shape(
    hostile_server, raw, status, message
):
    code, answer, _ = _http(hostile_server, raw)
    assert code == status
    assert list(answer) == ["error"]
    assert message in answer["error"]
    _still_serves(hostile_server)


def test_rest_and_grpc_refuse_too_many_rows_alike(hostile_server):
    body = json.dumps({"inputs": {"item_price": [1.0] * 51}}).encode()
    code, answer, _ = _http(hostile_server, _post_json(body))
    assert code == 400
    rows = np.zeros(51, np.float32)
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=rows.tobytes())
    proto.tensor_shape.dim.add(size=51)
    error = _predict_error(hostile_server, _with_input("item_price", proto))
    assert error.details() == answer["error"]


def test_a_body_shorter_than_its_content_length_times_out(hostile_server):
    code, answer, seconds = _http(hostile_server, _post(b'{"instances"', "1000"))
    assert code == 408
    assert "--rest_api_timeout_in_ms" in answer["error"]
    assert seconds < 3.0


def test_connections_past_the_bound_get_503_at_once(hostile_server):
    stalled = [
        socket.create_connection(("127.0.0.1", hostile_server.rest_api_port))
        for _ in range(LIMITS.rest_api_num_threads)
    ]
    try:
        for sock in stalled:
            sock.sendall(_post(b"{", "100"))
        time.sleep(0.1)
        code, answer, seconds = _http(hostile_server, _post_json(_instances()))
        assert code == 503
        assert "--rest_api_num_threads" in answer["error"]
        assert seconds < 0.5
    finally:
        for sock in stalled:
            sock.close()
    time.sleep(0.7)  # the stalled handlers time out and free their slots
    code, answer, _ = _http(hostile_server, _post_json(_instances()))
    assert code == 200
    assert len(answer["predictions"]) == 1


def test_prometheus_page_counts_requests_under_tf_serving_names(hostile_server):
    _still_serves(hostile_server)
    raw = f"GET {PROMETHEUS_METRICS_PATH} HTTP/1.0\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", hostile_server.rest_api_port), timeout=5) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, page = received.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200"
    text = page.decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="cvr",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="cvr",status="INVALID_ARGUMENT"}' in text
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="cvr",API="predict",'
        'entrypoint="GRPC",le="+Inf"}'
    ) in text
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="' in text

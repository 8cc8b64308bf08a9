"""The gRPC client library and CLI against a real server."""

import json
import os
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest

from cvr_tf.compat import tf
from serving.client import PredictionClient, score_file
from serving.retry_throttle import RetryThrottle
from serving.server import start_server
from serving.tf_serving_config import single_model_config
from tests.serving.conftest import REPO, candidates, free_port


def test_predict_and_score_requests(server, cvr_base):
    loaded = tf.saved_model.load(os.path.join(cvr_base, "1"))
    requests = [candidates(count, seed=count) for count in (1, 7, 100)]
    with PredictionClient(server.target, "cvr", timeout_s=10) as client:
        outputs = client.predict(requests[1], version=1)
        scores = client.score_requests(requests)
        assert sorted(client.input_specs()) == [
            "item_category",
            "item_id",
            "item_price",
            "query",
            "user_id",
        ]
        assert client.output_names() == ["probabilities"]
    assert list(outputs) == ["probabilities"]
    for features, got in zip(requests, scores, strict=True):
        expected = loaded.signatures["serving_default"](**features)["probabilities"].numpy()
        assert list(got) == ["probabilities"]
        np.testing.assert_array_equal(got["probabilities"], expected)
    np.testing.assert_array_equal(outputs["probabilities"], scores[1]["probabilities"])


def test_retries_unavailable_until_a_late_server_is_up(cvr_base):
    port = free_port()
    started = []
    timer = threading.Timer(
        1.0,
        lambda: started.append(
            start_server(
                single_model_config("cvr", cvr_base), port, file_system_poll_wait_seconds=0
            )
        ),
    )
    timer.start()
    try:
        # A lone client waiting for a server: a bucket large enough for 12 retries in a row (the
        # default one stops after 4, as sustained refusals should).
        with PredictionClient(
            f"127.0.0.1:{port}", "cvr", timeout_s=10, max_retries=12, seed=0,
            retry_throttle=RetryThrottle(max_tokens=30),
        ) as client:
            scores = client.predict(candidates(4))["probabilities"]
            assert scores.shape == (4,)
            assert client.retries >= 1
    finally:
        timer.join()
        for server in started:
            server.stop()


def test_does_not_retry_invalid_argument(server):
    with PredictionClient(server.target, "cvr", max_retries=5) as client:
        bad = candidates(4)
        bad["item_price"] = bad["item_price"].astype(np.float64)
        with pytest.raises(grpc.RpcError) as raised:
            client.predict(bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.retries == 0
        with pytest.raises(grpc.RpcError) as raised:
            PredictionClient(server.target, "nope", max_retries=5).predict(candidates(2))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def _example(request_id, features, row):
    feature = {"request_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[request_id]))}
    for name, values in features.items():
        value = values[row]
        if isinstance(value, bytes):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif np.issubdtype(values.dtype, np.integer):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    feature["converted"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def test_score_file_from_tfrecord_groups_rows_by_request_id(server, tmp_path):
    first, second = candidates(3, seed=1), candidates(2, seed=2)
    rows = [(b"r1", first, 0), (b"r2", second, 0), (b"r1", first, 1), (b"r2", second, 1)]
    rows.append((b"r1", first, 2))
    path = str(tmp_path / "requests.tfrecord.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for request_id, features, row in rows:
            writer.write(_example(request_id, features, row).SerializeToString())
    with PredictionClient(server.target, "cvr") as client:
        records = score_file(client, path)
        expected = [client.predict(features)["probabilities"] for features in (first, second)]
    assert [record["request"] for record in records] == ["r1", "r2"]
    for record, scores in zip(records, expected, strict=True):
        np.testing.assert_allclose(record["scores"], scores, rtol=1e-6)


def test_cli_scores_a_json_file(server, tmp_path):
    features = candidates(3, seed=5)
    requests = [
        {
            "request_id": "q1",
            "user_id": "user_5",
            "query": "running shoes",
            "item_id": [value.decode() for value in features["item_id"]],
            "item_category": features["item_category"].tolist(),
            "item_price": features["item_price"].tolist(),
        }
    ]
    path = tmp_path / "requests.json"
    path.write_text(json.dumps(requests))
    output = tmp_path / "scores.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.client",
            f"--server={server.target}",
            "--model_name=cvr",
            f"--input={path}",
            f"--output={output}",
        ],
        check=True,
        cwd=REPO,
        timeout=120,
    )
    (line,) = output.read_text().splitlines()
    record = json.loads(line)
    with PredictionClient(server.target, "cvr") as client:
        expected = client.predict(features)["probabilities"]
    assert record["request"] == "q1"
    np.testing.assert_allclose(record["scores"], expected, rtol=1e-6)


@pytest.mark.parametrize("unknown_model", [False, True])
def test_cli_reports_a_server_error_in_one_line(server, tmp_path, unknown_model):
    path = tmp_path / "requests.json"
    path.write_text(json.dumps([{"request_id": "q1", "item_id": ["item_1"]}]))
    target = server.target if unknown_model else f"127.0.0.1:{free_port()}"  # nobody listens
    result = subprocess.run(
        [sys.executable, "-m", "serving.client", f"--server={target}",
         f"--model_name={'nope' if unknown_model else 'cvr'}", f"--input={path}",
         "--max_retries=0", "--timeout_s=5"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    if unknown_model:
        assert last.startswith(f"error: --model_name=nope at --server={target}: NOT_FOUND: ")
    else:
        assert last.startswith(f"error: --model_name=cvr at --server={target}: UNAVAILABLE: ")
        assert last.endswith(f"; is a server listening on --server={target}?")


def test_cli_names_a_missing_input_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving.client", f"--input={tmp_path / 'none.json'}"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: --input={tmp_path / 'none.json'} is not a file; pass a .json or .tfrecord file "
        "of requests")

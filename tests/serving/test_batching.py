"""Server-side batching (``--enable_batching``) and in-graph batching (``BatchFunction``)."""

import dataclasses
import os
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from cvr_tf.compat import tf
from serving.batching import TF_SERVING_DEFAULTS
from serving.errors import ServingError
from serving.limits import ServerLimits
from serving.server import start_server
from serving.server.batch_scheduler import BatchScheduler, BatchStats
from serving.tensors import to_ndarray
from serving.tf_serving_config import single_model_config
from tests.serving.conftest import DENSE_MAX_BATCH, candidates, install_version, predict_request

# Requests merge only while they are in flight together: let more of them in than the default.
MERGING_LIMITS = ServerLimits(max_in_flight_per_model=32)


def _predict(stub, features, signature="", timeout=10):
    response = stub.Predict(predict_request(features, signature=signature), timeout=timeout)
    return to_ndarray(response.outputs["probabilities"], "p")


def _concurrently(count, function):
    """Runs ``function(index)`` in ``count`` threads released together; returns the results."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(index):
        barrier.wait()
        results[index] = function(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def batching_server(cvr_base):
    options = dataclasses.replace(
        TF_SERVING_DEFAULTS,
        max_batch_size=32,
        batch_timeout_micros=200_000,
        max_enqueued_batches=4,
        num_batch_threads=1,
        allowed_batch_sizes=(8, 16, 32),
    )
    with start_server(
        single_model_config("cvr", cvr_base), batching=options, limits=MERGING_LIMITS
    ) as server:
        with grpc.insecure_channel(server.target) as channel:
            yield server, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def test_concurrent_requests_are_merged_and_results_equal_unbatched(batching_server, cvr_base):
    server, stub = batching_server
    loaded = tf.saved_model.load(os.path.join(cvr_base, "1"))
    requests = [candidates(3, seed=index) for index in range(6)]
    before = server.batch_scheduler.stats()
    answers = _concurrently(len(requests), lambda index: _predict(stub, requests[index]))
    after = server.batch_scheduler.stats()
    for features, answer in zip(requests, answers, strict=True):
        expected = loaded.signatures["serving_default"](**features)["probabilities"].numpy()
        np.testing.assert_allclose(answer, expected, rtol=1e-6)
    assert after.tasks - before.tasks == 6
    assert after.rows - before.rows == 18
    assert after.batches - before.batches < 6  # merged: fewer batches than requests
    assert (after.padded_rows - before.padded_rows) % 8 == 0  # each batch padded to 8, 16 or 32


def test_request_over_max_batch_size_is_invalid_argument(batching_server):
    _, stub = batching_server
    with pytest.raises(grpc.RpcError) as raised:
        _predict(stub, candidates(33))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 33 is larger than maximum input batch size 32" in raised.value.details()
    assert _predict(stub, candidates(32)).shape == (32,)


def test_deadline_passing_in_the_batching_queue_is_deadline_exceeded(batching_server):
    server, stub = batching_server
    with pytest.raises(grpc.RpcError) as raised:
        _predict(stub, candidates(2), timeout=0.05)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _predict(stub, candidates(2)).shape == (2,)


def test_full_queue_is_unavailable(cvr_base):
    options = dataclasses.replace(
        TF_SERVING_DEFAULTS,
        max_batch_size=4,
        batch_timeout_micros=1_000_000,
        max_enqueued_batches=1,
        num_batch_threads=1,
    )
    with start_server(
        single_model_config("cvr", cvr_base), batching=options, limits=MERGING_LIMITS
    ) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            first = stub.Predict.future(predict_request(candidates(3)), timeout=10)
            time.sleep(0.3)  # the first request waits in the only batch for its 1 s timeout
            with pytest.raises(grpc.RpcError) as raised:
                _predict(stub, candidates(3))  # does not fit beside it: a second batch is refused
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "queue to which this task was submitted is full" in raised.value.details()
            assert to_ndarray(first.result().outputs["probabilities"], "p").shape == (3,)
            assert _predict(stub, candidates(3)).shape == (3,)


def test_server_batching_refuses_a_model_with_in_graph_batching(tmp_path, saved_models):
    base = str(tmp_path / "cvr")
    install_version(saved_models["batched"], base, 1)
    with pytest.raises(ServingError, match="BatchFunction ops.*would batch twice") as raised:
        start_server(single_model_config("cvr", base), batching=TF_SERVING_DEFAULTS)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_in_graph_batching_model_serves_and_refuses_batches_over_its_max(tmp_path, saved_models):
    base = str(tmp_path / "cvr")
    install_version(saved_models["batched"], base, 1)
    loaded = tf.saved_model.load(saved_models["v1"])  # same weights, no BatchFunction
    with start_server(single_model_config("cvr", base)) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            requests = [candidates(5, seed=index) for index in range(8)]
            answers = _concurrently(8, lambda index: _predict(stub, requests[index]))
            for features, answer in zip(requests, answers, strict=True):
                expected = loaded.signatures["serving_default"](**features)["probabilities"]
                np.testing.assert_allclose(answer, expected.numpy(), rtol=1e-6)
            too_many = DENSE_MAX_BATCH + 1
            with pytest.raises(grpc.RpcError) as raised:
                _predict(stub, candidates(too_many))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (
                f"Task size {too_many} is larger than maximum input batch size {DENSE_MAX_BATCH}"
                in raised.value.details()
            )
            assert _predict(stub, candidates(DENSE_MAX_BATCH)).shape == (DENSE_MAX_BATCH,)


def test_variable_length_inputs_are_padded_with_the_first_element():
    seen = []

    def run(inputs):
        seen.append({name: array.copy() for name, array in inputs.items()})
        return {"rows": inputs["tokens"].sum(axis=1)}

    options = dataclasses.replace(
        TF_SERVING_DEFAULTS,
        max_batch_size=8,
        batch_timeout_micros=300_000,
        num_batch_threads=1,
        allowed_batch_sizes=(4, 8),
        pad_variable_length_inputs=True,
    )
    scheduler = BatchScheduler(options)
    try:
        queue = scheduler.add_queue(run, "test")
        short = {"tokens": np.array([[1, 2]], np.int64)}
        long = {"tokens": np.array([[3, 4, 5], [6, 7, 8]], np.int64)}
        answers = _concurrently(2, lambda index: queue.submit([short, long][index]))
    finally:
        scheduler.stop()
    (merged,) = seen
    rows = [tuple(row) for row in merged["tokens"].tolist()]
    assert sorted(rows[:3]) == [(1, 2, 1), (3, 4, 5), (6, 7, 8)]
    assert rows[3] == rows[0]  # 3 rows padded to the allowed size 4 with the first row
    assert answers[0]["rows"].tolist() == [4]  # [1, 2] padded with its first element, 1
    assert answers[1]["rows"].tolist() == [12, 21]
    assert scheduler.stats() == BatchStats(batches=1, tasks=2, rows=3, padded_rows=4)

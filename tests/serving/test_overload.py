"""Load shedding: full queues and hopeless deadlines are refused at once, before any work."""

import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import model_pb2, prediction_service_pb2_grpc

from cvr_tf.compat import tf
from serving.client import PredictionClient
from serving.limits import ServerLimits
from serving.server import metrics, start_server
from serving.tf_serving_config import single_model_config
from tests.serving.conftest import candidates, install_version, predict_request

SPEC = model_pb2.ModelSpec(name="cvr")


@pytest.fixture
def one_slot_server(cvr_base):
    limits = ServerLimits(max_in_flight_per_model=1, max_queued_per_model=0)
    with start_server(single_model_config("cvr", cvr_base), limits=limits) as server:
        yield server


def test_a_model_at_its_in_flight_limit_answers_unavailable_at_once(one_slot_server):
    gate = one_slot_server.gate
    with PredictionClient(one_slot_server.target, "cvr", max_retries=0) as client:
        with gate.serve(SPEC, "predict", "GRPC"):  # holds the model's only slot
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                client.predict(candidates(3))
            assert time.monotonic() - started < 1.0
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "--max_in_flight_per_model" in caught.value.details()
        assert client.predict(candidates(3))["probabilities"].shape == (3,)
    assert gate.metrics.count(metrics.SHED_COUNT, model_name="cvr", status="UNAVAILABLE") == 1


def test_a_queued_request_runs_when_a_slot_frees(cvr_base):
    limits = ServerLimits(max_in_flight_per_model=1, max_queued_per_model=1)
    with start_server(single_model_config("cvr", cvr_base), limits=limits) as server:
        with PredictionClient(server.target, "cvr", max_retries=0) as client:
            with server.gate.serve(SPEC, "predict", "GRPC"):
                queued = client.predict_future(client.predict_request(candidates(3)))
                time.sleep(0.2)
                assert not queued.done()
                with pytest.raises(grpc.RpcError) as caught:  # the queue of one is full
                    client.predict(candidates(3))
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "--max_queued_per_model" in caught.value.details()
            assert queued.result(timeout=10).outputs["probabilities"].tensor_shape.dim[0].size == 3


def test_the_client_retry_rides_out_a_short_overload(one_slot_server):
    gate = one_slot_server.gate
    held = threading.Event()
    release = threading.Event()

    def hold_the_slot() -> None:
        with gate.serve(SPEC, "predict", "GRPC"):
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    held.wait(5)
    threading.Timer(0.1, release.set).start()
    with PredictionClient(
        one_slot_server.target, "cvr", max_retries=8, backoff_s=0.02, seed=0
    ) as client:
        assert client.predict(candidates(3))["probabilities"].shape == (3,)
        assert client.retries >= 1
    holder.join()


def test_a_deadline_shorter_than_the_service_time_is_refused_before_running(one_slot_server):
    gate = one_slot_server.gate
    with gate.serve(SPEC, "predict", "GRPC"):
        time.sleep(0.05)
    estimate = gate.service_time_s("cvr")
    assert 0.004 < estimate < 0.05  # 0.1 x (at least) 50 ms
    with pytest.raises(Exception) as caught:
        with gate.serve(SPEC, "predict", "GRPC", deadline=time.monotonic() + estimate / 4):
            pytest.fail("a hopeless request ran")
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert gate.metrics.count(metrics.SHED_COUNT, model_name="cvr", status="DEADLINE_EXCEEDED")


def _save_slow_batching_model(path: str) -> None:
    """``x -> 2x`` behind a BatchFunction queue of one batch that waits 1 s for company."""

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            batched = tf.nondifferentiable_batch_function(
                num_batch_threads=1,
                max_batch_size=4,
                batch_timeout_micros=1_000_000,
                max_enqueued_batches=1,
            )(lambda values: values * 2.0)
            return {"y": batched(x)}

    module = Doubler()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def test_the_in_graph_batch_queue_refuses_with_unavailable_when_full(tmp_path):
    _save_slow_batching_model(str(tmp_path / "saved"))
    base = str(tmp_path / "doubler")
    install_version(str(tmp_path / "saved"), base, 1)
    with start_server(single_model_config("doubler", base)) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            first = stub.Predict.future(
                predict_request({"x": np.ones(2, np.float32)}, "doubler"), timeout=10
            )
            time.sleep(0.3)  # the first request holds the queue's one open batch
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(predict_request({"x": np.ones(3, np.float32)}, "doubler"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "queue" in caught.value.details()
            assert list(first.result().outputs["y"].tensor_shape.dim[0:1])[0].size == 2

"""Per-stage serving: a decoupled export's serving_default runs as embed then dense, each timed;
request latency by model, version and signature; the batch sizes of the server's dense queue."""

import dataclasses
import threading
import urllib.request

import grpc
import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from cvr_tf.compat import tf
from serving.batching import TF_SERVING_DEFAULTS
from serving.server import metrics, start_server
from serving.server.servable import StagedRunner
from serving.tf_serving_config import PROMETHEUS_METRICS_PATH, single_model_config
from tests.serving.conftest import candidates, install_version, predict_request

WARMUP_REQUESTS = 2  # conftest.write_warmup: serving_default requests of 3 rows


def _predict(server, features, signature=""):
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(predict_request(features, signature=signature), timeout=30)


def test_serving_default_runs_as_two_timed_stages_with_the_same_scores(cvr_base):
    labels = {"model_name": "cvr", "version": "1"}
    with start_server(single_model_config("cvr", cvr_base), rest_api_port=0,
                      prometheus_path=PROMETHEUS_METRICS_PATH) as server:
        with server.manager.servable(predict_request({}).model_spec) as servable:
            assert isinstance(servable.runners["serving_default"], StagedRunner)
        features = candidates(20, seed=5)
        answers = [_predict(server, features) for _ in range(3)]
        _predict(server, features, signature="embed")
        serving = server.gate.metrics
        for stage in ("embed", "dense"):
            count, micros = serving.histogram(metrics.STAGE_LATENCY, **labels, stage=stage)
            assert count == 3 + WARMUP_REQUESTS and micros > 0
        assert serving.histogram(metrics.SIGNATURE_LATENCY, **labels,
                                 signature="serving_default")[0] == 3 + WARMUP_REQUESTS
        assert serving.histogram(metrics.SIGNATURE_LATENCY, **labels, signature="embed")[0] == 1
        url = f"http://127.0.0.1:{server.rest_api_port}{PROMETHEUS_METRICS_PATH}"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    loaded = tf.saved_model.load(cvr_base + "/1")
    expected = loaded.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in features.items()})["probabilities"].numpy()
    for answer in answers:
        np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["probabilities"]), expected)
    assert "# TYPE :cvr_tf:serving:stage_latency histogram" in text
    assert (':cvr_tf:serving:stage_latency_count{model_name="cvr",version="1",stage="dense"} '
            f"{3 + WARMUP_REQUESTS}") in text
    assert ':cvr_tf:serving:signature_latency_bucket{model_name="cvr",version="1",' \
           'signature="serving_default",le="+Inf"} 5' in text
    assert ':tensorflow:serving:request_latency_count{model_name="cvr",API="predict",' \
           'entrypoint="GRPC"} 4' in text


def test_the_server_dense_queue_merges_concurrent_requests_and_reports_batch_sizes(
        tmp_path, saved_models):
    base = str(tmp_path / "cvr")
    install_version(saved_models["v1"], base, 1)
    batching = dataclasses.replace(TF_SERVING_DEFAULTS, max_batch_size=64,
                                   batch_timeout_micros=200_000, num_batch_threads=1)
    with start_server(single_model_config("cvr", base), batching=batching) as server:
        serving = server.gate.metrics
        labels = {"model_name": "cvr", "version": "1", "signature": "dense"}
        warmup_batches, warmup_rows = serving.histogram(metrics.BATCH_SIZE, **labels)
        barrier = threading.Barrier(4)
        answers = [None] * 4

        def send(index):
            barrier.wait()
            answers[index] = _predict(server, candidates(5, seed=index))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batches, rows = serving.histogram(metrics.BATCH_SIZE, **labels)
        assert rows - warmup_rows == 20  # every request's rows went through the dense queue
        assert batches - warmup_batches < 4  # and concurrent ones shared batches
        # The embed stage ran per request, never through a queue.
        assert serving.histogram(metrics.BATCH_SIZE, model_name="cvr", version="1",
                                 signature="serving_default") == (0, 0.0)
    assert all(len(tf.make_ndarray(a.outputs["probabilities"])) == 5 for a in answers)

"""The local server logs sampled requests (gRPC and REST) as its models.config says."""

import json
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import logging_config_pb2

from cvr_tf.compat import tf
from serving import request_log, tf_serving_config
from serving.server import start_server
from tests.serving.conftest import candidates, predict_request


def _logging(prefix: str, rate: float = 1.0) -> logging_config_pb2.LoggingConfig:
    config = logging_config_pb2.LoggingConfig()
    config.log_collector_config.type = "tfrecord"
    config.log_collector_config.filename_prefix = prefix
    config.sampling_config.sampling_rate = rate
    return config


def test_the_server_logs_grpc_and_rest_predictions(tmp_path, cvr_base):
    prefix = str(tmp_path / "logs" / "requests")
    config = tf_serving_config.models_config(
        [tf_serving_config.ModelEntry("cvr", cvr_base, logging=_logging(prefix))])
    with start_server(config, rest_api_port=0) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answers = [stub.Predict(predict_request(candidates(3, seed)), timeout=10)
                       for seed in range(2)]
        rows = {"instances": [{"user_id": "u", "query": "tent", "item_id": "i1",
                               "item_category": 3, "item_price": 9.5}]}
        url = f"http://127.0.0.1:{server.rest_api_port}/v1/models/cvr:predict"
        with urllib.request.urlopen(url, json.dumps(rows).encode(), timeout=10) as response:
            rest = json.loads(response.read())["predictions"]
        assert server.manager.request_logger("cvr").logged == 3
    logs = list(request_log.read_request_logs(request_log.log_files(prefix)))
    assert len(logs) == 3
    for seed, (log, answer) in enumerate(zip(logs, answers, strict=False)):
        assert log.predict_log.request == predict_request(candidates(3, seed))
        assert log.predict_log.response == answer
        assert log.log_metadata.model_spec.version.value == 1
    rest_log = logs[2].predict_log
    assert tf.make_ndarray(rest_log.request.inputs["item_id"]).tolist() == [b"i1"]
    assert tf.make_ndarray(rest_log.request.inputs["item_category"]).tolist() == [3]
    np.testing.assert_allclose(tf.make_ndarray(rest_log.response.outputs["probabilities"]), rest)


def test_a_bad_logging_config_is_refused_before_serving(cvr_base):
    config = tf_serving_config.models_config(
        [tf_serving_config.ModelEntry("cvr", cvr_base, logging=_logging("/l/r", rate=2.0))])
    with pytest.raises(ValueError, match="sampling_rate must be in"):
        start_server(config)

"""Request logging (logging_config): sampling, PredictionLog files per day, torn tails, and
logged requests turned into warmup records."""

import datetime
import os

import pytest
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tensorflow_serving.config import logging_config_pb2

from serving import logged_warmup, request_log
from serving.tensors import fill_tensor_proto
from tests.serving.conftest import candidates, predict_request

DAY = datetime.datetime(2026, 1, 19, 12, tzinfo=datetime.UTC).timestamp()


def _config(prefix: str, rate: float = 1.0, kind: str = "tfrecord"):
    config = logging_config_pb2.LoggingConfig()
    config.log_collector_config.type = kind
    config.log_collector_config.filename_prefix = prefix
    config.sampling_config.sampling_rate = rate
    return config


def _response(version: int, rows: int) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "cvr"
    response.model_spec.version.value = version
    fill_tensor_proto(response.outputs["probabilities"], candidates(rows)["item_price"] / 1000)
    return response


def test_logged_requests_are_prediction_logs_in_one_file_per_day(tmp_path):
    prefix = str(tmp_path / "logs" / "requests")
    logger = request_log.RequestLogger("cvr", _config(prefix, 0.5))
    first, second = predict_request(candidates(3, seed=1)), predict_request(candidates(2, seed=2))
    logger.log_predict(first, _response(7, 3), now=DAY)
    logger.log_predict(second, _response(8, 2), now=DAY + 86_400)
    logger.close()
    logger.log_predict(first, _response(7, 3), now=DAY)  # after close: dropped
    assert logger.logged == 2
    day = datetime.date(2026, 1, 19)
    [path] = request_log.log_files(prefix, day)
    assert os.path.basename(path).startswith("requests-2026-01-19-") and path.endswith(".tfrecord")
    assert len(request_log.log_files(prefix)) == 2
    logs = list(request_log.read_request_logs(request_log.log_files(prefix)))
    assert [log.predict_log.request for log in logs] == [first, second]
    assert logs[1].predict_log.response == _response(8, 2)
    metadata = logs[0].log_metadata
    assert (metadata.model_spec.name, metadata.model_spec.version.value,
            metadata.model_spec.signature_name) == ("cvr", 7, "serving_default")
    assert metadata.sampling_config.sampling_rate == 0.5 and metadata.timestamp_secs == int(DAY)


def test_sampling_logs_each_request_with_the_configured_probability(tmp_path):
    prefix = str(tmp_path / "r")
    assert not any(request_log.RequestLogger("cvr", _config(prefix, 0.0)).sampled()
                   for _ in range(1000))
    assert all(request_log.RequestLogger("cvr", _config(prefix, 1.0)).sampled()
               for _ in range(1000))
    logger = request_log.RequestLogger("cvr", _config(prefix, 0.25), seed=0)
    sampled = sum(logger.sampled() for _ in range(10_000))
    assert 2_300 < sampled < 2_700  # binomial(10000, 0.25): sd 43


def test_a_torn_last_record_ends_its_file_without_an_error(tmp_path):
    prefix = str(tmp_path / "r")
    logger = request_log.RequestLogger("cvr", _config(prefix))
    for seed in range(3):
        logger.log_predict(predict_request(candidates(2, seed)), _response(1, 2), now=DAY)
    logger.close()
    [path] = request_log.log_files(prefix)
    with open(path, "ab") as handle:  # a server killed in the middle of a record
        handle.write(b"\x40\x00\x00\x00\x00\x00\x00\x00partial")
    assert len(list(request_log.read_request_logs([path]))) == 3


@pytest.mark.parametrize("config, message", [
    (_config("/l/r", kind="bigquery"), "log_collector_config.type 'bigquery' is unknown"),
    (_config(""), "filename_prefix is empty"),
    (_config("/l/r", rate=1.5), r"sampling_rate must be in \[0, 1\], got 1.5"),
])
def test_bad_logging_configs_name_the_model_and_field(config, message):
    with pytest.raises(ValueError, match="model 'cvr' logging_config.*" + message):
        request_log.check_logging_config("cvr", config)


def test_logged_requests_become_warmup_records(tmp_path):
    logs = []
    for seed in range(5):
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(predict_request(candidates(2, seed), model_name="old"))
        log.predict_log.request.model_spec.version.value = 3
        log.predict_log.response.CopyFrom(_response(3, 2))
        logs.append(log)
    logs.insert(2, prediction_log_pb2.PredictionLog())  # no request: skipped
    records = logged_warmup.warmup_records(logs, "cvr", max_records=3)
    assert len(records) == 3
    for record, seed in zip(records, (2, 3, 4), strict=True):
        expected = predict_request(candidates(2, seed), model_name="cvr")
        assert record.predict_log.request == expected  # no version, no response
        assert not record.predict_log.HasField("response")
    path = str(tmp_path / "assets.extra" / "tf_serving_warmup_requests")
    assert logged_warmup.write_warmup_file(records, path) == 3
    assert list(request_log.read_request_logs([path])) == records
    with pytest.raises(ValueError, match="--max_records must be in 1..1000"):
        logged_warmup.warmup_records(logs, "cvr", max_records=1001)

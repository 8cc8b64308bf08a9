"""Version polling, hot reload under load, HandleReloadConfigRequest and load failures."""

import collections
import os
import shutil
import threading
import time

import grpc
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.server import metrics, start_server
from serving.tf_serving_config import ModelEntry, models_config
from tests.serving.conftest import candidates, install_version, predict_request

State = get_model_status_pb2.ModelVersionStatus.State


def _states(server, name="cvr"):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    with grpc.insecure_channel(server.target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=10
        )
    return {status.version: State.Name(status.state) for status in response.model_version_status}


def _wait_for(condition, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_new_version_loads_beside_the_old_one_without_failing_requests(
    server, cvr_base, saved_models
):
    stop = threading.Event()
    versions = collections.Counter()
    failures = []
    lock = threading.Lock()
    request = predict_request(candidates(20))

    def client():
        with grpc.insecure_channel(server.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not stop.is_set():
                try:
                    response = stub.Predict(request, timeout=10)
                except grpc.RpcError as error:
                    with lock:
                        failures.append(error.code())
                else:
                    with lock:
                        versions[response.model_spec.version.value] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        # A half-written version (variables, no saved_model.pb yet) is ignored by the polls.
        partial = os.path.join(cvr_base, "2")
        shutil.copytree(
            saved_models["v2"], partial, ignore=shutil.ignore_patterns("saved_model.pb")
        )
        time.sleep(0.6)  # three polls
        assert _states(server) == {1: "AVAILABLE"}
        shutil.copy(os.path.join(saved_models["v2"], "saved_model.pb"), partial)
        _wait_for(lambda: _states(server) == {1: "END", 2: "AVAILABLE"})
        with lock:
            served_after_switch = versions[2]
        time.sleep(max(5.0 - (time.monotonic() - started), 0.5))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert versions[1] > 0 and versions[2] > served_after_switch
    assert sum(versions.values()) > 100


def test_handle_reload_config_adds_and_removes_models(server, cvr_base, tmp_path, saved_models):
    other = str(tmp_path / "other")
    install_version(saved_models["v2"], other, 2)
    with grpc.insecure_channel(server.target) as channel:
        model_service = model_service_pb2_grpc.ModelServiceStub(channel)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def reload(entries):
            request = model_management_pb2.ReloadConfigRequest(config=models_config(entries))
            return model_service.HandleReloadConfigRequest(request, timeout=30)

        response = reload([("cvr", cvr_base), ModelEntry("other", other, None, {"stable": 2})])
        assert response.status.error_code == 0
        request = predict_request(candidates(3), model_name="other")
        request.model_spec.version_label = "stable"
        assert stub.Predict(request, timeout=10).model_spec.version.value == 2

        with pytest.raises(grpc.RpcError) as raised:
            reload([("cvr", cvr_base), ("missing", str(tmp_path / "missing"))])
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert "Could not find base path" in raised.value.details()

        with pytest.raises(grpc.RpcError) as raised:
            reload([ModelEntry("cvr", cvr_base, None, {"canary": 9})])
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "Request to assign label 'canary' to version 9" in raised.value.details()

        reload([("other", other)])
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(predict_request(candidates(3)), timeout=10)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.Predict(predict_request(candidates(3), "other"), timeout=10).outputs


def test_broken_version_reports_its_error_and_the_old_version_keeps_serving(server, cvr_base):
    broken = os.path.join(cvr_base, "3")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as handle:
        handle.write(b"not a SavedModel")
    _wait_for(lambda: _states(server).get(3) == "END")
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "cvr"
    request.model_spec.version.value = 3
    with grpc.insecure_channel(server.target) as channel:
        (status,) = (
            model_service_pb2_grpc.ModelServiceStub(channel)
            .GetModelStatus(request, timeout=10)
            .model_version_status
        )
        assert status.status.error_code != 0
        assert "loading cvr version 3" in status.status.error_message
        assert _states(server)[1] == "AVAILABLE"
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(candidates(3)), timeout=10)
        assert response.model_spec.version.value == 1


def _version_status(server, version):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "cvr"
    request.model_spec.version.value = version
    with grpc.insecure_channel(server.target) as channel:
        (status,) = (
            model_service_pb2_grpc.ModelServiceStub(channel)
            .GetModelStatus(request, timeout=10)
            .model_version_status
        )
    return status


def test_a_version_whose_variables_arrive_late_loads_once_complete(server, cvr_base, saved_models):
    target = os.path.join(cvr_base, "2")
    os.makedirs(target)
    shutil.copy(os.path.join(saved_models["v1"], "saved_model.pb"), target)
    time.sleep(1.0)  # five polls see saved_model.pb without its variables
    assert 2 not in _states(server)
    variables = os.path.join(saved_models["v2"], "variables")
    shutil.copytree(variables, os.path.join(target, "variables"))
    _wait_for(lambda: _states(server).get(2) == "AVAILABLE")
    assert _version_status(server, 2).status.error_code == 0


def test_a_corrupt_version_replaced_by_a_valid_copy_recovers_and_clears_its_error(
    server, cvr_base, saved_models
):
    broken = install_version(saved_models["v2"], cvr_base, 2)
    with open(os.path.join(broken, "variables", "variables.index"), "wb") as handle:
        handle.write(b"corrupt")
    _wait_for(lambda: _states(server).get(2) == "END")
    assert "loading cvr version 2" in _version_status(server, 2).status.error_message
    assert _states(server) == {1: "AVAILABLE", 2: "END"}
    shutil.rmtree(broken)
    install_version(saved_models["v2"], cvr_base, 2)
    _wait_for(lambda: _states(server).get(2) == "AVAILABLE")
    status = _version_status(server, 2)
    assert (status.status.error_code, status.status.error_message) == (0, "")


def test_a_failed_version_is_retried_with_backoff_then_left_until_its_files_change(
    cvr_base, saved_models
):
    config = models_config([ModelEntry("cvr", cvr_base)])
    with start_server(
        config,
        file_system_poll_wait_seconds=0.05,
        max_num_load_retries=2,
        load_retry_interval_s=0.1,
    ) as server:
        broken = os.path.join(cvr_base, "3")
        os.makedirs(broken)
        with open(os.path.join(broken, "saved_model.pb"), "wb") as handle:
            handle.write(b"not a SavedModel")
        path_failures = {"model_path": broken, "status": "fail"}
        _wait_for(lambda: server.gate.metrics.count(metrics.LOAD_ATTEMPT_COUNT, **path_failures))
        time.sleep(1.0)  # retries after 0.1 s and 0.2 s, then none: the budget of 2 is spent
        assert server.gate.metrics.count(metrics.LOAD_ATTEMPT_COUNT, **path_failures) == 3
        shutil.rmtree(broken)
        install_version(saved_models["v2"], cvr_base, 3)
        _wait_for(lambda: _states(server).get(3) == "AVAILABLE")

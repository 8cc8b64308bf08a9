"""PredictionService and ModelService over a real gRPC server on 127.0.0.1.

Every status code comes from a real bad request, and a valid request succeeds after each one.
"""

import os
import re

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from cvr_tf.compat import tf
from serving.errors import ServingError
from serving.server import start_server
from serving.tensors import to_ndarray
from serving.tf_serving_config import ModelEntry, all_versions, models_config, single_model_config
from tests.serving.conftest import (
    EMBEDDING_DIM,
    candidates,
    install_version,
    predict_request,
)


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.target) as channel:
        yield channel


@pytest.fixture
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def assert_serves(stub, version=1):
    response = stub.Predict(predict_request(candidates(5)), timeout=10)
    assert response.model_spec.version.value == version
    assert to_ndarray(response.outputs["probabilities"], "p").shape == (5,)


def _request(model="cvr", signature="", version=None, label="", **features):
    base = candidates(4)
    base.update(features)
    request = predict_request({k: v for k, v in base.items() if v is not None}, model, signature)
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    return request


BAD_REQUESTS = {
    "unknown model": (
        _request(model="nope"),
        grpc.StatusCode.NOT_FOUND,
        r"Servable not found for request: Latest\(nope\)",
    ),
    "unknown version": (
        _request(version=7),
        grpc.StatusCode.NOT_FOUND,
        r"Servable not found for request: Specific\(cvr, 7\); available versions: \[1\]",
    ),
    "unknown version label": (
        _request(label="canary"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: canary",
    ),
    "unknown signature": (
        _request(signature="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature name: "nope" not found',
    ),
    "wrong input name": (
        _request(item_prize=np.ones(4, np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found in signature: item_prize",
    ),
    "missing input": (
        _request(item_price=None),
        grpc.StatusCode.INVALID_ARGUMENT,
        r"Missing but required: \{item_price\}",
    ),
    "wrong dtype": (
        _request(item_price=np.array([b"1"] * 4, dtype=object)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'item_price' has dtype string but signature 'serving_default' expects float32",
    ),
    "wrong rank": (
        _request(item_category=np.ones((4, 1), np.int64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        r"input 'item_category' has shape \[4, 1\] \(rank 2\)",
    ),
    "mismatched batch sizes": (
        _request(item_price=np.ones(3, np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "disagree on the batch size",
    ),
    "empty batch": (
        predict_request(candidates(0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "has an empty batch",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_request_gets_tf_serving_status_and_server_keeps_serving(stub, case):
    request, code, message = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=10)
    assert raised.value.code() == code
    assert raised.value.details() is not None
    assert re.search(message, raised.value.details()), raised.value.details()
    assert_serves(stub)


def test_unknown_output_filter_is_invalid_argument(stub):
    request = _request()
    request.output_filter.append("logits")
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: logits" in raised.value.details()
    assert_serves(stub)


def test_past_deadline_is_deadline_exceeded(stub):
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request(candidates(100)), timeout=1e-6)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert_serves(stub)


def test_predict_equals_in_process_call_of_each_signature(stub, cvr_base):
    loaded = tf.saved_model.load(os.path.join(cvr_base, "1"))
    features = candidates(100, seed=3)
    response = stub.Predict(predict_request(features), timeout=10)
    expected = loaded.signatures["serving_default"](**features)["probabilities"].numpy()
    np.testing.assert_array_equal(to_ndarray(response.outputs["probabilities"], "p"), expected)
    assert response.model_spec.signature_name == "serving_default"

    embed = stub.Predict(predict_request(features, signature="embed"), timeout=10)
    embeddings = to_ndarray(embed.outputs["embeddings"], "e")
    assert embeddings.shape == (100, EMBEDDING_DIM)
    np.testing.assert_array_equal(
        embeddings, loaded.signatures["embed"](**features)["embeddings"].numpy()
    )
    dense = stub.Predict(predict_request({"embeddings": embeddings}, signature="dense"), timeout=10)
    np.testing.assert_allclose(to_ndarray(dense.outputs["probabilities"], "p"), expected, rtol=1e-6)


def test_output_filter_returns_only_named_outputs(stub):
    request = _request()
    request.output_filter.append("probabilities")
    assert list(stub.Predict(request, timeout=10).outputs) == ["probabilities"]


def test_get_model_metadata_reports_the_saved_model_signature_defs(stub, cvr_base):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "cvr"
    response = stub.GetModelMetadata(request, timeout=10)
    assert (response.model_spec.name, response.model_spec.version.value) == ("cvr", 1)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {
        "serving_default",
        "embed",
        "dense",
        "__saved_model_init_op",
    }
    serving = signatures.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert sorted(serving.inputs) == ["item_category", "item_id", "item_price", "query", "user_id"]
    assert serving.inputs["item_price"].dtype == tf.float32.as_datatype_enum
    dense_input = signatures.signature_def["dense"].inputs["embeddings"]
    assert [dim.size for dim in dense_input.tensor_shape.dim] == [-1, EMBEDDING_DIM]

    request.metadata_field[:] = ["graph"]
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetModelMetadata(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Metadata field graph is not supported" in raised.value.details()
    assert_serves(stub)


def test_get_model_status(channel, stub):
    model_service = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "cvr"
    (status,) = model_service.GetModelStatus(request, timeout=10).model_version_status
    assert (status.version, status.state, status.status.error_code) == (
        1,
        get_model_status_pb2.ModelVersionStatus.AVAILABLE,
        0,
    )
    request.model_spec.version.value = 4
    with pytest.raises(grpc.RpcError) as raised:
        model_service.GetModelStatus(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "Could not find version 4 of model cvr"
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as raised:
        model_service.GetModelStatus(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert_serves(stub)


def test_versions_and_labels_from_models_config(tmp_path, saved_models):
    base = str(tmp_path / "cvr")
    install_version(saved_models["v1"], base, 1)
    install_version(saved_models["v2"], base, 2)
    config = models_config([ModelEntry("cvr", base, all_versions(), {"stable": 1, "canary": 2})])
    features = candidates(6)
    with start_server(config) as server, grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answers = {}
        for key, request in {
            "latest": _request(),
            "v1": _request(version=1),
            "stable": _request(label="stable"),
            "canary": _request(label="canary"),
        }.items():
            request.inputs.clear()
            request.inputs.MergeFrom(predict_request(features).inputs)
            response = stub.Predict(request, timeout=10)
            answers[key] = (
                response.model_spec.version.value,
                to_ndarray(response.outputs["probabilities"], "p"),
            )
    assert [answers[key][0] for key in ("latest", "v1", "stable", "canary")] == [2, 1, 1, 2]
    np.testing.assert_array_equal(answers["stable"][1], answers["v1"][1])
    np.testing.assert_array_equal(answers["canary"][1], answers["latest"][1])
    assert np.all(answers["canary"][1] > answers["stable"][1])  # version 2 has bias 1, not 0


def test_classify_and_regress_where_the_signature_allows(tmp_path, saved_models, server):
    base = str(tmp_path / "examples")
    install_version(saved_models["examples"], base, 1)
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
            )
        )
        for x in (0.25, 0.5)
    ]
    with start_server(single_model_config("examples", base)) as examples_server:
        with grpc.insecure_channel(examples_server.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            regression = regression_pb2.RegressionRequest()
            regression.model_spec.name = "examples"
            regression.model_spec.signature_name = "regress"
            regression.input.example_list.examples.extend(examples)
            response = stub.Regress(regression, timeout=10)
            assert [r.value for r in response.result.regressions] == [1.5, 2.0]

            classification = classification_pb2.ClassificationRequest()
            classification.model_spec.name = "examples"
            classification.model_spec.signature_name = "classify"
            classification.input.example_list_with_context.context.CopyFrom(examples[1])
            classification.input.example_list_with_context.examples.add()
            classification.input.example_list_with_context.examples.append(examples[0])
            response = stub.Classify(classification, timeout=10)
            assert [
                [(c.label, c.score) for c in row.classes] for row in response.result.classifications
            ] == [[("buy", 0.5), ("skip", 0.5)], [("buy", 0.25), ("skip", 0.75)]]

            regression.model_spec.signature_name = "classify"
            with pytest.raises(grpc.RpcError) as raised:
                stub.Regress(regression, timeout=10)
            assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert (
                "Expected regression signature method_name to be tensorflow/serving/regress. "
                "Was: tensorflow/serving/classify"
            ) in raised.value.details()

            regression.model_spec.signature_name = "regress"
            regression.input.example_list.ClearField("examples")
            with pytest.raises(grpc.RpcError) as raised:
                stub.Regress(regression, timeout=10)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Input is empty" in raised.value.details()

    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        regression.model_spec.name = "cvr"
        regression.model_spec.signature_name = ""
        regression.input.example_list.examples.extend(examples)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Regress(regression, timeout=10)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "Was: tensorflow/serving/predict" in raised.value.details()
        assert_serves(stub)


def test_failing_warmup_record_fails_the_load(tmp_path, saved_models):
    base = str(tmp_path / "cvr")
    version_dir = install_version(saved_models["v1"], base, 1)
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(predict_request({"typo": np.ones(2, np.float32)}))
    with tf.io.TFRecordWriter(
        os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    ) as writer:
        writer.write(log.SerializeToString())
    with pytest.raises(
        ServingError, match="warmup of cvr version 1 failed: input tensor alias not found"
    ) as raised:
        start_server(single_model_config("cvr", base))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT

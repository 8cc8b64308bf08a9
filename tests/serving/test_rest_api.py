"""TF Serving's REST API on the local server (``--rest_api_port``)."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from serving.client import PredictionClient
from serving.server import start_server
from serving.tf_serving_config import single_model_config
from tests.serving.conftest import candidates


@pytest.fixture
def rest_server(cvr_base):
    with start_server(single_model_config("cvr", cvr_base), rest_api_port=0) as server:
        yield server


def _call(server, path, body=None):
    url = f"http://127.0.0.1:{server.rest_api_port}{path}"
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _rows(features):
    count = len(features["item_id"])
    return [
        {
            name: (value.decode() if isinstance(value, bytes) else value.item())
            for name, value in ((name, features[name][row]) for name in features)
        }
        for row in range(count)
    ]


def test_predict_in_row_and_columnar_formats_equals_grpc(rest_server):
    features = candidates(4, seed=9)
    with PredictionClient(rest_server.target, "cvr") as client:
        expected = client.predict(features)["probabilities"]
    status, answer = _call(rest_server, "/v1/models/cvr:predict", {"instances": _rows(features)})
    assert status == 200
    np.testing.assert_array_equal(np.float32(answer["predictions"]), expected)

    columns = {name: [row[name] for row in _rows(features)] for name in features}
    status, answer = _call(rest_server, "/v1/models/cvr/versions/1:predict", {"inputs": columns})
    assert status == 200
    np.testing.assert_array_equal(np.float32(answer["outputs"]), expected)


def test_status_and_metadata(rest_server):
    status, answer = _call(rest_server, "/v1/models/cvr")
    assert status == 200
    assert answer == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    status, answer = _call(rest_server, "/v1/models/cvr/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": "cvr", "signature_name": "", "version": "1"}
    inputs = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert sorted(inputs) == ["item_category", "item_id", "item_price", "query", "user_id"]


@pytest.mark.parametrize(
    ("path", "body", "code", "message"),
    [
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "Servable not found"),
        ("/v1/models/cvr/labels/x:predict", {"instances": [1]}, 400, "Unrecognized servable"),
        ("/v1/models/cvr:predict", {"instances": [{"user_id": "u"}]}, 400, "Missing but required"),
        ("/v1/models/cvr:predict", {"rows": []}, 400, 'exactly one of "instances"'),
        ("/v1/models/cvr:explain", {"instances": []}, 404, "no route"),
    ],
)
def test_errors_map_to_http_status(rest_server, path, body, code, message):
    status, answer = _call(rest_server, path, body)
    assert status == code
    assert message in answer["error"]
    assert _call(rest_server, "/v1/models/cvr")[0] == 200

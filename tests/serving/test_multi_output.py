"""Multi-output serving of multi-task models: every task's probability by name, from the split
SavedModel to the gRPC and REST answers of the local server, the client and the load test.

Two models trained a few steps on the funnel spans (``esmm_run``: ``--tasks=ctr,ctcvr``, outputs
``ctr``, ``cvr``, ``ctcvr``; ``click_space_run``: ``--tasks=cvr``, output ``cvr``) are exported
once each: ESMM with in-graph batching of the dense part (tests/conftest.py), served as
exported; the click-space model without, served with ``--enable_batching`` so that its dense
stage runs through the server's batching queue. Served scores must equal the Keras model's for
every task.
"""

import json
import os
import urllib.request
from concurrent import futures

import numpy as np
import pytest
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.config import logging_config_pb2

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import keras, tf
from cvr_tf.model import ModelConfig
from serving import export, request_log, signatures, tf_serving_config, warmup
from serving.batching import BatchingConfig
from serving.client import PredictionClient, score_file
from serving.loadtest import run_load
from serving.logged_warmup import write_warmup_file
from serving.server import start_server
from serving.server.servable import load_servable
from serving.server.warmup_replay import warm_up

ESMM_OUTPUTS = ["ctcvr", "ctr", "cvr"]
ROWS = (1, 37, 150)  # 150: more than the largest executed batch (64), so batching splits it


@pytest.fixture(scope="module")
def click_space_export(click_space_run, tmp_path_factory) -> str:
    config, _ = click_space_run
    return export.export_model(config.model_dir, str(tmp_path_factory.mktemp("base")), "pcvr",
                               batching=BatchingConfig(scope="none"))


@pytest.fixture(scope="module")
def models(esmm_run, click_space_run) -> dict:
    """The offline Keras models, by served name."""
    return {"esmm": model_dir_lib.load_model(esmm_run[0].model_dir),
            "pcvr": model_dir_lib.load_model(click_space_run[0].model_dir)}


@pytest.fixture(scope="module")
def esmm_server(esmm_export, tmp_path_factory):
    """ESMM on gRPC and REST, every request logged."""
    logging = logging_config_pb2.LoggingConfig()
    logging.log_collector_config.type = "tfrecord"
    logging.log_collector_config.filename_prefix = str(tmp_path_factory.mktemp("log") / "req")
    logging.sampling_config.sampling_rate = 1.0
    config = tf_serving_config.models_config([tf_serving_config.ModelEntry(
        "esmm", os.path.dirname(esmm_export), logging=logging)])
    with start_server(config, rest_api_port=0) as server:
        yield server, logging.log_collector_config.filename_prefix


def _features(model, rows: int) -> dict[str, np.ndarray]:
    return warmup.synthetic_features(model.spec, model.vocabularies, rows, seed=rows)


def _offline(model, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    columns = model.spec.derive_serving_columns({c: tf.constant(v) for c, v in features.items()})
    return {task: scores.numpy() for task, scores in model(columns).items()}


def _assert_equal_offline(served: dict, expected: dict) -> None:
    assert sorted(served) == sorted(expected)
    for task, scores in expected.items():
        np.testing.assert_allclose(np.asarray(served[task], np.float32), scores, atol=1e-6,
                                   err_msg=task)


def test_output_names_are_the_tasks_and_single_task_keeps_probabilities(esmm_run, esmm_export,
                                                                       click_space_export):
    assert signatures.output_names(ModelConfig()) == ("probabilities",)
    assert signatures.output_names(esmm_run[0].model) == ("ctr", "cvr", "ctcvr")
    assert signatures.output_names(ModelConfig(tasks="cvr")) == ("cvr",)
    for path, outputs in ((esmm_export, ESMM_OUTPUTS), (click_space_export, ["cvr"])):
        signature_defs = loader_impl.parse_saved_model(path).meta_graphs[0].signature_def
        dims = {(name, key): [d.size for d in tensor.tensor_shape.dim]
                for name, signature in signature_defs.items() if name != "__saved_model_init_op"
                for key, tensor in signature.outputs.items()}
        width = dims[("embed", "embeddings")][1]
        assert dims == {("embed", "embeddings"): [-1, width],
                        **{(name, task): [-1] for name in ("dense", "serving_default")
                           for task in outputs}}
    readme = open(os.path.join(os.path.dirname(os.path.dirname(esmm_export)), "README.md")).read()
    assert "esmm: `ctcvr`, `ctr`, `cvr`." in readme


def test_signatures_equal_the_keras_model_for_every_task(esmm_export, click_space_export, models):
    for path, model in ((esmm_export, models["esmm"]), (click_space_export, models["pcvr"])):
        loaded = tf.saved_model.load(path)
        for rows in ROWS:
            features = {c: tf.constant(v) for c, v in _features(model, rows).items()}
            expected = _offline(model, _features(model, rows))
            embeddings = loaded.signatures["embed"](**features)["embeddings"]
            _assert_equal_offline(loaded.signatures["dense"](embeddings=embeddings), expected)
            _assert_equal_offline(loaded.signatures["serving_default"](**features), expected)


def test_warmup_records_replay_on_every_signature(esmm_export):
    sizes = {}
    for log in warmup.read_warmup_logs(esmm_export):
        request = log.predict_log.request
        assert not request.output_filter  # every output warms up
        first = next(iter(request.inputs.values()))
        sizes.setdefault(request.model_spec.signature_name, set()).add(first.tensor_shape.dim[0]
                                                                       .size)
    assert sizes == {s: {16, 64, 100} for s in ("embed", "dense", "serving_default")}
    assert warm_up(load_servable("esmm", 1, esmm_export)) == 9


def test_grpc_client_scores_every_task_as_offline(esmm_server, models, tmp_path):
    server, _ = esmm_server
    model = models["esmm"]
    with PredictionClient(server.target, "esmm", timeout_s=30) as client:
        assert client.output_names() == ESMM_OUTPUTS
        requests = [_features(model, rows) for rows in ROWS]
        for features, scores in zip(requests, client.score_requests(requests), strict=True):
            _assert_equal_offline(scores, _offline(model, features))
        only = client.predict(requests[1], output_filter=["ctcvr"])
        assert list(only) == ["ctcvr"]
        np.testing.assert_allclose(only["ctcvr"], _offline(model, requests[1])["ctcvr"],
                                   atol=1e-6)
        path = tmp_path / "requests.json"
        path.write_text(json.dumps([{"request_id": "q1", **{
            c: [v.decode() if isinstance(v, bytes) else v.item() for v in values]
            for c, values in requests[1].items()}}]))
        (record,) = score_file(client, str(path))
        (kept,) = score_file(client, str(path), output_names=["ctr"])
    assert record["request"] == "q1" and sorted(record["scores"]) == ESMM_OUTPUTS
    _assert_equal_offline(record["scores"], _offline(model, requests[1]))
    np.testing.assert_array_equal(kept["scores"], record["scores"]["ctr"])  # one: a bare list


def _rest(server, body: dict) -> dict:
    url = f"http://127.0.0.1:{server.rest_api_port}/v1/models/esmm:predict"
    with urllib.request.urlopen(url, json.dumps(body).encode(), timeout=30) as response:
        return json.loads(response.read())


def test_rest_rows_and_columns_answer_every_task_as_offline(esmm_server, models):
    server, _ = esmm_server
    features = _features(models["esmm"], 37)
    expected = _offline(models["esmm"], features)
    columns = {c: [v.decode() if isinstance(v, bytes) else v.item() for v in values]
               for c, values in features.items()}
    rows = [{c: values[row] for c, values in columns.items()} for row in range(37)]
    predictions = _rest(server, {"instances": rows})["predictions"]
    assert len(predictions) == 37 and all(sorted(p) == ESMM_OUTPUTS for p in predictions)
    _assert_equal_offline({task: [p[task] for p in predictions] for task in ESMM_OUTPUTS},
                          expected)
    _assert_equal_offline(_rest(server, {"inputs": columns})["outputs"], expected)
    only = _rest(server, {"signature_name": "serving_default", "inputs": columns})["outputs"]
    assert sorted(only) == ESMM_OUTPUTS
    # The request log holds every output of the answers (gRPC and REST alike).
    _, prefix = esmm_server
    logs = list(request_log.read_request_logs(request_log.log_files(prefix)))
    assert len(logs) >= 7
    for log in logs:
        wanted = sorted(log.predict_log.request.output_filter) or ESMM_OUTPUTS
        assert sorted(log.predict_log.response.outputs) == wanted


def test_server_dense_queue_batches_the_click_space_model(click_space_export, models):
    model = models["pcvr"]
    batching = BatchingConfig(scope="none", max_batch_size=200, allowed_batch_sizes=(64, 200),
                              batch_timeout_micros=20_000)
    config = tf_serving_config.single_model_config("pcvr", os.path.dirname(click_space_export))
    requests = [_features(model, rows) for rows in (3, 20, 37, 60)]
    with start_server(config, batching=batching) as server, \
            PredictionClient(server.target, "pcvr", timeout_s=30) as client, \
            futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(client.predict, requests))
    for features, answer in zip(requests, answers, strict=True):
        _assert_equal_offline(answer, _offline(model, features))


def test_load_test_runs_against_several_outputs(esmm_server):
    server, _ = esmm_server
    report = run_load(server.target, "esmm", mode="closed", concurrency=4, candidates=20,
                      duration_s=None, num_requests=24)
    assert (report.requests, report.ok, report.errors, report.candidates) == (24, 24, {}, 480)


def test_bfloat16_experts_within_the_bound(models):
    """The experts (and gates) in bfloat16, the towers and heads in float32: every task's score
    within the 0.02 of the single-task bound (tests/serving/test_export.py exports it)."""
    model = models["esmm"]
    module = signatures.ServingModule(model, BatchingConfig(scope="none"), None,
                                      dense_precision="bfloat16")
    features = _features(model, 150)
    served = module.serving_default({c: tf.constant(v) for c, v in features.items()})
    assert sorted(served) == ESMM_OUTPUTS
    mixture = module.dense_part.get_layer("experts")
    layers = [m for m in mixture.submodules if isinstance(m, keras.layers.Layer)]
    assert {layer.compute_dtype for layer in [mixture, *layers]} == {"bfloat16"}  # mlp expert
    assert module.dense_part.get_layer("ctr_tower").compute_dtype == "float32"
    for task, scores in _offline(model, features).items():
        assert 0 < np.abs(served[task].numpy() - scores).max() <= 0.02, task


def test_logged_warmup_asking_for_an_output_the_model_lacks_is_refused_before_any_write(
        esmm_run, esmm_export, tmp_path):
    (record, *_) = warmup.read_warmup_logs(esmm_export)
    record.predict_log.request.output_filter.append("probabilities")
    logged = str(tmp_path / "logged")
    write_warmup_file([record], logged)
    with pytest.raises(ValueError, match=r"record 1 asks for outputs \['probabilities'\]; "
                                         r"signature 'embed' returns \['embeddings'\]"):
        export.export_model(esmm_run[0].model_dir, str(tmp_path / "base"), "esmm",
                            batching=BatchingConfig(scope="none"), warmup_requests=logged)
    assert not os.path.exists(tmp_path / "base")

"""Split SavedModel export: signature outputs, device pins, batching scopes, warmup, configs."""

import os
import subprocess
import sys

import numpy as np
import pytest
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import prediction_log_pb2

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import keras, tf
from cvr_tf.features import default_spec
from cvr_tf.model import ModelConfig, build_model
from serving import export, tf_serving_config, warmup
from serving.batching import BatchingConfig, read_batching_parameters
from serving.logged_warmup import warmup_records, write_warmup_file

SPEC = default_spec()
VOCABS = {t: [f"tok{i}" for i in range(30)] for t in SPEC.vocabulary_tables()}
SMALL_BATCHING = BatchingConfig(
    max_batch_size=200, allowed_batch_sizes=(16, 64), batch_timeout_micros=100
)


def _model_dir(path: str, backbone: str, seed: int) -> str:
    """A model dir as the training job leaves it: definition, vocabularies, one checkpoint."""
    keras.utils.set_random_seed(seed)
    model = build_model(SPEC, VOCABS, ModelConfig(backbone=backbone))
    model_dir_lib.save_model_definition(path, model)
    manager = tf.train.CheckpointManager(
        model_dir_lib.checkpoint(model), os.path.join(path, model_dir_lib.CHECKPOINT_DIR), 1
    )
    manager.save(checkpoint_number=7)
    return path


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> str:
    return _model_dir(str(tmp_path_factory.mktemp("model")), "dcnv2", seed=3)


@pytest.fixture(scope="module")
def exported(trained_dir, tmp_path_factory) -> str:
    base = str(tmp_path_factory.mktemp("export"))
    return export.export_model(trained_dir, base, "cvr", batching=SMALL_BATCHING)


def _features(rows: int = 37) -> dict[str, np.ndarray]:
    return warmup.synthetic_features(SPEC, VOCABS, rows, seed=11)


@pytest.mark.parametrize("scope", ["dense", "whole", "none"])
def test_signatures_equal_the_keras_model(trained_dir, tmp_path, scope):
    path = export.export_model(
        trained_dir,
        str(tmp_path),
        "cvr",
        batching=SMALL_BATCHING.__class__(**{**SMALL_BATCHING.__dict__, "scope": scope}),
    )
    model = model_dir_lib.load_model(trained_dir)
    loaded = tf.saved_model.load(path)
    features = _features()
    tensors = {c: tf.constant(v) for c, v in features.items()}
    embeddings = loaded.signatures["embed"](**tensors)["embeddings"].numpy()
    np.testing.assert_allclose(embeddings, model.embedding_part(tensors).numpy(), atol=1e-5)
    dense = loaded.signatures["dense"](embeddings=tf.constant(embeddings))["probabilities"]
    expected = model(tensors).numpy()
    np.testing.assert_allclose(dense.numpy(), expected, atol=1e-5)
    served = loaded.signatures["serving_default"](**tensors)["probabilities"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    # 150 rows: more than the largest executed batch (64), so the batched signatures split it.
    big = {c: tf.constant(v) for c, v in _features(150).items()}
    np.testing.assert_allclose(
        loaded.signatures["serving_default"](**big)["probabilities"], model(big).numpy(), atol=1e-5
    )


@pytest.mark.parametrize("scope", ["dense", "whole"])
def test_every_signature_refuses_requests_over_max_batch_size(trained_dir, tmp_path, scope):
    batching = BatchingConfig(**{**SMALL_BATCHING.__dict__, "scope": scope})
    loaded = tf.saved_model.load(export.export_model(trained_dir, str(tmp_path), "cvr",
                                                     batching=batching))
    too_many = {c: tf.constant(v) for c, v in _features(201).items()}
    embeddings = tf.zeros([201, loaded.signatures["dense"].structured_input_signature[1][
        "embeddings"].shape[1]])
    calls = [lambda: loaded.signatures["embed"](**too_many),
             lambda: loaded.signatures["serving_default"](**too_many),
             lambda: loaded.signatures["dense"](embeddings=embeddings)]
    for call in calls:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="more rows than max_batch_size=200; split the request"):
            call()


def test_non_finite_inputs_are_refused_naming_the_input(exported):
    loaded = tf.saved_model.load(exported)
    for bad in (np.nan, np.inf, -np.inf):
        features = {c: tf.constant(v) for c, v in _features(5).items()}
        price = features["item_price"].numpy().copy()
        price[3] = bad
        features["item_price"] = tf.constant(price)
        for name in ("embed", "serving_default"):
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match="input 'item_price' holds NaN or infinite values"):
                loaded.signatures[name](**features)
    embeddings = loaded.signatures["embed"](**{c: tf.constant(v) for c, v in
                                               _features(4).items()})["embeddings"].numpy()
    embeddings[1, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="input 'embeddings' holds NaN"):
        loaded.signatures["dense"](embeddings=tf.constant(embeddings))


def test_signature_outputs_have_static_ranks(exported):
    meta_graph = loader_impl.parse_saved_model(exported).meta_graphs[0]
    dims = {
        (name, key): [d.size for d in tensor.tensor_shape.dim]
        for name, sig in meta_graph.signature_def.items() if name != "__saved_model_init_op"
        for key, tensor in sig.outputs.items()
    }
    width = dims[("embed", "embeddings")][1]
    assert width > 0
    assert dims == {("embed", "embeddings"): [-1, width],
                    ("dense", "probabilities"): [-1],
                    ("serving_default", "probabilities"): [-1]}


def test_jit_compiled_dense_part_returns_the_same_scores(trained_dir, tmp_path):
    path = export.export_model(trained_dir, str(tmp_path), "cvr", batching=SMALL_BATCHING,
                               jit_compile_dense=True)
    loaded = tf.saved_model.load(path)
    features = {c: tf.constant(v) for c, v in _features().items()}
    expected = model_dir_lib.load_model(trained_dir)(features).numpy()
    np.testing.assert_allclose(
        loaded.signatures["serving_default"](**features)["probabilities"], expected, atol=1e-5
    )
    compiled = [n for _, n in _nodes(path) if n.attr["_XlaMustCompile"].b]
    assert compiled, "the dense function must carry jit_compile into the SavedModel"
    assert export.compiles_with_xla(path)
    readme = open(os.path.join(str(tmp_path), "README.md")).read()
    assert "--xla_cpu_compilation_enabled=true" in readme


def test_bfloat16_dense_part_within_its_bound(tmp_path):
    """The 8x model's backbone in bfloat16: scores within 0.02 of the float32 Keras model (the
    bound README and ``serving.signatures`` state), through all three signatures and the split
    of a request larger than the executed batch; the logit head stays float32."""
    model_dir = _model_dir(str(tmp_path / "dhen"), "dhen", seed=5)
    path = export.export_model(model_dir, str(tmp_path / "export"), "cvr",
                               batching=SMALL_BATCHING, dense_precision="bfloat16")
    loaded = tf.saved_model.load(path)
    model = model_dir_lib.load_model(model_dir)
    features = {c: tf.constant(v) for c, v in _features(150).items()}
    expected = model(features).numpy()
    served = loaded.signatures["serving_default"](**features)["probabilities"].numpy()
    embeddings = loaded.signatures["embed"](**features)["embeddings"]
    dense = loaded.signatures["dense"](embeddings=embeddings)["probabilities"].numpy()
    np.testing.assert_allclose(embeddings, model.embedding_part(features), atol=1e-5)
    for scores in (served, dense):
        assert scores.dtype == np.float32
        assert 1e-4 < np.abs(scores - expected).max() <= 0.02  # rounded, within the bound
    products = [n for _, n in _nodes(path) if n.op in ("MatMul", "BatchMatMulV2")]
    precisions = {tf.dtypes.as_dtype(n.attr["T"].type).name for n in products}
    assert precisions == {"bfloat16", "float32"}  # the backbone's, and the logit head's
    with pytest.raises(ValueError, match="dense_precision 'float16' unknown; use one of "
                                         "float32, bfloat16"):
        export.export_model(model_dir, str(tmp_path / "export"), "cvr", dense_precision="float16")


def _nodes(saved_model_dir: str):
    """Nodes of the functions the signatures call (directly or through other functions).

    The library also holds the Keras layers' own traced call functions, which no signature uses.
    """
    meta_graph = loader_impl.parse_saved_model(saved_model_dir).meta_graphs[0]
    library = {f.signature.name: f for f in meta_graph.graph_def.library.function}

    def called(node):
        return [v.func.name for v in node.attr.values() if v.func.name in library]

    inputs = {
        t.name.split(":")[0]
        for sig in meta_graph.signature_def.values()
        for t in sig.inputs.values()
    }
    pending = [
        name
        for node in meta_graph.graph_def.node
        if any(i.lstrip("^").split(":")[0] in inputs for i in node.input)
        for name in called(node)
    ]
    seen = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in library[name].node_def:
            yield name, node
            pending.extend(called(node))


def test_device_pins_and_soft_placement(exported):
    nodes = list(_nodes(exported))
    lookups = [n for _, n in nodes if n.op in ("LookupTableFindV2", "ResourceGather")]
    dense_ops = [n for _, n in nodes if n.op in ("MatMul", "Relu")]
    assert lookups and all(n.device == "/device:CPU:0" for n in lookups)
    assert dense_ops and all(n.device == "/device:GPU:0" for n in dense_ops)
    calls = [n for _, n in nodes if n.op in ("StatefulPartitionedCall", "PartitionedCall")]
    config = config_pb2.ConfigProto.FromString(calls[0].attr["config_proto"].s)
    assert config.allow_soft_placement


def test_one_batched_dense_function_in_its_own_scope(exported):
    batch_ops = [n for _, n in _nodes(exported) if n.op == "BatchFunction"]
    # dense and serving_default share the one batched dense function (one queue, one op name).
    assert {n.name for n in batch_ops} == {"dense_batch/batch/BatchFunction"}
    assert {n.attr["max_batch_size"].i for n in batch_ops} == {200}
    assert list(batch_ops[0].attr["allowed_batch_sizes"].list.i) == [16, 64]


def test_variables_written_once(exported, trained_dir):
    reader = tf.train.load_checkpoint(os.path.join(exported, "variables", "variables"))
    shapes = {
        k: s for k, s in reader.get_variable_to_shape_map().items() if k.endswith("VARIABLE_VALUE")
    }
    assert len([k for k in shapes if "/item_id_embedding/" in k]) == 1
    model = model_dir_lib.load_model(trained_dir)
    # Only the served parts: the training-only bias tower is not exported.
    assert sum(int(np.prod(s)) for s in shapes.values()) == (
        model.embedding_parameter_count + model.dense_parameter_count
    )
    assert not [k for k in shapes if "bias" in k and "tower" in k]


def test_warmup_records_cover_the_batch_sizes(exported):
    path = os.path.join(exported, "assets.extra", "tf_serving_warmup_requests")
    sizes = {}
    for record in tf.data.TFRecordDataset(path):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        name = next(iter(request.inputs))
        sizes.setdefault(request.model_spec.signature_name, set()).add(
            request.inputs[name].tensor_shape.dim[0].size
        )
    assert sizes == {s: {16, 64, 100} for s in ("embed", "dense", "serving_default")}


def test_server_files_and_versions(exported, trained_dir):
    base = os.path.dirname(os.path.dirname(exported))
    assert os.path.basename(exported) == "1"
    config = tf_serving_config.read_models_config(os.path.join(base, "models.config"))
    assert [(m.name, m.base_path) for m in config.model_config_list.config] == [
        ("cvr", os.path.join(base, "cvr"))
    ]
    params = read_batching_parameters(os.path.join(base, "batching_parameters.txt"))
    assert (params.max_batch_size, params.allowed_batch_sizes) == (64, (16, 64))
    readme = open(os.path.join(base, "README.md")).read()
    assert "tensorflow_model_server --port=8500" in readme
    assert "--enable_batching=true" not in readme  # in-graph batching: never batch twice
    assert "--xla_cpu_compilation_enabled" not in readme and not export.compiles_with_xla(exported)
    assert "python -m serving.server" in readme
    assert "cvr: `probabilities`." in readme  # a single-task model's one output
    assert export.export_model(trained_dir, base, "cvr", batching=SMALL_BATCHING).endswith("/2")
    with pytest.raises(FileExistsError, match="next free one is 3"):
        export.export_model(trained_dir, base, "cvr", version=2, batching=SMALL_BATCHING)
    assert not [n for n in os.listdir(os.path.join(base, "cvr")) if n.startswith(".tmp")]
    with pytest.raises(NotADirectoryError, match="--export_base=.*/models.config is not a dir"):
        export.export_model(trained_dir, os.path.join(base, "models.config"), "cvr")


def test_each_version_records_its_model_dir_and_dead_staging_is_removed(exported, trained_dir):
    assert export.exported_from(exported) == os.path.abspath(trained_dir)
    assert export.exported_from(os.path.dirname(exported)) is None  # not a version
    model_base = os.path.dirname(exported)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(model_base, f".tmp-9-{dead.pid}")  # an export killed before its rename
    running = os.path.join(model_base, f".tmp-8-{os.getpid()}")  # an export still running
    for path in (stale, running):
        os.makedirs(os.path.join(path, "variables"))
    assert export.remove_stale_staging(model_base) == [stale]
    assert os.path.isdir(running) and not os.path.exists(stale)
    os.rmdir(os.path.join(running, "variables"))
    os.rmdir(running)
    assert export.remove_stale_staging(os.path.join(model_base, "absent")) == []


def test_rewriting_models_config_keeps_request_logging(trained_dir, tmp_path):
    base = str(tmp_path)
    export.export_model(trained_dir, base, "cvr", batching=SMALL_BATCHING)
    path = os.path.join(base, "models.config")
    config = tf_serving_config.read_models_config(path)
    logging_config = config.model_config_list.config[0].logging_config
    logging_config.log_collector_config.filename_prefix = "/logs/cvr/requests"
    logging_config.sampling_config.sampling_rate = 0.05
    tf_serving_config.write_text_proto(path, config)
    export.export_model(trained_dir, base, "cvr", batching=SMALL_BATCHING)
    [model] = tf_serving_config.read_models_config(path).model_config_list.config
    assert model.logging_config == logging_config


def test_logged_requests_ship_as_the_warmup_records(trained_dir, exported, tmp_path):
    served = list(warmup.read_warmup_logs(exported))  # requests the model answers
    logged = str(tmp_path / "logged")
    write_warmup_file(warmup_records(served[:2], "other-name"), logged)
    version = export.export_model(trained_dir, str(tmp_path / "base"), "cvr",
                                  batching=SMALL_BATCHING, warmup_requests=logged)
    shipped = list(warmup.read_warmup_logs(version))
    assert [log.predict_log.request for log in shipped] == [
        log.predict_log.request for log in served[:2]]  # named "cvr" again

    wrong = prediction_log_pb2.PredictionLog()
    wrong.predict_log.request.CopyFrom(served[0].predict_log.request)
    del wrong.predict_log.request.inputs["item_id"]
    write_warmup_file([wrong], logged)
    with pytest.raises(ValueError, match=r"record 1 sends inputs .* takes"):
        export.export_model(trained_dir, str(tmp_path / "base"), "cvr",
                            batching=SMALL_BATCHING, warmup_requests=logged)
    assert sorted(os.listdir(tmp_path / "base" / "cvr")) == ["1"]  # no staging left behind

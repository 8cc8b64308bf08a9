"""Small real SavedModels in TF Serving's layout, and servers on 127.0.0.1 to test against.

``cvr`` models have the exporter's three signatures on tiny fixed weights:

* ``embed``: ``user_id``, ``query``, ``item_id`` (string), ``item_category`` (int64),
  ``item_price`` (float32), each ``[batch]`` -> ``embeddings`` float32 ``[batch, 9]``: a 2-d
  row per feature from hashed buckets, plus ``log1p(item_price)``;
* ``dense``: ``embeddings`` -> ``probabilities`` = ``sigmoid(embeddings @ w + bias)``;
* ``serving_default``: raw features -> ``probabilities`` (``dense(embed(x))``).

``bias`` tells versions apart. The ``batched`` variant wraps the dense function in TensorFlow's
in-graph batching (``BatchFunction``, max batch 64). A TF1-style ``examples`` model has
``classify``/``regress`` signatures over serialized ``tf.Example``.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from cvr_tf.compat import tf
from serving.server import RunningServer, start_server
from serving.tensors import fill_tensor_proto
from serving.tf_serving_config import single_model_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMBEDDING_DIM = 9
DENSE_MAX_BATCH = 64
_STRING_FEATURES = ("user_id", "query", "item_id")


def raw_input_signature() -> dict[str, tf.TensorSpec]:
    specs = {name: tf.TensorSpec([None], tf.string, name=name) for name in _STRING_FEATURES}
    specs["item_category"] = tf.TensorSpec([None], tf.int64, name="item_category")
    specs["item_price"] = tf.TensorSpec([None], tf.float32, name="item_price")
    return specs


class TinyCVRModel(tf.Module):
    """A deterministic stand-in for the exported CVR model (see module docstring)."""

    def __init__(self, bias: float, batched: bool) -> None:
        super().__init__()
        rng = np.random.default_rng(7)
        self.tables = [
            tf.Variable(rng.normal(size=(16, 2)).astype(np.float32), name=f"table_{index}")
            for index in range(4)
        ]
        self.weights = tf.Variable(rng.normal(size=(EMBEDDING_DIM,)).astype(np.float32))
        self.bias = tf.Variable(np.float32(bias))
        dense = self._dense
        if batched:
            dense = tf.nondifferentiable_batch_function(
                num_batch_threads=1,
                max_batch_size=DENSE_MAX_BATCH,
                batch_timeout_micros=1000,
                allowed_batch_sizes=[16, DENSE_MAX_BATCH],
            )(dense)
        self._batched_dense = dense
        embeddings_spec = tf.TensorSpec([None, EMBEDDING_DIM], tf.float32, name="embeddings")
        self.embed = tf.function(self._embed, input_signature=[raw_input_signature()])
        self.dense = tf.function(
            lambda embeddings: {"probabilities": self._batched_dense(embeddings)},
            input_signature=[embeddings_spec],
        )
        self.serve = tf.function(
            lambda features: {
                "probabilities": self._batched_dense(self._embed(features)["embeddings"])
            },
            input_signature=[raw_input_signature()],
        )

    def _embed(self, features):
        columns = [
            tf.gather(self.tables[index], tf.strings.to_hash_bucket_fast(features[name], 16))
            for index, name in enumerate(_STRING_FEATURES)
        ]
        columns.append(tf.gather(self.tables[3], features["item_category"] % 16))
        columns.append(tf.math.log1p(features["item_price"])[:, None])
        return {"embeddings": tf.concat(columns, axis=1)}

    def _dense(self, embeddings):
        return tf.sigmoid(tf.linalg.matvec(embeddings, self.weights) + self.bias)


def candidates(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` candidates of one request, as the raw-feature inputs."""
    rng = np.random.default_rng(seed)
    return {
        "user_id": np.array([f"user_{seed}".encode()] * count, dtype=object),
        "query": np.array([b"running shoes"] * count, dtype=object),
        "item_id": np.array([f"item_{i}".encode() for i in rng.integers(0, 500, count)], object),
        "item_category": rng.integers(0, 40, count).astype(np.int64),
        "item_price": rng.uniform(1, 200, count).astype(np.float32),
    }


def predict_request(
    features: dict[str, np.ndarray], model_name: str = "cvr", signature: str = ""
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for name, array in features.items():
        fill_tensor_proto(request.inputs[name], array)
    return request


def write_warmup(version_dir: str, requests: int = 2) -> None:
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for seed in range(requests):
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(predict_request(candidates(3, seed)))
            writer.write(log.SerializeToString())


def save_cvr_model(version_dir: str, bias: float = 0.0, batched: bool = False) -> str:
    model = TinyCVRModel(bias, batched)
    tf.saved_model.save(
        model,
        version_dir,
        signatures={
            "serving_default": model.serve.get_concrete_function(),
            "embed": model.embed.get_concrete_function(),
            "dense": model.dense.get_concrete_function(),
        },
    )
    write_warmup(version_dir)
    return version_dir


def save_examples_model(version_dir: str) -> str:
    """A TF1 SavedModel: ``regress`` (2x + 1), ``classify`` (scores x, 1 - x) over examples."""
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        x = v1.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]
        scores = tf.stack([x, 1.0 - x], axis=1)
        classes = tf.tile(tf.constant([[b"buy", b"skip"]]), [tf.shape(x)[0], 1])
        with v1.Session() as session:
            builder = v1.saved_model.Builder(version_dir)
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map={
                    "regress": v1.saved_model.regression_signature_def(serialized, 2.0 * x + 1.0),
                    "classify": v1.saved_model.classification_signature_def(
                        serialized, classes, scores
                    ),
                },
            )
            builder.save()
    return version_dir


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install_version(source: str, base_path: str, version: int) -> str:
    """Copies a saved version into ``base_path/version``, ``saved_model.pb`` last (complete)."""
    target = os.path.join(base_path, str(version))
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("saved_model.pb"))
    shutil.copy(os.path.join(source, "saved_model.pb"), os.path.join(target, "saved_model.pb"))
    return target


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> dict[str, str]:
    """Saved once per session: ``v1`` (bias 0), ``v2`` (bias 1), ``batched``, ``examples``."""
    root = tmp_path_factory.mktemp("saved_models")
    return {
        "v1": save_cvr_model(str(root / "v1")),
        "v2": save_cvr_model(str(root / "v2"), bias=1.0),
        "batched": save_cvr_model(str(root / "batched"), batched=True),
        "examples": save_examples_model(str(root / "examples")),
    }


@pytest.fixture
def cvr_base(tmp_path, saved_models) -> str:
    """A model base path holding version 1."""
    base = str(tmp_path / "cvr")
    install_version(saved_models["v1"], base, 1)
    return base


@pytest.fixture
def server(cvr_base) -> Iterator[RunningServer]:
    """A server of ``cvr`` (version 1) on a free port of 127.0.0.1."""
    with start_server(single_model_config("cvr", cvr_base), file_system_poll_wait_seconds=0.2) as s:
        yield s

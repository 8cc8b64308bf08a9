"""An exported model with a request_relative feature: clients send the raw column and the group
key; ``embed`` derives the field over the call's rows as the pipeline does for its spans."""

import os

import numpy as np
import pyarrow as pa
import pytest

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import keras, tf
from cvr_tf.features import spec_from_dict
from cvr_tf.model import ModelConfig, build_model
from pipelines.chunks import ImpressionProcessor
from serving import export, warmup
from serving.batching import BatchingConfig

MEAN, STD = 3.0, 2.0
SPEC = spec_from_dict({"features": [
    {"name": "price_rank", "kind": "request_relative", "column": "item_price",
     "dtype": "float32", "relation": "rank", "mean": MEAN, "std": STD},
    {"name": "price_gap", "kind": "request_relative", "column": "item_price",
     "dtype": "float32", "relation": "diff_median", "boundaries": [-10.0, 0.0, 10.0]},
    {"name": "category", "kind": "categorical", "column": "item_category", "hash_buckets": 8},
]})
# Three requests of 4, 1 and 5 candidates, interleaved, with ties.
RAW = {
    "request_id": np.array([b"a", b"b", b"a", b"c", b"a", b"c", b"c", b"a", b"c", b"c"]),
    "item_price": np.array([5, 9, 3, 7, 5, 1, 7, 2, 4, 8], dtype=np.float32),
    "item_category": np.array([b"x", b"y", b"x", b"z", b"y", b"x", b"x", b"z", b"y", b"x"]),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    model_dir = str(tmp_path_factory.mktemp("model"))
    keras.utils.set_random_seed(5)
    model = build_model(SPEC, {}, ModelConfig(backbone="dcnv2"))
    model_dir_lib.save_model_definition(model_dir, model)
    tf.train.CheckpointManager(model_dir_lib.checkpoint(model),
                               os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR), 1).save(1)
    # Whole-model batching, executing at most 4 rows: a 10-row call is split into tasks.
    batching = BatchingConfig(scope="whole", max_batch_size=128,
                                         allowed_batch_sizes=(4,), batch_timeout_micros=100)
    return export.export_model(model_dir, str(tmp_path_factory.mktemp("export")), "cvr",
                               batching=batching)


def _pipeline_columns() -> dict[str, np.ndarray]:
    """The model columns of RAW as the pipeline writes them into a span's tf.Examples."""
    rows = pa.table({**RAW, "converted": np.zeros(len(RAW["item_price"]), np.int64)})
    records = ImpressionProcessor(SPEC).encode_requests(rows)
    parsed = tf.io.parse_example(tf.constant(list(records)), SPEC.parsing_spec())
    return {c: parsed[c] for c in SPEC.column_dtypes(train_only=False)}


def test_embed_takes_raw_columns_and_derives_the_pipelines_field(exported):
    loaded = tf.saved_model.load(exported)
    embed = loaded.signatures["embed"]
    assert set(embed.structured_input_signature[1]) == {"request_id", "item_price",
                                                        "item_category"}
    columns = _pipeline_columns()
    np.testing.assert_array_equal(columns["item_price__rank"], [3, 1, 2, 3, 3, 1, 3, 1, 2, 5])
    embeddings = embed(**{c: tf.constant(v) for c, v in RAW.items()})["embeddings"].numpy()
    np.testing.assert_allclose(embeddings[:, 0], (columns["item_price__rank"] - MEAN) / STD)
    # serving_default derives before batching: split into 4-row tasks, it scores the field of
    # the whole request.
    served = loaded.signatures["serving_default"](**{c: tf.constant(v) for c, v in RAW.items()})
    dense = loaded.signatures["dense"](embeddings=tf.constant(embeddings))
    np.testing.assert_allclose(served["probabilities"], dense["probabilities"], atol=1e-6)


def test_warmup_rows_carry_the_group_key():
    features = warmup.synthetic_features(SPEC, {}, 60)
    assert set(features) == set(SPEC.serving_columns())
    assert len(set(features["request_id"])) == 3  # 25 candidates a request

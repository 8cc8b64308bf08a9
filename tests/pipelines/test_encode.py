"""tf.Example encoding through tfx-bsl, and the stable request split."""

import numpy as np
import pyarrow as pa
import pytest

from cvr_tf.compat import tf
from cvr_tf.features import default_spec
from pipelines.encode import ExampleEncoder, eval_mask, request_hashes, shard_indices


def test_hashes_are_pinned_farmhash_fingerprints():
    # A change here moves requests between splits and shards of already built spans.
    hashes = request_hashes(pa.array(["r20260105-000000", "r20260105-000001", "abc"]))
    assert hashes.tolist() == [8771303460103737667, 5166347863237713481, 2640714258260161385]
    assert eval_mask(hashes, 0.5).tolist() == [False, False, True]
    assert shard_indices(hashes, 4).tolist() == [3, 1, 0]
    assert eval_mask(hashes, 0.0).sum() == 0 and eval_mask(hashes, 1.0).all()


def test_split_fraction_and_shards_are_balanced():
    hashes = request_hashes(pa.array([f"r{i}" for i in range(20_000)]))
    assert abs(eval_mask(hashes, 0.1).mean() - 0.1) < 0.01
    assert np.bincount(shard_indices(hashes, 4), minlength=4).min() > 4_500


def test_bad_split_arguments_name_the_argument():
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        eval_mask(np.zeros(1, np.int64), 1.5)
    with pytest.raises(ValueError, match="num_shards must be positive"):
        shard_indices(np.zeros(1, np.int64), 0)


def test_encoded_examples_have_the_spec_dtypes():
    spec = default_spec()
    columns = spec.log_columns()
    values = {"string": pa.array(["a b", "c"]), "int64": pa.array([3, 4]),
              "float32": pa.array([1.25, 2.5], pa.float32())}
    table = pa.table({c: values[d] for c, d in columns.items()})
    records = ExampleEncoder(columns, spec.tfmd_schema()).encode(table)
    assert records.shape == (2,)
    parsed = tf.io.parse_example(list(records), spec.parsing_spec())
    assert parsed["item_price"].numpy().tolist() == [1.25, 2.5]
    assert parsed["position"].numpy().tolist() == [3, 4]
    assert parsed["query"].numpy().tolist() == [b"a b", b"c"]
    example = tf.train.Example.FromString(records[0])
    assert set(example.features.feature) == set(columns)
    with pytest.raises(ValueError, match="dtypes tf.Example cannot hold"):
        ExampleEncoder({"x": "float64"})

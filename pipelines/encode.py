"""Arrow tables -> serialized tf.Examples (tfx-bsl, batched), and the train/eval split.

Encoding goes through tfx-bsl's C++ ``RecordBatchToExamplesEncoder`` a table at a time: each
column becomes a one-value-per-row list column of the tf.Example type the spec gives
(string -> bytes_list, int64 -> int64_list, float32 -> float_list), so a log ``float64`` price
is written as float32, exactly as ``spec.log_columns()`` and ``spec.parsing_spec()`` say.

Split and shard come from one stable 64-bit hash of the request key,

    h(request) = FarmHash Fingerprint64(request_id bytes) mod (2^63 - 1)
    split      = eval  if  h mod 10^6 < eval_fraction * 10^6  else train
    shard      = (h div 10^6) mod num_shards

(``tf.strings.to_hash_bucket_fast``, the hash TensorFlow documents as stable across processes
and platforms; never Python's salted ``hash()``), so all candidates of a request land in the same
split and shard, in every run and on every worker.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from cvr_tf.compat import tf

SPLIT_RESOLUTION = 1_000_000
_HASH_RANGE = 2**63 - 1
_EXAMPLE_TYPES = {"string": pa.binary(), "int64": pa.int64(), "float32": pa.float32()}


def request_hashes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable non-negative 64-bit hashes of string keys (see the module docstring)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    strings = keys.to_numpy(zero_copy_only=False)
    return tf.strings.to_hash_bucket_fast(strings, _HASH_RANGE).numpy()


def eval_mask(hashes: np.ndarray, eval_fraction: float) -> np.ndarray:
    """True for rows in the eval split."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    return hashes % SPLIT_RESOLUTION < round(eval_fraction * SPLIT_RESOLUTION)


def shard_indices(hashes: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard of each row, in ``[0, num_shards)``."""
    if num_shards <= 0:
        raise ValueError(f"num_shards must be positive, got {num_shards}")
    return (hashes // SPLIT_RESOLUTION) % num_shards


class ExampleEncoder:
    """Encodes tables whose columns are conformed to ``columns``' dtypes as tf.Examples.

    Args:
      columns: column -> ``string``/``int64``/``float32``, in the order features are written
        (``spec.log_columns()``).
      schema: the tensorflow-metadata schema of the examples (``spec.tfmd_schema()``).
    """

    def __init__(self, columns: Mapping[str, str], schema=None):
        unknown = {c: d for c, d in columns.items() if d not in _EXAMPLE_TYPES}
        if unknown:
            raise ValueError(f"columns {unknown} have dtypes tf.Example cannot hold; use one of "
                             f"{', '.join(_EXAMPLE_TYPES)}")
        self._columns = dict(columns)
        self._encoder = RecordBatchToExamplesEncoder(schema)

    def encode(self, table: pa.Table) -> np.ndarray:
        """Serialized tf.Examples, one per row, as a numpy object array of bytes."""
        n = table.num_rows
        offsets = pa.array(np.arange(n + 1, dtype=np.int32))
        arrays = []
        for column, dtype in self._columns.items():
            values = table.column(column).combine_chunks()
            arrays.append(pa.ListArray.from_arrays(offsets, pc.cast(values, _EXAMPLE_TYPES[dtype])))
        batch = pa.RecordBatch.from_arrays(arrays, names=list(self._columns))
        records = np.empty(n, dtype=object)
        records[:] = self._encoder.encode(batch)
        return records


__all__ = ["ExampleEncoder", "SPLIT_RESOLUTION", "eval_mask", "request_hashes", "shard_indices"]

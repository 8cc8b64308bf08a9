"""Scoring requests read from files: JSON lists of requests, or TFRecords of ``tf.Example`` rows.

A *request* is one search: its candidates' features as arrays of equal length, keyed by the
signature's input names. Two file formats hold them:

* JSON: ``[{"user_id": ["u1", "u1"], "item_id": ["i7", "i9"], "item_price": [9.5, 3.0]}, ...]``,
  one object per request; a scalar value is repeated for every candidate.
* TFRecord (optionally ``.gz``) of ``tf.Example`` rows, one per candidate, as the pipeline writes
  them; rows are grouped into requests by a key feature (``request_id``), in order of first
  appearance.

Values are cast to the dtypes of the model's signature (from GetModelMetadata), so files stay
independent of the model's exact types. Features the signature does not take (labels, the group
key) are ignored; a missing one is an error naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np
from tensorflow.core.example import example_pb2

from cvr_tf.compat import tf
from serving.tensors import InputSpec

Request = dict[str, np.ndarray]


def as_input_array(values, spec: InputSpec, count: int | None = None) -> np.ndarray:
    """Casts a feature's candidate values to the dtype the signature expects.

    Args:
        values: A list of values, or a scalar to repeat ``count`` times.
        spec: The signature input.
        count: Candidates in the request, for scalars.

    Returns:
        A 1-D array (``object`` array of ``bytes`` for string inputs).
    """
    if np.isscalar(values) and count is not None:
        values = [values] * count
    if spec.dtype == tf.string:
        return np.array(
            [value.encode() if isinstance(value, str) else bytes(value) for value in values],
            dtype=object,
        )
    return np.asarray(values, dtype=spec.dtype.as_numpy_dtype)


def _request_length(record: Mapping, names: list[str]) -> int:
    lengths = {len(record[name]) for name in names if not np.isscalar(record[name])}
    if len(lengths) > 1:
        raise ValueError(f"request features have different candidate counts {sorted(lengths)}")
    return lengths.pop() if lengths else 1


def _json_key(record: Mapping, group_key: str, index: int) -> str:
    key = record.get(group_key, index)
    if isinstance(key, list):
        key = key[0] if key else index
    return str(key)


def requests_from_json(
    path: str | os.PathLike, specs: Mapping[str, InputSpec], group_key: str = "request_id"
) -> tuple[list[str], list[Request]]:
    """Reads a JSON list of requests (see module docstring).

    Args:
        path: The JSON file.
        specs: The signature's inputs (names and dtypes).
        group_key: The field naming a request, if present; requests without it are named by
            their position.

    Returns:
        Request names and one input dict per request.

    Raises:
        ValueError: when the file is not a list of objects or a request lacks an input.
    """
    with open(path, encoding="utf-8") as handle:
        records = json.load(handle)
    if not isinstance(records, list) or not all(isinstance(item, dict) for item in records):
        raise ValueError(f"{path} must hold a JSON list of objects (feature -> candidate values)")
    keys, requests = [], []
    for index, record in enumerate(records):
        missing = sorted(set(specs) - set(record))
        if missing:
            raise ValueError(f"request {index} of {path} lacks the signature inputs {missing}")
        count = _request_length(record, list(specs))
        keys.append(_json_key(record, group_key, index))
        requests.append(
            {name: as_input_array(record[name], spec, count) for name, spec in specs.items()}
        )
    return keys, requests


def _feature_value(example: example_pb2.Example, name: str):
    feature = example.features.feature.get(name)
    kind = feature.WhichOneof("kind") if feature is not None else None
    values = getattr(feature, kind).value if kind else []
    return values[0] if len(values) else None


def requests_from_tfrecord(
    path: str | os.PathLike, specs: Mapping[str, InputSpec], group_key: str = "request_id"
) -> tuple[list[str], list[Request]]:
    """Reads ``tf.Example`` rows and groups them into requests by ``group_key``.

    Args:
        path: A TFRecord file; a ``.gz`` suffix means GZIP compression.
        specs: The signature's inputs; each row must carry one value for each.
        group_key: The feature naming a row's request.

    Returns:
        The group keys (as strings, in order of first appearance) and one input dict per group.

    Raises:
        ValueError: when a row lacks the group key or an input.
    """
    compression = "GZIP" if os.fspath(path).endswith(".gz") else ""
    groups: dict[str, dict[str, list]] = {}
    for row, record in enumerate(tf.data.TFRecordDataset(os.fspath(path), compression)):
        example = example_pb2.Example.FromString(record.numpy())
        key = _feature_value(example, group_key)
        if key is None:
            raise ValueError(f"row {row} of {path} has no '{group_key}' feature; pass --group_key")
        key = key.decode() if isinstance(key, bytes) else str(key)
        columns = groups.setdefault(key, {name: [] for name in specs})
        for name in specs:
            value = _feature_value(example, name)
            if value is None:
                raise ValueError(f"row {row} of {path} has no value for signature input '{name}'")
            columns[name].append(value)
    requests = [
        {name: as_input_array(values, specs[name]) for name, values in columns.items()}
        for columns in groups.values()
    ]
    return list(groups), requests


def read_requests(
    path: str | os.PathLike, specs: Mapping[str, InputSpec], group_key: str = "request_id"
) -> tuple[list[str], list[Request]]:
    """Reads requests from a ``.json`` file, or from a TFRecord file (any other name).

    Returns:
        Request names and the requests (see :func:`requests_from_json`,
        :func:`requests_from_tfrecord`).
    """
    if os.fspath(path).endswith(".json"):
        return requests_from_json(path, specs, group_key)
    return requests_from_tfrecord(path, specs, group_key)

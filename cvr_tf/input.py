"""Reading the pipeline's TFRecord spans with ``tf.data``.

The pipeline (:mod:`pipelines.build_tfrecords`) writes one span per day, TFX style::

    <data_dir>/span=YYYY-MM-DD/train-SSSSS-of-NNNNN.tfrecord.gz
    <data_dir>/span=YYYY-MM-DD/eval-SSSSS-of-NNNNN.tfrecord.gz
    <data_dir>/span=YYYY-MM-DD/_SUCCESS          written last; only such spans are trusted

This module owns that layout (the pipeline imports it from here, so writer and reader cannot
drift apart) and turns a date range of spans into batches of parsed features.

Example:

    spec = resolve_spec("")
    dataset = make_dataset("/data/spans", date(2026, 1, 5), date(2026, 1, 18), spec,
                           batch_size=1024, num_epochs=None)
    features = next(iter(dataset))     # {"item_id": <tf.Tensor [1024] string>, ...}
"""

from __future__ import annotations

import datetime
import gzip
import os
import re
import struct
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from absl import logging

from cvr_tf import request_batches
from cvr_tf.compat import tf
from cvr_tf.features import FeatureSpec

SPAN_PREFIX = "span="
SUCCESS_FILE = "_SUCCESS"
SPLITS = ("train", "eval")
RECORD_SUFFIX = ".tfrecord.gz"


def span_dirname(day: datetime.date) -> str:
    """Directory name of a day's span: ``span=YYYY-MM-DD``."""
    return f"{SPAN_PREFIX}{day.isoformat()}"


def span_path(data_dir: str | os.PathLike, day: datetime.date) -> str:
    """Path of a day's span under ``data_dir``."""
    return os.path.join(os.fspath(data_dir), span_dirname(day))


def span_day(span: str | os.PathLike) -> datetime.date:
    """The day of a span directory (``.../span=YYYY-MM-DD``), the inverse of :func:`span_path`."""
    name = os.path.basename(os.path.normpath(os.fspath(span)))
    return datetime.date.fromisoformat(name.removeprefix(SPAN_PREFIX))


def shard_filename(split: str, shard: int, num_shards: int) -> str:
    """``{split}-SSSSS-of-NNNNN.tfrecord.gz``, the name of one shard of a span."""
    return f"{split}-{shard:05d}-of-{num_shards:05d}{RECORD_SUFFIX}"


def is_complete_span(path: str | os.PathLike) -> bool:
    """True when the span directory holds ``_SUCCESS``, which the pipeline writes last."""
    return os.path.isfile(os.path.join(os.fspath(path), SUCCESS_FILE))


def days_in_range(start: datetime.date, end: datetime.date) -> list[datetime.date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"end date {end} is before start date {start}; pass start <= end")
    return [start + datetime.timedelta(days=i) for i in range((end - start).days + 1)]


def list_spans(data_dir: str | os.PathLike, start: datetime.date,
               end: datetime.date) -> list[str]:
    """Complete span directories for the days ``start..end`` (inclusive), oldest first.

    Days whose span is missing or incomplete (no ``_SUCCESS``: a killed or running pipeline)
    are logged and left out.

    Raises:
      FileNotFoundError: no complete span in the range; the message lists the missing and
        incomplete days and how to build them.
    """
    data_dir = os.fspath(data_dir)
    spans, missing, incomplete = [], [], []
    for day in days_in_range(start, end):
        path = span_path(data_dir, day)
        if is_complete_span(path):
            spans.append(path)
        elif os.path.isdir(path):
            incomplete.append(day.isoformat())
        else:
            missing.append(day.isoformat())
    problems = []
    if missing:
        problems.append(f"missing days: {', '.join(missing)}")
    if incomplete:
        problems.append(f"incomplete spans (no {SUCCESS_FILE}): {', '.join(incomplete)}")
    if not spans:
        raise FileNotFoundError(
            f"no complete span in {data_dir} for {start}..{end} ({'; '.join(problems)}); build "
            f"them with `python -m pipelines.build_tfrecords --output={data_dir} "
            f"--start_date={start} --end_date={end} --logs=...`")
    if problems:
        logging.warning("Spans %s..%s in %s: using %d complete span(s); %s.", start, end, data_dir,
                        len(spans), "; ".join(problems))
    return spans


def span_files(spans: list[str], split: str) -> list[str]:
    """The ``split`` shard files of the given span directories, in span then shard order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    files = []
    for span in spans:
        files.extend(sorted(os.path.join(span, name) for name in os.listdir(span)
                            if name.startswith(f"{split}-") and name.endswith(RECORD_SUFFIX)))
    return files


def unreadable_shards(spans: list[str]) -> dict[str, str]:
    """The shard files of the spans (both splits) that cannot be read to the end, each with
    TensorFlow's reason: what a ``DataLossError`` in training, which names no file, came from.

    Reads every record of every shard, so call it only once reading has failed.
    """
    unreadable = {}
    for path in [f for split in SPLITS for f in span_files(spans, split)]:
        try:
            tf.data.TFRecordDataset(path, compression_type="GZIP").reduce(0, lambda n, _: n + 1)
        except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as error:
            unreadable[path] = op_error_reason(error)
    return unreadable


def op_error_reason(error: tf.errors.OpError) -> str:
    """The reason of a TensorFlow op error without the function and op names around it."""
    reason = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message.splitlines()[0])
    return reason.split(" [Op:")[0].strip()


class SpanSchemaError(ValueError):
    """The spans lack a column the spec reads, or hold it with another type."""


_EXAMPLE_KINDS = {"string": "bytes_list", "int64": "int64_list", "float32": "float_list"}


def _first_record(path: str) -> bytes | None:
    """The first record of a GZIP TFRecord file, or None for an empty file.

    Read in plain Python, with no TF op, so it is safe inside a ``dataset_fn`` that a
    distribution strategy traces. A record is ``uint64 length, uint32 crc, data, uint32 crc``.
    """
    with gzip.open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12:
            return None
        (length,) = struct.unpack("<Q", header[:8])
        return handle.read(length)


def check_span_columns(files: Sequence[str], parsing_spec: dict[str, Any]) -> None:
    """Checks on the first record of the spans that it has every parsed column, with its type.

    A spec that reads a column the spans lack would otherwise fail only inside the ``tf.data``
    graph, at the first batch, naming no file and no fix.

    Args:
      files: span files (``.tfrecord.gz``); the first non-empty one is read.
      parsing_spec: column -> ``tf.io.FixedLenFeature``, from ``spec.parsing_spec()``.

    Raises:
      SpanSchemaError: naming the missing or mistyped columns, the file and the fix.
    """
    for path in files:
        record = _first_record(path)
        if record is not None:
            break
    else:
        return
    example = tf.train.Example.FromString(record)
    fix = ("rebuild the spans with this spec (pipelines.build_tfrecords --feature_spec=... "
           "--overwrite) or train with the spec that built them")
    missing = sorted(set(parsing_spec) - set(example.features.feature))
    if missing:
        raise SpanSchemaError(f"span file {path} has no column(s) {', '.join(missing)} that the "
                              f"feature spec reads; {fix}")
    for column, feature in parsing_spec.items():
        want = _EXAMPLE_KINDS[feature.dtype.name]
        have = example.features.feature[column].WhichOneof("kind")
        if have != want:
            raise SpanSchemaError(
                f"span file {path} holds column {column!r} as {have} but the feature spec reads "
                f"it as {feature.dtype.name}; fix the column's dtype in the spec or {fix}")


def make_dataset(data_dir: str | os.PathLike, start: datetime.date, end: datetime.date,
                 spec: FeatureSpec, split: str = "train", batch_size: int = 1024,
                 shuffle: bool = True, num_epochs: int | None = 1, seed: int = 0,
                 drop_remainder: bool = False, deterministic: bool | None = None,
                 shuffle_buffer_size: int | None = None, cycle_length: int = 4,
                 block_length: int = 64, options: tf.data.Options | None = None,
                 num_input_pipelines: int = 1, input_pipeline_id: int = 0,
                 group_by_request: bool = False,
                 exclude_days: Collection[datetime.date] = ()) -> tf.data.Dataset:
    """Batches of parsed features from the complete spans of ``start..end``.

    Files are read interleaved (``cycle_length`` at a time, in parallel), records are shuffled
    in a buffer, batched, then parsed a whole batch at a time with ``tf.io.parse_example`` (one
    op per batch instead of one per record), and prefetched. With ``group_by_request`` the
    shuffled and sharded elements are whole requests (runs of one ``spec.group_key`` in a file)
    instead of records, and batches are cut from their rows laid end to end: full batches of
    whole requests except the first and last of each (:mod:`cvr_tf.request_batches`), for
    listwise losses.

    Args:
      data_dir: the pipeline's ``--output`` directory.
      start: first day, inclusive.
      end: last day, inclusive.
      spec: feature spec; every column of ``spec.parsing_spec()`` is parsed (features including
        ``train_only`` ones, the group key, the label and the weight).
      split: ``train`` or ``eval``.
      batch_size: examples per batch.
      shuffle: shuffle file order and records (each epoch anew).
      num_epochs: passes over the data; None repeats forever.
      seed: seed of both shuffles.
      drop_remainder: drop the last, smaller batch.
      deterministic: element order of the parallel stages; None keeps tf.data's default
        (deterministic unless ``options`` say otherwise).
      shuffle_buffer_size: elements in the shuffle buffer, records (default ``max(10_000, 4 *
        batch_size)``) or, with ``group_by_request``, requests (default ``max(1_000,
        batch_size // 4)``, about as many rows for requests of tens of candidates).
      cycle_length: files read at the same time.
      block_length: consecutive elements (records or requests) taken from one file before
        moving to the next.
      options: ``tf.data.Options`` applied to the result.
      num_input_pipelines: workers reading disjoint parts of the data (parameter-server
        training): each takes every n-th file when there are at least n files, else every n-th
        record (request, with ``group_by_request``), before any parsing.
      input_pipeline_id: this worker's part, in ``[0, num_input_pipelines)``.
      group_by_request: shuffle, shard and batch whole requests (see above).
      exclude_days: days of the range whose spans are left out (e.g. spans with immature
        labels, :mod:`cvr_tf.delayed_feedback`).

    Returns:
      A dataset of dicts ``column -> tensor [batch]``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None (forever), got {num_epochs}")
    excluded = {span_path(data_dir, day) for day in exclude_days}
    files = span_files([s for s in list_spans(data_dir, start, end) if s not in excluded], split)
    if not files:
        raise FileNotFoundError(
            f"the complete spans of {start}..{end} in {os.fspath(data_dir)} hold no {split!r} "
            "shards; rebuild them with pipelines.build_tfrecords --overwrite")
    if not 0 <= input_pipeline_id < num_input_pipelines:
        raise ValueError(f"input_pipeline_id {input_pipeline_id} is not in "
                         f"[0, {num_input_pipelines})")
    parsing_spec: dict[str, Any] = spec.parsing_spec()
    check_span_columns(files, parsing_spec)
    shard_files = len(files) >= num_input_pipelines
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shard_files:
        dataset = dataset.shard(num_input_pipelines, input_pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if group_by_request:
        def read_file(path: tf.Tensor) -> tf.data.Dataset:
            return request_batches.file_requests(path, spec.group_key)
        default_buffer = max(1_000, batch_size // 4)
    else:
        def read_file(path: tf.Tensor) -> tf.data.Dataset:
            return tf.data.TFRecordDataset(path, compression_type="GZIP")
        default_buffer = max(10_000, 4 * batch_size)
    dataset = dataset.interleave(
        read_file, cycle_length=min(cycle_length, len(files)), block_length=block_length,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if not shard_files:
        dataset = dataset.shard(num_input_pipelines, input_pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer_size or default_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.repeat(num_epochs)
    if group_by_request:
        dataset = request_batches.pack_requests(dataset, batch_size, drop_remainder)
    else:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(lambda records: tf.io.parse_example(records, parsing_spec),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(options) if options is not None else dataset



def read_columns(data_dir: str | os.PathLike, start: datetime.date, end: datetime.date,
                 spec: FeatureSpec, columns: Sequence[str] | None = None,
                 splits: Sequence[str] = SPLITS, batch_size: int = 8192,
                 exclude_days: Collection[datetime.date] = ()) -> dict[str, np.ndarray]:
    """Parsed columns of the spans of ``start..end`` as numpy arrays, in file order.

    For evaluation and baselines that need whole columns in memory (eval windows, not training
    windows). ``columns`` defaults to every column of ``spec.parsing_spec()``.
    """
    parts: dict[str, list[np.ndarray]] = {}
    for split in splits:
        for batch in make_dataset(data_dir, start, end, spec, split=split,
                                  batch_size=batch_size, shuffle=False,
                                  exclude_days=exclude_days):
            for name in columns or batch:
                parts.setdefault(name, []).append(batch[name].numpy())
    if not parts:
        raise ValueError(f"no examples in the {', '.join(splits)} split(s) of {start}..{end}")
    return {name: np.concatenate(values) for name, values in parts.items()}

__all__ = ["RECORD_SUFFIX", "SPAN_PREFIX", "SPLITS", "SUCCESS_FILE", "SpanSchemaError",
           "check_span_columns", "days_in_range", "is_complete_span", "list_spans",
           "make_dataset", "read_columns", "shard_filename", "span_dirname", "span_files",
           "op_error_reason", "span_day", "span_path", "unreadable_shards"]

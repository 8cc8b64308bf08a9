"""Span layout on disk: staging, atomic completion, idempotence, per-span statistics.

A span is built in a staging directory ``<output>/.tmp-<run_id>/span=D`` and only published
when everything is in it::

    1. shards       train-SSSSS-of-NNNNN.tfrecord.gz, eval-SSSSS-of-NNNNN.tfrecord.gz, each
                    the concatenation of the parts its chunks wrote (in _parts/); with
                    request_relative features, the encoding of the parts' Arrow rows
    2. metadata     stats.json, token_counts/<table>.tsv, numeric_statistics.json (see
                    cvr_tf.statistics), feature_spec.json (the spec that built the span, see
                    cvr_tf.span_spec), dead_letter-00000-of-00001.jsonl; _parts/ deleted
    3. _SUCCESS     last
    4. rename       staging -> <output>/span=D (an existing span is first renamed aside, then
                    deleted once the new one is in place)

A killed run therefore leaves either the old complete span, no span, or the new complete span at
``<output>/span=D``, never a mix; readers (:func:`cvr_tf.input.list_spans`) trust only
directories holding ``_SUCCESS``. Renames are atomic on a POSIX filesystem; with several
workers, ``--output`` must be a filesystem all of them see.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
from absl import logging

from cvr_tf.compat import tf
from cvr_tf.features import FeatureSpec
from cvr_tf.input import (
    RECORD_SUFFIX,
    SPLITS,
    SUCCESS_FILE,
    is_complete_span,
    shard_filename,
    span_dirname,
    span_path,
)
from cvr_tf.span_spec import read_span_spec, self_contained, unmet_needs, write_span_spec
from cvr_tf.statistics import ColumnStatistics, write_statistics
from cvr_tf.vocabulary import TOKEN_COUNTS_DIR, write_token_counts
from pipelines.validation import ColumnRule, dead_letter_lines, spec_rules

STATS_FILE = "stats.json"
DEAD_LETTER_FILE = "dead_letter-00000-of-00001.jsonl"
RUN_DEAD_LETTER_DIR = "dead_letter"
TEMP_PREFIX = ".tmp-"
PARTS_DIR = "_parts"
ROWS_SUFFIX = ".arrow"  # parts of unencoded rows (specs with request_relative features)
# zlib level 1: about 4x faster than the default 6 for about 20% larger shards; any level reads
# back the same (GZIP TFRecords).
COMPRESSION_LEVEL = 1


@dataclasses.dataclass
class SpanStats:
    """Row accounting of a span; ``rows_in == rows_written + rows_rejected`` always.

    Attributes:
      rows_in: rows read from the day's impressions partition.
      rows_written: rows written as tf.Examples (``train_rows + eval_rows``).
      rows_rejected: rows sent to the dead-letter file.
      rejected_by_reason: reason -> rejected rows.
      positives: written rows with label 1.
      train_rows: rows in the train split.
      eval_rows: rows in the eval split.
      train_positives: positives in the train split.
      eval_positives: positives in the eval split.
      positives_by_label: label -> its ``positives``, ``train_positives`` and
        ``eval_positives`` (the fields above count the spec's ``label``).
    """

    rows_in: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    positives: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    train_positives: int = 0
    eval_positives: int = 0
    positives_by_label: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def merge(self, other: SpanStats) -> SpanStats:
        """The sum of two accountings."""
        reasons = _summed(self.rejected_by_reason, other.rejected_by_reason)
        labels = {label: _summed(self.positives_by_label.get(label, {}), counts)
                  for label, counts in other.positives_by_label.items()}
        labels = {**self.positives_by_label, **labels}
        totals = {f.name: getattr(self, f.name) + getattr(other, f.name)
                  for f in dataclasses.fields(self)
                  if f.name not in ("rejected_by_reason", "positives_by_label")}
        return SpanStats(**totals, rejected_by_reason=dict(sorted(reasons.items())),
                         positives_by_label=labels)

    def check(self, where: str) -> None:
        """Raises when rows went missing (a pipeline bug, never a data problem)."""
        if self.rows_in != self.rows_written + self.rows_rejected or \
                self.rows_written != self.train_rows + self.eval_rows or \
                self.rows_rejected != sum(self.rejected_by_reason.values()):
            raise AssertionError(f"row accounting of {where} does not add up: {self}")


def _summed(first: Mapping[str, int], second: Mapping[str, int]) -> dict[str, int]:
    out = dict(first)
    for key, count in second.items():
        out[key] = out.get(key, 0) + count
    return out


def merge_stats(parts: Iterable[SpanStats]) -> SpanStats:
    """Sum of several accountings."""
    total = SpanStats()
    for part in parts:
        total = total.merge(part)
    return total


def temp_root(output: str | os.PathLike, run_id: str) -> str:
    """The run's staging root, ``<output>/.tmp-<run_id>``."""
    return os.path.join(os.fspath(output), f"{TEMP_PREFIX}{run_id}")


def staging_dir(output: str | os.PathLike, run_id: str, day: datetime.date) -> str:
    """Where the run builds the span of ``day`` before publishing it."""
    return os.path.join(temp_root(output, run_id), span_dirname(day))


# A span records its label definitions under one of these (ImpressionProcessor.data_definition).
_LABEL_OPTIONS = ("labels", "label")


class SpanDefinitionError(ValueError):
    """A complete span was built with other label or split options than this run's."""


def plan_spans(output: str | os.PathLike, days: Sequence[datetime.date], overwrite: bool,
               definition: Mapping[str, object] | None = None,
               observed: Mapping[str, str | None] | None = None,
               spec: FeatureSpec | None = None
               ) -> tuple[list[datetime.date], list[datetime.date]]:
    """Days to build and days skipped (their span is complete and ``overwrite`` is off).

    A complete span whose labels were immature when it was built (its ``maturity`` record,
    :func:`pipelines.labels.label_maturity`) is rebuilt once its event logs are observed further
    than they were then, so that daily runs replace provisional labels as the events arrive.

    Args:
      output: the pipeline's output directory.
      days: the days of the run.
      overwrite: rebuild complete spans.
      definition: this run's label and split options (``ImpressionProcessor.data_definition``);
        a complete span recording other values is refused unless ``overwrite``, so that one
        output never mixes two label definitions.
      observed: label -> the ISO day its event log is now observed through (None: no
        partition), for the labels joined with events.
      spec: this run's feature spec; a complete span it would write other data for (a column
        it lacks, or a column validated with other bounds or ``default_value``) is refused
        unless ``overwrite``. A change that keeps the data (an embedding width, a dropped
        feature) is no reason to rebuild.

    Raises:
      SpanDefinitionError: naming the span, the differing option and the fix.
    """
    build, skip = [], []
    for day in days:
        complete = is_complete_span(span_path(output, day))
        if complete and not overwrite and definition is not None:
            _check_definition(output, day, definition)
        if complete and not overwrite and spec is not None:
            _check_spec(output, day, spec)
        newer = (_newly_observed(read_span_stats(output, day), observed)
                 if complete and not overwrite and observed else [])
        (skip if complete and not overwrite and not newer else build).append(day)
        if newer:
            logging.info("Span %s is complete but its label(s) %s were immature; their events "
                         "are observed further now: rebuilding it.", day, ", ".join(newer))
        elif complete and overwrite:
            logging.info("Span %s is complete; rebuilding it (--overwrite).", day)
        elif complete:
            logging.info("Span %s is complete; skipping it (pass --overwrite to rebuild).", day)
        elif os.path.isdir(span_path(output, day)):
            logging.info("Span %s has no %s (an interrupted run); rebuilding it.", day,
                         SUCCESS_FILE)
    return build, skip


def _check_definition(output: str | os.PathLike, day: datetime.date,
                      definition: Mapping[str, object]) -> None:
    recorded = read_span_stats(output, day)
    for option, value in definition.items():
        built_option = option
        if option in _LABEL_OPTIONS and option not in recorded:  # a spec with/without "labels"
            built_option = next((o for o in _LABEL_OPTIONS if o in recorded), option)
        if recorded.get(built_option) != value:
            asks = f"{option} " if built_option != option else ""
            raise SpanDefinitionError(
                f"span {span_path(output, day)} was built with {built_option} "
                f"{json.dumps(recorded.get(built_option))} but this run asks for {asks}"
                f"{json.dumps(value)}; pass --overwrite to rebuild the window's spans with the "
                "new options (or --output to a new directory), never mix the two")


def _check_spec(output: str | os.PathLike, day: datetime.date, spec: FeatureSpec) -> None:
    built = read_span_spec(span_path(output, day))
    if built is None:  # built before spans recorded their spec: nothing to compare
        return
    spec = self_contained(spec)
    built_rules = {rule.column: rule for rule in spec_rules(built)}
    pairs = [(built_rules[rule.column], rule) for rule in spec_rules(spec)
             if rule.column in built_rules]
    changed = [f"column {new.column!r} is validated with {_rule_change(old, new)}"
               for old, new in pairs if new.dtype == old.dtype and new != old]
    problems = unmet_needs(spec, built) + changed
    if problems:
        raise SpanDefinitionError(
            f"span {span_path(output, day)} was built with another feature spec ("
            f"{'; '.join(problems)}); pass --overwrite to rebuild the window's spans with this "
            "spec (or --output to a new directory), never mix the two")


def _rule_change(built: ColumnRule, new: ColumnRule) -> str:
    """``min_value None -> 0.0, default None -> ''``: the fields of ``new`` that differ."""
    return ", ".join(f"{field.name} {getattr(built, field.name)!r} -> {getattr(new, field.name)!r}"
                     for field in dataclasses.fields(ColumnRule)
                     if getattr(built, field.name) != getattr(new, field.name))


def _newly_observed(stats: Mapping[str, Any], observed: Mapping[str, str | None]) -> list[str]:
    """The span's immature labels whose event logs are observed further than when it was
    built."""
    newer = []
    for label, record in stats.get("maturity", {}).items():
        now, then = observed.get(label), record.get("events_observed_through")
        if not record.get("mature", True) and now is not None and (then is None or now > then):
            newer.append(label)
    return newer


def remove_stale_staging(output: str | os.PathLike) -> list[str]:
    """Deletes staging roots that killed runs left behind; returns their paths.

    Assumes one pipeline run per output directory at a time.
    """
    output = os.fspath(output)
    stale = sorted(os.path.join(output, n) for n in os.listdir(output)
                   if n.startswith(TEMP_PREFIX)) if os.path.isdir(output) else []
    for path in stale:
        logging.info("Removing %s, left by an interrupted run.", path)
        shutil.rmtree(path)
    return stale


def write_records(path: str, records: Iterable[bytes]) -> None:
    """Writes serialized records as one GZIP TFRecord file (a single gzip member)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP", compression_level=COMPRESSION_LEVEL)
    with tf.io.TFRecordWriter(path, options) as writer:
        for record in records:
            writer.write(record)


def part_path(staging: str, split: str, shard: int, chunk_id: str, rows: bool = False) -> str:
    """Where a chunk writes its records (or its unencoded ``rows``) of one shard, before the
    shard is assembled."""
    suffix = ROWS_SUFFIX if rows else RECORD_SUFFIX
    return os.path.join(staging, PARTS_DIR, f"{split}-{shard:05d}-{chunk_id}{suffix}")


def write_rows(path: str, rows: pa.Table) -> None:
    """Writes a chunk's unencoded rows of one shard as an Arrow IPC file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
        writer.write_table(rows)


def assemble_request_shard(staging: str, split: str, shard: int, num_shards: int,
                           parts: Sequence[str], encode: Callable[[pa.Table], Any]) -> str:
    """Encodes the rows of a shard's Arrow parts (in the given order) into the shard: the
    shard holds whole requests, so ``encode`` derives their per-request columns."""
    tables = []
    for part in parts:
        with pa.memory_map(part) as source:
            tables.append(pa.ipc.open_file(source).read_all())
    path = os.path.join(staging, shard_filename(split, shard, num_shards))
    write_records(f"{path}.tmp", encode(pa.concat_tables(tables)))
    os.replace(f"{path}.tmp", path)
    return path


def assemble_shard(staging: str, split: str, shard: int, num_shards: int,
                   parts: Sequence[str]) -> str:
    """Concatenates part files, in the given order, into one shard; returns its path.

    Each part is a complete gzip member and a GZIP TFRecord file is a gzip stream, which may
    hold several members, so the concatenation is the shard (no decompression). The parts stay
    until :func:`complete_span`, so a retried assembly gives the same shard.
    """
    path = os.path.join(staging, shard_filename(split, shard, num_shards))
    with open(f"{path}.tmp", "wb") as shard_file:
        for part in parts:
            with open(part, "rb") as part_file:
                shutil.copyfileobj(part_file, shard_file, 1 << 22)
    os.replace(f"{path}.tmp", path)
    return path


def complete_span(directory: str, num_shards: int, stats: Mapping[str, object],
                  token_counts: Mapping[str, Mapping[str, int]],
                  rejected: Sequence[pa.Table], spec: FeatureSpec, *,
                  statistics: Mapping[str, ColumnStatistics] | None = None) -> None:
    """Writes a staged span's metadata, empty files for shards without rows, then ``_SUCCESS``.

    Args:
      directory: the staging directory holding the written shards.
      num_shards: shards per split.
      stats: the span's ``stats.json`` content.
      token_counts: table -> token -> count of the span's train split.
      rejected: dead-letter tables, written in order to one JSON-lines file.
      spec: the feature spec that built the span, recorded in it (:mod:`cvr_tf.span_spec`).
      statistics: numeric column -> statistics of the span's train split (none: no column).
    """
    os.makedirs(directory, exist_ok=True)
    for split in SPLITS:
        for shard in range(num_shards):
            path = os.path.join(directory, shard_filename(split, shard, num_shards))
            if not os.path.exists(path):
                write_records(path, [])
    shutil.rmtree(os.path.join(directory, PARTS_DIR), ignore_errors=True)
    write_token_counts(os.path.join(directory, TOKEN_COUNTS_DIR), token_counts)
    write_statistics(directory, statistics or {})
    write_span_spec(directory, spec)
    if any(table.num_rows for table in rejected):
        write_dead_letters(os.path.join(directory, DEAD_LETTER_FILE), rejected)
    with open(os.path.join(directory, STATS_FILE), "w", encoding="utf-8") as handle:
        json.dump(stats, handle, indent=2, sort_keys=False)
        handle.write("\n")
    with open(os.path.join(directory, SUCCESS_FILE), "w", encoding="utf-8"):
        pass


def write_dead_letters(path: str, rejected: Sequence[pa.Table]) -> None:
    """Writes dead-letter tables as JSON lines (under a temporary name, then renamed)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        for table in rejected:
            for line in dead_letter_lines(table):
                handle.write(line + "\n")
    os.replace(f"{path}.tmp", path)


def publish_span(staging: str, final: str) -> None:
    """Moves a completed staging directory to its final place, replacing an older span.

    Safe to call again after it succeeded (a runner retry): then it does nothing.
    """
    if not os.path.isdir(staging):
        if is_complete_span(final):
            return
        raise FileNotFoundError(f"staging directory {staging} of span {final} is gone")
    if not is_complete_span(staging):
        raise RuntimeError(f"refusing to publish {staging}: it has no {SUCCESS_FILE}")
    if os.path.exists(final):
        replaced = f"{staging}.replaced"
        os.rename(final, replaced)
        os.rename(staging, final)
        shutil.rmtree(replaced)
    else:
        os.rename(staging, final)


def read_span_stats(output: str | os.PathLike, day: datetime.date) -> dict:
    """The ``stats.json`` of a complete span."""
    with open(os.path.join(span_path(output, day), STATS_FILE), encoding="utf-8") as handle:
        return json.load(handle)


__all__ = ["COMPRESSION_LEVEL", "DEAD_LETTER_FILE", "PARTS_DIR", "RUN_DEAD_LETTER_DIR",
           "ROWS_SUFFIX", "STATS_FILE", "SpanDefinitionError", "SpanStats", "TEMP_PREFIX",
           "assemble_request_shard", "assemble_shard",
           "complete_span", "merge_stats", "part_path", "plan_spans", "publish_span",
           "read_span_stats", "remove_stale_staging", "staging_dir", "temp_root",
           "write_dead_letters", "write_records", "write_rows"]

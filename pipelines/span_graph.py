"""The Beam graph of the span pipeline; elements are Arrow tables, never rows.

::

    event row groups (clicks, conversions...) -> read -> validate -> distinct per (log, day)
                                                                       | (side input)
    impression row groups -> read -> validate, label, split, encode, count -> part files;
        group by (day, split, shard) -> assemble shard -+-> per day: stats, token counts,
                                                        |   numeric statistics, dead letters,
                                                        |   _SUCCESS, publish
    unknown date partitions and rejected events -> dead_letter/<kind>/<partition>.jsonl,
                                                        and a report per partition
    files unreadable mid-way (skip_bad_days) -> a report per file; the days they cost are
                                                not published (pipelines.bad_files)

With ``request_relative`` features the part files hold Arrow rows, and assembling a shard (whose
rows hold whole requests) derives the per-request columns and encodes them
(:mod:`pipelines.chunks`).

Keys are strings (ISO days), so every runner has a deterministic key coder. Stages log per
element at DEBUG; the INFO progress line is one per span, with its rows and the seconds from its
first chunk to its completion. :func:`pipelines.span_pipeline.build_spans` plans and runs it.
"""

import dataclasses
import datetime
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import pyarrow as pa
from absl import logging

from cvr_tf.input import span_path
from cvr_tf.statistics import merge_statistics
from cvr_tf.vocabulary import merge_token_counts
from pipelines import bad_files
from pipelines.chunks import ImpressionProcessor
from pipelines.labels import QUANTITY, TS, distinct_events, event_days
from pipelines.log_reader import BadLogFileError, ReadTask, read_batches
from pipelines.spans import (
    ROWS_SUFFIX,
    RUN_DEAD_LETTER_DIR,
    assemble_request_shard,
    assemble_shard,
    complete_span,
    merge_stats,
    part_path,
    publish_span,
    staging_dir,
    temp_root,
    write_dead_letters,
    write_records,
    write_rows,
)
from pipelines.validation import TIMESTAMP, ColumnRule, validate

REPORTS_DIR = "partition_reports"  # under the run's staging root: one JSON per partition


@dataclasses.dataclass
class SpanGraph:
    """The Beam graph of one run (see the module docstring).

    Attributes:
      processor: the per-chunk work.
      output: the spans' directory.
      run_id: names the run's staging directory.
      shards: ISO day -> shards per split, for the days to build.
      batch_rows: most rows in one element.
      skip_bad_days: a file unreadable mid-way costs the days that need it
        (:mod:`pipelines.bad_files`) instead of failing the run.
      maturity: ISO day -> label -> its maturity record
        (:func:`pipelines.labels.label_maturity`), written to the span's ``stats.json``.
    """

    processor: ImpressionProcessor
    output: str
    run_id: str
    shards: dict[str, int]
    batch_rows: int
    skip_bad_days: bool = False
    maturity: dict[str, dict] = dataclasses.field(default_factory=dict)

    def expand(self, pipeline: beam.Pipeline, impressions: list[ReadTask],
               events: list[ReadTask], unknown: list[ReadTask]) -> None:
        """Adds the transforms reading the given row groups to ``pipeline``."""
        read_columns = [rule.column for rule in self.processor.rules()]
        event_rules = [ColumnRule(key, dtype) for key, dtype in
                       self.processor.key_dtypes().items()] + [ColumnRule(TS, TIMESTAMP)]
        event_reads = (
            pipeline | "PlanEvents" >> beam.Create(events, reshuffle=False)
            | "ReadEvents" >> self._read([r.column for r in event_rules] + [QUANTITY]))
        event_chunks = (
            event_reads.chunks
            | "ValidateEvents" >> beam.ParDo(_ValidateEvents(event_rules))
            .with_outputs("report", main="rows"))
        events_by_day = (
            event_chunks.rows | "GroupEvents" >> beam.GroupByKey()
            | "DistinctEvents" >> beam.MapTuple(lambda key, parts: (
                key, distinct_events(list(parts)))))
        impression_reads = (pipeline | "PlanImpressions" >> beam.Create(impressions)
                            | "ReadImpressions" >> self._read(read_columns))
        chunks = (
            impression_reads.chunks
            | "ProcessImpressions" >> beam.ParDo(
                _ProcessImpressions(self.processor, self.output, self.run_id, self.shards),
                events=beam.pvalue.AsDict(events_by_day))
            .with_outputs("stats", "tokens", "statistics", "rejected", "started",
                          main="records"))
        written = (chunks.records | "GroupShards" >> beam.GroupByKey()
                   | "AssembleShards" >> beam.ParDo(_AssembleShard(self.output, self.run_id,
                                                                   self.shards, self.processor)))
        unknown_reads = (pipeline | "PlanUnknownPartitions" >> beam.Create(unknown, reshuffle=False)
                         | "ReadUnknownPartitions" >> self._read(read_columns))
        unknown_reports = unknown_reads.chunks | "RejectUnknownPartitions" >> beam.Map(
            _reject_unknown)
        _ = ((event_chunks.report, unknown_reports) | "Reports" >> beam.Flatten()
             | "GroupReports" >> beam.GroupByKey()
             | "WriteReports" >> beam.Map(_write_partition_report, self.output, self.run_id))
        bad = ((impression_reads.bad, event_reads.bad, unknown_reads.bad)
               | "BadFiles" >> beam.Flatten())
        _ = bad | "WriteBadFileReports" >> beam.Map(_write_bad_file_report,
                                                    temp_root(self.output, self.run_id))
        per_day = {
            "expected": pipeline | "Days" >> beam.Create([(d, None) for d in sorted(self.shards)]),
            "written": written,
            "stats": chunks.stats | "MergeStats" >> beam.CombinePerKey(merge_stats),
            "tokens": chunks.tokens | "MergeTokenCounts" >> beam.CombinePerKey(
                merge_token_counts),
            "statistics": chunks.statistics | "MergeStatistics" >> beam.CombinePerKey(
                merge_statistics),
            "rejected": chunks.rejected,
            "started": chunks.started | "FirstChunk" >> beam.CombinePerKey(min),
            "bad": bad | "DaysOfBadFiles" >> beam.FlatMapTuple(self._days_hit),
        }
        _ = (per_day | "JoinPerDay" >> beam.CoGroupByKey()
             | "CompleteSpans" >> beam.ParDo(_CompleteSpan(self.output, self.run_id, self.shards,
                                                           self.processor, self.maturity)))

    def _read(self, columns: Sequence[str]) -> beam.PTransform:
        """Row groups -> ``chunks`` (task, chunk id, table) and ``bad`` (task, reason)."""
        return beam.FlatMap(_read, columns, self.batch_rows, self.skip_bad_days).with_outputs(
            "bad", main="chunks")

    def _days_hit(self, task: ReadTask, reason: str) -> list[tuple[str, str]]:
        days = {datetime.date.fromisoformat(d) for d in self.shards}
        return [(d.isoformat(), reason) for d in
                bad_files.days_hit(task.partition, days, self.processor.event_windows)]


def _read(task: ReadTask, columns: Sequence[str], batch_rows: int, skip_bad: bool
          ) -> Iterator[tuple[ReadTask, str, pa.Table]]:
    try:
        for chunk_id, table in read_batches(task, columns, batch_rows):
            logging.debug("Read %s/%s %s chunk %s: %d rows.", task.partition.kind,
                          task.partition.name, os.path.basename(task.path), chunk_id,
                          table.num_rows)
            yield task, chunk_id, table
    except BadLogFileError as error:
        if not skip_bad:
            raise
        logging.warning("%s (--on_bad_file=skip_day: the days that need it are not built)", error)
        yield beam.pvalue.TaggedOutput("bad", (task, str(error)))


def _write_bad_file_report(element: tuple[ReadTask, str], root: str) -> None:
    task, reason = element
    bad_files.write_report(root, task.partition, task.path, reason)


def _reject_unknown(element: tuple[ReadTask, str, pa.Table]) -> tuple[str, tuple]:
    task, chunk_id, table = element
    rejected = validate(table, [], None).rejected
    return f"{task.partition.kind}/{task.partition.name}", (chunk_id, table.num_rows, rejected)


def events_key(kind: str, day: datetime.date) -> str:
    """Key of one event log's distinct events of one day in the side input: ``kind/day``."""
    return f"{kind}/{day.isoformat()}"


class _ValidateEvents(beam.DoFn):
    """Event chunks -> (log/day, valid keys and ts); a report of each chunk's rejects."""

    def __init__(self, rules: list[ColumnRule]):
        self._rules = rules

    def process(self, element: tuple[ReadTask, str, pa.Table]):
        task, chunk_id, table = element
        rules = self._rules
        if QUANTITY in table.column_names:  # optional: logs without quantities are fine
            rules = [*rules, ColumnRule(QUANTITY, "float32", positive=True)]
        validated = validate(table, rules, task.partition.day)
        partition = f"{task.partition.kind}/{task.partition.name}"
        yield beam.pvalue.TaggedOutput("report", (partition, (chunk_id, table.num_rows,
                                                              validated.rejected)))
        yield events_key(task.partition.kind, task.partition.day), validated.rows.select(
            [rule.column for rule in self._rules])


class _ProcessImpressions(beam.DoFn):
    """Impression chunks -> part files per (day, split, shard), stats, token counts, dead letters.

    The chunk's records of each shard are compressed here, in the parallel stage, into a part
    file; only its path travels through the shuffle.
    """

    def __init__(self, processor: ImpressionProcessor, output: str, run_id: str,
                 shards: Mapping[str, int]):
        self._processor = processor
        self._output, self._run_id, self._shards = output, run_id, dict(shards)
        self._events: dict[tuple[str, int, str], pa.Table | None] = {}

    def process(self, element: tuple[ReadTask, str, pa.Table], events: Mapping):
        began = time.time()
        task, chunk_id, table = element
        day = task.partition.day
        key = day.isoformat()
        out = self._processor.process(table, day, self._day_events(day, events),
                                      self._shards[key])
        staging = staging_dir(self._output, self._run_id, day)
        for (split, shard), records in out.shards.items():
            rows = isinstance(records, pa.Table)  # a spec with request_relative features
            path = part_path(staging, split, shard, chunk_id, rows=rows)
            (write_rows if rows else write_records)(path, records)
            yield (key, split, shard), (chunk_id, path, len(records))
        logging.debug("Span %s chunk %s: %d rows in, %d written, %d rejected, %d positives.",
                      key, chunk_id, out.stats.rows_in, out.stats.rows_written,
                      out.stats.rows_rejected, out.stats.positives)
        yield beam.pvalue.TaggedOutput("started", (key, began))
        yield beam.pvalue.TaggedOutput("stats", (key, out.stats))
        yield beam.pvalue.TaggedOutput("tokens", (key, out.token_counts))
        yield beam.pvalue.TaggedOutput("statistics", (key, out.statistics))
        if out.rejected.num_rows:
            yield beam.pvalue.TaggedOutput("rejected", (key, (chunk_id, out.rejected)))

    def _day_events(self, day: datetime.date, events: Mapping) -> dict[str, pa.Table | None]:
        """Label -> the distinct events its window reaches from ``day`` (cached per worker)."""
        out = {}
        for label in self._processor.labels:
            if label.events is None:
                continue
            key = (label.events, label.window_ms, day.isoformat())
            if key not in self._events:
                parts = [events[events_key(label.events, d)]
                         for d in event_days(day, label.window_ms)
                         if events_key(label.events, d) in events]
                self._events[key] = distinct_events(parts) if parts else None
            out[label.name] = self._events[key]
        return out


class _AssembleShard(beam.DoFn):
    """Concatenates a shard's part files in chunk order (encoding them first when they are
    rows whose per-request columns are still to be derived)."""

    def __init__(self, output: str, run_id: str, shards: Mapping[str, int],
                 processor: ImpressionProcessor):
        self._output, self._run_id, self._shards = output, run_id, dict(shards)
        self._processor = processor

    def process(self, element):
        (key, split, shard), parts = element
        parts = sorted(parts)
        staging = staging_dir(self._output, self._run_id, datetime.date.fromisoformat(key))
        paths = [path for _, path, _ in parts]
        if any(path.endswith(ROWS_SUFFIX) for path in paths):
            path = assemble_request_shard(staging, split, shard, self._shards[key], paths,
                                          self._processor.encode_requests)
        else:
            path = assemble_shard(staging, split, shard, self._shards[key], paths)
        rows = sum(rows for _, _, rows in parts)
        logging.debug("Wrote %s: %d examples.", path, rows)
        yield key, (split, shard, rows)


class _CompleteSpan(beam.DoFn):
    """Per day, after all its shards are written: metadata, ``_SUCCESS``, publish."""

    def __init__(self, output: str, run_id: str, shards: Mapping[str, int],
                 processor: ImpressionProcessor, maturity: Mapping[str, dict]):
        self._output, self._run_id, self._shards = output, run_id, dict(shards)
        self._processor = processor
        self._maturity = dict(maturity)

    def process(self, element):
        key, grouped = element
        day = datetime.date.fromisoformat(key)
        if grouped["bad"]:
            logging.warning("Span %s not built: %s", key, sorted(grouped["bad"])[0])
            return
        stats = merge_stats(grouped["stats"])
        stats.check(f"span {key}")
        written = sum(rows for _, _, rows in grouped["written"])
        if written != stats.rows_written:
            raise AssertionError(f"span {key}: {written} examples in shards but "
                                 f"{stats.rows_written} rows written")
        rejected = [table for _, table in sorted(grouped["rejected"], key=lambda p: p[0])]
        processor = self._processor
        metadata = {
            "span": key, "run_id": self._run_id, "rows": dataclasses.asdict(stats),
            "num_shards": self._shards[key], **processor.data_definition(),
            "maturity": self._maturity.get(key, {}),
        }
        counts = merge_token_counts(grouped["tokens"])
        counts = {table: counts.get(table, {}) for table in processor.spec.vocabulary_tables()}
        staging = staging_dir(self._output, self._run_id, day)
        complete_span(staging, self._shards[key], metadata, counts, rejected, processor.spec,
                      statistics=merge_statistics(grouped["statistics"]))
        publish_span(staging, span_path(self._output, day))
        seconds = time.time() - min(grouped["started"], default=time.time())
        positives = ", ".join(f"{label} {counts['positives']}"
                              for label, counts in stats.positives_by_label.items())
        logging.info("Span %s complete: %d rows in, %d written (%d train, %d eval), %d "
                     "rejected %s; positives: %s; %.1f s.", key, stats.rows_in,
                     stats.rows_written, stats.train_rows, stats.eval_rows, stats.rows_rejected,
                     stats.rejected_by_reason, positives, seconds)
        yield key


def _write_partition_report(element: tuple[str, Iterable], output: str, run_id: str) -> None:
    """Dead letters and counts of a partition read outside any span."""
    partition, chunks = element
    chunks = sorted(chunks, key=lambda chunk: chunk[0])
    rejected = [table for _, _, table in chunks if table.num_rows]
    kind, name = partition.split("/", 1)
    path = os.path.join(output, RUN_DEAD_LETTER_DIR, kind, f"{name}.jsonl")
    if rejected:
        write_dead_letters(path, rejected)
    elif os.path.exists(path):
        os.remove(path)
    reasons: dict[str, int] = {}
    for table in rejected:
        for reason in table.column("reason").to_pylist():
            reasons[reason] = reasons.get(reason, 0) + 1
    report = {"kind": kind, "partition": name, "rows_in": sum(n for _, n, _ in chunks),
              "rows_rejected": sum(t.num_rows for t in rejected),
              "rejected_by_reason": dict(sorted(reasons.items())),
              "dead_letter": path if rejected else None}
    reports = os.path.join(temp_root(output, run_id), REPORTS_DIR)
    os.makedirs(reports, exist_ok=True)
    with open(os.path.join(reports, f"{kind}-{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    if rejected:
        logging.warning("%s: %d of %d rows rejected (%s); see %s.", partition,
                        report["rows_rejected"], report["rows_in"], reasons, path)


__all__ = ["REPORTS_DIR", "SpanGraph"]

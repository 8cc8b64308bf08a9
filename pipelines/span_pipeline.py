"""The span pipeline: a window of search logs -> daily TFRecord spans, vocabularies, statistics.

:func:`build_spans` plans on the driver (partitions, Parquet footers and required columns, which
spans to build, shards per span), runs one Beam pipeline (:class:`pipelines.span_graph.SpanGraph`,
whose elements are Arrow tables, never rows), then writes the window's vocabularies,
``schema.pbtxt`` and the run summary ``stats.json``.

Without ``--runner`` the pipeline runs on Beam's FnApiRunner in this process
(``--direct_num_workers`` with ``--direct_running_mode=multi_threading`` or ``multi_processing``
adds local workers); any other runner (Flink, Spark, Dataflow) is chosen with the usual Beam
options.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging as std_logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence

import apache_beam as beam
from absl import logging
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from google.protobuf import text_format

from cvr_tf.features import FeatureSpec, default_spec
from cvr_tf.features.labels import LabelSpec
from cvr_tf.input import days_in_range, is_complete_span, span_path
from cvr_tf.vocabulary import vocabulary_dir, window_vocabularies, write_vocabularies
from pipelines import bad_files
from pipelines.chunks import ImpressionProcessor
from pipelines.labels import (
    JOIN_KEYS,
    TS,
    event_days,
    immature_labels,
    label_maturity,
    pipeline_labels,
)
from pipelines.log_reader import (
    IMPRESSIONS,
    BadLogFileError,
    LogSchemaError,
    Partition,
    ReadTask,
    check_columns,
    list_partitions,
    plan_reads,
)
from pipelines.span_graph import REPORTS_DIR, SpanGraph
from pipelines.spans import (
    SpanDefinitionError,
    SpanStats,
    merge_stats,
    plan_spans,
    read_span_stats,
    remove_stale_staging,
    temp_root,
)

DEFAULT_BATCH_ROWS = 100_000
# What build_spans raises for input a user can fix, each naming the file, span or flag and the
# fix: jobs report them in one line. Anything else is a bug and keeps its traceback.
INPUT_ERRORS = (FileNotFoundError, LogSchemaError, BadLogFileError, SpanDefinitionError)
ROWS_PER_SHARD = 1_000_000  # automatic --num_shards: one shard per this many rows of a day
SCHEMA_FILE = "schema.pbtxt"
RUN_STATS_FILE = "stats.json"


@dataclasses.dataclass
class RunSummary:
    """What a :func:`build_spans` run did (also written to ``<output>/stats.json``).

    Attributes:
      start: first day of the window (ISO).
      end: last day of the window (ISO).
      built: days whose span this run wrote.
      skipped: days whose complete span was kept (no ``--overwrite``).
      missing_days: days without an impressions partition (no span).
      bad_days: day -> why its span was not built: a log file it needs is unreadable
        (``on_bad_file="skip_day"``, :mod:`pipelines.bad_files`).
      immature: day -> the labels of its span whose window the event logs did not cover yet
        (:func:`pipelines.labels.label_maturity`), for every complete span of the window.
      spans: day -> that span's statistics, for every complete span of the window.
      totals: the sum of ``spans`` (``rows_in == rows_written + rows_rejected``).
      partitions: ``<kind>/<partition>`` -> rows read and rejected outside spans (events read
        for the label joins, unknown date partitions), and ``bad_file``, the reason, for an
        unreadable file that no built day needed (``skip_day``; it was not read).
      vocab_dir: where the window's vocabularies are.
      vocabulary_sizes: table -> tokens written.
      wall_seconds: wall time of the run.
      rows_per_second: impression rows of the built spans per wall second.
    """

    start: str
    end: str
    built: list[str]
    skipped: list[str]
    missing_days: list[str]
    bad_days: dict[str, str]
    immature: dict[str, list[str]]
    spans: dict[str, dict]
    totals: dict
    partitions: dict[str, dict]
    vocab_dir: str
    vocabulary_sizes: dict[str, int]
    wall_seconds: float
    rows_per_second: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_spans(logs: str | os.PathLike, output: str | os.PathLike, start: datetime.date,
                end: datetime.date, spec: FeatureSpec | None = None, *,
                attribution_days: int | None = None, label_column: str | None = None,
                eval_fraction: float = 0.1, num_shards: int = 0, overwrite: bool = False,
                batch_rows: int = DEFAULT_BATCH_ROWS, on_bad_file: str = bad_files.FAIL,
                pipeline_options: PipelineOptions | None = None) -> RunSummary:
    """Builds the daily spans of ``start..end`` from the logs (see the module docstring).

    Args:
      logs: directory with ``impressions/`` and the event logs the labels join
        (``conversions/``, ``clicks/``...), in date partitions.
      output: directory of the spans.
      start: first day, inclusive.
      end: last day, inclusive.
      spec: feature spec (default: the simulator's, ``cvr_tf/specs/search_default.json``);
        its ``labels`` say which labels to join and their windows.
      attribution_days: for a spec without ``labels``: a conversion counts when at most this
        many days after the impression (default 3).
      label_column: for a spec without ``labels``: take the label from this impressions column
        and skip the join.
      eval_fraction: share of requests in the eval split.
      num_shards: shards per split and span; 0 picks one per ``ROWS_PER_SHARD`` rows of the day.
      overwrite: rebuild complete spans instead of skipping them.
      batch_rows: most rows in one Beam element (an Arrow table).
      on_bad_file: ``fail`` on an unreadable log file, or ``skip_day``: build every day but
        those that need it (:mod:`pipelines.bad_files`), listed in ``bad_days``.
      pipeline_options: Beam options; None runs in this process on the FnApiRunner.

    Returns:
      The run summary.

    Raises:
      LogSchemaError: a needed column is absent from a log file (raised before any work).
      BadLogFileError: a log file is unreadable and ``on_bad_file`` is ``fail``.
      FileNotFoundError: no impressions partition for any day of the window, or no directory
        of an event log a label joins.
      ValueError: a spec with ``labels`` and ``attribution_days``/``label_column`` too.
    """
    _check_arguments(eval_fraction, num_shards, batch_rows)
    bad_files.check_policy(on_bad_file)
    skip_bad = on_bad_file == bad_files.SKIP_DAY
    quiet_beam_type_hints()
    began = time.perf_counter()
    spec = spec or default_spec()
    processor = ImpressionProcessor(spec, pipeline_labels(spec, attribution_days, label_column),
                                    eval_fraction)
    windows = processor.event_windows
    days = days_in_range(start, end)
    impressions = list_partitions(logs, IMPRESSIONS)
    by_day = {p.day: p for p in impressions if p.day is not None}
    unknown = [p for p in impressions if p.day is None]
    event_logs = {kind: _event_partitions(logs, kind, processor.labels, not spec.labels)
                  for kind in windows}
    output = os.fspath(output)
    remove_stale_staging(output)
    observed = {kind: max((p.day for p in parts if p.day is not None), default=None)
                for kind, parts in event_logs.items()}
    maturity = {day: _span_maturity(processor.labels, day, event_logs, observed)
                for day in days if day in by_day}
    build, skipped = plan_spans(output, days, overwrite, processor.data_definition(), {
        label.name: observed[label.events] and observed[label.events].isoformat()
        for label in processor.labels if label.events is not None}, spec)
    missing = [d for d in days if d not in by_day and d not in skipped]
    if missing:
        logging.warning("No impressions partition for %s in %s: no span for these days.",
                        ", ".join(map(str, missing)), logs)
    build = [d for d in build if d in by_day]
    if not build and not skipped:
        root = os.path.join(os.fspath(logs), IMPRESSIONS)
        raise FileNotFoundError(f"no impressions partition date=YYYY-MM-DD in {root} for any "
                                f"day of {start}..{end}; check --logs and the dates")

    events = [p for parts in event_logs.values() for p in parts]
    bad_days: dict[datetime.date, str] = {}
    bad: dict[Partition, str] = {}
    if skip_bad:  # bad footers cost their days before any work; bad pages, in the pipeline
        needed = _needed_event_days(build, windows)
        bad = bad_files.bad_footers([by_day[d] for d in build] + unknown + [
            p for p in events if (p.kind, p.day) in needed or p.day is None])
        bad_days = bad_files.skipped_days(bad, build, windows)
        build = [d for d in build if d not in bad_days]
        unknown = [p for p in unknown if p not in bad]
        events = [p for p in events if p not in bad]
    check_columns([by_day[d] for d in build], processor.required_columns())
    needed = _needed_event_days(build, windows)
    event_parts = [p for p in events if (p.kind, p.day) in needed]
    unknown += [p for p in events if p.day is None]
    _warn_about_labels(build, maturity)
    check_columns(event_parts, {c: "the label joins need" for c in (*JOIN_KEYS, TS)})
    os.makedirs(output, exist_ok=True)  # only once the logs to read are known to be readable

    impression_tasks = plan_reads([by_day[d] for d in build])
    shards = {d.isoformat(): num_shards or _auto_shards(impression_tasks, d) for d in build}
    run_id = f"{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    logging.info("Building %d span(s) (%d row groups of impressions, %d event partitions, "
                 "%d unknown date partitions); skipping %d complete span(s). Run %s.",
                 len(build), len(impression_tasks), len(event_parts), len(unknown),
                 len(skipped), run_id)
    if build or unknown:
        graph = SpanGraph(processor=processor, output=output, run_id=run_id, shards=shards,
                          batch_rows=batch_rows, skip_bad_days=skip_bad,
                          maturity={d.isoformat(): maturity[d] for d in build})
        with _make_pipeline(pipeline_options) as pipeline:
            graph.expand(pipeline, impression_tasks, plan_reads(event_parts),
                         plan_reads(unknown))
        logging.info("Beam pipeline done in %.1f s.", time.perf_counter() - began)

    reports = _read_partition_reports(temp_root(output, run_id))
    met = bad_files.read_reports(temp_root(output, run_id), [*by_day.values(), *events, *unknown])
    bad_days = dict(sorted({**bad_files.skipped_days(met, build, windows), **bad_days}.items()))
    kept = [d for d in bad_days if is_complete_span(span_path(output, d))]  # an older span
    build = [d for d in build if d not in bad_days]
    for line in bad_files.summary_lines({d.isoformat(): r for d, r in bad_days.items()}):
        logging.warning("%s", line)
    for partition, reason in {**met, **bad}.items():
        if not bad_files.days_hit(partition, bad_days, windows):  # read for no span: say so
            logging.warning("%s/%s not read: %s", partition.kind, partition.name, reason)
            reports.setdefault(f"{partition.kind}/{partition.name}", {})["bad_file"] = reason
    _write_schema(output, spec)
    vocab_dir = vocabulary_dir(output, start, end)
    vocabularies = window_vocabularies(output, spec, start, end)
    write_vocabularies(vocab_dir, vocabularies)
    logging.info("Vocabularies of %s..%s written to %s: %s.", start, end, vocab_dir,
                 ", ".join(f"{t}={len(v)}" for t, v in vocabularies.items()))
    spans = {d.isoformat(): read_span_stats(output, d) for d in sorted({*build, *skipped, *kept})}
    totals = merge_stats(SpanStats(**s["rows"]) for s in spans.values())
    wall = time.perf_counter() - began
    rows_built = sum(spans[d.isoformat()]["rows"]["rows_in"] for d in build)
    summary = RunSummary(
        start=start.isoformat(), end=end.isoformat(), built=[d.isoformat() for d in build],
        skipped=[d.isoformat() for d in skipped], missing_days=[d.isoformat() for d in missing],
        bad_days={d.isoformat(): reason for d, reason in bad_days.items()},
        immature={d: labels for d, s in spans.items()
                  if (labels := immature_labels(s.get("maturity", {})))},
        spans=spans, totals=dataclasses.asdict(totals), partitions=reports, vocab_dir=vocab_dir,
        vocabulary_sizes={t: len(v) for t, v in vocabularies.items()}, wall_seconds=wall,
        rows_per_second=rows_built / wall if wall > 0 else 0.0)
    with open(os.path.join(output, RUN_STATS_FILE), "w", encoding="utf-8") as handle:
        json.dump(summary.to_dict(), handle, indent=2)
        handle.write("\n")
    shutil.rmtree(temp_root(output, run_id), ignore_errors=True)
    logging.info("Done: built %d, skipped %d span(s), %d day(s) not built for bad files; %d rows "
                 "in, %d written, %d rejected; %.0f rows/s.", len(build), len(skipped),
                 len(bad_days), totals.rows_in, totals.rows_written, totals.rows_rejected,
                 summary.rows_per_second)
    return summary


def _check_arguments(eval_fraction: float, num_shards: int, batch_rows: int) -> None:
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    if num_shards < 0:
        raise ValueError(f"num_shards must be >= 0 (0: automatic), got {num_shards}")
    if batch_rows <= 0:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")


def _event_partitions(logs: str | os.PathLike, kind: str, labels: Sequence[LabelSpec],
                      default_label: bool) -> list[Partition]:
    """The partitions of event log ``kind``; a missing log directory names the labels, and
    for the ``default_label`` (a spec without ``labels``: its ``label`` joined with
    conversions) the flag that reads a label the impressions already hold."""
    try:
        return list_partitions(logs, kind)
    except FileNotFoundError as error:
        names = ", ".join(repr(label.name) for label in labels if label.events == kind)
        hint = ("; if the impressions hold the label, pass its column as --label_column "
                f"(e.g. --label_column={labels[0].name})" if default_label else "")
        raise FileNotFoundError(
            f"{error} (label {names} of the feature spec joins it){hint}") from None


def _span_maturity(labels: Sequence[LabelSpec], day: datetime.date,
                   event_logs: Mapping[str, Sequence[Partition]],
                   observed: Mapping[str, datetime.date | None]) -> dict[str, dict]:
    """Label -> its maturity record for the span of ``day``."""
    return {label.name: label_maturity(
        label, day, {p.day for p in event_logs.get(label.events, ())},
        observed.get(label.events)) for label in labels}


def _needed_event_days(build: Sequence[datetime.date], windows: Mapping[str, int]
                       ) -> set[tuple[str, datetime.date]]:
    """(event log, day) of every event partition the built spans' label joins read."""
    return {(kind, event_day) for day in build for kind, window in windows.items()
            for event_day in event_days(day, window)}


def _warn_about_labels(build: Sequence[datetime.date],
                       maturity: Mapping[datetime.date, Mapping[str, dict]]) -> None:
    """One warning per built span and label whose events are incomplete (recorded in the
    span's ``stats.json`` too)."""
    for day in build:
        for label, record in maturity[day].items():
            if record.get("missing_partitions"):
                logging.warning(
                    "Span %s: label %r misses the event partitions %s, inside the range the "
                    "logs cover: their events, if any, are lost to it (a day without events "
                    "should have an empty partition).", day, label,
                    ", ".join(record["missing_partitions"]))
            if not record["mature"]:
                logging.warning(
                    "Span %s: label %r is immature: %s observed through %s, its window needs "
                    "%s. Training refuses the span unless --delayed_feedback says how to treat "
                    "it; a later run rebuilds it once the events arrive.", day, label,
                    record["events"], record["events_observed_through"],
                    record["needs_events_through"])


def _auto_shards(tasks: Iterable[ReadTask], day: datetime.date) -> int:
    rows = sum(t.rows for t in tasks if t.partition.day == day)
    return max(1, math.ceil(rows / ROWS_PER_SHARD))


def _make_pipeline(options: PipelineOptions | None) -> beam.Pipeline:
    options = options or PipelineOptions([])
    if options.view_as(StandardOptions).runner is None:
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def quiet_beam_type_hints() -> None:
    """Silences Beam's INFO line per string annotation ("Converting string literal type hint").

    Modules with ``from __future__ import annotations`` give Beam string type hints, which it
    logs once per transform and element type: hundreds of lines a run that say nothing.
    """
    std_logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(
        std_logging.WARNING)


def _write_schema(output: str, spec: FeatureSpec) -> None:
    path = os.path.join(output, SCHEMA_FILE)
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        handle.write(text_format.MessageToString(spec.tfmd_schema()))
    os.replace(f"{path}.tmp", path)


def _read_partition_reports(root: str) -> dict[str, dict]:
    directory = os.path.join(root, REPORTS_DIR)
    reports = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        with open(os.path.join(directory, name), encoding="utf-8") as handle:
            report = json.load(handle)
        reports[f"{report['kind']}/{report['partition']}"] = report
    return reports


__all__ = ["DEFAULT_BATCH_ROWS", "INPUT_ERRORS", "ROWS_PER_SHARD", "RunSummary", "SCHEMA_FILE",
           "build_spans"]

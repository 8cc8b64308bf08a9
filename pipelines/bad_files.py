"""Unreadable log files under ``--on_bad_file``: which days they cost, and how the run says so.

A log file that is not readable Parquet (zero bytes, truncated, a corrupt page:
:class:`pipelines.log_reader.BadLogFileError`) either stops the run (``fail``, the default: a
scheduled job should not quietly publish less than it was asked for) or costs the days whose
spans need it (``skip_day``): an impressions file its own day, an event file (clicks,
conversions) of day ``D`` every built day whose label window reads ``D``
(:func:`pipelines.labels.event_days`), so no span is published with labels that silently miss
events. The other days are built as usual; a day's complete span from an earlier run stays as
it was.

Bad footers are found on the driver before the pipeline runs (:func:`bad_footers`); a corrupt
page further into a file is only seen by the worker reading it, which reports the file
(:func:`write_report`) instead of failing the pipeline, and the day's span is then not
published. The run summary lists each skipped day with the first reason, one line each, and
``python -m pipelines.build_tfrecords`` exits with :data:`EXIT_SKIPPED_DAYS`.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Collection, Iterable, Mapping

from pipelines.labels import event_days
from pipelines.log_reader import IMPRESSIONS, BadLogFileError, Partition, open_parquet

FAIL = "fail"
SKIP_DAY = "skip_day"
ON_BAD_FILE = (FAIL, SKIP_DAY)
"""Values of ``--on_bad_file``."""
EXIT_SKIPPED_DAYS = 3
"""Exit status of the job when it skipped days (the others were built)."""
REPORTS_DIR = "bad_files"  # under the run's staging root: one JSON per bad file a worker met


def check_policy(on_bad_file: str) -> None:
    """Raises ValueError naming the choices for an unknown ``on_bad_file``."""
    if on_bad_file not in ON_BAD_FILE:
        raise ValueError(f"on_bad_file must be one of {', '.join(ON_BAD_FILE)}, got "
                         f"{on_bad_file!r}")


def days_hit(partition: Partition, build: Collection[datetime.date],
             windows: Mapping[str, int]) -> list[datetime.date]:
    """The days of ``build`` whose span needs ``partition``'s files.

    Args:
      partition: a partition with a bad file.
      build: days the run builds.
      windows: event log -> the widest window (ms) of the labels joining it
        (:func:`pipelines.labels.event_windows`); logs no label joins are not read.
    """
    if partition.day is None:
        return []
    if partition.kind == IMPRESSIONS:
        return [partition.day] if partition.day in build else []
    if partition.kind in windows:
        return sorted(d for d in build
                      if partition.day in event_days(d, windows[partition.kind]))
    return []


def bad_footers(partitions: Iterable[Partition]) -> dict[Partition, str]:
    """Partition -> the message of its first file whose Parquet footer does not open."""
    bad = {}
    for partition in partitions:
        for path in partition.files:
            try:
                open_parquet(path, partition.kind)
            except BadLogFileError as error:
                bad[partition] = str(error)
                break
    return bad


def skipped_days(bad: Mapping[Partition, str], build: Collection[datetime.date],
                 windows: Mapping[str, int]) -> dict[datetime.date, str]:
    """Day -> why its span is not built (the first bad file that it needs)."""
    days: dict[datetime.date, str] = {}
    for partition, reason in bad.items():
        for day in days_hit(partition, build, windows):
            days.setdefault(day, reason)
    return dict(sorted(days.items()))


def write_report(root: str, partition: Partition, path: str, reason: str) -> None:
    """Records, under the run's staging root, a bad file a worker met (for the driver)."""
    directory = os.path.join(root, REPORTS_DIR)
    os.makedirs(directory, exist_ok=True)
    name = f"{partition.kind}-{partition.name}-{os.path.basename(path)}.json"
    with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
        json.dump({"kind": partition.kind, "partition": partition.name, "reason": reason}, handle)


def read_reports(root: str, partitions: Iterable[Partition]) -> dict[Partition, str]:
    """Partition -> reason, of the bad files workers reported under ``root``."""
    by_name = {(p.kind, p.name): p for p in partitions}
    directory = os.path.join(root, REPORTS_DIR)
    bad: dict[Partition, str] = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        with open(os.path.join(directory, name), encoding="utf-8") as handle:
            report = json.load(handle)
        bad.setdefault(by_name[(report["kind"], report["partition"])], report["reason"])
    return bad


def summary_lines(days: Mapping[str, str]) -> list[str]:
    """One line per skipped day: ``span D not built: <reason>``."""
    return [f"span {day} not built: {reason}" for day, reason in days.items()]


__all__ = ["EXIT_SKIPPED_DAYS", "FAIL", "ON_BAD_FILE", "REPORTS_DIR", "SKIP_DAY", "bad_footers",
           "check_policy", "days_hit", "read_reports", "skipped_days", "summary_lines",
           "write_report"]

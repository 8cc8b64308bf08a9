"""Date-partitioned Parquet search logs -> Arrow tables, reading only the columns needed.

Layout (Hive style, as a search team's log export looks)::

    <logs>/impressions/date=YYYY-MM-DD/part-*.parquet
    <logs>/conversions/date=YYYY-MM-DD/part-*.parquet

Reads are planned on the driver from Parquet footers alone (:func:`plan_reads`: one task per row
group), so Beam workers get small descriptors and each reads its row group in batches of at
most ``batch_rows`` rows with column projection (:func:`read_batches`). A partition directory
whose name is not a valid date is kept as an *unknown date partition* (``day`` None): its rows
are dead-lettered, never silently skipped.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from absl import logging

IMPRESSIONS = "impressions"
CONVERSIONS = "conversions"
PARTITION_PREFIX = "date="


class LogSchemaError(ValueError):
    """The logs lack a column the pipeline needs; the message names the column and the file."""


class BadLogFileError(ValueError):
    """A log file is not readable Parquet (zero bytes, truncated, corrupt); names the file."""


def open_parquet(path: str, kind: str) -> pq.ParquetFile:
    """Opens a log file, turning Arrow's unnamed footer errors into one naming the file.

    Raises:
      BadLogFileError: the file is empty, truncated or not Parquet.
    """
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise BadLogFileError(_bad_file_message(path, kind, error)) from None


def _bad_file_message(path: str, kind: str, error: Exception) -> str:
    size = os.path.getsize(path) if os.path.exists(path) else 0
    what = "is empty (0 bytes)" if size == 0 else f"is not readable Parquet ({size} bytes)"
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (f"{kind} file {path} {what}: {detail}; re-export or remove the file (its day "
            "then has no span) and rerun, or pass --on_bad_file=skip_day to build the other days")


@dataclasses.dataclass(frozen=True)
class Partition:
    """One ``date=...`` directory of a log table.

    Attributes:
      kind: ``impressions`` or ``conversions``.
      name: directory name, e.g. ``date=2026-01-05``.
      day: the date, or None when the name is not a valid date.
      files: the partition's Parquet files, sorted.
    """

    kind: str
    name: str
    day: datetime.date | None
    files: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ReadTask:
    """One row group of one Parquet file: the unit of work of the read stage.

    Attributes:
      partition: the partition the file belongs to.
      path: the Parquet file.
      file_index: the file's position among the partition's files.
      row_group: row group index in the file.
      rows: rows in the row group (from the footer).
    """

    partition: Partition
    path: str
    file_index: int
    row_group: int
    rows: int


def partition_day(name: str) -> datetime.date | None:
    """The date of a ``date=YYYY-MM-DD`` directory name, or None if it is not a valid date."""
    try:
        return datetime.date.fromisoformat(name[len(PARTITION_PREFIX):])
    except ValueError:
        return None


def list_partitions(logs: str | os.PathLike, kind: str) -> list[Partition]:
    """Every ``date=`` partition of ``<logs>/<kind>``, valid dates first in date order.

    Hidden entries (``.``/``_`` prefixes, e.g. a writer's temporary files) are ignored; other
    unexpected entries are logged.
    """
    root = os.path.join(os.fspath(logs), kind)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"no {kind} log directory {root}; --logs must hold {kind}/date=YYYY-MM-DD/*.parquet")
    partitions = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith((".", "_")):
            continue
        if not (name.startswith(PARTITION_PREFIX) and os.path.isdir(path)):
            logging.warning("Ignoring %s: not a %sYYYY-MM-DD partition directory.", path,
                            PARTITION_PREFIX)
            continue
        files = tuple(sorted(os.path.join(path, f) for f in os.listdir(path)
                             if f.endswith(".parquet") and not f.startswith((".", "_"))))
        partitions.append(Partition(kind=kind, name=name, day=partition_day(name), files=files))
    return sorted(partitions, key=lambda p: (p.day is None, p.day or datetime.date.min, p.name))


def check_columns(partitions: Sequence[Partition], required: Mapping[str, str]) -> None:
    """Checks from the Parquet footers that every file has the required columns.

    Args:
      partitions: partitions about to be read.
      required: column -> why it is needed (quoted in the error).

    Raises:
      LogSchemaError: naming the first missing column and the file lacking it.
    """
    for partition in partitions:
        for path in partition.files:
            present = set(open_parquet(path, partition.kind).schema_arrow.names)
            for column, reason in required.items():
                if column not in present:
                    raise LogSchemaError(
                        f"{partition.kind} file {path} has no column {column!r}, which {reason}; "
                        f"add the column to the logs or change the feature spec (--feature_spec)"
                        f". The file has columns: {', '.join(sorted(present))}")


def plan_reads(partitions: Sequence[Partition]) -> list[ReadTask]:
    """One :class:`ReadTask` per row group of every file, from the Parquet footers."""
    tasks = []
    for partition in partitions:
        for file_index, path in enumerate(partition.files):
            metadata = open_parquet(path, partition.kind).metadata
            for row_group in range(metadata.num_row_groups):
                tasks.append(ReadTask(partition=partition, path=path, file_index=file_index,
                                      row_group=row_group,
                                      rows=metadata.row_group(row_group).num_rows))
    return tasks


def read_batches(task: ReadTask, columns: Sequence[str], batch_rows: int
                 ) -> Iterator[tuple[str, pa.Table]]:
    """Reads a task's row group as tables of at most ``batch_rows`` rows.

    Only ``columns`` are decoded (those absent from the file are skipped: callers check required
    columns up front with :func:`check_columns`).

    Yields:
      ``(chunk_id, table)``; chunk ids sort in file, row group, batch order.
    """
    parquet = open_parquet(task.path, task.partition.kind)
    present = [c for c in columns if c in parquet.schema_arrow.names]
    batches = parquet.iter_batches(batch_size=batch_rows, row_groups=[task.row_group],
                                   columns=present)
    index = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as error:  # a corrupt page inside the file
            raise BadLogFileError(_bad_file_message(task.path, task.partition.kind, error)
                                  ) from None
        chunk_id = f"{task.file_index:05d}-{task.row_group:05d}-{index:05d}"
        index += 1
        yield chunk_id, pa.Table.from_batches([batch])


__all__ = ["BadLogFileError", "CONVERSIONS", "IMPRESSIONS", "LogSchemaError", "PARTITION_PREFIX",
           "Partition", "ReadTask", "check_columns", "list_partitions", "open_parquet",
           "partition_day", "plan_reads", "read_batches"]

"""What the seeded comparison experiments share (``esmm``, ``delayed_feedback``,
``listwise_grouping``): the mean of a metric over seeds, the arms' means, and the job's end (run
in a working dir, print the table and the load average around the run, write the rows)."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Rows = list[dict[str, Any]]


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean, or None when a value is None (a metric that was not computable)."""
    return None if any(v is None for v in values) else statistics.mean(values)


def arm_means(rows: Rows, columns: Sequence[str], key: str = "arm"
              ) -> Iterator[tuple[Any, list[dict[str, Any]], dict[str, float | None]]]:
    """Each value of ``key`` in first-seen order, with its rows and their means of ``columns``."""
    for arm in dict.fromkeys(r[key] for r in rows):
        members = [r for r in rows if r[key] == arm]
        yield arm, members, {c: mean_or_none([r[c] for r in members]) for c in columns}


def run_and_report(prefix: str, workdir: str, run: Callable[[str], Rows],
                   table: Callable[[Rows], str], json_path: str = "") -> Rows:
    """Runs ``run(workdir)`` (a temporary directory when ``workdir`` is empty), prints
    ``table(rows)`` and the 1-minute load average before and after, writes the rows to
    ``json_path`` when given, and returns them."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        rows = run(workdir or scratch)
    print(table(rows))
    print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
            handle.write("\n")
    return rows

"""Search-log simulator: writes date-partitioned Parquet logs of a documented, seeded world.

    python -m pipelines.simulate --output=DIR --start_date=2026-01-05 --days=14 \\
        --requests_per_day=2000 --candidates_per_request=20 --seed=0

writes the layout of a search team's log export::

    <output>/impressions/date=YYYY-MM-DD/part-00000.parquet   one row per (request, shown item)
    <output>/clicks/date=YYYY-MM-DD/part-LLLLL.parquet        one row per click event, from
                                                              impressions shown LLLLL days earlier
    <output>/conversions/date=YYYY-MM-DD/part-LLLLL.parquet   one row per purchase event, likewise

Events land on the date of their own timestamp, so those of the last simulated days are written
to partitions after the range. Naming an event file by its impression day keeps every file the
product of one simulated day: runs over days 0-13 and 14-27 write the same bytes as one run over
0-27. Each file is written under a hidden temporary name in its directory and renamed.

Generative model (stated with its equations in :mod:`pipelines.simulator_world`,
:mod:`pipelines.simulator_day`, :mod:`pipelines.simulator_funnel` and
:mod:`pipelines.simulator_headroom`; narrated in ``pipelines/README.md``):

- Queries, items and users have Zipf popularity; queries and items are evergreen or churn (born on a
  day of the world, rising over days and fading over weeks), so the catalog drifts over months; a
  long tail of items with flat popularity takes a share of each day's traffic.
- Queries and items mix latent topics; their latent vectors give the query-item affinity a = q . v,
  and their texts (queries and item titles) are drawn from the topics' shared terms.
- Each request shows ``candidates_per_request`` items drawn from its query topic's pool by
  popularity and affinity, ordered by a noisy production ranker.
- Impression -> click -> conversion: a click with probability examine(position) * sigmoid(z_click)
  (affinity, item quality, query, device), then a conversion with probability sigmoid(z_conv)
  (price x segment, segment x brand tier, favourite brand, user propensity, device x category,
  weekday, and headroom: a latent user x item preference, a pure three-way segment x device x
  category cross, query intent x brand tier, long-tail item effects). Clicks follow within seconds
  to minutes, conversions minutes to 14 days after their click; a few events are logged twice.

Same config and seed give the same bytes: the world is drawn from the seed alone and day d's traffic
from (seed, d), where d counts days from ``SimulatorConfig.world_start``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import re
import time
import uuid
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl import app, flags

from cvr_tf import config_flags, job
from pipelines.simulator_config import SimulatorConfig
from pipelines.simulator_day import check_candidates, simulate_day
from pipelines.simulator_tables import (
    CLICK_GROUND_TRUTH_COLUMN,
    CLICK_LABEL_COLUMN,
    CLICK_SCHEMA,
    CONVERSION_SCHEMA,
    EVENT_KINDS,
    GROUND_TRUTH_COLUMN,
    IMPRESSION_SCHEMA,
    LABEL_COLUMN,
    POST_CLICK_GROUND_TRUTH_COLUMN,
    events_tables,
    impressions_table,
    request_ids_of,
)
from pipelines.simulator_world import World, build_world

_EVENT_FILE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/part-(\d{5})\.parquet$")
_TOP_QUERIES = 10
_DEFAULT_CONFIG = SimulatorConfig()


@dataclasses.dataclass(frozen=True)
class SimulationSummary:
    """What a simulation run wrote.

    Attributes:
        impressions: Impression rows written.
        clicks: Click events written (duplicated events included).
        clicked_impressions: Impressions with at least one click event, at any delay.
        click_rate: ``clicked_impressions / impressions``.
        conversions: Conversion events written (duplicated events included).
        converted_impressions: Impressions with at least one conversion event, at any delay.
        conversion_rate: ``converted_impressions / impressions``.
        top_queries: The most frequent query texts with their request counts, most frequent first.
        wall_seconds: Wall time of the run, world building and writing included.
        impressions_per_second: ``impressions / wall_seconds``.
        days_written: Impression partitions written (one per simulated day).
    """

    impressions: int
    clicks: int
    clicked_impressions: int
    click_rate: float
    conversions: int
    converted_impressions: int
    conversion_rate: float
    top_queries: list[tuple[str, int]]
    wall_seconds: float
    impressions_per_second: float
    days_written: int

    def __str__(self) -> str:
        queries = ", ".join(f"{query!r} ({count})" for query, count in self.top_queries[:5])
        return (
            f"days written:          {self.days_written}\n"
            f"impressions:           {self.impressions}\n"
            f"click events:          {self.clicks}\n"
            f"clicked impressions:   {self.clicked_impressions} "
            f"(click rate {self.click_rate:.4f})\n"
            f"conversion events:     {self.conversions}\n"
            f"converted impressions: {self.converted_impressions} "
            f"(conversion rate {self.conversion_rate:.4f})\n"
            f"top queries:           {queries}\n"
            f"wall time:             {self.wall_seconds:.2f} s "
            f"({self.impressions_per_second:,.0f} impressions/s)"
        )


def _partition(output: pathlib.Path, kind: str, date: datetime.date, part: int) -> pathlib.Path:
    return output / kind / f"date={date.isoformat()}" / f"part-{part:05d}.parquet"


def _write_parquet(table: pa.Table, path: pathlib.Path) -> None:
    """Writes ``table`` to a hidden temporary file beside ``path``, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its files are private (mode 0600) and the rename would keep that.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, temporary, compression="snappy")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _existing_files(
    output: pathlib.Path, dates: Sequence[datetime.date]
) -> dict[datetime.date, list[pathlib.Path]]:
    """Files already holding logs of each of ``dates``: its impressions, then its events."""
    existing = {
        date: sorted(output.glob(f"impressions/date={date}/part-*.parquet")) for date in dates
    }
    for kind in EVENT_KINDS:
        for path in sorted(output.glob(f"{kind}/date=*/part-*.parquet")):
            match = _EVENT_FILE.search(path.as_posix())
            if match:
                lag = datetime.timedelta(days=int(match[2]))
                origin = datetime.date.fromisoformat(match[1]) - lag
                if origin in existing:
                    existing[origin].append(path)
    return existing


def _top_queries(world: World, request_counts: np.ndarray) -> list[tuple[str, int]]:
    """Most frequent query texts (latent queries sharing a text are counted together)."""
    asked = np.flatnonzero(request_counts)
    texts = np.asarray(world.query_strings.take(asked).to_numpy(zero_copy_only=False), dtype=str)
    unique, inverse = np.unique(texts, return_inverse=True)
    counts = np.bincount(inverse, weights=request_counts[asked]).astype(np.int64)
    order = np.lexsort((unique, -counts))[:_TOP_QUERIES]
    return [(str(unique[i]), int(counts[i])) for i in order]


def simulate_logs(
    output: str | os.PathLike,
    start_date: datetime.date,
    days: int,
    requests_per_day: int,
    candidates_per_request: int,
    config: SimulatorConfig = _DEFAULT_CONFIG,
    *,
    overwrite: bool = False,
) -> SimulationSummary:
    """Simulates ``days`` days of search logs from ``start_date`` and writes them under ``output``.

    Args:
        output: Root directory of the logs (see the module docstring for the layout).
        start_date: First simulated day, on or after ``config.world_start``.
        days: Number of consecutive days; the last must fall inside ``config.world_days``.
        requests_per_day: Search requests per day.
        candidates_per_request: Items shown per request.
        config: The world and its output columns.
        overwrite: Replace logs of these dates already under ``output``; otherwise such logs make
            the run fail before it writes anything.

    Returns:
        Counts and speed of the run.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``output`` already holds logs of these dates and not ``overwrite``.
    """
    started = time.perf_counter()
    counts = (
        ("days", days),
        ("requests_per_day", requests_per_day),
        ("candidates_per_request", candidates_per_request),
    )
    for name, value in counts:
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1 (flag --{name}).")
    first = (start_date - config.world_start).days
    if first < 0 or first + days > config.world_days:
        last = start_date + datetime.timedelta(days=days - 1)
        world_end = config.world_start + datetime.timedelta(days=config.world_days - 1)
        raise ValueError(
            f"dates {start_date}..{last} fall outside the simulated world's range "
            f"{config.world_start}..{world_end}; change --start_date/--days, or --world_start/"
            "--world_days (SimulatorConfig.world_start/world_days; they change the world)."
        )
    output = pathlib.Path(output)
    dates = [start_date + datetime.timedelta(days=offset) for offset in range(days)]
    existing = _existing_files(output, dates)
    clashes = [path for date in dates for path in existing[date]]
    if clashes and not overwrite:
        raise FileExistsError(
            f"{clashes[0]} already exists ({len(clashes)} files hold logs of {dates[0]}.."
            f"{dates[-1]}); pass --overwrite (overwrite=True) to replace them, or another --output."
        )

    world = build_world(config)
    check_candidates(world, candidates_per_request)
    impressions = clicks = clicked = conversions = converted = 0
    request_counts = np.zeros(config.num_queries, dtype=np.int64)
    for offset, date in enumerate(dates):
        log = simulate_day(world, first + offset, requests_per_day, candidates_per_request)
        ids = request_ids_of(world, log)
        written = [_partition(output, "impressions", date, 0)]
        _write_parquet(impressions_table(world, log, ids), written[0])
        for kind in EVENT_KINDS:
            for lag, table in events_tables(world, log, ids, kind).items():
                written.append(_partition(output, kind, date + datetime.timedelta(lag), lag))
                _write_parquet(table, written[-1])
        for stale in set(existing[date]) - set(written):
            stale.unlink()
        impressions += len(log.item)
        clicks += len(log.funnel.click_row)
        clicked += int(log.funnel.clicked.sum())
        conversions += len(log.funnel.conversion_row)
        converted += int(log.funnel.converted.sum())
        request_counts += np.bincount(log.request_query, minlength=config.num_queries)

    wall_seconds = time.perf_counter() - started
    return SimulationSummary(
        impressions=impressions,
        clicks=clicks,
        clicked_impressions=clicked,
        click_rate=clicked / impressions,
        conversions=conversions,
        converted_impressions=converted,
        conversion_rate=converted / impressions,
        top_queries=_top_queries(world, request_counts),
        wall_seconds=wall_seconds,
        impressions_per_second=impressions / wall_seconds,
        days_written=days,
    )


def _is_iso_date(value: str) -> bool:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the job's flags: the run's own, then one per :class:`SimulatorConfig` field.

    Called by ``__main__`` only, so importing defines none.
    """
    flags.DEFINE_string("output", None, "Root directory of the logs.", flag_values=flag_values)
    flags.mark_flag_as_required("output", flag_values=flag_values)
    flags.DEFINE_string(
        "start_date", "2026-01-05", "First day, YYYY-MM-DD.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "world_start",
        _DEFAULT_CONFIG.world_start.isoformat(),
        "Day 0 of the simulated world, YYYY-MM-DD; changing it changes every day's logs.",
        flag_values=flag_values,
    )
    for name in ("start_date", "world_start"):
        flags.register_validator(
            name,
            _is_iso_date,
            f"--{name} must be a date YYYY-MM-DD, e.g. 2026-01-05.",
            flag_values=flag_values,
        )
    integers = (
        ("days", 14, "Consecutive days to simulate."),
        ("requests_per_day", 2000, "Search requests per day."),
        ("candidates_per_request", 20, "Items shown per request."),
    )
    for name, default, help_text in integers:
        flags.DEFINE_integer(name, default, help_text, lower_bound=1, flag_values=flag_values)
    flags.DEFINE_boolean(
        "overwrite",
        False,
        "Replace logs of these dates that the output already holds.",
        flag_values=flag_values,
    )
    config_flags.define_flags(SimulatorConfig, skip=("world_start",), flag_values=flag_values)
    # --helpshort lists the knobs as this job's flags.
    flags.adopt_module_key_flags(config_flags, flag_values=flag_values)


def main(argv: Sequence[str]) -> None:
    """Runs :func:`simulate_logs` from the flags and prints its summary."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    try:
        config = config_flags.build(
            SimulatorConfig,
            values,
            world_start=datetime.date.fromisoformat(values.world_start),
        )
        summary = simulate_logs(
            values.output,
            datetime.date.fromisoformat(values.start_date),
            values.days,
            values.requests_per_day,
            values.candidates_per_request,
            config,
            overwrite=values.overwrite,
        )
    except (ValueError, FileExistsError) as error:
        raise app.UsageError(str(error)) from None
    print(summary)


__all__ = [
    "CLICK_GROUND_TRUTH_COLUMN",
    "CLICK_LABEL_COLUMN",
    "CLICK_SCHEMA",
    "CONVERSION_SCHEMA",
    "EVENT_KINDS",
    "GROUND_TRUTH_COLUMN",
    "IMPRESSION_SCHEMA",
    "LABEL_COLUMN",
    "POST_CLICK_GROUND_TRUTH_COLUMN",
    "SimulationSummary",
    "SimulatorConfig",
    "define_flags",
    "events_tables",
    "impressions_table",
    "main",
    "simulate_logs",
]

if __name__ == "__main__":
    define_flags()
    job.run(main)

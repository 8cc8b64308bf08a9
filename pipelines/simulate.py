"""Search-log simulator: writes date-partitioned Parquet logs of a documented, seeded world.

    python -m pipelines.simulate --output=DIR --start_date=2026-01-05 --days=14 \\
        --requests_per_day=2000 --candidates_per_request=20 --seed=0

writes the layout of a search team's log export::

    <output>/impressions/date=YYYY-MM-DD/part-00000.parquet   one row per (request, shown item)
    <output>/conversions/date=YYYY-MM-DD/part-LLLLL.parquet   one row per purchase event, from
                                                              impressions shown LLLLL days earlier

Conversions land on the date of their own timestamp, so those of the last simulated days are
written to partitions after the range. Naming a conversion file by its impression day keeps every
file the product of one simulated day: runs over days 0-13 and 14-27 write the same bytes as one
run over 0-27. Each file is written under a hidden temporary name in its directory and renamed.

Generative model (stated with its equations in :mod:`pipelines.simulator_world` and
:mod:`pipelines.simulator_day`; narrated in ``pipelines/README.md``):

- Queries, items and users have Zipf popularity; queries and items are evergreen or churn (born on a
  day of the world, rising over days and fading over weeks), so the catalog drifts over months.
- Queries and items mix latent topics; their latent vectors give the query-item affinity a = q . v,
  and their texts (queries and item titles) are drawn from the topics' shared terms.
- Each request shows ``candidates_per_request`` items drawn from its query topic's pool by
  popularity and affinity, ordered by a noisy production ranker.
- An impression converts with probability examine(position) * sigmoid(z), where z adds affinity,
  item quality, query and user propensities, segment x price sensitivity, segment x brand tier and
  a favourite brand per user and category, device main effects and a device x category interaction,
  and day-of-week seasonality. Conversions follow after delays from minutes to 14 days; a few events
  are logged twice.

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

from pipelines.simulator_day import (
    MS_PER_DAY,
    DayLog,
    check_candidates,
    day_start_ms,
    simulate_day,
)
from pipelines.simulator_world import (
    CATEGORIES,
    DEVICES,
    SEGMENTS,
    SimulatorConfig,
    World,
    build_world,
)

IMPRESSION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.int64()),
        ("user_id", pa.string()),
        ("query", pa.string()),
        ("item_id", pa.string()),
        ("position", pa.int64()),
        ("device", pa.string()),
        ("item_category", pa.string()),
        ("item_brand", pa.string()),
        ("item_price", pa.float64()),
        ("user_segment", pa.string()),
        ("item_title", pa.string()),
    ]
)
CONVERSION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),
        ("quantity", pa.int64()),
    ]
)
LABEL_COLUMN = "converted"
GROUND_TRUTH_COLUMN = "true_cvr"

_DEVICE_STRINGS = pa.array(DEVICES)
_SEGMENT_STRINGS = pa.array(SEGMENTS)
_CATEGORY_STRINGS = pa.array([name for name, _, _ in CATEGORIES])
_CONVERSION_FILE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/part-(\d{5})\.parquet$")
_TOP_QUERIES = 10
_DEFAULT_CONFIG = SimulatorConfig()


@dataclasses.dataclass(frozen=True)
class SimulationSummary:
    """What a simulation run wrote.

    Attributes:
        impressions: Impression rows written.
        conversions: Conversion events written (duplicated events included).
        converted_impressions: Impressions with at least one conversion event, at any delay.
        conversion_rate: ``converted_impressions / impressions``.
        top_queries: The most frequent query texts with their request counts, most frequent first.
        wall_seconds: Wall time of the run, world building and writing included.
        impressions_per_second: ``impressions / wall_seconds``.
        days_written: Impression partitions written (one per simulated day).
    """

    impressions: int
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
            f"conversion events:     {self.conversions}\n"
            f"converted impressions: {self.converted_impressions} "
            f"(conversion rate {self.conversion_rate:.4f})\n"
            f"top queries:           {queries}\n"
            f"wall time:             {self.wall_seconds:.2f} s "
            f"({self.impressions_per_second:,.0f} impressions/s)"
        )


def _date_of(world: World, day: int) -> datetime.date:
    return world.config.world_start + datetime.timedelta(days=day)


def _request_ids(world: World, log: DayLog) -> pa.Array:
    """``r<YYYYMMDD>-<index>``: unique across days, ordered by time within a day."""
    count = len(log.request_ts)
    digits = np.char.zfill(np.arange(count).astype(str), max(6, len(str(count - 1))))
    return pa.array(np.char.add(f"r{_date_of(world, log.day):%Y%m%d}-", digits))


def impressions_table(world: World, log: DayLog, request_ids: pa.Array) -> pa.Table:
    """The impressions of one day as an Arrow table of :data:`IMPRESSION_SCHEMA`.

    Args:
        world: The simulated world.
        log: The day's traffic.
        request_ids: The day's request ids (one per request).

    Returns:
        The table, plus ``converted`` (int64: a conversion within ``attribution_days``) when
        ``with_label_column`` and ``true_cvr`` (float64) when ``with_ground_truth`` is configured.
    """
    config = world.config
    request = np.repeat(np.arange(len(log.request_ts)), log.candidates)
    columns = [
        request_ids.take(request),
        pa.array(log.request_ts[request]),
        world.user_id_strings.take(log.request_user[request]),
        world.query_strings.take(log.request_query[request]),
        world.item_id_strings.take(log.item),
        pa.array(log.position),
        _DEVICE_STRINGS.take(log.request_device[request]),
        _CATEGORY_STRINGS.take(world.item_category[log.item]),
        world.brand_strings.take(world.item_brand[log.item]),
        pa.array(world.item_price[log.item]),
        _SEGMENT_STRINGS.take(world.user_segment[log.request_user[request]]),
        world.item_title_strings.take(log.item),
    ]
    schema = IMPRESSION_SCHEMA
    if config.with_label_column:
        window_ms = config.attribution_days * MS_PER_DAY
        attributed = log.converted & (log.conversion_delay_ms <= window_ms)
        columns.append(pa.array(attributed.astype(np.int64)))
        schema = schema.append(pa.field(LABEL_COLUMN, pa.int64()))
    if config.with_ground_truth:
        columns.append(pa.array(log.true_cvr))
        schema = schema.append(pa.field(GROUND_TRUTH_COLUMN, pa.float64()))
    return pa.Table.from_arrays(columns, schema=schema)


def conversions_tables(world: World, log: DayLog, request_ids: pa.Array) -> dict[int, pa.Table]:
    """The conversion events of one day's impressions, keyed by days from impression to event.

    Returns:
        ``{lag: table of CONVERSION_SCHEMA}`` for every lag with events, rows in time order.
    """
    lags = (log.event_ts - day_start_ms(world, log.day)) // MS_PER_DAY
    bounds = np.searchsorted(lags, np.arange(lags.max() + 2)) if len(lags) else np.zeros(1, int)
    tables = {}
    for lag in np.flatnonzero(np.diff(bounds)):
        rows = slice(bounds[lag], bounds[lag + 1])
        event_row = log.event_row[rows]
        tables[int(lag)] = pa.Table.from_arrays(
            [
                request_ids.take(event_row // log.candidates),
                world.item_id_strings.take(log.item[event_row]),
                pa.array(log.event_ts[rows]),
                pa.array(log.event_quantity[rows]),
            ],
            schema=CONVERSION_SCHEMA,
        )
    return tables


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
    """Files already holding logs of each of ``dates``: its impressions, then its conversions."""
    existing = {
        date: sorted(output.glob(f"impressions/date={date}/part-*.parquet")) for date in dates
    }
    for path in sorted(output.glob("conversions/date=*/part-*.parquet")):
        match = _CONVERSION_FILE.search(path.as_posix())
        if match:
            origin = datetime.date.fromisoformat(match[1]) - datetime.timedelta(days=int(match[2]))
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
    impressions = conversions = converted = 0
    request_counts = np.zeros(config.num_queries, dtype=np.int64)
    for offset, date in enumerate(dates):
        log = simulate_day(world, first + offset, requests_per_day, candidates_per_request)
        request_ids = _request_ids(world, log)
        written = [_partition(output, "impressions", date, 0)]
        _write_parquet(impressions_table(world, log, request_ids), written[0])
        for lag, table in conversions_tables(world, log, request_ids).items():
            written.append(_partition(output, "conversions", date + datetime.timedelta(lag), lag))
            _write_parquet(table, written[-1])
        for stale in set(existing[date]) - set(written):
            stale.unlink()
        impressions += len(log.item)
        conversions += len(log.event_row)
        converted += int(log.converted.sum())
        request_counts += np.bincount(log.request_query, minlength=config.num_queries)

    wall_seconds = time.perf_counter() - started
    return SimulationSummary(
        impressions=impressions,
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
    """Defines the job's flags (called by ``__main__`` only, so importing defines none)."""
    defaults = _DEFAULT_CONFIG
    flags.DEFINE_string("output", None, "Root directory of the logs.", flag_values=flag_values)
    flags.mark_flag_as_required("output", flag_values=flag_values)
    flags.DEFINE_string(
        "start_date", "2026-01-05", "First day, YYYY-MM-DD.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "world_start",
        defaults.world_start.isoformat(),
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
        ("num_items", defaults.num_items, "Catalog size over the world's range."),
        ("num_queries", defaults.num_queries, "Distinct latent queries."),
        ("num_users", defaults.num_users, "Users."),
        ("num_topics", defaults.num_topics, "Latent topics."),
        ("latent_dim", defaults.latent_dim, "Dimension of query and item latent vectors."),
        ("attribution_days", defaults.attribution_days, "Window of the --with_label_column label."),
        ("world_days", defaults.world_days, "Days in the world's range (changes the logs)."),
    )
    for name, default, help_text in integers:
        flags.DEFINE_integer(name, default, help_text, lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer(
        "seed",
        defaults.seed,
        "Seed of the world and of each day's traffic.",
        lower_bound=0,
        flag_values=flag_values,
    )
    booleans = (
        ("with_label_column", "Add 'converted' (int64 0/1: a conversion within attribution_days)."),
        ("with_ground_truth", "Add 'true_cvr' (float64: probability of an eventual conversion)."),
        ("overwrite", "Replace logs of these dates that the output already holds."),
    )
    for name, help_text in booleans:
        flags.DEFINE_boolean(name, False, help_text, flag_values=flag_values)


def main(argv: Sequence[str]) -> None:
    """Runs :func:`simulate_logs` from the flags and prints its summary."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    config = SimulatorConfig(
        seed=values.seed,
        num_items=values.num_items,
        num_queries=values.num_queries,
        num_users=values.num_users,
        num_topics=values.num_topics,
        latent_dim=values.latent_dim,
        attribution_days=values.attribution_days,
        with_label_column=values.with_label_column,
        with_ground_truth=values.with_ground_truth,
        world_start=datetime.date.fromisoformat(values.world_start),
        world_days=values.world_days,
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
    print(summary)


__all__ = [
    "CONVERSION_SCHEMA",
    "GROUND_TRUTH_COLUMN",
    "IMPRESSION_SCHEMA",
    "LABEL_COLUMN",
    "SimulationSummary",
    "SimulatorConfig",
    "conversions_tables",
    "define_flags",
    "impressions_table",
    "main",
    "simulate_logs",
]

if __name__ == "__main__":
    define_flags()
    app.run(main)

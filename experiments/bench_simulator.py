"""Simulator benchmark: impressions per second of the log simulator, Parquet writing included.

Times each stage on the default world (50k items, 20k queries, 100k users) on this machine:
building the world, simulating the days in memory, and :func:`pipelines.simulate.simulate_logs`
end to end (world, traffic and Parquet files, into a temporary directory). Each is the median of
``--runs`` runs, in wall seconds and in CPU seconds of this process (all its threads): when other
processes share the machine, wall time grows but CPU time much less, so both are shown, with the
load average before and after. Prints a markdown table and the funnel's rates of the simulated
traffic (click rate, conversion rate of clicks, eventual conversion rate), and optionally writes
the rows as JSON. The target is >= 200k impressions/s end to end.

    python -m experiments.bench_simulator [--days=5] [--requests_per_day=10000]
        [--candidates_per_request=20] [--runs=3] [--out=experiments/results/simulator.json]
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

from absl import app, flags

from cvr_tf import job
from pipelines.simulate import SimulationSummary, simulate_logs
from pipelines.simulator_day import simulate_day
from pipelines.simulator_world import SimulatorConfig, build_world

TARGET_IMPRESSIONS_PER_SECOND = 200_000
START = datetime.date(2026, 1, 5)


def _median_seconds(run: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``runs`` calls of ``run``."""
    wall, cpu = [], []
    for _ in range(runs):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return statistics.median(wall), statistics.median(cpu)


def benchmark(
    days: int, requests_per_day: int, candidates: int, runs: int
) -> tuple[list[dict], SimulationSummary]:
    """Returns one row per stage (wall and CPU seconds, impressions, impressions per second) and
    the summary of the last end-to-end run."""
    config = SimulatorConfig()
    impressions = days * requests_per_day * candidates
    world = build_world(config)
    first = (START - config.world_start).days
    summaries = []

    def end_to_end() -> None:
        with tempfile.TemporaryDirectory() as output:
            summaries.append(
                simulate_logs(output, START, days, requests_per_day, candidates, config)
            )

    stages = {
        "build world": (lambda: build_world(config), 0),
        "simulate days in memory": (
            lambda: [
                simulate_day(world, first + d, requests_per_day, candidates) for d in range(days)
            ],
            impressions,
        ),
        "simulate_logs end to end (incl. Parquet)": (end_to_end, impressions),
    }
    rows = []
    for stage, (run, count) in stages.items():
        wall, cpu = _median_seconds(run, runs)
        rows.append(
            {
                "stage": stage,
                "wall_seconds": round(wall, 3),
                "cpu_seconds": round(cpu, 3),
                "impressions": count,
                "impressions_per_second": round(count / wall) if count else None,
                "impressions_per_cpu_second": round(count / cpu) if count else None,
            }
        )
    return rows, summaries[-1]


def _table(rows: Sequence[dict]) -> str:
    lines = [
        "| stage | wall s | CPU s | impressions | impressions/s | impressions/CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        rates = [row["impressions_per_second"], row["impressions_per_cpu_second"]]
        wall_rate, cpu_rate = (f"{rate:,}" if rate else "-" for rate in rates)
        lines.append(
            f"| {row['stage']} | {row['wall_seconds']:.2f} | {row['cpu_seconds']:.2f} | "
            f"{row['impressions']:,} | {wall_rate} | {cpu_rate} |"
        )
    return "\n".join(lines)


def define_flags() -> None:
    """The benchmark's flags (called by ``__main__`` only)."""
    flags.DEFINE_integer("days", 5, "Simulated days per run.", lower_bound=1)
    flags.DEFINE_integer("requests_per_day", 10_000, "Requests per day.", lower_bound=1)
    flags.DEFINE_integer("candidates_per_request", 20, "Items shown per request.", lower_bound=1)
    flags.DEFINE_integer("runs", 3, "Runs per stage; the table gives their median.", lower_bound=1)
    flags.DEFINE_string("out", None, "Optional JSON file for the table's rows.")


def main(argv: Sequence[str]) -> None:
    """Runs the benchmark and prints (and optionally writes) its table."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    load_before = os.getloadavg()
    rows, summary = benchmark(
        values.days, values.requests_per_day, values.candidates_per_request, values.runs
    )
    load_after = os.getloadavg()
    print(_table(rows))
    end_to_end = rows[-1]["impressions_per_second"]
    print(
        f"\nend to end: {end_to_end:,} impressions/s wall "
        f"({end_to_end / TARGET_IMPRESSIONS_PER_SECOND:.2f}x the {TARGET_IMPRESSIONS_PER_SECOND:,}"
        f" target), {rows[-1]['impressions_per_cpu_second']:,} per CPU second"
    )
    post_click = summary.converted_impressions / summary.clicked_impressions
    print(
        f"funnel: click rate {summary.click_rate:.4f}, conversion rate of clicks "
        f"{post_click:.4f}, eventual conversion rate {summary.conversion_rate:.4f}"
    )
    print(
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{load:.2f}" for load in load_before)
        + "; after "
        + ", ".join(f"{load:.2f}" for load in load_after)
    )
    if values.out:
        out = pathlib.Path(values.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    define_flags()
    job.run(main)

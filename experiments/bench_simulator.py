"""Simulator benchmark: impressions per second of the log simulator, Parquet writing included.

Times each stage on the default world (50k items, 20k queries, 100k users) on this machine:
building the world, simulating the days in memory, and :func:`pipelines.simulate.simulate_logs`
end to end (world, traffic and Parquet files, into a temporary directory). Each is the median of
``--runs`` runs, in wall seconds and in CPU seconds of this process (all its threads): when other
processes share the machine, wall time grows but CPU time much less, so both are shown. Prints a
markdown table and optionally writes the rows as JSON. The target is >= 200k impressions/s end to
end.

    python -m experiments.bench_simulator [--days 5] [--requests_per_day 10000]
        [--candidates_per_request 20] [--runs 3] [--out experiments/results/simulator.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from pipelines.simulate import simulate_logs
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


def benchmark(days: int, requests_per_day: int, candidates: int, runs: int) -> list[dict]:
    """Returns one row per stage: wall and CPU seconds, impressions, impressions per second."""
    config = SimulatorConfig()
    impressions = days * requests_per_day * candidates
    world = build_world(config)
    first = (START - config.world_start).days

    def end_to_end() -> None:
        with tempfile.TemporaryDirectory() as output:
            simulate_logs(output, START, days, requests_per_day, candidates, config)

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
    return rows


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


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the benchmark and prints (and optionally writes) its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--requests_per_day", type=int, default=10_000)
    parser.add_argument("--candidates_per_request", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    rows = benchmark(args.days, args.requests_per_day, args.candidates_per_request, args.runs)
    print(_table(rows))
    end_to_end = rows[-1]["impressions_per_second"]
    print(
        f"\nend to end: {end_to_end:,} impressions/s wall "
        f"({end_to_end / TARGET_IMPRESSIONS_PER_SECOND:.2f}x the {TARGET_IMPRESSIONS_PER_SECOND:,}"
        f" target), {rows[-1]['impressions_per_cpu_second']:,} per CPU second"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Markdown tables of the serving benchmark, from :func:`experiments.serving_sweep.summarize`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _cells(point: Mapping[str, Any] | None) -> str:
    if point is None:
        return "none | | "
    overloaded = "" if point["sustained"] else " (overloaded)"
    return f"{point['requests_per_s']:.1f}{overloaded} | {point['p50_ms']:.1f} | " \
           f"{point['p99_ms']:.1f}"


def throughput_table(title: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Max sustained throughput of a batched and an unbatched model within p99 budgets."""
    lines = [title, "",
             "| p99 budget | ms | batched req/s | p50 | p99 | unbatched req/s | p50 | p99 "
             "| ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        ratio = f"{row['throughput_ratio']:.2f}x" if row["throughput_ratio"] else "n/a"
        ratio = f">= {ratio} (batched never saturated)" if row["batched_capped_by_ladder"] \
            else ratio
        lines.append(f"| {row['budget']} | {row['p99_budget_ms']:.1f} | "
                     f"{_cells(row['batched'])} | {_cells(row['unbatched'])} | {ratio} |")
    return lines


def p99_table(title: str, rows: Sequence[Mapping[str, Any]], first: str,
              second: str) -> list[str]:
    """Two models at each common offered QPS, with the p99 ratio second / first."""
    lines = [title, "",
             f"| QPS | {first} req/s | p50 | p99 | {second} req/s | p50 | p99 | p99 ratio |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row['qps']:g} | {_cells(row['baseline'])} | {_cells(row['other'])} | "
              f"{row['p99_ratio'] if row['p99_ratio'] is not None else 'n/a'} |" for row in rows]
    return lines


def summary_tables(summary: Mapping[str, Any], flops_ratio: float, label: str) -> list[str]:
    """Batched vs unbatched (and for dhen where measured), decoupled vs whole, dhen vs dcnv2."""
    lines = throughput_table(f"{label} (a) dcnv2 batched (dense part, in-graph) vs unbatched: "
                             "max sustained throughput within a p99 budget",
                             summary["batched_vs_unbatched"])
    if "dhen_batched_vs_unbatched" in summary:
        lines += ["", *throughput_table(f"{label} (a') dhen batched vs unbatched",
                                        summary["dhen_batched_vs_unbatched"])]
    lines += ["", *p99_table(f"{label} (b) decoupled (embed in the request thread, dense "
                             "batched) vs whole-model batching", summary["decoupled_vs_whole"],
                             "decoupled", "whole")]
    lines += ["", *p99_table(f"{label} (c) dhen (dense-part FLOPs {flops_ratio:.2f}x) vs "
                             "dcnv2, both batched", summary["dhen_vs_dcnv2"], "dcnv2", "dhen")]
    return lines


def overhead_table(overheads: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sequential Predicts through the local server vs in-process calls of the same signature."""
    lines = ["(d) local server overhead: sequential Predicts through the server vs in-process "
             "calls of the same signature (medians)", "",
             "| model | calls | gRPC ms | in-process ms | overhead ms | server CPU ms/request |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row['model']} | {row['calls']} | {row['grpc_ms']:.2f} | "
              f"{row['in_process_ms']:.2f} | {row['overhead_ms']:.2f} | "
              f"{row['server_cpu_ms_per_request']:.2f} |" for row in overheads]
    return lines


def utilization_table(rows: Sequence[Mapping[str, Any]], peaks: Mapping[str, float]) -> list[str]:
    """Dense-part GFLOP/s at each model's best sustained in-process point, against the peak."""
    lines = [f"(e) dense-part compute at the best sustained in-process point; matmul peak "
             f"fp32 {peaks['float32']:.0f}, bf16 {peaks['bfloat16']:.0f} GFLOP/s (this run)", "",
             "| model | req/s | p99 ms | dense GFLOP/s | of fp32 peak | of bf16 peak |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row['model']} | {row['requests_per_s']:.0f} | {row['p99_ms']:.1f} | "
              f"{row['dense_gflops']:.1f} | {row['dense_gflops'] / peaks['float32']:.1%} | "
              f"{row['dense_gflops'] / peaks['bfloat16']:.1%} |" for row in rows]
    return lines

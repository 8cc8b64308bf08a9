"""Scaling study: a grid over backbone x embedding scale x training window, one training run a cell.

    python -m experiments.scaling --preset=medium --out=/tmp/scaling_medium --with_ground_truth \\
        --results=experiments/results/scaling_medium.jsonl
    python -m experiments.scaling --grid=my_grid.json --data_dir=/data/spans \\
        --feature_spec=my_spec.json --out=/data/scaling      # a team's own spans

The design (cells, factors, grid files) is :mod:`experiments.grid`. Everything goes under
``--out``: ``data/`` (simulated logs and their spans, built once and cached; nothing for a team's
own spans), ``cells/<cell>/`` (each cell's model dir; a cell whose ``metrics.json`` exists is
done and skipped, so an interrupted study resumes) and ``results.jsonl`` (or ``--results``),
rewritten after every cell with one row per finished cell: test metrics, relative mAP gain,
params, FLOPs, wall time (:func:`result_row`) and, with ``--with_ground_truth`` on simulated
data, the Bayes ceiling of the test rows and the cell's gap to it (:mod:`experiments.ceiling`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import app, flags, logging

from cvr_tf import job, training
from cvr_tf.features import resolve_spec
from cvr_tf.metrics import format_metric
from experiments import ceiling as ceiling_lib
from experiments.grid import Cell, DataConfig, Grid, GridError, load_grid, preset_path
from pipelines.simulate import simulate_logs
from pipelines.span_pipeline import build_spans

SIMULATION_RECORD = "simulation.json"
# A forward pass is counted by the backbones; a training step costs about three (forward, and
# backward through activations and weights).
TRAINING_FLOPS_PER_FORWARD_FLOP = 3


def prepare_data(data: DataConfig, longest_window: int, root: str,
                 feature_spec: str = "") -> str:
    """The spans dir the grid reads: a team's own, or simulated and built once under ``root``.

    Simulated logs cover the longest training window and the eval window. They are simulated
    again only when ``root`` holds a shorter range of the same world and traffic (same bytes
    for the days in common); spans already complete are kept by the pipeline.

    Raises:
      GridError: when ``root`` holds logs of another world or traffic.
    """
    if not data.simulated:
        return data.spans
    first_day, _ = data.train_window(longest_window)
    logs, spans = os.path.join(root, "logs"), os.path.join(root, "spans")
    record_path = os.path.join(root, SIMULATION_RECORD)
    wanted = data.record(first_day)
    previous = None
    if os.path.exists(record_path):
        with open(record_path, encoding="utf-8") as handle:
            previous = json.load(handle)
        same_world = all(previous[k] == wanted[k] for k in wanted
                         if k not in ("first_day", "last_day"))
        if not same_world:
            raise GridError(f"{root} holds logs of another world or traffic ({previous}); "
                            "pick another --out, or delete that directory")
    covered = previous is not None and (previous["first_day"] <= wanted["first_day"]
                                        and previous["last_day"] >= wanted["last_day"])
    if not covered:
        days = (data.eval_end - first_day).days + 1
        logging.info("Simulating %d days of logs from %s into %s.", days, first_day, logs)
        simulate_logs(logs, first_day, days, data.requests_per_day, data.candidates_per_request,
                      data.simulator_config(), overwrite=True)
        os.makedirs(root, exist_ok=True)
        with open(record_path, "w", encoding="utf-8") as handle:
            json.dump(wanted, handle, indent=2)
    build_spans(logs, spans, first_day, data.eval_end, resolve_spec(feature_spec))
    return spans


def _comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("data_dir", "model_dir")}


def run_cell(grid: Grid, cell: Cell, data_dir: str, model_dir: str) -> dict[str, Any]:
    """Trains ``cell`` unless its ``metrics.json`` exists; returns the metrics record.

    Raises:
      GridError: when ``model_dir`` holds a finished run of another config.
    """
    config = grid.train_config(cell, data_dir, model_dir)
    metrics_path = os.path.join(model_dir, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path, encoding="utf-8") as handle:
            record = json.load(handle)
        if _comparable(record["config"]) != _comparable(config.to_record()):
            raise GridError(f"{model_dir} holds a finished run of another config; delete it or "
                            "pick another --out")
        return record
    return training.train(config)


def result_row(grid: Grid, cell: Cell, record: Mapping[str, Any], out: str,
               baseline_map: float | None,
               ceiling: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One JSONL row: the cell, its test metrics and costs, its relative mAP gain and, given the
    Bayes ``ceiling`` of the test rows, the ceiling and the cell's gap to it.

    ``map_gain = mAP / baseline_map - 1``, where ``baseline_map`` is the mean mAP of the
    baseline cell over its seeds (None until the baseline has run); the gain is None when
    either mAP is not computable (None, see :mod:`cvr_tf.metrics`). ``train_flops`` is
    ``3 x dense FLOPs/example x training examples``, the usual forward+backward estimate.
    """
    metrics = record["eval"]
    mean_ap = metrics["mean_average_precision"]
    row = {
        "cell": cell.name, "role": cell.role(grid.baseline), **dataclasses.asdict(cell),
        "levels": cell.levels(),
        **{k: metrics[k] for k in ("auc", "logloss", "mean_average_precision", "group_auc",
                                   "calibration", "examples")},
        "map_gain": (None if baseline_map is None or mean_ap is None
                     else mean_ap / baseline_map - 1.0),
        "embedding_params": record["embedding_params"], "dense_params": record["dense_params"],
        "params": record["embedding_params"] + record["dense_params"],
        "dense_flops_per_example": record["dense_flops_per_example"],
        "train_examples": record["train_examples"], "train_steps": record["train_steps"],
        "best_step": record["best_step"],
        "train_flops": (TRAINING_FLOPS_PER_FORWARD_FLOP * record["dense_flops_per_example"]
                        * record["train_examples"]),
        "train_examples_per_second": record["train_examples_per_second"],
        "wall_seconds": record["wall_seconds"],
        "model_dir": os.path.relpath(record["config"]["model_dir"], out),
    }
    if ceiling is not None:
        row["ceiling"] = {k: ceiling[k] for k in ceiling_lib.METRICS}
        row["gap_to_ceiling"] = ceiling_lib.gaps(metrics, ceiling)
    return row


def write_results(grid: Grid, records: Mapping[Cell, Mapping[str, Any]], out: str,
                  results_path: str, ceiling: Mapping[str, Any] | None = None
                  ) -> list[dict[str, Any]]:
    """Rewrites ``results_path`` with a row per finished cell, in grid order; returns the rows."""
    baselines = [r["eval"]["mean_average_precision"] for c, r in records.items()
                 if not c.scaled_factors(grid.baseline)
                 and r["eval"]["mean_average_precision"] is not None]
    baseline_map = sum(baselines) / len(baselines) if baselines else None
    rows = [result_row(grid, cell, records[cell], out, baseline_map, ceiling)
            for cell in grid.cells if cell in records]
    os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
    temporary = f"{results_path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    os.replace(temporary, results_path)
    return rows


def run_grid(grid: Grid, out: str, results_path: str = "",
             report: Callable[[str], None] = print,
             with_ground_truth: bool = False) -> list[dict[str, Any]]:
    """Prepares the data, runs every cell not done yet, and writes the results.

    Args:
      grid: the grid.
      out: output directory (``data/``, ``cells/``, default ``results.jsonl``).
      results_path: where the JSONL goes; default ``<out>/results.jsonl``.
      report: called with a line per cell.
      with_ground_truth: add the Bayes ceiling of the test rows and each cell's gap to it
        (simulated data only).

    Returns:
      The result rows (as in the JSONL).
    """
    results_path = results_path or os.path.join(out, "results.jsonl")
    longest = max(cell.train_days for cell in grid.cells)
    data_dir = prepare_data(grid.data, longest, os.path.join(out, "data"),
                            grid.training.get("feature_spec", ""))
    ceiling = (ceiling_lib.bayes_ceiling(grid.data, os.path.join(out, "data"))
               if with_ground_truth else None)
    if ceiling is not None:
        report(f"Bayes ceiling of the test window ({ceiling['examples']:,} rows): mAP "
               f"{format_metric(ceiling['mean_average_precision'])}, AUC "
               f"{format_metric(ceiling['auc'])}, logloss {ceiling['logloss']:.5f}")
    records: dict[Cell, Mapping[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for index, cell in enumerate(grid.cells, start=1):
        model_dir = os.path.join(out, "cells", cell.name)
        done = os.path.exists(os.path.join(model_dir, "metrics.json"))
        records[cell] = run_cell(grid, cell, data_dir, model_dir)
        rows = write_results(grid, records, out, results_path, ceiling)
        metrics = records[cell]["eval"]
        report(f"[{index}/{len(grid.cells)}] {cell.name} ({cell.role(grid.baseline)}): "
               f"{'done before' if done else 'trained'}, mAP "
               f"{format_metric(metrics['mean_average_precision'])}, AUC "
               f"{format_metric(metrics['auc'])}, logloss {metrics['logloss']:.5f}, "
               f"{records[cell]['wall_seconds']:.0f} s")
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The result rows as a markdown table (with the mAP gap to the ceiling when rows have it)."""
    with_gap = any("gap_to_ceiling" in row for row in rows)
    lines = ["| cell | role | mAP | gain | AUC | logloss | "
             + ("mAP gap to ceiling | " if with_gap else "")
             + "dense MFLOPs/ex | params | train examples | wall s |",
             "| --- | --- | ---: | ---: | ---: | ---: | " + ("---: | " if with_gap else "")
             + "---: | ---: | ---: | ---: |"]
    for row in rows:
        gain = "-" if row["map_gain"] is None else f"{100 * row['map_gain']:+.2f}%"
        gap = (f"{format_metric(row['gap_to_ceiling']['mean_average_precision'])} | "
               if with_gap else "")
        lines.append(
            f"| {row['cell']} | {row['role']} | {format_metric(row['mean_average_precision'])} | "
            f"{gain} | {format_metric(row['auc'])} | {row['logloss']:.5f} | {gap}"
            f"{row['dense_flops_per_example'] / 1e6:.2f} | {row['params']:,} | "
            f"{row['train_examples']:,} | {row['wall_seconds']:.0f} |")
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import: tests import several experiments
    whose flags would share names)."""
    flags.DEFINE_enum("preset", None, ["small", "medium", "full"],
                      "A grid of experiments/grids/ (or --grid).")
    flags.DEFINE_string("grid", None, "A grid JSON file (or --preset).")
    flags.DEFINE_string("out", None, "Data, model dirs and results go here.")
    flags.DEFINE_string("results", "", "Results JSONL; default <out>/results.jsonl.")
    flags.DEFINE_bool("with_ground_truth", False, "Report the Bayes ceiling of the test rows "
                      "(the simulator's true_cvr) and each cell's gap to it.")
    flags.DEFINE_string("data_dir", "", "Your own spans (the pipeline's --output), instead of "
                        "the grid's simulated world; the grid's eval window and windows apply.")
    flags.DEFINE_string("feature_spec", "", "Feature spec of --data_dir's spans (default: the "
                        "spec the spans record).")
    flags.mark_flag_as_required("out")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if (FLAGS.preset is None) == (FLAGS.grid is None):
        raise app.UsageError("give exactly one of --preset and --grid")
    logging.set_verbosity(logging.INFO)
    try:
        grid = load_grid(FLAGS.grid or preset_path(FLAGS.preset),
                         spans=FLAGS.data_dir).with_feature_spec(FLAGS.feature_spec)
        print(f"Grid {grid.name}: {len(grid.cells)} cells into {FLAGS.out}", flush=True)
        rows = run_grid(grid, FLAGS.out, FLAGS.results,
                        report=lambda line: print(line, flush=True),
                        with_ground_truth=FLAGS.with_ground_truth)
    except (GridError, training.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(markdown_table(rows))


if __name__ == "__main__":
    define_flags()
    job.run(main)

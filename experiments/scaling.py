"""Scaling study: a grid over backbone x embedding scale x training window, one training run a cell.

    python -m experiments.scaling --preset=small --out=/tmp/scaling_small \\
        --results=experiments/results/scaling_small.jsonl
    python -m experiments.scaling --grid=experiments/grids/full.json --out=/data/scaling_full

The three factors, each a knob of :func:`cvr_tf.training.train`:

* **backbone**: a backbone name and its ``backbone_scale`` (dcnv2, masknet, dhen, ensembles);
* **embedding**: ``embedding_dim_scale`` of the feature spec (wider fields also widen the
  backbone's input, so the dense FLOPs per example grow with it);
* **data**: ``train_days``, the length of the training window; every window ends the day before
  the one shared eval window, and a cell trains ``epochs`` passes over its window, so a longer
  window means more (and older) examples.

A full factorial is too big, so a grid file (``experiments/grids/*.json``) names a *baseline*
cell and builds the design from it (see :func:`grid_from_dict`): one-factor **axes** (the
baseline with one factor changed; they measure the main effects), 2x2x2 **factorials** between
the baseline and a corner (every joint scale-up of two and three factors), explicit extra
**cells**, and repeats of the baseline with other **seeds** (the noise floor).

Everything goes under ``--out``: ``data/`` (simulated logs and their spans, built once and
cached), ``cells/<cell>/`` (each cell's model dir; a cell whose ``metrics.json`` exists is done
and skipped, so an interrupted study resumes) and ``results.jsonl`` (or ``--results``), rewritten
after every cell with one row per finished cell: metrics, relative mAP gain, params, FLOPs and
wall time (:func:`result_row`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging

from cvr_tf import training
from cvr_tf.features import resolve_spec
from cvr_tf.metrics import format_metric
from cvr_tf.model import ModelConfig
from cvr_tf.optimization import OptimizerConfig
from experiments.additivity import FACTORS
from pipelines.simulate import simulate_logs
from pipelines.simulator_world import SimulatorConfig
from pipelines.span_pipeline import build_spans

GRIDS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grids")
PRESETS = ("small", "full")
# TrainConfig fields a grid's "training" section may set; the rest are per cell.
TRAINING_KEYS = ("feature_spec", "batch_size", "epochs", "steps", "checkpoint_every_steps",
                 "log_every_steps", "eval_batch_size", "strategy", "eval_every_steps",
                 "early_stopping_metric", "early_stopping_patience")
MODEL_KEYS = ("vocab_scale", "loss", "position_debiasing")
OPTIMIZATION_KEYS = tuple(f.name for f in dataclasses.fields(OptimizerConfig))
SIMULATION_RECORD = "simulation.json"
# A forward pass is counted by the backbones; a training step costs about three (forward, and
# backward through activations and weights).
TRAINING_FLOPS_PER_FORWARD_FLOP = 3


class GridError(ValueError):
    """A grid file or an output directory that cannot be used; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the grid: a level of each factor, and a seed."""

    backbone: str
    backbone_scale: float
    embedding_dim_scale: float
    train_days: int
    seed: int = 0

    @property
    def name(self) -> str:
        """Directory name, e.g. ``dcnv2x1-emb2-d12-s0`` (``ensemble:a+b`` -> ``ensemble_a+b``)."""
        backbone = self.backbone.replace(":", "_")
        return (f"{backbone}x{self.backbone_scale:g}-emb{self.embedding_dim_scale:g}"
                f"-d{self.train_days}-s{self.seed}")

    def levels(self) -> dict[str, str]:
        """The cell's level of each factor of :data:`FACTORS`, as labels."""
        return {"backbone": f"{self.backbone} x{self.backbone_scale:g}",
                "embedding": f"x{self.embedding_dim_scale:g}",
                "data": f"{self.train_days}d"}

    def scaled_factors(self, baseline: Cell) -> list[str]:
        """Factors at another level than in ``baseline``."""
        mine, base = self.levels(), baseline.levels()
        return [factor for factor in FACTORS if mine[factor] != base[factor]]

    def role(self, baseline: Cell) -> str:
        """``baseline``, ``baseline-seed`` (a repeat), or the scaled factors joined by ``+``."""
        scaled = self.scaled_factors(baseline)
        if scaled:
            return "+".join(scaled)
        return "baseline" if self.seed == baseline.seed else "baseline-seed"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The simulated traffic every cell trains and evaluates on.

    Attributes:
      eval_start: first day of the shared eval window; training windows end the day before.
      eval_days: length of the eval window.
      requests_per_day: simulated search requests a day.
      candidates_per_request: items shown per request.
      world: :class:`pipelines.simulator_world.SimulatorConfig` fields (the rest default).
    """

    eval_start: datetime.date
    eval_days: int
    requests_per_day: int
    candidates_per_request: int
    world: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def eval_end(self) -> datetime.date:
        return self.eval_start + datetime.timedelta(days=self.eval_days - 1)

    def train_window(self, days: int) -> tuple[datetime.date, datetime.date]:
        """(first, last) day of a training window of ``days`` days before the eval window."""
        end = self.eval_start - datetime.timedelta(days=1)
        return end - datetime.timedelta(days=days - 1), end

    def simulator_config(self) -> SimulatorConfig:
        world = dict(self.world)
        if "world_start" in world:
            world["world_start"] = datetime.date.fromisoformat(world["world_start"])
        try:
            return SimulatorConfig(**world)
        except TypeError as error:
            raise GridError(f"data.world: {error}; use SimulatorConfig field names") from error

    def record(self, first_day: datetime.date) -> dict[str, Any]:
        """What identifies the simulated logs from ``first_day`` to the end of the eval window."""
        return {"first_day": first_day.isoformat(), "last_day": self.eval_end.isoformat(),
                "requests_per_day": self.requests_per_day,
                "candidates_per_request": self.candidates_per_request, "world": dict(self.world)}


@dataclasses.dataclass(frozen=True)
class Grid:
    """A scaling grid: shared data and training settings, the baseline, and the cells to run."""

    name: str
    data: DataConfig
    training: Mapping[str, Any]
    baseline: Cell
    cells: tuple[Cell, ...]

    def train_config(self, cell: Cell, data_dir: str, model_dir: str) -> training.TrainConfig:
        """The :class:`cvr_tf.training.TrainConfig` of ``cell``."""
        train_start, train_end = self.data.train_window(cell.train_days)
        model = ModelConfig(backbone=cell.backbone, backbone_scale=cell.backbone_scale,
                            embedding_dim_scale=cell.embedding_dim_scale,
                            **{k: v for k, v in self.training.items() if k in MODEL_KEYS})
        return training.TrainConfig(
            data_dir=data_dir, model_dir=model_dir, train_start=train_start, train_end=train_end,
            eval_start=self.data.eval_start, eval_end=self.data.eval_end, model=model,
            seed=cell.seed, optimization=OptimizerConfig(
                **{k: v for k, v in self.training.items() if k in OPTIMIZATION_KEYS}),
            **{k: v for k, v in self.training.items() if k in TRAINING_KEYS})


def _cell(raw: Mapping[str, Any], base: Cell, where: str) -> Cell:
    """``base`` with the factor levels ``raw`` names (``backbone`` as ``[name, scale]``)."""
    known = {"backbone", "embedding_dim_scale", "train_days", "seed"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise GridError(f"{where}: unknown key(s) {', '.join(unknown)}; a cell sets "
                        f"{', '.join(sorted(known))}")
    changes: dict[str, Any] = {}
    if "backbone" in raw:
        backbone = raw["backbone"]
        if not (isinstance(backbone, Sequence) and len(backbone) == 2
                and isinstance(backbone[0], str)):
            raise GridError(f"{where}: backbone must be [name, scale], e.g. [\"dhen\", 1], "
                            f"got {backbone!r}")
        changes["backbone"], changes["backbone_scale"] = backbone[0], float(backbone[1])
    if "embedding_dim_scale" in raw:
        changes["embedding_dim_scale"] = float(raw["embedding_dim_scale"])
    for key in ("train_days", "seed"):
        if key in raw:
            changes[key] = int(raw[key])
    cell = dataclasses.replace(base, **changes)
    if cell.train_days < 1 or cell.backbone_scale <= 0 or cell.embedding_dim_scale <= 0:
        raise GridError(f"{where}: train_days, backbone scale and embedding_dim_scale must be "
                        f"positive, got {cell}")
    return cell


def grid_from_dict(data: Mapping[str, Any], name: str = "grid") -> Grid:
    """Builds a :class:`Grid` from a grid file's contents.

    Keys: ``data`` (:class:`DataConfig` fields, ``eval_start`` as YYYY-MM-DD), ``training``
    (:data:`TRAINING_KEYS`, :data:`MODEL_KEYS` and :data:`OPTIMIZATION_KEYS`), ``baseline``
    (``backbone: [name, scale]``, ``embedding_dim_scale``, ``train_days``, ``seed``), and the
    design: ``seeds`` (baseline repeats), ``axes`` (``backbone``: list of ``[name, scale]``;
    ``embedding_dim_scale`` and ``train_days``: lists of levels), ``factorials`` (corners: each a
    cell whose every subset of changes from the baseline is run) and ``cells`` (explicit cells).
    Free-text keys ``description`` and ``design`` document the grid. Cells run in that order,
    duplicates once.
    """
    allowed = {"description", "design", "data", "training", "baseline", "seeds", "axes",
               "factorials", "cells"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise GridError(f"grid {name}: unknown key(s) {', '.join(unknown)}; known keys are "
                        f"{', '.join(sorted(allowed))}")
    for key in ("data", "training", "baseline"):
        if key not in data:
            raise GridError(f"grid {name}: missing {key!r}")
    raw_data = dict(data["data"])
    try:
        raw_data["eval_start"] = datetime.date.fromisoformat(raw_data["eval_start"])
        data_config = DataConfig(**raw_data)
    except (KeyError, TypeError, ValueError) as error:
        raise GridError(f"grid {name}: data section: {error!r}; it needs eval_start (YYYY-MM-DD),"
                        " eval_days, requests_per_day, candidates_per_request, world") from error
    data_config.simulator_config()  # validates the world before any work
    allowed = TRAINING_KEYS + MODEL_KEYS + OPTIMIZATION_KEYS
    bad = sorted(set(data["training"]) - set(allowed))
    if bad:
        raise GridError(f"grid {name}: training key(s) {', '.join(bad)} cannot be set grid-wide; "
                        f"allowed: {', '.join(allowed)}")

    template = Cell(backbone="dcnv2", backbone_scale=1.0, embedding_dim_scale=1.0, train_days=1)
    baseline = _cell(data["baseline"], template, "baseline")
    cells = [baseline]
    cells += [dataclasses.replace(baseline, seed=int(seed)) for seed in data.get("seeds", [])]
    axes = dict(data.get("axes", {}))
    for key in sorted(set(axes) - {"backbone", "embedding_dim_scale", "train_days"}):
        raise GridError(f"grid {name}: unknown axis {key!r}; axes are backbone, "
                        "embedding_dim_scale, train_days")
    for key in ("backbone", "embedding_dim_scale", "train_days"):
        cells += [_cell({key: level}, baseline, f"axes.{key}[{i}]")
                  for i, level in enumerate(axes.get(key, []))]
    for i, corner in enumerate(data.get("factorials", [])):
        keys = list(corner)
        for subset in itertools.product([False, True], repeat=len(keys)):
            chosen = {k: corner[k] for k, use in zip(keys, subset, strict=True) if use}
            cells.append(_cell(chosen, baseline, f"factorials[{i}]"))
    cells += [_cell(raw, baseline, f"cells[{i}]") for i, raw in enumerate(data.get("cells", []))]
    unique = tuple(dict.fromkeys(cells))
    return Grid(name=name, data=data_config, training=dict(data["training"]),
                baseline=baseline, cells=unique)


def load_grid(path: str) -> Grid:
    """Reads a grid JSON file (see :func:`grid_from_dict`)."""
    if not os.path.exists(path):
        raise GridError(f"grid file {path} does not exist; presets are in {GRIDS_DIR}")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return grid_from_dict(data, name=os.path.splitext(os.path.basename(path))[0])


def preset_path(preset: str) -> str:
    if preset not in PRESETS:
        raise GridError(f"unknown preset {preset!r}; presets are {', '.join(PRESETS)}")
    return os.path.join(GRIDS_DIR, f"{preset}.json")


def prepare_data(data: DataConfig, longest_window: int, root: str,
                 feature_spec: str = "") -> str:
    """Simulates the logs and builds the spans the grid needs, once; returns the spans dir.

    Logs cover the longest training window and the eval window. They are simulated again only
    when ``root`` holds a shorter range of the same world and traffic (same bytes for the days
    in common); spans already complete are kept by the pipeline.

    Raises:
      GridError: when ``root`` holds logs of another world or traffic.
    """
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
               baseline_map: float | None) -> dict[str, Any]:
    """One JSONL row: the cell, its eval metrics and costs, and its relative mAP gain.

    ``map_gain = mAP / baseline_map - 1``, where ``baseline_map`` is the mean mAP of the
    baseline cell over its seeds (None until the baseline has run); the gain is None when
    either mAP is not computable (None, see :mod:`cvr_tf.metrics`). ``train_flops`` is
    ``3 x dense FLOPs/example x training examples``, the usual forward+backward estimate.
    """
    metrics = record["eval"]
    mean_ap = metrics["mean_average_precision"]
    return {
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
        "train_flops": (TRAINING_FLOPS_PER_FORWARD_FLOP * record["dense_flops_per_example"]
                        * record["train_examples"]),
        "train_examples_per_second": record["train_examples_per_second"],
        "wall_seconds": record["wall_seconds"],
        "model_dir": os.path.relpath(record["config"]["model_dir"], out),
    }


def write_results(grid: Grid, records: Mapping[Cell, Mapping[str, Any]], out: str,
                  results_path: str) -> list[dict[str, Any]]:
    """Rewrites ``results_path`` with a row per finished cell, in grid order; returns the rows."""
    baselines = [r["eval"]["mean_average_precision"] for c, r in records.items()
                 if not c.scaled_factors(grid.baseline)
                 and r["eval"]["mean_average_precision"] is not None]
    baseline_map = sum(baselines) / len(baselines) if baselines else None
    rows = [result_row(grid, cell, records[cell], out, baseline_map)
            for cell in grid.cells if cell in records]
    os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
    temporary = f"{results_path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    os.replace(temporary, results_path)
    return rows


def run_grid(grid: Grid, out: str, results_path: str = "",
             report: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Prepares the data, runs every cell not done yet, and writes the results.

    Args:
      grid: the grid.
      out: output directory (``data/``, ``cells/``, default ``results.jsonl``).
      results_path: where the JSONL goes; default ``<out>/results.jsonl``.
      report: called with a line per cell.

    Returns:
      The result rows (as in the JSONL).
    """
    results_path = results_path or os.path.join(out, "results.jsonl")
    longest = max(cell.train_days for cell in grid.cells)
    data_dir = prepare_data(grid.data, longest, os.path.join(out, "data"),
                            grid.training.get("feature_spec", ""))
    records: dict[Cell, Mapping[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for index, cell in enumerate(grid.cells, start=1):
        model_dir = os.path.join(out, "cells", cell.name)
        done = os.path.exists(os.path.join(model_dir, "metrics.json"))
        records[cell] = run_cell(grid, cell, data_dir, model_dir)
        rows = write_results(grid, records, out, results_path)
        metrics = records[cell]["eval"]
        report(f"[{index}/{len(grid.cells)}] {cell.name} ({cell.role(grid.baseline)}): "
               f"{'done before' if done else 'trained'}, mAP "
               f"{format_metric(metrics['mean_average_precision'])}, AUC "
               f"{format_metric(metrics['auc'])}, logloss {metrics['logloss']:.5f}, "
               f"{records[cell]['wall_seconds']:.0f} s")
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The result rows as a markdown table."""
    lines = ["| cell | role | mAP | gain | AUC | logloss | dense MFLOPs/ex | params | "
             "train examples | wall s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        gain = "-" if row["map_gain"] is None else f"{100 * row['map_gain']:+.2f}%"
        lines.append(
            f"| {row['cell']} | {row['role']} | {format_metric(row['mean_average_precision'])} | "
            f"{gain} | {format_metric(row['auc'])} | {row['logloss']:.5f} | "
            f"{row['dense_flops_per_example'] / 1e6:.2f} | {row['params']:,} | "
            f"{row['train_examples']:,} | {row['wall_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", choices=PRESETS, help="a grid of experiments/grids/")
    which.add_argument("--grid", help="a grid JSON file")
    parser.add_argument("--out", required=True, help="data, model dirs and results go here")
    parser.add_argument("--results", default="", help="JSONL path; default <out>/results.jsonl")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        grid = load_grid(args.grid or preset_path(args.preset))
        print(f"Grid {grid.name}: {len(grid.cells)} cells into {args.out}", flush=True)
        rows = run_grid(grid, args.out, args.results,
                        report=lambda line: print(line, flush=True))
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(markdown_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])

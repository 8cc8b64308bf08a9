"""The scaling study's design: cells, the data they share, and grid files.

Three factors, each a knob of :func:`cvr_tf.training.train`:

* **backbone**: a backbone name and its ``backbone_scale`` (dcnv2, masknet, dhen, ensembles);
* **embedding**: ``embedding_dim_scale`` of the feature spec (wider fields also widen the
  backbone's input, so the dense FLOPs per example grow with it);
* **data**: ``train_days``, the length of the training window; every window ends the day before
  the one shared eval (test) window, and a cell trains ``epochs`` passes at most over its window,
  so a longer window means more (and older) examples.

A full factorial is too big, so a grid file (``experiments/grids/*.json``) names a *baseline*
cell and builds the design from it (:func:`grid_from_dict`): one-factor **axes** (the baseline
with one factor changed; they measure the main effects), 2x2x2 **factorials** between the
baseline and a corner (every joint scale-up of two and three factors), explicit extra **cells**,
repeats of the baseline with other **seeds** (the noise floor), and **replicated** levels: the
axis cells at those levels run under the same extra seeds, so the largest level of each factor
has a noise estimate of its own.

The data are either a simulated world (``requests_per_day``, ``candidates_per_request``,
``world``: :class:`pipelines.simulator_world.SimulatorConfig` fields), or a team's own spans
(``spans``: the pipeline's output directory), read with the grid's ``feature_spec``.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf import training
from cvr_tf.model import ModelConfig
from cvr_tf.optimization import OptimizerConfig
from pipelines.simulator_world import SimulatorConfig

GRIDS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grids")
PRESETS = ("small", "medium", "full")
# TrainConfig fields a grid's "training" section may set; the rest are per cell.
TRAINING_KEYS = ("feature_spec", "batch_size", "epochs", "steps", "checkpoint_every_steps",
                 "log_every_steps", "eval_batch_size", "strategy", "eval_every_steps",
                 "early_stopping_metric", "early_stopping_patience")
MODEL_KEYS = ("vocab_scale", "loss", "position_debiasing")
OPTIMIZATION_KEYS = tuple(f.name for f in dataclasses.fields(OptimizerConfig))
# The keys of a result row's "levels" (Cell.levels), in this order everywhere.
FACTORS = ("backbone", "embedding", "data")
_CELL_KEYS = {"backbone", "embedding_dim_scale", "train_days", "seed"}


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
    """The data every cell trains and evaluates on: a simulated world, or a team's own spans.

    Attributes:
      eval_start: first day of the shared eval (test) window; training windows end the day
        before.
      eval_days: length of the eval window.
      requests_per_day: simulated search requests a day (simulated data only).
      candidates_per_request: items shown per request (simulated data only).
      world: :class:`pipelines.simulator_world.SimulatorConfig` fields (the rest default).
      spans: the pipeline's output directory holding a team's own spans; nothing is simulated.
    """

    eval_start: datetime.date
    eval_days: int
    requests_per_day: int = 0
    candidates_per_request: int = 0
    world: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    spans: str = ""

    def __post_init__(self) -> None:
        if self.eval_days < 1:
            raise GridError(f"data.eval_days must be >= 1, got {self.eval_days}")
        simulated = self.requests_per_day > 0 and self.candidates_per_request > 0
        if bool(self.spans) == simulated or (self.spans and self.world):
            raise GridError("data: give exactly one of 'spans' (your pipeline's output "
                            "directory) and a simulated world ('requests_per_day' and "
                            "'candidates_per_request' above 0, optional 'world')")
        if simulated:
            self.simulator_config()  # validates the world before any work

    @property
    def simulated(self) -> bool:
        return not self.spans

    @property
    def eval_end(self) -> datetime.date:
        return self.eval_start + datetime.timedelta(days=self.eval_days - 1)

    def train_window(self, days: int) -> tuple[datetime.date, datetime.date]:
        """(first, last) day of a training window of ``days`` days before the eval window."""
        end = self.eval_start - datetime.timedelta(days=1)
        return end - datetime.timedelta(days=days - 1), end

    def simulator_config(self, **changes: Any) -> SimulatorConfig:
        """The simulated world, with ``changes`` (e.g. ``with_ground_truth=True``)."""
        world = {**self.world, **changes}
        if isinstance(world.get("world_start"), str):
            world["world_start"] = datetime.date.fromisoformat(world["world_start"])
        try:
            return SimulatorConfig(**world)
        except (TypeError, ValueError) as error:
            raise GridError(f"data.world: {error}; use SimulatorConfig field names and values"
                            ) from error

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

    def with_feature_spec(self, feature_spec: str) -> Grid:
        """This grid training with ``feature_spec`` (the job's flag; empty keeps the grid's)."""
        if not feature_spec:
            return self
        return dataclasses.replace(self, training={**self.training,
                                                   "feature_spec": feature_spec})


def _cell(raw: Mapping[str, Any], base: Cell, where: str) -> Cell:
    """``base`` with the factor levels ``raw`` names (``backbone`` as ``[name, scale]``)."""
    unknown = sorted(set(raw) - _CELL_KEYS)
    if unknown:
        raise GridError(f"{where}: unknown key(s) {', '.join(unknown)}; a cell sets "
                        f"{', '.join(sorted(_CELL_KEYS))}")
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


def _data_config(raw: Mapping[str, Any], name: str) -> DataConfig:
    known = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(raw) - known)
    if unknown or "eval_start" not in raw or "eval_days" not in raw:
        raise GridError(f"grid {name}: data section: unknown key(s) {unknown} or no eval_start/"
                        f"eval_days; its keys are {', '.join(sorted(known))}")
    try:
        eval_start = datetime.date.fromisoformat(raw["eval_start"])
    except (TypeError, ValueError) as error:
        raise GridError(f"grid {name}: data.eval_start {raw['eval_start']!r} is not a "
                        "YYYY-MM-DD date") from error
    return DataConfig(**{**raw, "eval_start": eval_start})


def grid_from_dict(data: Mapping[str, Any], name: str = "grid", spans: str = "") -> Grid:
    """Builds a :class:`Grid` from a grid file's contents.

    Keys: ``data`` (:class:`DataConfig` fields, ``eval_start`` as YYYY-MM-DD), ``training``
    (:data:`TRAINING_KEYS`, :data:`MODEL_KEYS` and :data:`OPTIMIZATION_KEYS`), ``baseline``
    (``backbone: [name, scale]``, ``embedding_dim_scale``, ``train_days``, ``seed``), and the
    design: ``seeds`` (baseline repeats), ``axes`` (``backbone``: list of ``[name, scale]``;
    ``embedding_dim_scale`` and ``train_days``: lists of levels), ``replicated`` (axis levels,
    as cells of one factor, e.g. ``{"train_days": 12}``, that also run under every seed of
    ``seeds``), ``factorials`` (corners: each a cell whose every subset of changes from the
    baseline is run) and ``cells`` (explicit cells). Free-text keys ``description`` and
    ``design`` document the grid. Cells run in that order, duplicates once.
    """
    allowed = {"description", "design", "data", "training", "baseline", "seeds", "axes",
               "replicated", "factorials", "cells"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise GridError(f"grid {name}: unknown key(s) {', '.join(unknown)}; known keys are "
                        f"{', '.join(sorted(allowed))}")
    for key in ("data", "training", "baseline"):
        if key not in data:
            raise GridError(f"grid {name}: missing {key!r}")
    raw_data = data["data"]
    if spans:  # a team's own spans (--data_dir) replace the grid's source: it need not name one
        raw_data = {**{k: v for k, v in raw_data.items() if k in ("eval_start", "eval_days")},
                    "spans": spans}
    data_config = _data_config(raw_data, name)
    allowed_training = TRAINING_KEYS + MODEL_KEYS + OPTIMIZATION_KEYS
    bad = sorted(set(data["training"]) - set(allowed_training))
    if bad:
        raise GridError(f"grid {name}: training key(s) {', '.join(bad)} cannot be set grid-wide; "
                        f"allowed: {', '.join(allowed_training)}")

    template = Cell(backbone="dcnv2", backbone_scale=1.0, embedding_dim_scale=1.0, train_days=1)
    baseline = _cell(data["baseline"], template, "baseline")
    seeds = [int(seed) for seed in data.get("seeds", [])]
    cells = [baseline, *(dataclasses.replace(baseline, seed=seed) for seed in seeds)]
    axes = dict(data.get("axes", {}))
    for key in sorted(set(axes) - {"backbone", "embedding_dim_scale", "train_days"}):
        raise GridError(f"grid {name}: unknown axis {key!r}; axes are backbone, "
                        "embedding_dim_scale, train_days")
    for key in ("backbone", "embedding_dim_scale", "train_days"):
        cells += [_cell({key: level}, baseline, f"axes.{key}[{i}]")
                  for i, level in enumerate(axes.get(key, []))]
    for i, raw in enumerate(data.get("replicated", [])):
        level = _cell(raw, baseline, f"replicated[{i}]")
        if len(level.scaled_factors(baseline)) != 1:
            raise GridError(f"grid {name}: replicated[{i}] must change exactly one factor from "
                            f"the baseline, got {raw}")
        cells += [level, *(dataclasses.replace(level, seed=seed) for seed in seeds)]
    for i, corner in enumerate(data.get("factorials", [])):
        keys = list(corner)
        for subset in itertools.product([False, True], repeat=len(keys)):
            chosen = {k: corner[k] for k, use in zip(keys, subset, strict=True) if use}
            cells.append(_cell(chosen, baseline, f"factorials[{i}]"))
    cells += [_cell(raw, baseline, f"cells[{i}]") for i, raw in enumerate(data.get("cells", []))]
    unique = tuple(dict.fromkeys(cells))
    return Grid(name=name, data=data_config, training=dict(data["training"]),
                baseline=baseline, cells=unique)


def load_grid(path: str, spans: str = "") -> Grid:
    """Reads a grid JSON file (see :func:`grid_from_dict`); ``spans`` replaces its data
    source."""
    if not os.path.exists(path):
        raise GridError(f"grid file {path} does not exist; presets are in {GRIDS_DIR}")
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise GridError(f"grid file {path} is not JSON: {error}") from error
    return grid_from_dict(data, name=os.path.splitext(os.path.basename(path))[0], spans=spans)


def preset_path(preset: str) -> str:
    """The grid file of a preset (``experiments/grids/<preset>.json``)."""
    if preset not in PRESETS:
        raise GridError(f"unknown preset {preset!r}; presets are {', '.join(PRESETS)}")
    return os.path.join(GRIDS_DIR, f"{preset}.json")

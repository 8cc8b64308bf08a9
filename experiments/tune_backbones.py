"""Tuning the backbones' defaults: a small validation-driven sweep, then a seed-noise check.

    python -m experiments.tune_backbones --mode=sweep --out=/tmp/tune_small
    python -m experiments.tune_backbones --mode=verify --out=/tmp/tune_small

Both modes run on the small scaling preset's world and 3-day baseline window
(``experiments/grids/small.json``; data built under ``<out>/data`` by
:func:`experiments.scaling.prepare_data`, the same simulated logs and spans as
``python -m experiments.scaling --preset=small --out=<out>``).

* ``--mode=sweep`` trains every backbone of :data:`SWEEP_BACKBONES` (each at scale 1 and at its
  large scale) under every :class:`Setting` of the grid ``--dropouts`` x ``--learning_rates``,
  each with validation-driven training (``--epochs`` passes at most, validated every half pass
  on the training window's held-out split, early stopping on ``--metric`` with
  ``--patience``; the best checkpoint is restored before the test evaluation). The defaults
  are chosen by the **validation** metric only (:func:`choose_defaults`); the test window is
  reported, never used to choose. Writes ``--sweep_results`` (every run and the choice).
* ``--mode=verify`` trains scale 1 and the large scale of each backbone with the chosen
  setting under ``--seeds`` (seed 0 reuses the sweep's run), and reports test mean +- std
  per row, the large-minus-x1 difference against two standard errors of seed noise
  (:func:`noise_verdict`), the "before" rows of ``experiments/results/scaling_small.jsonl``
  (same cells at one epoch and no dropout) and the Bayes ceiling
  (:func:`experiments.ceiling.bayes_ceiling`).
  Writes ``--verify_results``.

A run whose model dir holds a ``metrics.json`` of the same config is not trained again, so an
interrupted sweep resumes and a longer grid reuses the runs done.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import flags, logging

from cvr_tf import job, training
from cvr_tf.evaluation import count_examples
from cvr_tf.input import list_spans
from cvr_tf.validation import METRIC_DIRECTIONS
from experiments import ceiling as ceiling_lib
from experiments import scaling
from experiments.grid import Cell, Grid, GridError, load_grid, preset_path

# Backbone -> its large scale on the small preset (the cells the issue asks about).
SWEEP_BACKBONES = {"dcnv2": 4.0, "masknet": 4.0, "dhen": 2.0}
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SWEEP_RESULTS = os.path.join(RESULTS_DIR, "tuning_small.json")
VERIFY_RESULTS = os.path.join(RESULTS_DIR, "tuning_verify_small.json")
BEFORE_RESULTS = os.path.join(RESULTS_DIR, "scaling_small.jsonl")
TEST_METRICS = ("mean_average_precision", "auc", "logloss")
# A large-minus-x1 difference is "worse" when below -NOISE_SIGMAS standard errors.
NOISE_SIGMAS = 2.0


class TuningError(ValueError):
    """Bad tuning flags or results; the message names the flag or file and the fix."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of the sweep grid.

    ``dropout`` is a backbone option (a per-backbone default); ``learning_rate`` (dense and,
    by default, embedding) and ``embedding_l2`` are grid-wide training settings
    (:data:`GRID_WIDE`).
    """

    dropout: float
    learning_rate: float
    embedding_l2: float = 0.0

    @property
    def name(self) -> str:
        """Directory suffix, e.g. ``do0.1-lr0.002`` (``-l2<x>`` when ``embedding_l2``)."""
        suffix = f"-l2{self.embedding_l2:g}" if self.embedding_l2 else ""
        return f"do{self.dropout:g}-lr{self.learning_rate:g}{suffix}"

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Setting:
        """The setting of a results row."""
        return cls(**{f.name: row.get(f.name, f.default) for f in dataclasses.fields(cls)})


# The Setting fields the grid's "training" section sets for every backbone at once.
GRID_WIDE = ("learning_rate", "embedding_l2")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Validation-driven training of every tuning run (see :class:`cvr_tf.training.TrainConfig`).

    ``eval_every_steps = 0`` means half a pass over the training window (computed from the
    window's span statistics by :func:`half_pass_steps`).
    """

    epochs: int = 2
    patience: int = 2
    metric: str = "logloss"
    eval_every_steps: int = 0


def sweep_cells(grid: Grid, seeds: Sequence[int] = (0,)) -> list[Cell]:
    """Scale 1 and the large scale of every :data:`SWEEP_BACKBONES` on the grid's baseline."""
    return [dataclasses.replace(grid.baseline, backbone=name, backbone_scale=scale, seed=seed)
            for name, large in SWEEP_BACKBONES.items() for scale in (1.0, large)
            for seed in seeds]


def half_pass_steps(grid: Grid, data_dir: str, train_days: int) -> int:
    """Steps in half a pass over the ``train_days`` window: ``ceil(rows / batch / 2)``."""
    start, end = grid.data.train_window(train_days)
    rows = count_examples(list_spans(data_dir, start, end), "train")
    batch = int(grid.training.get("batch_size", 1024))
    return max(1, math.ceil(rows / batch / 2))


def run_config(grid: Grid, cell: Cell, setting: Setting, schedule: Schedule,
               data_dir: str, model_dir: str) -> training.TrainConfig:
    """The grid's config of ``cell`` with ``setting`` and ``schedule`` applied.

    The dropout is given explicitly (``ModelConfig.dropout``), so a run means the same whatever
    the backbones' defaults are.
    """
    every = schedule.eval_every_steps or half_pass_steps(grid, data_dir, cell.train_days)
    tuned = dataclasses.replace(grid, training={
        **grid.training, **{k: getattr(setting, k) for k in GRID_WIDE}, "epochs": schedule.epochs,
        "eval_every_steps": every, "early_stopping_metric": schedule.metric,
        "early_stopping_patience": schedule.patience})
    config = tuned.train_config(cell, data_dir, model_dir)
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, dropout=setting.dropout))


def run_once(config: training.TrainConfig) -> dict[str, Any]:
    """Trains ``config`` unless its model dir holds a finished run of it; returns its record.

    Raises:
      TuningError: when the model dir holds a finished run of another config.
    """
    metrics_path = os.path.join(config.model_dir, "metrics.json")
    if not os.path.exists(metrics_path):
        return training.train(config)
    with open(metrics_path, encoding="utf-8") as handle:
        record = json.load(handle)
    if record["config"] != config.to_record():
        raise TuningError(f"{config.model_dir} holds a finished run of another config; delete "
                          "it or pick another --out")
    return record


def run_row(cell: Cell, setting: Setting, record: Mapping[str, Any]) -> dict[str, Any]:
    """One run of the results files: its cell, setting, validation and test metrics, cost."""
    def pick(metrics: Mapping[str, Any]) -> dict[str, float]:
        return {k: metrics[k] for k in ("auc", "logloss", "mean_average_precision", "group_auc")}

    return {"backbone": cell.backbone, "backbone_scale": cell.backbone_scale, "seed": cell.seed,
            **dataclasses.asdict(setting),
            "validation": pick(record["validation"]), "test": pick(record["eval"]),
            "best_step": record["best_step"], "train_steps": record["train_steps"],
            "stopped_early": record["stopped_early"], "seconds": record["wall_seconds"]}


def _better(metric: str) -> Callable[[Mapping[str, Any]], float]:
    """Sort key of rows by their validation ``metric``: smaller is better."""
    if metric not in METRIC_DIRECTIONS:
        raise TuningError(f"--metric={metric!r}: choose one of {', '.join(METRIC_DIRECTIONS)}")
    direction = METRIC_DIRECTIONS[metric]
    return lambda row: -direction * row["validation"][metric]


def best_per_cell(rows: Sequence[Mapping[str, Any]], metric: str
                  ) -> dict[tuple[str, float], Mapping[str, Any]]:
    """(backbone, scale) -> its run with the best validation ``metric`` (first on ties)."""
    key = _better(metric)
    best: dict[tuple[str, float], Mapping[str, Any]] = {}
    for row in rows:
        cell = (row["backbone"], row["backbone_scale"])
        if cell not in best or key(row) < key(best[cell]):
            best[cell] = row
    return best


def choose_defaults(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """The defaults the sweep picks, by the validation ``metric`` only.

    The :data:`GRID_WIDE` settings ``g`` (learning rate, embedding L2) are one choice for the
    whole grid, the dropout ``d`` is per backbone (its options dataclass, shared by its scales),
    so the choice is in two steps, with ``v`` the validation metric oriented so that smaller is
    better:

    * ``g* = argmin_g mean_cells min_d v(cell, d, g)`` (a cell not run at ``g`` counts as
      infinitely bad, so that ``g*`` was run everywhere);
    * ``d*[b] = argmin_d mean_{scales s of b} v((b, s), d, g*)`` over the rates run at every
      scale of ``b``.

    Ties go to the setting run first. Returns ``{**g*, "dropout": {backbone: d*},
    "best_per_cell": {"<backbone> x<scale>": its best setting}}``.
    """
    key = _better(metric)
    if not rows:
        raise TuningError("no finished sweep runs to choose from; run --mode=sweep first")
    scores = {((r["backbone"], r["backbone_scale"]), Setting.of(r)): key(r) for r in rows}
    cells = list(dict.fromkeys(cell for cell, _ in scores))

    def wide(setting: Setting) -> tuple[float, ...]:
        return tuple(getattr(setting, k) for k in GRID_WIDE)

    def wide_score(point: tuple[float, ...]) -> float:
        return statistics.fmean(
            min((v for (c, s), v in scores.items() if c == cell and wide(s) == point),
                default=math.inf) for cell in cells)

    best_wide = min(dict.fromkeys(wide(s) for _, s in scores), key=wide_score)
    dropout = {}
    for backbone in dict.fromkeys(name for name, _ in cells):
        scales = sum(1 for name, _ in cells if name == backbone)
        at_best: dict[float, list[float]] = {}
        for ((name, _), setting), value in scores.items():
            if name == backbone and wide(setting) == best_wide:
                at_best.setdefault(setting.dropout, []).append(value)
        complete = {d: values for d, values in at_best.items() if len(values) == scales}
        if complete:
            dropout[backbone] = min(complete, key=lambda d: statistics.fmean(complete[d]))
    best = {f"{b} x{s:g}": dataclasses.asdict(Setting.of(r))
            for (b, s), r in best_per_cell(rows, metric).items()}
    return {**dict(zip(GRID_WIDE, best_wide, strict=True)), "dropout": dropout,
            "best_per_cell": best}


def chosen_setting(chosen: Mapping[str, Any], backbone: str) -> Setting:
    """The chosen :class:`Setting` of ``backbone`` (from :func:`choose_defaults`)."""
    return Setting(dropout=chosen["dropout"][backbone],
                   **{k: chosen.get(k, 0.0) for k in GRID_WIDE})


def sweep_table(rows: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any],
                metric: str) -> str:
    """Every sweep run as a markdown table; ``*`` marks the chosen setting of each backbone."""
    lines = [f"| backbone | dropout | lr | emb L2 | val {metric} | val AUC | test mAP | test AUC | "
             "test logloss | best step / steps | s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        mark = "*" if (row["backbone"] in chosen["dropout"] and Setting.of(row)
                       == chosen_setting(chosen, row["backbone"])) else ""
        val, test = row["validation"], row["test"]
        lines.append(
            f"| {row['backbone']} x{row['backbone_scale']:g}{mark} | {row['dropout']:g} | "
            f"{row['learning_rate']:g} | {row.get('embedding_l2', 0.0):g} | "
            f"{val[metric]:.5f} | {val['auc']:.4f} | "
            f"{test['mean_average_precision']:.4f} | {test['auc']:.4f} | "
            f"{test['logloss']:.5f} | {row['best_step']} / {row['train_steps']} | "
            f"{row['seconds']:.0f} |")
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def noise_verdict(large: Sequence[float], small: Sequence[float],
                  sigmas: float = NOISE_SIGMAS) -> dict[str, Any]:
    """Whether the large scale is no worse than scale 1 beyond seed noise (higher is better).

    ``difference = mean(large) - mean(small)``, ``sigma = sqrt(s_l^2 / n_l + s_s^2 / n_s)`` (the
    standard error of the difference from the sample standard deviations over seeds). The
    verdict is ``worse`` when ``difference < -sigmas * sigma``, ``better`` when
    ``difference > sigmas * sigma`` and ``within noise`` otherwise. With one seed a side,
    ``sigma`` is 0 and any difference is a verdict: run more seeds.
    """
    (mean_l, std_l), (mean_s, std_s) = mean_std(large), mean_std(small)
    difference = mean_l - mean_s
    sigma = math.sqrt(std_l**2 / len(large) + std_s**2 / len(small))
    if difference < -sigmas * sigma:
        verdict = "worse"
    elif difference > sigmas * sigma:
        verdict = "better"
    else:
        verdict = "within noise"
    return {"difference": difference, "relative": difference / mean_s, "sigma": sigma,
            "verdict": verdict}


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (backbone, scale): test mean and std of :data:`TEST_METRICS` over seeds; and per
    backbone, the large-minus-x1 mAP verdict (:func:`noise_verdict`) on the large row."""
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["backbone"], row["backbone_scale"]), []).append(row)
    summary = []
    for (backbone, scale), runs in groups.items():
        entry: dict[str, Any] = {"backbone": backbone, "backbone_scale": scale,
                                 "seeds": sorted(r["seed"] for r in runs)}
        for metric in TEST_METRICS:
            entry[metric] = dict(zip(("mean", "std"), mean_std([r["test"][metric]
                                                                 for r in runs]), strict=True))
        small = groups.get((backbone, 1.0))
        if scale != 1.0 and small:
            entry["vs_x1"] = noise_verdict(
                [r["test"]["mean_average_precision"] for r in runs],
                [r["test"]["mean_average_precision"] for r in small])
        summary.append(entry)
    return summary


def before_rows(path: str = BEFORE_RESULTS, baseline: Cell | None = None
                ) -> list[dict[str, Any]]:
    """The scaling study's rows of the tuned cells (their "before": 1 epoch, no dropout)."""
    if not os.path.exists(path):
        return []
    wanted = {(name, scale) for name, large in SWEEP_BACKBONES.items() for scale in (1.0, large)}
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            same_window = baseline is None or (
                row["train_days"] == baseline.train_days
                and row["embedding_dim_scale"] == baseline.embedding_dim_scale)
            if (row["backbone"], row["backbone_scale"]) in wanted and same_window:
                rows.append({"backbone": row["backbone"], "backbone_scale": row["backbone_scale"],
                             "seed": row["seed"], "test": {k: row[k] for k in TEST_METRICS}})
    return rows


def verify_table(summary: Sequence[Mapping[str, Any]], before: Sequence[Mapping[str, Any]],
                 ceiling: Mapping[str, Any] | None) -> str:
    """Before/after rows (mean +- std over seeds), the x-large verdicts and the Bayes ceiling.

    ``summary`` and ``before`` are :func:`summarize` outputs.
    """
    lines = ["| row | seeds | test mAP | test AUC | test logloss | large - x1 mAP (2 sigma) |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]

    def cells(entry: Mapping[str, Any], n: int) -> str:
        return " | ".join(f"{entry[m]['mean']:.4f} +- {entry[m]['std']:.4f}" if n > 1
                          else f"{entry[m]['mean']:.4f}" for m in TEST_METRICS)

    for label, entries in (("before", before), ("after", summary)):
        for entry in entries:
            verdict = entry.get("vs_x1")
            note = "" if verdict is None else (
                f"{100 * verdict['relative']:+.1f}% ({verdict['difference']:+.4f} +- "
                f"{2 * verdict['sigma']:.4f}): {verdict['verdict']}")
            lines.append(f"| {label} {entry['backbone']} x{entry['backbone_scale']:g} | "
                         f"{len(entry['seeds'])} | {cells(entry, len(entry['seeds']))} | {note} |")
    if ceiling is not None:
        lines.append(f"| Bayes ceiling (true_cvr) | - | {ceiling['mean_average_precision']:.4f} | "
                     f"{ceiling['auc']:.4f} | {ceiling['logloss']:.5f} | |")
    return "\n".join(lines)


def prepare_baseline_data(grid: Grid, out: str) -> str:
    """The spans dir of the grid's world under ``<out>/data`` (as the scaling study's)."""
    return scaling.prepare_data(grid.data, grid.baseline.train_days, os.path.join(out, "data"),
                                grid.training.get("feature_spec", ""))


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, path)


def previous_runs(path: str, schedule: Schedule) -> list[dict[str, Any]]:
    """The runs of an existing sweep results file of the same schedule (kept when a sweep is
    extended with more settings), or none when there is no file.

    Raises:
      TuningError: when the file holds a sweep of another schedule (its runs would not compare).
    """
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if data.get("schedule") != dataclasses.asdict(schedule):
        raise TuningError(f"{path} holds a sweep with schedule {data.get('schedule')}, not "
                          f"{dataclasses.asdict(schedule)}; pass the same --epochs/--patience/"
                          "--metric/--eval_every_steps, or another --sweep_results")
    return list(data["runs"])


def _run_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return row["backbone"], row["backbone_scale"], row["seed"], Setting.of(row)


def run_sweep(grid: Grid, out: str, settings: Sequence[Setting], schedule: Schedule,
              results_path: str, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains every setting of every sweep cell (setting by setting, so that a cut-short sweep
    has every cell at the first settings) and rewrites ``results_path`` after each run, with
    the runs it held before (same schedule) that this sweep does not repeat."""
    data_dir = prepare_baseline_data(grid, out)
    kept = {_run_key(row): row for row in previous_runs(results_path, schedule)}
    result: dict[str, Any] = {}
    for setting in settings:
        for cell in sweep_cells(grid):
            config = run_config(grid, cell, setting, schedule, data_dir,
                                os.path.join(out, "tuning", f"{cell.name}-{setting.name}"))
            row = run_row(cell, setting, run_once(config))
            kept[_run_key(row)] = row
            rows = list(kept.values())
            result = {"grid": grid.name, "schedule": dataclasses.asdict(schedule),
                      "eval_every_steps": config.eval_every_steps,
                      "chosen": choose_defaults(rows, schedule.metric), "runs": rows}
            _write_json(results_path, result)
            report(f"{cell.backbone} x{cell.backbone_scale:g} {setting.name}: val "
                   f"{schedule.metric} {row['validation'][schedule.metric]:.5f}, test mAP "
                   f"{row['test']['mean_average_precision']:.4f}, best step {row['best_step']}/"
                   f"{row['train_steps']}, {row['seconds']:.0f} s")
    return result


def load_chosen(path: str) -> tuple[dict[str, Any], Schedule]:
    """The chosen defaults and the schedule of a sweep results file."""
    if not os.path.exists(path):
        raise TuningError(f"--sweep_results={path} does not exist; run --mode=sweep first")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return data["chosen"], Schedule(**data["schedule"])


def run_verify(grid: Grid, out: str, chosen: Mapping[str, Any], schedule: Schedule,
               seeds: Sequence[int], results_path: str, before_path: str = BEFORE_RESULTS,
               report: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains the chosen setting of every sweep cell under ``seeds`` and writes the summary."""
    data_dir = prepare_baseline_data(grid, out)
    rows = []
    for cell in sweep_cells(grid, seeds):
        setting = chosen_setting(chosen, cell.backbone)
        config = run_config(grid, cell, setting, schedule, data_dir,
                            os.path.join(out, "tuning", f"{cell.name}-{setting.name}"))
        rows.append(run_row(cell, setting, run_once(config)))
        report(f"{cell.name} {setting.name}: test mAP "
               f"{rows[-1]['test']['mean_average_precision']:.4f}")
    result = {"grid": grid.name, "chosen": dict(chosen), "schedule": dataclasses.asdict(schedule),
              "runs": rows, "summary": summarize(rows),
              "before": summarize(before_rows(before_path, grid.baseline)),
              "bayes_ceiling": ceiling_lib.bayes_ceiling(grid.data, os.path.join(out, "data"))}
    _write_json(results_path, result)
    return result


FLAGS = flags.FLAGS


def _floats(flag: str, values: Sequence[str]) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise TuningError(f"--{flag}={','.join(values)}: give comma-separated numbers") from None


def main(argv: Sequence[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    if not FLAGS.out:
        print("error: --out is required (data and model dirs go there)", file=sys.stderr)
        sys.exit(2)
    try:
        grid = load_grid(FLAGS.grid)
        if FLAGS.mode == "sweep":
            settings = [Setting(d, lr, l2)
                        for l2 in _floats("embedding_l2s", FLAGS.embedding_l2s)
                        for lr in _floats("learning_rates", FLAGS.learning_rates)
                        for d in _floats("dropouts", FLAGS.dropouts)]
            schedule = Schedule(FLAGS.epochs, FLAGS.patience, FLAGS.metric,
                                FLAGS.eval_every_steps)
            result = run_sweep(grid, FLAGS.out, settings, schedule, FLAGS.sweep_results,
                               report=lambda line: print(line, flush=True))
            print(sweep_table(result["runs"], result["chosen"], schedule.metric))
            print(json.dumps(result["chosen"], indent=2))
        else:
            chosen, schedule = load_chosen(FLAGS.sweep_results)
            result = run_verify(grid, FLAGS.out, chosen, schedule,
                                [int(s) for s in FLAGS.seeds], FLAGS.verify_results,
                                report=lambda line: print(line, flush=True))
            print(verify_table(result["summary"], result["before"], result["bayes_ceiling"]))
    except (TuningError, GridError, training.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import: tests import several experiments
    whose flags share names, e.g. --epochs with the training job's)."""
    flags.DEFINE_enum("mode", "sweep", ["sweep", "verify"], "sweep: the grid of settings; verify: "
                      "the chosen setting under several seeds, with the Bayes ceiling.")
    flags.DEFINE_string("out", None, "Data and model dirs go here (reused across runs).")
    flags.DEFINE_string("grid", preset_path("small"), "The scaling grid whose world, "
                        "baseline window and training settings the runs use.")
    flags.DEFINE_list("dropouts", ["0", "0.1", "0.2"], "Sweep: backbone dropout rates.")
    flags.DEFINE_list("learning_rates", ["0.002", "0.001"], "Sweep: dense learning rates.")
    flags.DEFINE_list("embedding_l2s", ["0"], "Sweep: embedding L2 penalties (--embedding_l2).")
    flags.DEFINE_integer("epochs", Schedule.epochs, "Passes over the window at most.")
    flags.DEFINE_integer("patience", Schedule.patience, "Early-stopping patience (validations).")
    flags.DEFINE_enum("metric", Schedule.metric, list(METRIC_DIRECTIONS),
                      "Validation metric of early stopping and of the choice.")
    flags.DEFINE_integer("eval_every_steps", Schedule.eval_every_steps,
                         "Validation period; 0: half a pass over the window.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Verify: seeds of every cell.")
    flags.DEFINE_string("sweep_results", SWEEP_RESULTS, "The sweep's JSON (written, or read by "
                        "verify).")
    flags.DEFINE_string("verify_results", VERIFY_RESULTS, "The verify JSON (written).")


if __name__ == "__main__":
    define_flags()
    job.run(main)

"""Warm-start study: how much sooner does a model warm-started from the last window converge?

    python -m experiments.warmstart --preset=small --out=/tmp/warmstart_small \\
        --results=experiments/results/warmstart_small.json

Two consecutive windows end the day before the eval window: W1 (``first_days``), then W2
(``second_days``). A model is trained on W1; then on W2 four runs learn with a validation every
``eval_every_steps`` steps on W2's held-out split (:class:`cvr_tf.training.TrainConfig` records
the learning curve), without early stopping, so that every curve runs to the end:

* ``cold``: from scratch;
* ``warm``: warm-started from the W1 model (:mod:`cvr_tf.warm_start`). W2's vocabularies differ
  from W1's (items and queries come and go), so embedding rows are remapped by token;
* ``cold_added_feature`` and ``warm_added_feature``: the same with one feature added to the spec
  (``--added_feature``, a JSON feature; by default a hashed view of the query), whose table and
  every dense weight whose shape the wider input changes start fresh.

Each warm run is compared with the cold run of its spec: the first validation at which its
logloss reaches the best validation logloss of the cold run, in steps and in training seconds
(evaluation time excluded), against the cold run's own steps to its best; and what the warm
start carried over.

**Quality against training-data duration** (the paper's Figure 5), with ``durations``: for each
``d``, a cold and a warm run (from the W1 model) train on the last ``d`` days of W2 only, with
the grid's validation-driven schedule (best validated step restored), and are tested on the eval
window: how many days of new data a warm start is worth. The data and training settings come
from the scaling preset's grid file (same world, same traffic), so both studies can share
``data/``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import app, flags, logging

from cvr_tf import job, training
from cvr_tf.features import default_spec, load_spec, spec_from_dict
from cvr_tf.metrics import format_metric
from experiments.grid import Grid, GridError, load_grid, preset_path
from experiments.scaling import prepare_data

DEFAULT_ADDED_FEATURE = {"name": "query_hashed", "kind": "categorical", "column": "query",
                         "hash_buckets": 4096, "embedding_dim": 8}
# (first window days, second window days, eval_every_steps, durations) per preset.
PRESET_WINDOWS = {"small": (6, 3, 7, (1, 2, 3)), "medium": (4, 4, 50, (1, 2, 4)),
                  "full": (28, 7, 250, (1, 3, 7))}
RUNS = ("cold", "warm", "cold_added_feature", "warm_added_feature")


@dataclasses.dataclass(frozen=True)
class Study:
    """The windows and the runs' shared settings.

    Attributes:
      grid: the scaling grid whose data, training settings and baseline cell are used.
      first_days: length of W1. second_days: length of W2, which ends before the eval window.
      eval_every_steps: evaluation period of the runs on W2.
      added_feature: the feature (as in a spec file) the ``*_added_feature`` runs add.
      durations: days of W2 (its last days) the duration runs train on, each at most
        ``second_days``.
    """

    grid: Grid
    first_days: int
    second_days: int
    eval_every_steps: int
    added_feature: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_ADDED_FEATURE))
    durations: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(not 1 <= d <= self.second_days for d in self.durations):
            raise GridError(f"durations {list(self.durations)} must be between 1 and "
                            f"second_days={self.second_days}")

    @property
    def runs(self) -> tuple[str, ...]:
        """``first``, :data:`RUNS`, then ``cold_<d>d`` and ``warm_<d>d`` per duration."""
        return ("first", *RUNS, *(f"{start}_{d}d" for d in self.durations
                                  for start in ("cold", "warm")))

    def config(self, run: str, data_dir: str, out: str) -> training.TrainConfig:
        """The :class:`cvr_tf.training.TrainConfig` of one of :attr:`runs`."""
        cell = self.grid.baseline
        first = run == "first"
        duration = re.fullmatch(r"(cold|warm)_(\d+)d", run)
        days = (self.first_days + self.second_days if first
                else int(duration.group(2)) if duration else self.second_days)
        base = self.grid.train_config(dataclasses.replace(cell, train_days=days), data_dir,
                                      os.path.join(out, "runs", run))
        changes: dict[str, Any] = {}
        if first:  # W1 only: the days before W2
            changes["train_end"] = base.train_start + datetime.timedelta(days=self.first_days - 1)
        elif not duration:  # learning curves that run to the end
            changes.update(eval_every_steps=self.eval_every_steps, early_stopping_metric="none")
        if run.startswith("warm"):
            changes["warm_start_from"] = os.path.join(out, "runs", "first")
        if run.endswith("added_feature"):
            changes["feature_spec"] = os.path.join(out, "added_feature_spec.json")
        return dataclasses.replace(base, **changes)


def write_added_feature_spec(path: str, feature: Mapping[str, Any], base_spec: str = "") -> None:
    """Writes the base spec (default: the package's) plus ``feature`` to ``path``."""
    spec = (load_spec(base_spec) if base_spec else default_spec()).to_dict()
    spec["features"].append(dict(feature))
    spec_from_dict(spec)  # validates the added feature
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle, indent=2)


def reach(curve: Sequence[Mapping[str, float]], target: float, key: str = "logloss"
          ) -> dict[str, float] | None:
    """The first curve point whose ``key`` is at most ``target`` (None if none is)."""
    for point in curve:
        if point[key] <= target:
            return {"step": point["step"], "train_seconds": point["train_seconds"],
                    key: point[key]}
    return None


def carried_summary(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Counts of a warm-start report: variables carried, remapped, fresh; tokens per table."""
    if report is None:
        return None
    return {"carried": len(report["carried"]), "remapped": len(report["remapped"]),
            "fresh": len(report["fresh"]), "fresh_variables": report["fresh"],
            "tokens": report["remapped"]}


def compare(cold: Mapping[str, Any], warm: Mapping[str, Any]) -> dict[str, Any]:
    """Steps and training seconds the warm run needs to reach the cold run's best validation
    logloss, against those the cold run needed (both validate on the same held-out split of the
    second window).

    The target is the cold run's best point, not its last: the curves run without early
    stopping, and a cold run that overfits late would otherwise hand the warm run an easy target.
    """
    cold_best = min(cold["validation_curve"], key=lambda point: point["logloss"])
    target = cold_best["logloss"]
    reached = reach(warm["validation_curve"], target)
    out: dict[str, Any] = {
        "target_logloss": target, "cold_steps": cold_best["step"],
        "cold_train_seconds": cold_best["train_seconds"], "warm_reached": reached,
        "warm_best_logloss": min(p["logloss"] for p in warm["validation_curve"]),
        "warm_first_logloss": warm["validation_curve"][0]["logloss"],
        "cold_first_logloss": cold["validation_curve"][0]["logloss"],
        "cold_final_map": cold["eval"]["mean_average_precision"],
        "warm_final_map": warm["eval"]["mean_average_precision"],
    }
    if reached is not None:
        out["step_fraction"] = reached["step"] / cold_best["step"]
        out["time_fraction"] = reached["train_seconds"] / cold_best["train_seconds"]
    return out


def run_study(study: Study, out: str, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains W1, then the four runs on W2 (each skipped if its metrics.json exists)."""
    data_dir = prepare_data(study.grid.data, study.first_days + study.second_days,
                            os.path.join(out, "data"),
                            study.grid.training.get("feature_spec", ""))
    write_added_feature_spec(os.path.join(out, "added_feature_spec.json"), study.added_feature,
                             study.grid.training.get("feature_spec", ""))
    configs = {run: study.config(run, data_dir, out) for run in study.runs}
    records: dict[str, Any] = {}
    for run, config in configs.items():
        metrics_path = os.path.join(config.model_dir, "metrics.json")
        if os.path.exists(metrics_path):
            with open(metrics_path, encoding="utf-8") as handle:
                records[run] = json.load(handle)
        else:
            records[run] = training.train(config)
        report(f"{run}: {config.train_start}..{config.train_end}, "
               f"{records[run]['train_steps']} steps, eval logloss "
               f"{records[run]['eval']['logloss']:.5f}, mAP "
               f"{format_metric(records[run]['eval']['mean_average_precision'])}")
    return {
        "first_window": [str(configs["first"].train_start), str(configs["first"].train_end)],
        "second_window": [str(configs["cold"].train_start), str(configs["cold"].train_end)],
        "eval_window": [str(study.grid.data.eval_start), str(study.grid.data.eval_end)],
        "baseline": dataclasses.asdict(study.grid.baseline),
        "added_feature": dict(study.added_feature),
        "runs": {run: {"eval": r["eval"], "train_steps": r["train_steps"],
                       "wall_seconds": r["wall_seconds"], "validation_curve": r["validation_curve"],
                       "warm_start": carried_summary(r["warm_start"])}
                 for run, r in records.items()},
        "comparisons": {"warm": compare(records["cold"], records["warm"]),
                        "warm_added_feature": compare(records["cold_added_feature"],
                                                      records["warm_added_feature"])},
        "durations": [{"days": d, "train_window": [str(configs[f"cold_{d}d"].train_start),
                                                   str(configs[f"cold_{d}d"].train_end)],
                       **{start: {"eval": records[f"{start}_{d}d"]["eval"],
                                  "train_examples": records[f"{start}_{d}d"]["train_examples"],
                                  "best_step": records[f"{start}_{d}d"]["best_step"]}
                          for start in ("cold", "warm")}}
                      for d in study.durations],
    }


def markdown_report(result: Mapping[str, Any]) -> str:
    """The comparisons as a markdown table."""
    lines = ["| run | target: cold's best validation logloss | cold reaches it at step / s "
             "| warm reaches it at step / s | fraction of steps / time "
             "| first validation logloss cold / warm | best validation logloss warm "
             "| final test mAP cold / warm |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, c in result["comparisons"].items():
        reached = c["warm_reached"]
        at = "never" if reached is None else (f"{reached['step']} / "
                                              f"{reached['train_seconds']:.1f}")
        fraction = "-" if reached is None else (f"{c['step_fraction']:.2f} / "
                                                f"{c['time_fraction']:.2f}")
        lines.append(f"| {name} | {c['target_logloss']:.5f} | {c['cold_steps']} / "
                     f"{c['cold_train_seconds']:.1f} | {at} | {fraction} | "
                     f"{c['cold_first_logloss']:.5f} / {c['warm_first_logloss']:.5f} | "
                     f"{c['warm_best_logloss']:.5f} | {format_metric(c['cold_final_map'])} / "
                     f"{format_metric(c['warm_final_map'])} |")
    if result.get("durations"):
        lines += ["", "| new data (days) | train examples | test mAP cold / warm | "
                  "test AUC cold / warm | test logloss cold / warm |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for row in result["durations"]:
            cold, warm = row["cold"]["eval"], row["warm"]["eval"]
            lines.append(
                f"| {row['days']} | {row['cold']['train_examples']:,} | "
                f"{format_metric(cold['mean_average_precision'])} / "
                f"{format_metric(warm['mean_average_precision'])} | "
                f"{format_metric(cold['auc'])} / {format_metric(warm['auc'])} | "
                f"{cold['logloss']:.5f} / {warm['logloss']:.5f} |")
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import)."""
    flags.DEFINE_enum("preset", "small", sorted(PRESET_WINDOWS), "Windows and grid preset.")
    flags.DEFINE_string("grid", "", "Grid file to take data and training from; default the "
                        "preset's.")
    flags.DEFINE_string("out", None, "Data and model dirs go here.")
    flags.DEFINE_integer("first_days", 0, "W1 length (default: the preset's).")
    flags.DEFINE_integer("second_days", 0, "W2 length (default: the preset's).")
    flags.DEFINE_integer("eval_every_steps", 0, "Validation period of the learning curves "
                         "(default: the preset's).")
    flags.DEFINE_list("durations", None, "Days of new data of the duration runs (default: the "
                      "preset's); empty for none.")
    flags.DEFINE_string("added_feature", json.dumps(DEFAULT_ADDED_FEATURE),
                        "The added feature, as JSON.")
    flags.DEFINE_string("results", "", "JSON path; default <out>/warmstart.json.")
    flags.mark_flag_as_required("out")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    first, second, every, durations = PRESET_WINDOWS[FLAGS.preset]
    if FLAGS.durations is not None:
        durations = tuple(int(d) for d in FLAGS.durations)
    try:
        study = Study(grid=load_grid(FLAGS.grid or preset_path(FLAGS.preset)),
                      first_days=FLAGS.first_days or first,
                      second_days=FLAGS.second_days or second,
                      eval_every_steps=FLAGS.eval_every_steps or every,
                      added_feature=json.loads(FLAGS.added_feature), durations=durations)
        result = run_study(study, FLAGS.out, report=lambda line: print(line, flush=True))
    except (GridError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    path = FLAGS.results or os.path.join(FLAGS.out, "warmstart.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    print(markdown_report(result))


if __name__ == "__main__":
    define_flags()
    job.run(main)

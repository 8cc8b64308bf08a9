"""Delayed feedback: training on the freshest, immature days, with and without the correction.

    python -m experiments.delayed_feedback [--workdir=DIR] [--window=10] [--requests_per_day=3000]
        [--seeds=2] [--json=experiments/results/delayed_feedback.json]

A daily retraining job runs at the end of day ``T`` (the last of ``--window`` simulated days):
its logs hold every impression through ``T`` but only the conversions logged through ``T``, so
the spans of ``T - 2 .. T`` (whose 3-day attribution windows reach past ``T``) are immature
(:mod:`cvr_tf.delayed_feedback`). The script simulates the days with ground truth
(``true_cvr``), builds the training window's spans from the logs *as of T* (conversion
partitions after ``T`` hidden) and the test day ``T + 1`` from the complete logs, and trains
DCNv2 (no position debiasing, so the served score estimates ``true_cvr``) four ways:

``exclude``
    ``--delayed_feedback=exclude``: only the mature days ``.. T - 3``;
``as_observed``
    every day, immature labels as they are (fake negatives included);
``fake_negative_weighting``
    every day, read as Ktena et al.'s stream with their importance weights;
``complete_labels``
    every day with its labels complete, from the full logs: what waiting would give, which a
    job at ``T`` cannot have.

Each is tested on day ``T + 1`` against its 3-day labels (AUC, log loss, calibration
``sum p / sum y``) and against ``true_cvr`` (:mod:`experiments.ground_truth`). Prints a markdown
table (means over seeds) and the load average.
"""

from __future__ import annotations

import datetime
import glob
import os

from absl import flags

from cvr_tf import job, training
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.metrics import format_metric
from cvr_tf.model import ModelConfig
from experiments.ground_truth import served_frame, truth_metrics
from experiments.seeded_study import arm_means, run_and_report
from pipelines.simulate import SimulatorConfig, simulate_logs
from pipelines.span_pipeline import build_spans

FLAGS = flags.FLAGS
FIRST_DAY = datetime.date(2026, 2, 2)
ATTRIBUTION_DAYS = 3
ARMS = ("exclude", "as_observed", "fake_negative_weighting", "complete_labels")
TRUTH = "true_cvr"
COLUMNS = ("training_days", "auc", "logloss", "calibration", "calibration_vs_truth",
           "rank_correlation", "kl_to_truth")


def logs_as_of(logs: str, target: str, last: datetime.date) -> str:
    """A view of ``logs`` as a job at the end of ``last`` sees it: conversion partitions after
    ``last`` not arrived yet (symbolic links to the rest)."""
    os.makedirs(os.path.join(target, "conversions"), exist_ok=True)
    if not os.path.exists(os.path.join(target, "impressions")):
        os.symlink(os.path.join(os.path.abspath(logs), "impressions"),
                   os.path.join(target, "impressions"))
    for partition in sorted(glob.glob(os.path.join(os.path.abspath(logs), "conversions",
                                                   "date=*"))):
        link = os.path.join(target, "conversions", os.path.basename(partition))
        if partition.rsplit("=", 1)[1] <= last.isoformat() and not os.path.exists(link):
            os.symlink(partition, link)
    return target


def run(workdir: str, window: int, requests_per_day: int, candidates: int, seeds: int,
        batch_size: int, epochs: int, config: SimulatorConfig | None = None) -> list[dict]:
    """One row per (arm, seed): test metrics against labels and against the truth."""
    logs = os.path.join(workdir, "logs")
    now = FIRST_DAY + datetime.timedelta(days=window - 1)
    test_day = now + datetime.timedelta(days=1)
    if not os.path.isdir(os.path.join(logs, "impressions")):
        simulate_logs(logs, FIRST_DAY, window + 1, requests_per_day, candidates,
                      config or SimulatorConfig(with_ground_truth=True))
    fresh, complete = os.path.join(workdir, "spans_as_of_t"), os.path.join(workdir, "spans")
    build_spans(logs_as_of(logs, os.path.join(workdir, "logs_as_of_t"), now), fresh, FIRST_DAY,
                now, attribution_days=ATTRIBUTION_DAYS)
    for spans in (fresh, complete):  # the test day from the complete logs in both
        build_spans(logs, spans, FIRST_DAY if spans == complete else test_day, test_day,
                    attribution_days=ATTRIBUTION_DAYS)
    rows = []
    for arm in ARMS:
        for seed in range(seeds):
            model_dir = os.path.join(workdir, "models", f"{arm}-{seed}")
            record = training.train(training.TrainConfig(
                data_dir=complete if arm == "complete_labels" else fresh, model_dir=model_dir,
                train_start=FIRST_DAY, train_end=now, eval_start=test_day, eval_end=test_day,
                model=ModelConfig(backbone="dcnv2", position_debiasing=False),
                delayed_feedback="none" if arm == "complete_labels" else arm,
                batch_size=batch_size, epochs=epochs, seed=seed, log_every_steps=200,
                overwrite=True))
            scored = served_frame(model_dir_lib.load_model(model_dir), logs, [test_day], [TRUTH])
            rows.append({"arm": arm, "seed": seed,
                         "training_days": window - len(record["delayed_feedback"]
                                                       ["excluded_days"]),
                         **{m: record["eval"][m] for m in ("auc", "logloss", "calibration")},
                         **truth_metrics(scored["p"].to_numpy(), scored[TRUTH].to_numpy()),
                         "immature_days": sorted(record["delayed_feedback"]["immature_spans"])})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """A row per arm: the means over seeds of :data:`COLUMNS`."""
    lines = ["| arm | training days | test AUC | test logloss | calibration (p / labels) | "
             "calibration (p / true_cvr) | rank corr. with true_cvr | KL to true_cvr (x1e3) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for arm, _, means in arm_means(rows, COLUMNS):
        kl = None if means["kl_to_truth"] is None else means["kl_to_truth"] * 1e3
        lines.append(
            f"| {arm} | {means['training_days']:g} | {format_metric(means['auc'])} | "
            f"{format_metric(means['logloss'])} | {format_metric(means['calibration'], '.3f')} | "
            f"{format_metric(means['calibration_vs_truth'], '.3f')} | "
            f"{format_metric(means['rank_correlation'])} | {format_metric(kl, '.3f')} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    run_and_report("delayed-", FLAGS.workdir, lambda workdir: run(
        workdir, FLAGS.window, FLAGS.requests_per_day, FLAGS.candidates_per_request, FLAGS.seeds,
        FLAGS.batch_size, FLAGS.epochs), markdown_table, FLAGS.json)


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import; see listwise_grouping)."""
    flags.DEFINE_string("workdir", "", "Keep logs, spans and models here (default: temporary).")
    flags.DEFINE_integer("window", 10, "Training days; the job runs at the end of the last.",
                         lower_bound=ATTRIBUTION_DAYS + 1)
    flags.DEFINE_integer("requests_per_day", 3000, "Search requests per day.", lower_bound=1)
    flags.DEFINE_integer("candidates_per_request", 20, "Items shown per request.", lower_bound=2)
    flags.DEFINE_integer("seeds", 2, "Training seeds per arm.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 1024, "Training batch size.", lower_bound=1)
    flags.DEFINE_integer("epochs", 1, "Passes over the training window.", lower_bound=1)
    flags.DEFINE_string("json", "", "Also write the rows here.")


if __name__ == "__main__":
    define_flags()
    job.run(main)

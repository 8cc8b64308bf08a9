"""Listwise softmax with and without grouped batches: test mAP on a small simulated window.

    python -m experiments.listwise_grouping [--workdir=DIR] [--days=8] [--requests_per_day=3000]
        [--seeds=2] [--batch_size=512] [--json=experiments/results/listwise_grouping.json]

Simulates ``--days`` days of logs (``pipelines.simulate``), builds their spans
(``pipelines.build_tfrecords``), trains DCNv2 with ``--loss=listwise_softmax`` for one epoch on
all days but the last, once with ``--group_batches=on`` (the ``auto`` default for this loss:
whole requests per batch, :mod:`cvr_tf.request_batches`) and once with ``off`` (records
shuffled one by one, so a batch holds about one candidate per request), for each seed, and
evaluates the served scores on the last day. Prints a markdown table and the load average.
"""

from __future__ import annotations

import datetime
import os
import statistics

from absl import flags

from cvr_tf import job, training
from cvr_tf.metrics import format_metric
from cvr_tf.model import ModelConfig
from experiments.seeded_study import arm_means, run_and_report
from pipelines.simulate import simulate_logs
from pipelines.span_pipeline import build_spans

FLAGS = flags.FLAGS
FIRST_DAY = datetime.date(2026, 1, 5)
SETTINGS = ("on", "off")
METRICS = ("mean_average_precision", "group_auc", "auc")


def run(workdir: str, days: int, requests_per_day: int, candidates: int, seeds: int,
        batch_size: int) -> list[dict]:
    """One row per (grouping, seed): the eval metrics and the training throughput."""
    logs, spans = os.path.join(workdir, "logs"), os.path.join(workdir, "spans")
    last = FIRST_DAY + datetime.timedelta(days=days - 1)
    if not os.path.isdir(os.path.join(logs, "impressions")):
        simulate_logs(logs, FIRST_DAY, days, requests_per_day, candidates)
    build_spans(logs, spans, FIRST_DAY, last)
    rows = []
    for setting in SETTINGS:
        for seed in range(seeds):
            config = training.TrainConfig(
                data_dir=spans, model_dir=os.path.join(workdir, "models", f"{setting}-{seed}"),
                train_start=FIRST_DAY, train_end=last - datetime.timedelta(days=1),
                eval_start=last, eval_end=last,
                model=ModelConfig(backbone="dcnv2", loss="listwise_softmax"),
                group_batches=setting, batch_size=batch_size, epochs=1, seed=seed,
                log_every_steps=200, overwrite=True)
            record = training.train(config)
            rows.append({"group_batches": setting, "seed": seed,
                         **{m: record["eval"][m] for m in METRICS},
                         "map_requests": record["eval"]["map_requests"],
                         "train_examples_per_second": record["train_examples_per_second"]})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """A row per setting: each seed's test mAP, and the means of the metrics over seeds."""
    lines = ["| --group_batches | test mAP per seed | mean mAP | mean gAUC | mean AUC | "
             "train examples/s |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for setting, members, means in arm_means(rows, METRICS, key="group_batches"):
        per_seed = ", ".join(format_metric(r["mean_average_precision"]) for r in members)
        lines.append(
            f"| {setting} | {per_seed} | {format_metric(means['mean_average_precision'])} | "
            f"{format_metric(means['group_auc'])} | {format_metric(means['auc'])} | "
            f"{statistics.mean(r['train_examples_per_second'] for r in members):,.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    run_and_report("listwise-", FLAGS.workdir, lambda workdir: run(
        workdir, FLAGS.days, FLAGS.requests_per_day, FLAGS.candidates_per_request, FLAGS.seeds,
        FLAGS.batch_size), markdown_table, FLAGS.json)


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import: other experiments that tests import
    in the same process define flags of the same names)."""
    flags.DEFINE_string("workdir", "", "Keep logs, spans and models here (default: temporary).")
    flags.DEFINE_integer("days", 8, "Days of logs; the last one is the test day.", lower_bound=2)
    flags.DEFINE_integer("requests_per_day", 3000, "Search requests per day.", lower_bound=1)
    flags.DEFINE_integer("candidates_per_request", 20, "Items shown per request.", lower_bound=2)
    flags.DEFINE_integer("seeds", 2, "Training seeds per setting.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 512, "Training batch size.", lower_bound=1)
    flags.DEFINE_string("json", "", "Also write the rows here.")


if __name__ == "__main__":
    define_flags()
    job.run(main)

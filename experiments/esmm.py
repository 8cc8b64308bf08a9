"""ESMM vs a click-space pCVR model: pCVR over the entire impression space, on simulated funnels.

    python -m experiments.esmm [--workdir=DIR] [--days=8] [--requests_per_day=3000] [--seeds=2]
        [--arms=esmm,esmm_mmoe,click_only] [--json=experiments/results/esmm.json]

Simulates ``--days`` days of the impression -> click -> conversion funnel with ground truth
(``pipelines.simulate``: ``true_ctr``, ``true_cvr_given_click``), builds spans with two labels,
``clicked`` (a click within 1 hour) and ``converted`` (a conversion within 3 days), trains on all
days but the last and tests on the last:

``esmm``
    ``--tasks=ctr,ctcvr`` (shared bottom): pCTR and pCTCVR = pCTR x pCVR trained on every
    impression, pCVR learnt through the product; selected on validation pCTCVR AUC;
``esmm_mmoe``
    the same with two MMoE experts;
``click_only``
    ``--tasks=cvr``: pCVR trained on the clicked impressions only, the conventional model whose
    training rows are selected by the click; selected on validation pCVR AUC on clicks.

Reported per arm (means over seeds): pCVR's AUC against the conversion label over every test
impression (the entire space, where a ranking system applies it) and over the clicked ones, and
pCVR against the truth ``true_cvr_given_click`` (:mod:`experiments.ground_truth`) over every
impression: calibration, rank correlation, KL. Prints a markdown table and the load average.
Logs already in ``<workdir>/logs`` are used as they are (truth columns they lack read ``n/a``).
"""

from __future__ import annotations

import datetime
import glob
import os

import pyarrow.parquet as pq
from absl import app, flags

from cvr_tf import job, training
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.features import default_spec, spec_from_dict
from cvr_tf.metrics import format_metric
from cvr_tf.model import ModelConfig
from experiments.ground_truth import served_frame, truth_metrics
from experiments.seeded_study import arm_means, run_and_report
from pipelines.simulate import SimulatorConfig, simulate_logs
from pipelines.span_pipeline import build_spans

FLAGS = flags.FLAGS
FIRST_DAY = datetime.date(2026, 2, 2)
LABELS = {"clicked": {"events": "clicks", "window_hours": 1},
          "converted": {"events": "conversions", "attribution_days": 3}}
TRUTH = "true_cvr_given_click"
ARMS = {
    "esmm": (ModelConfig(backbone="dcnv2", tasks="ctr,ctcvr"), "ctcvr"),
    "esmm_mmoe": (ModelConfig(backbone="dcnv2", tasks="ctr,ctcvr", backbone_config={
        "tasks": {"structure": "mmoe", "experts": 2}}), "ctcvr"),
    "click_only": (ModelConfig(backbone="dcnv2", tasks="cvr"), "cvr_on_clicks"),
}
COLUMNS = ("cvr_auc", "cvr_auc_on_clicks", "calibration_vs_truth", "rank_correlation",
           "kl_to_truth")


def funnel_spec():
    """The default feature spec with the funnel's two labels (single-task label: converted)."""
    return spec_from_dict({**default_spec().to_dict(), "labels": LABELS})


def run(workdir: str, days: int, requests_per_day: int, candidates: int, seeds: int,
        batch_size: int, epochs: int, arms: list[str]) -> list[dict]:
    """One row per (arm, seed)."""
    logs, spans = os.path.join(workdir, "logs"), os.path.join(workdir, "spans")
    last = FIRST_DAY + datetime.timedelta(days=days - 1)
    if not os.path.isdir(os.path.join(logs, "impressions")):
        simulate_logs(logs, FIRST_DAY, days, requests_per_day, candidates,
                      SimulatorConfig(with_ground_truth=True))
    build_spans(logs, spans, FIRST_DAY, last, funnel_spec())
    logged = pq.read_schema(sorted(glob.glob(os.path.join(
        logs, "impressions", f"date={last}", "*.parquet")))[0]).names
    rows = []
    for arm in arms:
        model, selection = ARMS[arm]
        for seed in range(seeds):
            model_dir = os.path.join(workdir, "models", f"{arm}-{seed}")
            record = training.train(training.TrainConfig(
                data_dir=spans, model_dir=model_dir, train_start=FIRST_DAY,
                train_end=last - datetime.timedelta(days=1), eval_start=last, eval_end=last,
                model=model, early_stopping_task=selection, batch_size=batch_size,
                epochs=epochs, seed=seed, log_every_steps=200, overwrite=True))
            truth = {m: None for m in COLUMNS[2:]}
            if TRUTH in logged:
                scored = served_frame(model_dir_lib.load_model(model_dir), logs, [last], [TRUTH])
                truth = truth_metrics(scored["p_cvr"].to_numpy(), scored[TRUTH].to_numpy())
            rows.append({"arm": arm, "seed": seed, "cvr_auc": record["eval"]["cvr"]["auc"],
                         "cvr_auc_on_clicks": record["eval"]["cvr_on_clicks"]["auc"], **truth,
                         "eval": record["eval"]})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """A row per arm: the means over seeds of :data:`COLUMNS`."""
    lines = ["| arm | pCVR AUC, every impression | pCVR AUC, clicked | "
             f"calibration (p / {TRUTH}) | rank corr. with {TRUTH} | KL to {TRUTH} (x1e3) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for arm, _, means in arm_means(rows, COLUMNS):
        kl = None if means["kl_to_truth"] is None else means["kl_to_truth"] * 1e3
        lines.append(
            f"| {arm} | {format_metric(means['cvr_auc'])} | "
            f"{format_metric(means['cvr_auc_on_clicks'])} | "
            f"{format_metric(means['calibration_vs_truth'], '.3f')} | "
            f"{format_metric(means['rank_correlation'])} | {format_metric(kl, '.2f')} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    unknown = [arm for arm in FLAGS.arms if arm not in ARMS]
    if unknown:
        raise app.UsageError(f"--arms: unknown {', '.join(unknown)}; choose from "
                             f"{', '.join(ARMS)}")
    run_and_report("esmm-", FLAGS.workdir, lambda workdir: run(
        workdir, FLAGS.days, FLAGS.requests_per_day, FLAGS.candidates_per_request, FLAGS.seeds,
        FLAGS.batch_size, FLAGS.epochs, FLAGS.arms), markdown_table, FLAGS.json)


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import; see listwise_grouping)."""
    flags.DEFINE_string("workdir", "", "Keep logs, spans and models here (default: temporary).")
    flags.DEFINE_integer("days", 8, "Days of logs; the last one is the test day.", lower_bound=2)
    flags.DEFINE_integer("requests_per_day", 3000, "Search requests per day.", lower_bound=1)
    flags.DEFINE_integer("candidates_per_request", 20, "Items shown per request.", lower_bound=2)
    flags.DEFINE_integer("seeds", 2, "Training seeds per arm.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 1024, "Training batch size.", lower_bound=1)
    flags.DEFINE_integer("epochs", 1, "Passes over the training window.", lower_bound=1)
    flags.DEFINE_list("arms", list(ARMS), f"Arms to run, of {', '.join(ARMS)}.")
    flags.DEFINE_string("json", "", "Also write the rows here.")


if __name__ == "__main__":
    define_flags()
    job.run(main)

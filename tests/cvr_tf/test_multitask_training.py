"""Training multi-task models on funnel spans: per-task metrics, selection, continue, warm start;
and the delayed-feedback guard on spans with immature labels. Their export and serving:
tests/serving/test_multi_output.py."""

import dataclasses
import glob
import json
import os
import shutil

import pytest

from cvr_tf import model_dir as model_dir_lib
from cvr_tf import training
from cvr_tf.model import ModelConfig
from pipelines.span_pipeline import build_spans
from tests.conftest import SimulatedSpans, multitask_config

METRICS = {"auc", "logloss", "mean_average_precision", "group_auc", "calibration", "examples"}


def test_metrics_json_holds_every_task_and_pcvr_on_clicks(esmm_run):
    config, record = esmm_run
    metrics = model_dir_lib.read_json(model_dir_lib.path(config.model_dir, "metrics.json"))
    assert set(metrics["eval"]) == {"ctr", "cvr", "ctcvr", "cvr_on_clicks"}
    for task, values in metrics["eval"].items():
        assert METRICS <= set(values), task
    evaluated = metrics["eval"]
    assert evaluated["ctr"]["examples"] == evaluated["cvr"]["examples"] == 6000  # 2 days x 3000
    clicked = evaluated["cvr_on_clicks"]["examples"]
    assert 0 < clicked < 6000
    # Every conversion follows a click here: pCVR has as many positives on clicks as overall.
    assert evaluated["cvr_on_clicks"]["positive_rate"] * clicked == pytest.approx(
        evaluated["cvr"]["positive_rate"] * 6000)
    assert metrics["early_stopping_task"] == "ctcvr"
    best = next(p for p in metrics["validation_curve"] if p["step"] == metrics["best_step"])
    assert best["ctcvr"]["auc"] == max(p["ctcvr"]["auc"] for p in metrics["validation_curve"])
    assert set(metrics["validation"]) == {"ctr", "cvr", "ctcvr", "cvr_on_clicks"}
    recorded = model_dir_lib.read_json(model_dir_lib.path(config.model_dir, "model_config.json"))
    assert recorded["model"]["tasks"] == "ctr,ctcvr"
    assert metrics["dense_params"] > 0 and record["eval"] == metrics["eval"]
    assert metrics["delayed_feedback"] == {"mode": "none", "immature_spans": {},
                                           "excluded_days": [], "immature_test_spans": []}


def test_a_click_space_model_selected_on_clicks(click_space_run, tmp_path):
    config, record = click_space_run
    assert set(record["eval"]) == {"cvr", "cvr_on_clicks"}
    curve = record["validation_curve"]
    best = min(curve, key=lambda p: p["cvr_on_clicks"]["logloss"])
    assert record["best_step"] == best["step"] and record["early_stopping_task"] == "cvr_on_clicks"
    again = dataclasses.replace(config, model_dir=str(tmp_path / "n"))
    with pytest.raises(training.ConfigError, match="--early_stopping_task=ctcvr is not an "
                                                   "evaluation of --tasks=cvr; use one of cvr, "
                                                   "cvr_on_clicks"):
        training.check_config(dataclasses.replace(again, early_stopping_task="ctcvr"))
    with pytest.raises(training.ConfigError, match="a single-task model has none"):
        training.check_config(dataclasses.replace(again, model=ModelConfig()))


def test_continue_and_warm_start_keep_working(esmm_run, tmp_path):
    config, record = esmm_run
    copy = str(tmp_path / "copy")
    shutil.copytree(config.model_dir, copy)
    more = training.train(dataclasses.replace(config, model_dir=copy, steps=10,
                                              continue_training=True))
    # --continue trains on from the final checkpoint: the selected step.
    assert more["resumed_from_step"] == record["best_step"] and more["train_steps"] == 10
    warm = training.train(dataclasses.replace(config, model_dir=str(tmp_path / "warm"), steps=2,
                                              warm_start_from=config.model_dir))
    report = warm["warm_start"]
    assert any("ctr_tower" in name for name in report["carried"])
    assert any("cvr_logit" in name for name in report["carried"])


def test_a_spec_without_clicks_is_refused_before_any_work(simulated_spans, tmp_path):
    with pytest.raises(training.ConfigError, match="needs the click label 'clicked'"):
        training.train(multitask_config(simulated_spans, tmp_path / "no_clicks"))
    assert not os.path.exists(tmp_path / "no_clicks")


# Delayed feedback ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def immature_spans(simulated_spans, tmp_path_factory) -> SimulatedSpans:
    """The simulated logs as of day 4: conversions observed through day 4 only, so the spans
    of days 2..5 (whose 3-day windows reach days 5..8) are immature."""
    root = tmp_path_factory.mktemp("immature")
    logs = root / "logs"
    os.makedirs(logs / "conversions")
    os.symlink(os.path.join(simulated_spans.logs, "impressions"), logs / "impressions")
    for partition in glob.glob(os.path.join(simulated_spans.logs, "conversions", "date=*")):
        if partition.rsplit("=", 1)[1] <= simulated_spans.day(4).isoformat():
            os.symlink(partition, logs / "conversions" / os.path.basename(partition))
    build_spans(logs, root / "spans", simulated_spans.first_day, simulated_spans.day(5))
    return SimulatedSpans(str(logs), str(root / "spans"), simulated_spans.first_day,
                          simulated_spans.days)


def test_training_refuses_immature_spans_in_one_line(immature_spans, tmp_path):
    config = multitask_config(immature_spans, tmp_path / "m", model=ModelConfig(backbone="mlp"))
    with pytest.raises(training.ConfigError) as error:
        training.train(config)
    message = str(error.value)
    assert "\n" not in message
    assert ("span(s) 2026-02-04, 2026-02-05 have immature label 'converted' (conversions "
            "observed through 2026-02-06; the last span's window needs 2026-02-08)") in message
    assert "--delayed_feedback=exclude" in message and "rebuild" in message
    assert not os.path.exists(tmp_path / "m")


def test_exclude_trains_and_validates_without_the_immature_spans(immature_spans, tmp_path):
    config = multitask_config(immature_spans, tmp_path / "m", model=ModelConfig(backbone="mlp"),
                     delayed_feedback="exclude", steps=4, eval_every_steps=4)
    record = training.train(config)
    feedback = record["delayed_feedback"]
    assert feedback["immature_spans"] == {"2026-02-04": ["converted"],
                                          "2026-02-05": ["converted"]}
    assert feedback["immature_test_spans"] == ["2026-02-06 (converted)", "2026-02-07 (converted)"]
    assert feedback["excluded_days"] == ["2026-02-04", "2026-02-05"]
    spans = [json.load(open(os.path.join(immature_spans.spans, f"span={d}", "stats.json")))
             for d in ("2026-02-02", "2026-02-03")]
    assert record["validation"]["examples"] == sum(s["rows"]["eval_rows"] for s in spans)
    assert record["train_steps"] == 4 and record["eval"]["examples"] == 6000

"""The retraining loop with a multi-task candidate: blessed on one evaluation (``--bless_task``)
against a served multi-task model, and pushed with every task's output."""

import datetime
import shutil

import numpy as np
import pytest
from tensorflow.python.saved_model import loader_impl

from cvr_tf import metrics as metrics_lib
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.features import default_spec, spec_from_dict
from cvr_tf.model import ModelConfig, build_model
from cvr_tf.retraining import holdout, loop
from cvr_tf.retraining.config import RetrainConfig, training_template
from tests.conftest import FUNNEL_LABELS

FUNNEL_SPEC = spec_from_dict({**default_spec().to_dict(), "labels": FUNNEL_LABELS})


def _config(**fields) -> RetrainConfig:
    values = dict(logs="/l", work_dir="/w", export_base="/e", date=datetime.date(2026, 3, 9),
                  training=training_template("/s", model=ModelConfig(tasks="ctr,ctcvr")))
    values.update(fields)
    return RetrainConfig(**values)


def test_the_bless_task_defaults_to_the_early_stopping_convention():
    assert _config().bless_evaluation == "ctcvr"  # the last of --tasks
    stopping = training_template("/s", model=ModelConfig(tasks="ctr,ctcvr"),
                                 early_stopping_task="cvr_on_clicks")
    assert _config(training=stopping).bless_evaluation == "cvr_on_clicks"
    assert _config(training=stopping, bless_task="ctr").bless_evaluation == "ctr"
    assert _config(training=training_template("/s")).bless_evaluation is None
    with pytest.raises(ValueError, match="--bless_task=cvr_on_clicks is not an evaluation of "
                                         "--tasks=ctr; use one of ctr$"):
        _config(training=training_template("/s", model=ModelConfig(tasks="ctr")),
                bless_task="cvr_on_clicks").check()
    with pytest.raises(ValueError, match="--bless_task=ctr chooses among .* single-task "
                                         r"\(no --tasks\): drop --bless_task"):
        _config(training=training_template("/s"), bless_task="ctr").check()


def test_holdout_targets_and_scores_by_task(funnel_spans, esmm_run, click_space_run):
    esmm = model_dir_lib.load_model(esmm_run[0].model_dir)
    columns = holdout.read_day(funnel_spans.spans, funnel_spans.day(5), esmm.spec)
    clicked = columns["clicked"].astype(bool)
    output, labels, rows = holdout.target(esmm, columns, "cvr_on_clicks")
    assert output == "cvr" and np.array_equal(rows, clicked)
    np.testing.assert_array_equal(labels, columns["converted"])
    output, labels, rows = holdout.target(esmm, columns, "ctcvr")
    assert output == "ctcvr" and rows is None
    np.testing.assert_array_equal(labels, columns["converted"] * columns["clicked"])
    scores = holdout.score(esmm, columns, "ctcvr")
    served = esmm.served_probabilities({c: columns[c] for c in esmm.spec.column_dtypes(
        train_only=False)})
    np.testing.assert_allclose(scores, served["ctcvr"].numpy(), atol=1e-6)
    click_space = model_dir_lib.load_model(click_space_run[0].model_dir)
    single = build_model(FUNNEL_SPEC, esmm.vocabularies, ModelConfig(backbone="mlp"))
    for model, output, message in (
            (click_space, "ctcvr", r"its outputs are cvr \(--tasks=cvr\), without 'ctcvr'"),
            (esmm, None, r"its outputs are ctr, cvr, ctcvr .*, not one single-task output"),
            (single, "cvr", "it is a single-task model, without the output 'cvr'")):
        with pytest.raises(ValueError, match=message):
            holdout.score(model, columns, output)


def test_a_multi_task_candidate_blessed_on_its_task_against_the_served_one(
        funnel_spans, esmm_run, esmm_export, tmp_path):
    """ESMM (trained on days 0-3) is served; the day-5 candidate warm-starts from it, trains on
    day 4, and is compared with it on pCVR over the clicked impressions of day 5."""
    shutil.copytree(funnel_spans.spans, tmp_path / "spans")
    FUNNEL_SPEC.save(tmp_path / "spec.json")
    shutil.copytree(esmm_export, tmp_path / "export" / "esmm" / "1")
    config = RetrainConfig(
        logs=funnel_spans.logs, work_dir=str(tmp_path / "work"),
        export_base=str(tmp_path / "export"), date=funnel_spans.day(5), model_name="esmm",
        training=training_template(str(tmp_path / "spans"), feature_spec=str(tmp_path /
                                   "spec.json"), model=esmm_run[0].model, batch_size=128,
                                   steps=4, log_every_steps=2),
        train_days=3, bless_task="cvr_on_clicks", bless_tolerance=1.0,
        calibration_bounds=(0.01, 100.0), batch_scope="none")
    report = loop.retrain(config)
    assert report["bless_task"] == "cvr_on_clicks" and report["spans_built"] == []
    assert report["current"] == {"version": 1, "model_dir": esmm_run[0].model_dir}
    assert report["candidate"]["train_start"] == funnel_spans.day(4).isoformat()
    assert report["decision"]["blessed"] and report["exported_version"] == 2

    # Every slice holds the clicked impressions only, scored on pCVR by both models.
    columns = holdout.read_day(funnel_spans.spans, funnel_spans.day(5), FUNNEL_SPEC)
    clicked = columns["clicked"].astype(bool)
    overall = report["slices"][0]
    assert (overall["examples"], overall["positives"]) == (
        clicked.sum(), (columns["converted"].astype(bool) & clicked).sum())
    served = model_dir_lib.load_model(esmm_run[0].model_dir)
    expected = metrics_lib.evaluate(columns["converted"][clicked],
                                    holdout.score(served, columns, "cvr")[clicked],
                                    columns["request_id"][clicked])
    assert overall["metrics"]["current"]["auc"] == pytest.approx(expected["auc"], abs=1e-6)
    assert sum(row["examples"] for row in report["slices"]
               if row["slice"].startswith("items=")) == clicked.sum()
    # The pushed version serves every task.
    signature_defs = loader_impl.parse_saved_model(str(
        tmp_path / "export" / "esmm" / "2")).meta_graphs[0].signature_def
    assert sorted(signature_defs["serving_default"].outputs) == ["ctcvr", "ctr", "cvr"]
    markdown = (tmp_path / "work" / "reports" / funnel_spans.day(5).isoformat() /
                "retrain_report.md").read_text()
    assert "Bless metric `auc` of task `cvr_on_clicks` by slice" in markdown

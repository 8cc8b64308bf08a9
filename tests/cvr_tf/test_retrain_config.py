"""The retraining job's flags: generated from RetrainConfig and the training job's TrainConfig."""

import dataclasses
import datetime
import pathlib
import re

import pytest
from absl import app, flags

from cvr_tf import retrain
from cvr_tf.model import ModelConfig
from cvr_tf.retraining.config import PER_DAY_FIELDS, RetrainConfig, training_template


def _parse(tmp_path, *lines):
    values = flags.FlagValues()
    retrain.define_flags(values)
    flagfile = tmp_path / "retrain.flags"
    flagfile.write_text("\n".join(["--logs=/l", "--data_dir=/s", "--work_dir=/w",
                                   "--export_base=/e", *lines]) + "\n")
    values(["retrain", f"--flagfile={flagfile}"])
    return values


def test_flags_come_from_the_loop_and_training_configs(tmp_path):
    values = _parse(tmp_path, "--date=2026-03-09", "--train_days=5", "--steps=40",
                    "--backbone=mlp", "--bless_metric=logloss", "--bless_tolerance=0.01",
                    "--calibration_bounds=0.8,1.25", "--slice_by=device,user_segment")
    config = retrain.config_from_flags(values)
    assert config.date == datetime.date(2026, 3, 9)
    assert (config.train_start, config.train_end) == (datetime.date(2026, 3, 4),
                                                      datetime.date(2026, 3, 8))
    assert config.calibration_bounds == (0.8, 1.25) and config.bless_metric == "logloss"
    assert config.slice_columns == ("device", "user_segment")
    assert config.training.data_dir == "/s" and config.training.steps == 40
    assert config.training.model.backbone == "mlp"
    assert config.training == training_template("/s", steps=40, model=config.training.model)
    # The loop sets these per day: no flags.
    for name in PER_DAY_FIELDS:
        assert name not in values and "continue" not in values
    assert config.to_record()["training"]["steps"] == 40


def test_defaults_and_an_empty_slice_list(tmp_path):
    config = retrain.config_from_flags(_parse(tmp_path, "--date=2026-03-09", "--slice_by="))
    assert config.slice_columns == () and config.calibration_bounds == (0.5, 2.0)
    assert (config.bless_metric, config.bless_tolerance, config.train_days) == ("auc", 0.0, 7)


def test_bad_values_fail_in_one_line_naming_the_flag(tmp_path):
    with pytest.raises(app.UsageError, match="--date='03/09/2026' is not a date"):
        retrain.config_from_flags(_parse(tmp_path, "--date=03/09/2026"))
    with pytest.raises(app.UsageError, match="--calibration_bounds=2: give two numbers"):
        retrain.config_from_flags(_parse(tmp_path, "--date=2026-03-09",
                                         "--calibration_bounds=2"))
    with pytest.raises(flags.IllegalFlagValueError, match="bless_metric"):
        _parse(tmp_path, "--bless_metric=accuracy")
    config = RetrainConfig(logs="/l", work_dir="/w", export_base="/e",
                           date=datetime.date(2026, 3, 9), training=training_template("/s"),
                           train_days=0)
    with pytest.raises(ValueError, match="--train_days must be positive, got 0"):
        config.check()
    multi_task = dataclasses.replace(config, train_days=7, training=training_template(
        "/s", model=ModelConfig(tasks="ctr,ctcvr")), bless_task="cvr")
    multi_task.check()  # multi-task candidates are blessed on --bless_task
    with pytest.raises(ValueError, match="--bless_task=clicks is not an evaluation of "
                                         "--tasks=ctr,ctcvr; use one of ctr, cvr, ctcvr, "
                                         "cvr_on_clicks"):
        dataclasses.replace(multi_task, bless_task="clicks").check()


def test_every_flag_readme_shows_for_the_loop_exists():
    text = (pathlib.Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^### \d+\. Daily retraining: `python -m cvr_tf\.retrain`$(.*?)^### ",
                        text, re.M | re.S)
    assert section, "README.md has no retraining section"
    shown = set(re.findall(r"--([a-z0-9_]+)", section.group(1)))
    assert {"bless_metric", "bless_tolerance", "calibration_bounds", "slice_by", "date",
            "backbone"} <= shown
    values = flags.FlagValues()
    retrain.define_flags(values)
    assert shown - set(values) == set()

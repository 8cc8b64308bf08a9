"""Training-job flags come from TrainConfig: README's flags exist, parsing builds the config."""

import dataclasses
import datetime
import pathlib
import re

import pytest
from absl import app, flags

from cvr_tf import config_flags, train, training
from cvr_tf.model import ModelConfig
from cvr_tf.optimization import OptimizerConfig

_README = pathlib.Path(__file__).parents[2] / "README.md"
_WINDOW = dict(train_start=datetime.date(2026, 1, 1), train_end=datetime.date(2026, 1, 7),
               eval_start=datetime.date(2026, 1, 8), eval_end=datetime.date(2026, 1, 8))


def _readme_training_flags() -> set[str]:
    text = _README.read_text(encoding="utf-8")
    section = re.search(r"^### \d+\. Training: `python -m cvr_tf\.train`$(.*?)^### ", text,
                        re.M | re.S)
    assert section, "README.md has no training-job section"
    commands = re.findall(r"python -m cvr_tf\.train(?:[^\n]*\\\n)*[^\n]*", text)
    return set(re.findall(r"--([a-z0-9_]+)", section.group(1) + "\n".join(commands)))


def test_every_flag_readme_shows_for_the_training_job_exists():
    shown = _readme_training_flags()
    assert {"eval_every_steps", "train_days", "backbone", "position_debiasing"} <= shown
    app.define_help_flags()  # --helpfull and friends, as app.run defines them for the job
    assert shown - set(flags.FLAGS) == set()
    assert train.FLAGS is flags.FLAGS


def _fresh_flags() -> flags.FlagValues:
    values = flags.FlagValues()
    config_flags.define_flags(training.TrainConfig, skip=_WINDOW, flag_values=values)
    return values


def test_defaults_are_the_config_defaults():
    values = _fresh_flags()
    values(["job", "--data_dir=/d", "--model_dir=/m"])
    assert config_flags.build(training.TrainConfig, values, **_WINDOW) == training.TrainConfig(
        data_dir="/d", model_dir="/m", **_WINDOW)
    nested = {"model": ModelConfig, "optimization": OptimizerConfig}
    assert set(values) == ({config_flags.flag_name(f)
                            for f in dataclasses.fields(training.TrainConfig)}
                           - set(_WINDOW) - set(nested)
                           | {f.name for cls in nested.values() for f in dataclasses.fields(cls)})


def test_flags_build_the_nested_config():
    values = _fresh_flags()
    values(["job", "--data_dir=/d", "--model_dir=/m", "--eval_every_steps=7", "--backbone=mlp",
            "--noposition_debiasing", "--loss=listwise_softmax", "--steps=30", "--continue"])
    config = config_flags.build(training.TrainConfig, values, **_WINDOW)
    assert config.eval_every_steps == 7 and config.steps == 30 and config.continue_training
    assert config.model == ModelConfig(backbone="mlp", position_debiasing=False,
                                       loss="listwise_softmax")
    assert values["strategy"].help.endswith(": tf.distribute strategy; the cluster comes from "
                                            "TF_CONFIG.")


def _backbone_config(values: flags.FlagValues, path: str) -> dict:
    values(["job", "--data_dir=/d", "--model_dir=/m", f"--backbone_config={path}"])
    return config_flags.build(training.TrainConfig, values, **_WINDOW).model.backbone_config


def test_backbone_config_file_is_read_into_the_model_config(tmp_path):
    (tmp_path / "dcn.json").write_text('{"cross": "low_rank", "rank": 32, "mlp": [64]}')
    (tmp_path / "ens.yaml").write_text("members:\n  - dcnv2: {cross: mixture}\n  - masknet:\n"
                                       "dropout: 0.1\n")
    assert _backbone_config(_fresh_flags(), str(tmp_path / "dcn.json")) == {
        "cross": "low_rank", "rank": 32, "mlp": [64]}
    assert _backbone_config(_fresh_flags(), str(tmp_path / "ens.yaml")) == {
        "members": [{"dcnv2": {"cross": "mixture"}}, {"masknet": None}], "dropout": 0.1}
    (tmp_path / "empty.yaml").write_text("")
    assert _backbone_config(_fresh_flags(), str(tmp_path / "empty.yaml")) == {}
    values = _fresh_flags()
    values(["job", "--data_dir=/d", "--model_dir=/m", "--dropout=0.2"])
    model = config_flags.build(training.TrainConfig, values, **_WINDOW).model
    assert (model.backbone_config, model.dropout) == ({}, 0.2)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.json", '{"cross": ', r"--backbone_config=\S+bad.json: \S+ is not valid JSON: "),
    ("bad.yaml", "cross: [low_rank", r"--backbone_config=\S+bad.yaml: \S+ is not valid YAML: "),
    ("list.yaml", "- cross\n", r"--backbone_config=\S+: \S+ must hold a mapping of backbone "
                                r"options, got list$"),
    (None, None, r"--backbone_config=\S+missing.yaml: cannot read '\S+': No such file"),
])
def test_backbone_config_file_errors_name_the_flag(tmp_path, name, text, message):
    path = tmp_path / (name or "missing.yaml")
    if text is not None:
        path.write_text(text)
    with pytest.raises(app.UsageError, match=message) as error:
        _backbone_config(_fresh_flags(), str(path))
    assert "\n" not in str(error.value)

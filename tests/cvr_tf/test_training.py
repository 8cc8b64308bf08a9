"""Training job: a run on simulated spans, bad configs, resume after a kill, NaN, warm start."""

import dataclasses
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cvr_tf import model_dir as model_dir_lib
from cvr_tf import training, training_loop
from cvr_tf import warm_start as warm_start_lib
from cvr_tf.callbacks import NaNLossError
from cvr_tf.compat import keras, tf
from cvr_tf.features import default_spec
from cvr_tf.model import ModelConfig
from cvr_tf.optimization import OptimizerConfig


def _config(spans, model_dir, **overrides) -> training.TrainConfig:
    values = dict(data_dir=spans.spans, model_dir=str(model_dir), train_start=spans.day(0),
                  train_end=spans.day(3), eval_start=spans.day(4), eval_end=spans.day(5),
                  batch_size=128, steps=12, log_every_steps=4, checkpoint_every_steps=4)
    values.update(overrides)
    return training.TrainConfig(**values)


@pytest.fixture(scope="module")
def trained(simulated_spans, tmp_path_factory):
    config = _config(simulated_spans, tmp_path_factory.mktemp("dcnv2"), eval_every_steps=6)
    return config, training.train(config)


def test_run_writes_the_model_dir(trained):
    config, record = trained
    files = set(os.listdir(config.model_dir))
    assert {"model_config.json", "vocab", "checkpoints", "logs", "run_config.json",
            "metrics.json"} <= files
    assert not {"backup", "best"} & files  # a finished run clears its in-flight state
    metrics = model_dir_lib.read_json(model_dir_lib.path(config.model_dir, "metrics.json"))
    best = metrics["best_step"]
    assert model_dir_lib.latest_checkpoint(config.model_dir).endswith(f"ckpt-{best}")
    assert metrics["train_steps"] == 12 and metrics["train_examples"] == 12 * 128
    assert metrics["resumed_from_step"] == 0 and metrics["train_examples_per_second"] > 0
    assert metrics["dense_flops_per_example"] == 459_430
    assert set(metrics["eval"]) >= {"auc", "logloss", "mean_average_precision", "group_auc",
                                    "calibration"}
    assert metrics["eval"]["examples"] == 6000  # both splits of the two eval days
    assert metrics["training_spans"] == [
        (config.train_start + datetime.timedelta(days=i)).isoformat() for i in range(4)]
    assert metrics["test_spans"] == [config.eval_start.isoformat(), config.eval_end.isoformat()]
    assert metrics["config"]["model"]["backbone"] == "dcnv2"
    assert record["eval"] == metrics["eval"]
    curve = metrics["validation_curve"]
    assert [p["step"] for p in curve] == [6, 12]
    assert 0 < curve[0]["train_seconds"] < curve[1]["train_seconds"]
    # The validation set is the training window's eval split: 10 % of its 4 x 300 requests.
    best_point = next(p for p in curve if p["step"] == best)
    assert {k: v for k, v in best_point.items() if k not in ("step", "train_seconds")} == (
        metrics["validation"])
    assert best_point["auc"] == max(p["auc"] for p in curve)
    assert metrics["validation"]["requests"] < 300 and not metrics["stopped_early"]
    assert os.listdir(model_dir_lib.path(config.model_dir, "logs"))


def test_a_finished_run_is_refused_unless_told_how(trained):
    config, _ = trained
    with pytest.raises(training.ConfigError, match="finished run .*--overwrite.*--continue"):
        training.check_config(config)
    with pytest.raises(training.ConfigError, match="at most one of --overwrite .* and --continue"):
        training.check_config(dataclasses.replace(config, overwrite=True, continue_training=True))


def test_continue_trains_further_and_overwrite_retrains(simulated_spans, tmp_path):
    config = _config(simulated_spans, tmp_path / "m", steps=4, model=ModelConfig(backbone="mlp"))
    training.train(config)
    more = training.train(dataclasses.replace(config, steps=8, continue_training=True))
    assert more["resumed_from_step"] == 4 and more["train_steps"] == 8
    assert model_dir_lib.latest_checkpoint(config.model_dir).endswith("ckpt-8")
    with pytest.raises(training.ConfigError, match="is at step 8 already; set --steps above 8"):
        training.train(dataclasses.replace(config, steps=8, continue_training=True))
    again = training.train(dataclasses.replace(config, overwrite=True))
    assert again["resumed_from_step"] == 0 and again["train_steps"] == 4
    assert sorted(os.listdir(tmp_path / "m" / "checkpoints")) == [
        "checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index"]


def test_continue_needs_a_checkpoint(simulated_spans, tmp_path):
    with pytest.raises(training.ConfigError, match="--continue: .* has no checkpoint"):
        training.check_config(_config(simulated_spans, tmp_path / "m", continue_training=True))
    assert not os.path.exists(tmp_path / "m")


def test_overwrite_never_wipes_a_directory_that_is_no_model_dir(simulated_spans, tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(training.ConfigError, match="--overwrite would wipe .* not a cvr_tf model"):
        training.check_config(_config(simulated_spans, tmp_path, overwrite=True))
    assert (tmp_path / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize("change, message", [
    (dict(model=ModelConfig(backbone="transformer")), "--backbone.*unknown backbone"),
    (dict(model=ModelConfig(backbone_config={"cross": "foo"})),
     "--backbone_config.*: backbone_config.cross: 'foo' is not one of full, low_rank, mixture"),
    (dict(model=ModelConfig(dropout=1.0)), "--dropout: dropout must be in \\[0, 1\\)"),
    (dict(eval_start="day3"), "eval window .* overlaps training window"),
    (dict(train_start="day5", train_end="day4"), "--train_end .* is before --train_start"),
    (dict(steps=0), "--steps must be positive"),
    (dict(optimization=OptimizerConfig(learning_rate=-1.0)), "--learning_rate must be positive"),
    (dict(warm_start_from="/nonexistent"), "--warm_start_from=/nonexistent is not a cvr_tf"),
    (dict(model=ModelConfig(tasks="ctr,ctcvr", backbone_config={"tasks": {"experts": 2}})),
     "backbone_config.tasks.experts: only structure mmoe or ple has experts"),
    (dict(model=ModelConfig(tasks="ctr,ctcvr", loss="listwise_softmax")),
     "--tasks=ctr,ctcvr trains with --loss=logloss only"),
    (dict(model=ModelConfig(loss="listwise_softmax"), delayed_feedback="fake_negative_weighting"),
     "--delayed_feedback=fake_negative_weighting weights the pointwise log loss"),
])
def test_bad_configs_fail_before_any_work(simulated_spans, tmp_path, change, message):
    change = {k: simulated_spans.day(int(v[3:])) if isinstance(v, str) and v.startswith("day")
              else v for k, v in change.items()}
    with pytest.raises(training.ConfigError, match=message):
        training.check_config(_config(simulated_spans, tmp_path / "m", **change))
    assert not os.path.exists(tmp_path / "m")


def test_metrics_name_the_days_a_partly_built_window_really_held(simulated_spans, tmp_path):
    start = simulated_spans.day(0) - datetime.timedelta(days=2)  # two days before the logs
    record = training.train(_config(simulated_spans, tmp_path, train_start=start,
                                    train_end=simulated_spans.day(1), steps=2))
    assert record["training_spans"] == [simulated_spans.day(0).isoformat(),
                                        simulated_spans.day(1).isoformat()]


def test_a_corrupt_span_file_fails_in_one_line_naming_it(simulated_spans, tmp_path):
    spans = tmp_path / "spans"
    shutil.copytree(simulated_spans.spans, spans)
    day = simulated_spans.day(1).isoformat()
    (shard,) = (spans / f"span={day}").glob("train-*.tfrecord.gz")
    shard.write_bytes(shard.read_bytes()[:2000])  # a disk fault after the span was published
    config = _config(simulated_spans, tmp_path / "model", data_dir=str(spans))
    with pytest.raises(training.ConfigError) as raised:
        training.train(config)
    assert str(raised.value).startswith(
        f"corrupt span file(s): {shard} (truncated record at ")
    assert str(raised.value).endswith(
        f"; rebuild the span(s) of {day} with `python -m pipelines.build_tfrecords --overwrite`, "
        "then rerun this command (it resumes from the run's last backup, if it made one)")


def test_window_without_spans_names_the_days(simulated_spans, tmp_path):
    config = _config(simulated_spans, tmp_path, eval_start=simulated_spans.day(10),
                     eval_end=simulated_spans.day(11))
    with pytest.raises(training.ConfigError, match="eval window: no complete span .*missing days"):
        training.check_config(config)


def _train_command(spans, model_dir, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cvr_tf.train", f"--data_dir={spans.spans}",
            f"--model_dir={model_dir}", f"--train_start={spans.day(0)}",
            f"--train_end={spans.day(3)}", f"--eval_start={spans.day(4)}",
            f"--eval_end={spans.day(5)}", *extra]


def test_cli_rejects_an_unknown_backbone(simulated_spans, tmp_path):
    result = subprocess.run(_train_command(simulated_spans, tmp_path / "m", "--backbone=resnet"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "unknown backbone 'resnet'" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "m")


def test_cli_names_a_missing_feature_spec_in_one_line(simulated_spans, tmp_path):
    result = subprocess.run(_train_command(simulated_spans, tmp_path / "m",
                                           f"--feature_spec={tmp_path / 'no.json'}"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"--feature_spec={tmp_path / 'no.json'}: feature spec file" in result.stderr
    assert not os.path.exists(tmp_path / "m")


def test_cli_refuses_a_finished_model_dir_in_one_line(trained):
    config, _ = trained
    before = sorted(os.listdir(config.model_dir))
    command = [sys.executable, "-m", "cvr_tf.train", f"--data_dir={config.data_dir}",
               f"--model_dir={config.model_dir}", f"--train_start={config.train_start}",
               f"--train_end={config.train_end}", f"--eval_start={config.eval_start}",
               f"--eval_end={config.eval_end}", "--steps=12", "--batch_size=128"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"--model_dir={config.model_dir} holds a finished run (metrics.json)" in result.stderr
    assert sorted(os.listdir(config.model_dir)) == before


def _final_weights(model_dir) -> dict[str, np.ndarray]:
    path = model_dir_lib.latest_checkpoint(model_dir)
    return {name: tf.train.load_checkpoint(path).get_tensor(name)
            for name, _ in tf.train.list_variables(path) if name.startswith("model/")}


def test_killed_run_resumes_exactly_where_it_stopped(simulated_spans, tmp_path):
    # Weight decay, dropout-free SGD with momentum, a decaying rate, separate table optimizer:
    # the backup must carry every piece of optimizer state for the weights to match.
    flags = ("--steps=120", "--batch_size=32", "--checkpoint_every_steps=5", "--backbone=mlp",
             "--early_stopping_metric=none", "--optimizer=sgd", "--learning_rate=0.05",
             "--embedding_optimizer=adagrad", "--lr_schedule=cosine", "--weight_decay=0.01")
    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run(_train_command(simulated_spans, uninterrupted, *flags), check=True,
                   capture_output=True, timeout=300)
    model_dir = tmp_path / "m"
    command = _train_command(simulated_spans, model_dir, *flags)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backup = model_dir / "backup"
    deadline = time.time() + 120
    while not any("checkpoint" in files for _, _, files in os.walk(backup)):
        assert process.poll() is None and time.time() < deadline, "no backup before the end"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (model_dir / "metrics.json").exists()

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert 0 < metrics["resumed_from_step"] < 120
    assert metrics["train_steps"] == 120
    assert model_dir_lib.latest_checkpoint(model_dir).endswith("ckpt-120")
    # The resumed run saw exactly the batches of the uninterrupted one: the same weights.
    expected, resumed = _final_weights(uninterrupted), _final_weights(model_dir)
    assert expected.keys() == resumed.keys() and len(expected) > 10
    for name, value in expected.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-6, err_msg=name)
    reference = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["eval"]["logloss"] == pytest.approx(reference["eval"]["logloss"], abs=1e-6)


def test_nan_loss_stops_the_run(simulated_spans, tmp_path):
    # Adam's first update moves every weight by ~learning_rate: the second forward pass overflows.
    config = _config(simulated_spans, tmp_path / "m",
                     optimization=OptimizerConfig(learning_rate=1e35),
                     model=ModelConfig(backbone="mlp"))
    with pytest.raises(NaNLossError, match="training loss became nan at step 2"):
        training.train(config)
    assert not (tmp_path / "m" / "metrics.json").exists()


def test_warm_start_on_the_same_data_starts_at_the_old_loss(trained, simulated_spans):
    config, record = trained
    source = warm_start_lib.read_source_weights(config.model_dir)
    spec_dict, model_config, vocabularies = model_dir_lib.read_model_definition(config.model_dir)
    model = model_dir_lib.build_from_definition(spec_dict, model_config, vocabularies)
    report = warm_start_lib.warm_start(model, source)
    assert not report.fresh
    assert all(c["tokens_new"] == 0 for c in report.remapped.values())
    metrics = training.evaluate_window(model, config.data_dir, config.eval_start, config.eval_end,
                                       default_spec())
    assert metrics["logloss"] == pytest.approx(record["eval"]["logloss"], abs=1e-6)
    keras.backend.clear_session()


def test_warm_start_across_new_vocabulary_and_feature(trained, simulated_spans, tmp_path):
    config, _ = trained
    spec = default_spec().to_dict()
    spec["features"].append({"name": "query_hashed", "kind": "categorical", "column": "query",
                             "hash_buckets": 100, "embedding_dim": 4})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    # A later window: new items and queries enter the vocabularies, old ones drop out.
    later = dataclasses.replace(
        config, model_dir=str(tmp_path / "warm"), feature_spec=str(tmp_path / "spec.json"),
        train_start=simulated_spans.day(1), train_end=simulated_spans.day(4),
        eval_start=simulated_spans.day(5), eval_end=simulated_spans.day(5), steps=4,
        warm_start_from=config.model_dir)
    training.train(later)
    report = model_dir_lib.read_json(os.path.join(later.model_dir, "warm_start.json"))
    item = report["remapped"]["feature_embedding/item_id_embedding:0"]
    assert item["tokens_carried"] > 0 and item["tokens_new"] > 0 and item["tokens_dropped"] > 0
    assert "feature_embedding/query_hashed_embedding:0" in report["fresh"]
    assert "feature_embedding/user_id_embedding:0" in report["carried"]
    assert report["source"] == config.model_dir


def test_mirrored_strategy_trains(simulated_spans, tmp_path):
    # The listwise loss, so with batches grouped by request (--group_batches=auto).
    record = training.train(_config(simulated_spans, tmp_path, strategy="mirrored", steps=3,
                                    model=ModelConfig(backbone="mlp", loss="listwise_softmax")))
    assert record["train_steps"] == 3 and record["config"]["strategy"] == "mirrored"


@pytest.mark.parametrize("loss, group_batches, grouped", [
    ("listwise_softmax", "auto", True), ("logloss", "auto", False),
    ("logloss", "on", True), ("listwise_softmax", "off", False)])
def test_training_batches_are_grouped_by_request_for_listwise_losses(
        simulated_spans, tmp_path, monkeypatch, loss, group_batches, grouped):
    calls = []
    monkeypatch.setattr(training_loop.input_lib, "make_dataset",
                        lambda *args, **kwargs: calls.append(kwargs) or tf.data.Dataset.range(4))
    config = _config(simulated_spans, tmp_path, model=ModelConfig(loss=loss),
                     group_batches=group_batches)
    dataset = training_loop.train_dataset(config, default_spec(), tf.distribute.get_strategy(), 1)
    assert calls[0]["group_by_request"] is grouped and calls[0]["drop_remainder"]
    assert list(dataset.as_numpy_iterator()) == [1, 2, 3]  # a resumed run skips trained steps

"""Validation-driven training: best-checkpoint restore, early stopping, more epochs never worse."""

import pytest

from cvr_tf import model_dir as model_dir_lib
from cvr_tf import training, validation
from cvr_tf.features import default_spec
from cvr_tf.model import ModelConfig
from cvr_tf.optimization import OptimizerConfig
from cvr_tf.validation import ValidationMonitor


def _config(spans, model_dir, **overrides) -> training.TrainConfig:
    # One day of 300 requests, a wide MLP and a high rate: it overfits within a few passes.
    values = dict(data_dir=spans.spans, model_dir=str(model_dir), train_start=spans.day(0),
                  train_end=spans.day(0), eval_start=spans.day(1), eval_end=spans.day(1),
                  batch_size=64, log_every_steps=1000, checkpoint_every_steps=1000,
                  model=ModelConfig(backbone="mlp"),
                  optimization=OptimizerConfig(learning_rate=0.01),
                  early_stopping_metric="logloss")
    values.update(overrides)
    return training.TrainConfig(**values)


def test_early_stopping_restores_the_best_step_of_an_overfitting_run(simulated_spans, tmp_path):
    config = _config(simulated_spans, tmp_path / "m", epochs=12, early_stopping_patience=2)
    record = training.train(config)
    curve = record["validation_curve"]
    losses = [p["logloss"] for p in curve]
    assert record["stopped_early"] and record["train_steps"] < record["planned_steps"]
    best = min(range(len(curve)), key=losses.__getitem__)
    assert record["best_step"] == curve[best]["step"] < curve[-1]["step"]
    assert len(curve) == best + 3  # two validations without improvement, then the stop
    assert record["validation"]["logloss"] == losses[best]
    # The final checkpoint holds the best step's weights: the test metrics are theirs.
    assert model_dir_lib.latest_checkpoint(config.model_dir).endswith(f"ckpt-{record['best_step']}")
    model = model_dir_lib.load_model(config.model_dir)
    again = training.evaluate_window(model, config.data_dir, config.train_start, config.train_end,
                                     default_spec(), splits=("eval",))
    assert again["logloss"] == pytest.approx(losses[best], abs=1e-6)
    assert not (tmp_path / "m" / "best").exists() and not (tmp_path / "m" / "backup").exists()


def test_more_epochs_never_restore_a_worse_model(simulated_spans, tmp_path):
    short = training.train(_config(simulated_spans, tmp_path / "short", epochs=2,
                                   early_stopping_patience=0))
    long = training.train(_config(simulated_spans, tmp_path / "long", epochs=5,
                                  early_stopping_patience=0))
    # The same stream: the longer run's first validations are the shorter run's.
    for a, b in zip(short["validation_curve"], long["validation_curve"][:2], strict=True):
        assert (a["step"], a["logloss"]) == (b["step"], pytest.approx(b["logloss"], abs=1e-6))
    assert long["validation"]["logloss"] <= short["validation"]["logloss"] + 1e-6
    assert len(long["validation_curve"]) == 5 and not long["stopped_early"]


class _Model:
    stop_training = False

    class optimizer:  # noqa: N801 - stands in for a Keras optimizer's step counter
        class iterations:  # noqa: N801
            @staticmethod
            def numpy() -> int:
                return 0


@pytest.mark.parametrize("metric, values, best, stops_after", [
    ("auc", [0.60, 0.62, 0.61, 0.63, 0.62, 0.62, 0.64], 4, 6),
    ("auc", [0.60, 0.62, 0.61, 0.63, 0.62, 0.62], 4, None),  # a plateau at the end is no stop
    ("logloss", [0.30, 0.29, 0.31, 0.32, 0.28], 2, 4),
    ("group_auc", [None, 0.55, float("nan"), 0.54, 0.53], 2, 4),
    ("none", [0.5, 0.4, 0.3], 3, None),
])
def test_monitor_selects_by_direction_and_skips_uncomputable_points(metric, values, best,
                                                                    stops_after):
    points = iter(values)
    saved = []
    monitor = ValidationMonitor(1, len(values), lambda: {metric: next(points)}, metric,
                                patience=2, save_best=saved.append)
    monitor.set_model(_Model())
    monitor.on_train_begin()
    for step in range(1, len(values) + 1):
        monitor.on_train_batch_end(step)
        if monitor.stopped:
            break
    assert monitor.selected()["step"] == best
    assert (monitor.curve[-1]["step"] if monitor.stopped else None) == stops_after
    assert saved == ([] if metric == "none" else sorted(set(saved)))
    restored = ValidationMonitor(1, len(values), dict, metric, patience=2)
    restored.load_state(monitor.state())
    assert restored.state() == monitor.state()


def test_monitor_logs_na_for_a_metric_that_is_not_computable(monkeypatch):
    lines = []
    monkeypatch.setattr(validation.logging, "info", lambda message, *args: lines.append(
        message % args))
    monitor = ValidationMonitor(1, 1, lambda: {"logloss": 0.123456, "auc": None,
                                               "mean_average_precision": None}, "auc")
    monitor.on_train_batch_end(0)
    assert lines == ["validation at step 1: logloss 0.1235  auc n/a  mAP n/a  gAUC n/a"]
    assert monitor.curve[0]["auc"] is None and monitor.best is None

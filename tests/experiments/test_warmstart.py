"""Warm-start study: the runs' windows and settings, and the steps-to-target comparison."""

import datetime
import json

import pytest

from cvr_tf.features import FeatureSpecError, load_spec
from experiments import warmstart
from experiments.grid import grid_from_dict
from tests.experiments.test_scaling import TINY_GRID


def _curve(*points):
    return [{"step": s, "train_seconds": t, "logloss": loss, "mean_average_precision": 0.3}
            for s, t, loss in points]


def test_windows_and_settings_of_the_runs():
    study = warmstart.Study(grid=grid_from_dict(TINY_GRID), first_days=3, second_days=2,
                            eval_every_steps=5)
    first = study.config("first", "/data", "/out")
    cold = study.config("cold", "/data", "/out")
    warm = study.config("warm_added_feature", "/data", "/out")
    day = datetime.date
    assert (first.train_start, first.train_end) == (day(2026, 1, 31), day(2026, 2, 2))
    assert (cold.train_start, cold.train_end) == (day(2026, 2, 3), day(2026, 2, 4))
    assert cold.eval_start == warm.eval_start == day(2026, 2, 5)
    assert first.eval_every_steps == 0 and cold.eval_every_steps == warm.eval_every_steps == 5
    assert cold.warm_start_from == "" and warm.warm_start_from == "/out/runs/first"
    assert cold.feature_spec == "" and warm.feature_spec == "/out/added_feature_spec.json"
    assert warm.model_dir == "/out/runs/warm_added_feature"


def test_duration_runs_train_on_the_last_days_of_the_second_window():
    study = warmstart.Study(grid=grid_from_dict(TINY_GRID), first_days=3, second_days=2,
                            eval_every_steps=5, durations=(1, 2))
    assert study.runs[5:] == ("cold_1d", "warm_1d", "cold_2d", "warm_2d")
    cold, warm = study.config("cold_1d", "/data", "/out"), study.config("warm_1d", "/data", "/out")
    day = datetime.date
    assert (cold.train_start, cold.train_end) == (day(2026, 2, 4), day(2026, 2, 4))
    assert (warm.train_start, warm.train_end) == (cold.train_start, cold.train_end)
    assert warm.warm_start_from == "/out/runs/first" and cold.warm_start_from == ""
    # The grid's own validation-driven schedule, not the learning curves' fixed one.
    assert warm.early_stopping_metric == cold.early_stopping_metric != "none"
    assert warm.eval_every_steps == 0
    with pytest.raises(warmstart.GridError, match="durations \\[3\\] must be between 1 and"):
        warmstart.Study(grid=grid_from_dict(TINY_GRID), first_days=3, second_days=2,
                        eval_every_steps=5, durations=(3,))


def test_reach_and_compare():
    # The cold run overfits after step 30: the target is its best point, not its last.
    cold = {"eval": {"logloss": 0.21, "mean_average_precision": 0.30},
            "validation_curve": _curve((10, 2.0, 0.25), (20, 4.0, 0.22), (30, 6.0, 0.20),
                                       (40, 8.0, 0.21))}
    warm = {"eval": {"logloss": 0.18, "mean_average_precision": 0.32},
            "validation_curve": _curve((10, 1.5, 0.21), (20, 3.0, 0.195), (30, 4.5, 0.18),
                                       (40, 6.0, 0.185))}
    assert warmstart.reach(warm["validation_curve"], 0.20) == {"step": 20, "train_seconds": 3.0,
                                                         "logloss": 0.195}
    assert warmstart.reach(warm["validation_curve"], 0.1) is None
    result = warmstart.compare(cold, warm)
    assert result["step_fraction"] == pytest.approx(20 / 30)
    assert result["time_fraction"] == pytest.approx(3.0 / 6.0)
    assert (result["cold_first_logloss"], result["warm_first_logloss"]) == (0.25, 0.21)
    assert (result["target_logloss"], result["cold_steps"], result["warm_best_logloss"]) == (
        0.20, 30, 0.18)
    never = warmstart.compare(cold, {**warm, "validation_curve": _curve((30, 4.5, 0.3))})
    assert never["warm_reached"] is None and "step_fraction" not in never
    table = warmstart.markdown_report({"comparisons": {"warm": result, "other": never}})
    assert ("| warm | 0.20000 | 30 / 6.0 | 20 / 3.0 | 0.67 / 0.50 | 0.25000 / 0.21000 | "
            "0.18000 |") in table
    assert "| other | 0.20000 | 30 / 6.0 | never | - |" in table


def test_added_feature_spec(tmp_path):
    path = tmp_path / "spec.json"
    warmstart.write_added_feature_spec(str(path), warmstart.DEFAULT_ADDED_FEATURE)
    spec = load_spec(path)
    assert spec.names[-1] == "query_hashed" and spec.feature("query_hashed").column == "query"
    with pytest.raises(FeatureSpecError, match="feature 'bad'"):
        warmstart.write_added_feature_spec(str(path), {"name": "bad", "kind": "categorical"})
    assert json.loads(path.read_text())["features"][-1]["name"] == "query_hashed"


def test_a_map_that_is_not_computable_reads_na_in_the_report():
    cold = {"eval": {"logloss": 0.20, "mean_average_precision": None},
            "validation_curve": _curve((10, 2.0, 0.20))}
    warm = {"eval": {"logloss": 0.18, "mean_average_precision": 0.32},
            "validation_curve": _curve((10, 1.5, 0.18))}
    table = warmstart.markdown_report({"comparisons": {"warm": warmstart.compare(cold, warm)}})
    assert table.splitlines()[-1].endswith("| n/a / 0.3200 |")

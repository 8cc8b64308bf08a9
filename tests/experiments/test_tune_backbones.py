"""Backbone tuning: the choice (by validation, never test), tables, the noise verdict, and one
tiny run end to end with its Bayes ceiling on the same rows."""

import dataclasses
import json
import math

import pytest

from cvr_tf.backbones import parse_backbone_options
from experiments import ceiling
from experiments import grid as grid_lib
from experiments import tune_backbones as tune


def _row(backbone="dcnv2", scale=1.0, dropout=0.0, lr=0.002, val=0.18, test_map=0.29, seed=0,
         l2=0.0):
    return {"backbone": backbone, "backbone_scale": scale, "seed": seed, "dropout": dropout,
            "learning_rate": lr, "embedding_l2": l2,
            "validation": {"auc": 0.6, "logloss": val, "mean_average_precision": 0.3,
                           "group_auc": 0.6},
            "test": {"auc": 0.63, "logloss": 0.207, "mean_average_precision": test_map,
                     "group_auc": 0.62},
            "best_step": 212, "train_steps": 420, "stopped_early": True, "seconds": 17.0}


def test_choice_is_by_validation_never_by_test():
    # Dropout 0.2 has the better validation logloss on both scales, 0 the (much) better test.
    rows = [_row(scale=s, dropout=d, val=v, test_map=t) for s in (1.0, 4.0)
            for d, v, t in ((0.0, 0.181, 0.40), (0.2, 0.180, 0.20))]
    chosen = tune.choose_defaults(rows, "logloss")
    assert chosen["dropout"] == {"dcnv2": 0.2} and chosen["learning_rate"] == 0.002
    assert chosen["best_per_cell"]["dcnv2 x4"] == {"dropout": 0.2, "learning_rate": 0.002,
                                                   "embedding_l2": 0.0}
    # With AUC (higher is better) the larger validation value wins.
    for row, auc in zip(rows, (0.61, 0.60, 0.61, 0.60), strict=True):
        row["validation"]["auc"] = auc
    assert tune.choose_defaults(rows, "auc")["dropout"] == {"dcnv2": 0.0}


def test_grid_wide_rate_first_then_dropout_per_backbone():
    # Per-cell minima: dcnv2 0.182 (2e-3) / 0.178 (1e-3), dhen 0.177 / 0.177 (with dropout
    # 0.2 at 1e-3); means 0.1795 and 0.1775, so 1e-3; then each backbone's dropout at 1e-3.
    rows = [_row("dcnv2", 1.0, 0.0, 0.002, 0.182), _row("dcnv2", 1.0, 0.2, 0.002, 0.183),
            _row("dcnv2", 1.0, 0.0, 0.001, 0.178), _row("dcnv2", 1.0, 0.2, 0.001, 0.179),
            _row("dhen", 2.0, 0.0, 0.002, 0.177), _row("dhen", 2.0, 0.2, 0.002, 0.178),
            _row("dhen", 2.0, 0.0, 0.001, 0.179), _row("dhen", 2.0, 0.2, 0.001, 0.177)]
    chosen = tune.choose_defaults(rows, "logloss")
    assert chosen["learning_rate"] == 0.001
    assert chosen["dropout"] == {"dcnv2": 0.0, "dhen": 0.2}
    # A rate not run at every cell cannot win, however good where it ran.
    rows.append(_row("dcnv2", 1.0, 0.0, 0.0005, 0.100))
    assert tune.choose_defaults(rows, "logloss")["learning_rate"] == 0.001
    assert tune.chosen_setting(chosen, "dhen") == tune.Setting(0.2, 0.001, 0.0)


def test_a_dropout_must_have_run_at_every_scale_of_its_backbone():
    rows = [_row(scale=1.0, dropout=0.0, val=0.182), _row(scale=4.0, dropout=0.0, val=0.182),
            _row(scale=1.0, dropout=0.1, val=0.170)]
    assert tune.choose_defaults(rows, "logloss")["dropout"] == {"dcnv2": 0.0}


def test_bad_choice_inputs_say_what_to_do():
    with pytest.raises(tune.TuningError, match="no finished sweep runs.*--mode=sweep"):
        tune.choose_defaults([], "logloss")
    with pytest.raises(tune.TuningError, match="--metric='calibration'"):
        tune.choose_defaults([_row()], "calibration")


def test_sweep_table_marks_the_chosen_setting():
    rows = [_row(dropout=0.0, val=0.18123), _row(dropout=0.2, val=0.18456)]
    table = tune.sweep_table(rows, tune.choose_defaults(rows, "logloss"), "logloss")
    assert table.splitlines()[2:] == [
        "| dcnv2 x1* | 0 | 0.002 | 0 | 0.18123 | 0.6000 | 0.2900 | 0.6300 | 0.20700 | "
        "212 / 420 | 17 |",
        "| dcnv2 x1 | 0.2 | 0.002 | 0 | 0.18456 | 0.6000 | 0.2900 | 0.6300 | 0.20700 | "
        "212 / 420 | 17 |"]


def test_noise_verdict_against_two_standard_errors():
    # Sample std 0.01 on each side over 3 seeds: sigma = sqrt(2 * 0.01^2 / 3) = 0.0081650.
    small = [0.29, 0.30, 0.31]
    within = tune.noise_verdict([0.30, 0.31, 0.32], small)
    assert within["difference"] == pytest.approx(0.01)
    assert within["sigma"] == pytest.approx(math.sqrt(2e-4 / 3))
    assert within["relative"] == pytest.approx(0.01 / 0.30)
    assert within["verdict"] == "within noise"
    assert tune.noise_verdict([0.25, 0.26, 0.27], small)["verdict"] == "worse"
    assert tune.noise_verdict([0.33, 0.34, 0.35], small)["verdict"] == "better"


def test_summary_means_stds_and_the_large_scale_verdict():
    rows = [_row(scale=s, seed=k, test_map=m) for s, maps in ((1.0, (0.28, 0.29, 0.30)),
                                                             (4.0, (0.26, 0.27, 0.28)))
            for k, m in enumerate(maps)]
    small, large = tune.summarize(rows)
    assert small["mean_average_precision"] == pytest.approx({"mean": 0.29, "std": 0.01})
    assert small["seeds"] == [0, 1, 2] and "vs_x1" not in small
    assert large["vs_x1"]["difference"] == pytest.approx(-0.02)
    assert large["vs_x1"]["verdict"] == "worse"  # -0.02 < -2 * 0.00816
    table = tune.verify_table([large], [], {"mean_average_precision": 0.41, "auc": 0.7,
                                            "logloss": 0.19})
    assert table.splitlines()[2] == (
        "| after dcnv2 x4 | 3 | 0.2700 +- 0.0100 | 0.6300 +- 0.0000 | 0.2070 +- 0.0000 | "
        "-6.9% (-0.0200 +- 0.0163): worse |")
    assert table.splitlines()[3] == ("| Bayes ceiling (true_cvr) | - | 0.4100 | 0.7000 | "
                                     "0.19000 | |")


def test_before_rows_are_the_scaling_rows_of_the_tuned_cells_on_the_same_window(tmp_path):
    path = tmp_path / "scaling.jsonl"
    base = {"embedding_dim_scale": 1.0, "train_days": 3, "seed": 0, "auc": 0.6,
            "logloss": 0.2, "mean_average_precision": 0.28}
    lines = [{**base, "backbone": "dhen", "backbone_scale": 2.0},
             {**base, "backbone": "dhen", "backbone_scale": 0.5},
             {**base, "backbone": "dcnv2", "backbone_scale": 1.0, "train_days": 12},
             {**base, "backbone": "dcnv2", "backbone_scale": 1.0, "seed": 1}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    baseline = grid_lib.Cell("dcnv2", 1.0, 1.0, 3)
    rows = tune.before_rows(str(path), baseline)
    assert [(r["backbone"], r["backbone_scale"], r["seed"]) for r in rows] == [
        ("dhen", 2.0, 0), ("dcnv2", 1.0, 1)]
    assert rows[0]["test"] == {"mean_average_precision": 0.28, "auc": 0.6, "logloss": 0.2}
    assert tune.before_rows(str(tmp_path / "missing.jsonl")) == []


def test_extending_a_sweep_needs_the_same_schedule(tmp_path):
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps({"schedule": dataclasses.asdict(tune.Schedule()),
                                "runs": [_row()]}))
    assert tune.previous_runs(str(path), tune.Schedule()) == [_row()]
    with pytest.raises(tune.TuningError, match="schedule.*same --epochs"):
        tune.previous_runs(str(path), tune.Schedule(epochs=4))


def test_run_config_applies_the_setting_over_the_grid():
    grid = grid_lib.load_grid(grid_lib.preset_path("small"))
    cell = tune.sweep_cells(grid)[-1]
    assert (cell.backbone, cell.backbone_scale, cell.train_days) == ("dhen", 2.0, 3)
    setting = tune.Setting(dropout=0.1, learning_rate=0.001, embedding_l2=1e-4)
    assert setting.name == "do0.1-lr0.001-l20.0001"
    assert tune.Setting(0.0, 0.002).name == "do0-lr0.002"
    config = tune.run_config(grid, cell, setting, tune.Schedule(eval_every_steps=50), "/d", "/m")
    assert (config.model.dropout, config.optimization.learning_rate,
            config.optimization.embedding_l2) == (0.1, 0.001, 1e-4)
    assert (config.epochs, config.eval_every_steps, config.early_stopping_metric,
            config.early_stopping_patience) == (2, 50, "logloss", 2)


def test_the_applied_defaults_are_the_sweeps_choice():
    """One source of truth: the backbones' default dropout and the small grid's training
    settings are what experiments/results/tuning_small.json chose."""
    with open(tune.SWEEP_RESULTS, encoding="utf-8") as handle:
        sweep = json.load(handle)
    grid = grid_lib.load_grid(grid_lib.preset_path("small"))
    for backbone, dropout in sweep["chosen"]["dropout"].items():
        assert parse_backbone_options(backbone)[1].dropout == dropout, backbone
    for key in tune.GRID_WIDE:
        assert grid.training.get(key, 0.0) == sweep["chosen"][key], key
    assert grid.training["early_stopping_metric"] == sweep["schedule"]["metric"]
    # One pass, not the sweep's two: every sweep run validated best at the end of pass 1
    # (validations fall every half pass, so within 2 steps of it; the second pass only
    # overfits), so a single pass trains the selected weights up to a step.
    assert grid.training["epochs"] == 1
    assert {abs(2 * run["best_step"] - run["train_steps"]) <= 4
            for run in sweep["runs"]} == {True}


def test_tiny_run_and_its_bayes_ceiling_on_the_same_rows(simulated_spans, tmp_path):
    grid = grid_lib.grid_from_dict({
        "data": {"eval_start": simulated_spans.day(4).isoformat(), "eval_days": 2,
                 "requests_per_day": 300, "candidates_per_request": 10, "world": {}},
        "training": {"batch_size": 128, "log_every_steps": 50},
        "baseline": {"backbone": ["dcnv2", 0.5], "embedding_dim_scale": 0.5, "train_days": 2},
    }, name="tiny")
    schedule = tune.Schedule(epochs=1, patience=1)
    config = tune.run_config(grid, grid.baseline, tune.Setting(0.1, 0.002), schedule,
                             simulated_spans.spans, str(tmp_path / "run"))
    assert config.eval_every_steps == tune.half_pass_steps(grid, simulated_spans.spans, 2)
    record = tune.run_once(config)
    assert tune.run_once(config)["wall_seconds"] == record["wall_seconds"]  # not trained again
    row = tune.run_row(grid.baseline, tune.Setting(0.1, 0.002), record)
    assert row["dropout"] == 0.1 and row["test"] == {
        k: record["eval"][k] for k in ("auc", "logloss", "mean_average_precision", "group_auc")}
    bayes = ceiling.bayes_ceiling(grid.data, str(tmp_path))
    assert bayes["examples"] == record["eval"]["examples"] == 6000
    assert bayes["positive_rate"] == record["eval"]["positive_rate"]
    assert 0.5 < bayes["auc"] <= 1.0
    gaps = ceiling.gaps(record["eval"], bayes)
    assert gaps["auc"] == pytest.approx(bayes["auc"] - record["eval"]["auc"])
    assert gaps["logloss"] == pytest.approx(record["eval"]["logloss"] - bayes["logloss"])
    assert ceiling.bayes_ceiling(grid.data, str(tmp_path)) == bayes  # cached, same world
    with pytest.raises(tune.TuningError, match="another config"):
        tune.run_once(dataclasses.replace(config, seed=3))

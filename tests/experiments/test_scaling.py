"""Scaling study: grid design from a grid file, and a tiny grid end to end (real training)."""

import datetime
import json
import os

import pytest

from experiments import additivity, scaling
from experiments.grid import Grid, GridError, grid_from_dict, load_grid, preset_path

TINY_GRID = {
    "description": "three cells on two to three days of a small world",
    "data": {"eval_start": "2026-02-05", "eval_days": 1, "requests_per_day": 150,
             "candidates_per_request": 10,
             "world": {"num_items": 3000, "num_queries": 1000, "num_users": 2000}},
    "training": {"batch_size": 128, "learning_rate": 0.002, "epochs": 1, "log_every_steps": 50},
    "baseline": {"backbone": ["dcnv2", 1], "embedding_dim_scale": 1, "train_days": 2},
    "axes": {"backbone": [["mlp", 1]], "train_days": [3]},
}


def _grid(**changes) -> Grid:
    return grid_from_dict({**TINY_GRID, **changes}, name="tiny")


def test_design_holds_axes_factorial_corner_and_seeds():
    grid = _grid(seeds=[1, 2],
                 axes={"backbone": [["dcnv2", 2], ["dhen", 1]], "embedding_dim_scale": [2, 4],
                       "train_days": [4, 8]},
                 factorials=[{"backbone": ["dhen", 1], "embedding_dim_scale": 2,
                              "train_days": 8}],
                 cells=[{"backbone": ["dcnv2", 2], "embedding_dim_scale": 4, "train_days": 8}],
                 replicated=[{"train_days": 8}, {"embedding_dim_scale": 4}])
    roles = [cell.role(grid.baseline) for cell in grid.cells]
    # 1 baseline + 2 seeds + 6 axis cells + 2 x 2 replicates + 4 new factorial cells + 1
    # explicit corner.
    assert len(grid.cells) == 18
    replicates = [c.name for c in grid.cells
                  if c.seed and c.role(grid.baseline) != "baseline-seed"]
    assert replicates == ["dcnv2x1-emb1-d8-s1", "dcnv2x1-emb1-d8-s2", "dcnv2x1-emb4-d2-s1",
                          "dcnv2x1-emb4-d2-s2"]
    assert roles[:3] == ["baseline", "baseline-seed", "baseline-seed"]
    assert roles.count("backbone") == 2 and roles.count("embedding") == 2 + 2
    assert roles.count("data") == 2 + 2
    assert sorted(r for r in roles if "+" in r) == [
        "backbone+data", "backbone+embedding", "backbone+embedding+data",
        "backbone+embedding+data", "embedding+data"]
    assert grid.cells[-1].name == "dcnv2x2-emb4-d8-s0"
    config = grid.train_config(grid.cells[-1], "/data", "/model")
    assert (config.train_start, config.train_end) == (datetime.date(2026, 1, 28),
                                                      datetime.date(2026, 2, 4))
    assert config.model.embedding_dim_scale == 4.0 and config.batch_size == 128


@pytest.mark.parametrize("change, message", [
    (dict(axes={"width": [2]}), "unknown axis 'width'"),
    (dict(training={"seed": 3}), "training key.*seed.*cannot be set grid-wide"),
    (dict(baseline={"backbone": "dcnv2"}), r"backbone must be \[name, scale\]"),
    (dict(cells=[{"train_days": 0}]), "cells\\[0\\]: .*must be positive"),
    (dict(data={**TINY_GRID["data"], "world": {"num_item": 5}}), "data.world: .*num_item"),
    (dict(extra=1), "unknown key.*extra"),
    (dict(data={**TINY_GRID["data"], "spans": "/x"}), "give exactly one of 'spans'"),
    (dict(data={"eval_start": "2026-02-05", "eval_days": 1}), "give exactly one of 'spans'"),
    (dict(data={**TINY_GRID["data"], "eval_start": "Feb 5"}), "not a YYYY-MM-DD date"),
    (dict(seeds=[1], replicated=[{"train_days": 4, "embedding_dim_scale": 2}]),
     "replicated.0. must change exactly one factor"),
])
def test_bad_grids_name_the_field(change, message):
    with pytest.raises(GridError, match=message):
        _grid(**change)


def test_tiny_grid_end_to_end_and_resume(tmp_path):
    grid = _grid()
    out, results = str(tmp_path / "out"), str(tmp_path / "results.jsonl")
    lines: list[str] = []
    rows = scaling.run_grid(grid, out, results, report=lines.append, with_ground_truth=True)

    assert [row["cell"] for row in rows] == ["dcnv2x1-emb1-d2-s0", "mlpx1-emb1-d2-s0",
                                             "dcnv2x1-emb1-d3-s0"]
    assert [row["role"] for row in rows] == ["baseline", "backbone", "data"]
    with open(results, encoding="utf-8") as handle:
        assert [json.loads(line) for line in handle] == rows
    baseline, mlp, longer = rows
    assert baseline["map_gain"] == 0.0
    assert mlp["map_gain"] == pytest.approx(
        mlp["mean_average_precision"] / baseline["mean_average_precision"] - 1)
    assert baseline["examples"] == mlp["examples"] == longer["examples"]  # one eval window
    assert longer["train_examples"] > baseline["train_examples"]  # one epoch of a longer window
    assert mlp["dense_flops_per_example"] != baseline["dense_flops_per_example"]
    assert baseline["train_flops"] == 3 * baseline["dense_flops_per_example"] * (
        baseline["train_examples"])
    assert all(row["wall_seconds"] > 0 and row["params"] > 0 for row in rows)
    assert os.path.exists(os.path.join(out, "data", "spans", "span=2026-02-02", "_SUCCESS"))
    assert all("trained" in line for line in lines[1:])
    # The Bayes ceiling of the test rows, and each cell's gap to it (room left, > 0 here).
    assert lines[0].startswith("Bayes ceiling of the test window (1,500 rows)")
    ceiling = baseline["ceiling"]
    assert all(row["ceiling"] == ceiling for row in rows) and 0.5 < ceiling["auc"] <= 1
    for row in rows:
        assert row["gap_to_ceiling"]["auc"] == pytest.approx(ceiling["auc"] - row["auc"])
        assert row["gap_to_ceiling"]["logloss"] == pytest.approx(
            row["logloss"] - ceiling["logloss"])
        assert row["gap_to_ceiling"]["auc"] > 0
    assert "mAP gap to ceiling" in scaling.markdown_table(rows).splitlines()[0]

    # A second run skips the finished cells and writes the same rows.
    again: list[str] = []
    assert scaling.run_grid(grid, out, results, report=again.append,
                            with_ground_truth=True) == rows
    assert all("done before" in line for line in again[1:])

    # A team's own spans (here the ones just built): nothing simulated, no ground truth.
    # The grid names no data source: the spans given (the job's --data_dir) are it.
    sourceless = {**TINY_GRID, "axes": {}, "data": {
        k: v for k, v in TINY_GRID["data"].items() if k in ("eval_start", "eval_days")}}
    own = grid_from_dict(sourceless, name="own", spans=os.path.join(out, "data", "spans"))
    own_out = str(tmp_path / "own")
    [own_row] = scaling.run_grid(own, own_out, report=again.append)
    assert own_row["cell"] == "dcnv2x1-emb1-d2-s0" and "ceiling" not in own_row
    assert own_row["examples"] == baseline["examples"]
    assert not os.path.exists(os.path.join(own_out, "data"))
    with pytest.raises(GridError, match="needs the simulator's ground truth"):
        scaling.run_grid(own, own_out, report=again.append, with_ground_truth=True)

    # The additivity analysis reads these rows (saturated: no joint cell to test yet).
    analysis = additivity.analyze(rows)
    assert analysis["degrees_of_freedom"] == 0 and analysis["joint"] == []
    assert analysis["verdict"].startswith("Not tested")

    # A cell dir finished under another config is refused, not silently reused.
    changed = _grid(training={**TINY_GRID["training"], "learning_rate": 0.01})
    with pytest.raises(GridError, match="holds a finished run of another config"):
        scaling.run_grid(changed, out, results, report=again.append)
    other_world = _grid(data={**TINY_GRID["data"], "requests_per_day": 100})
    with pytest.raises(GridError, match="holds logs of another world or traffic"):
        scaling.run_grid(other_world, out, results, report=again.append)


def test_a_cell_whose_map_is_not_computable_has_no_gain_and_reads_na():
    row = {"cell": "dcnv2-x1", "role": "baseline", "mean_average_precision": None,
           "map_gain": None, "auc": None, "logloss": 0.25, "dense_flops_per_example": 2e6,
           "params": 1000, "train_examples": 512, "wall_seconds": 3.0}
    assert scaling.markdown_table([row]).splitlines()[-1] == (
        "| dcnv2-x1 | baseline | n/a | - | n/a | 0.25000 | 2.00 | 1,000 | 512 | 3 |")


@pytest.mark.parametrize("preset", ["small", "medium", "full"])
def test_every_preset_loads(preset):
    grid = load_grid(preset_path(preset))
    assert grid.baseline in grid.cells and grid.data.simulated


def test_medium_preset_has_the_power_the_issue_asks_for():
    grid = load_grid(preset_path("medium"))
    seeds = {}
    for cell in grid.cells:
        seeds.setdefault(tuple(cell.levels().values()), []).append(cell.seed)
    # 3 seeds for the baseline and for the largest level of each axis.
    for levels in (("dcnv2 x1", "x1", "2d"), ("dhen x1", "x1", "2d"), ("dcnv2 x1", "x2", "2d"),
                   ("dcnv2 x1", "x1", "7d")):
        assert sorted(seeds[levels]) == [0, 1, 2], levels
    assert grid.data.eval_days * grid.data.requests_per_day * grid.data.candidates_per_request >= (
        100_000)  # test impressions

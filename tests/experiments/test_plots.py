"""Plots: every PNG is written from small synthetic results; missing inputs are skipped."""

import json
import os

import pytest

from experiments import plots
from tests.experiments.test_additivity import _rows


def _curve(losses):
    return [{"step": 10 * (i + 1), "train_seconds": 1.5 * (i + 1), "logloss": loss}
            for i, loss in enumerate(losses)]


def test_all_plots_are_written(tmp_path):
    rows = _rows(interaction=0.02)
    for row in rows:
        row["train_days"] = int(row["levels"]["data"].rstrip("d"))
        row["train_flops"] = 3 * row["dense_flops_per_example"] * row["train_examples"]
    # A cell whose mAP was not computable (no request with a positive) is left out, not a crash.
    rows.append({**rows[-1], "cell": "no-positives", "mean_average_precision": None,
                 "map_gain": None})
    for row in rows:  # the Bayes ceiling: mAP 0.45, i.e. +50% over the baseline's 0.3
        row["ceiling"] = {"mean_average_precision": 0.45, "auc": 0.8, "logloss": 0.17}
    assert plots._ceiling_gain(rows) == pytest.approx(0.5)
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(row) + "\n" for row in rows))
    comparison = {"target_logloss": 0.2}
    warm = {"runs": {run: {"validation_curve": _curve(losses)} for run, losses in (
                ("cold", [0.25, 0.2]), ("warm", [0.21, 0.19]),
                ("cold_added_feature", [0.24, 0.2]), ("warm_added_feature", [0.22, 0.2]))},
            "comparisons": {"warm": comparison, "warm_added_feature": comparison},
            "first_window": ["2026-01-01", "2026-01-04"],
            "durations": [{"days": d, **{start: {"eval": {"mean_average_precision": 0.3 + b,
                                                          "auc": 0.6 + b}}
                                        for start, b in (("cold", 0.01 * d), ("warm", 0.03))}}
                          for d in (1, 2, 4)]}
    (tmp_path / "warm.json").write_text(json.dumps(warm))
    serving = {"p99_vs_qps": {name: [[50, 3.0], [100, 4.0 + i]] for i, name in
                              enumerate(("batched", "unbatched", "dcnv2", "dhen"))}}
    (tmp_path / "serving.json").write_text(json.dumps(serving))

    written = plots.make_plots(str(tmp_path / "plots"), str(results), str(tmp_path / "warm.json"),
                               str(tmp_path / "serving.json"))
    assert sorted(written) == ["flops_vs_gain", "map_vs_window", "serving_p99_vs_qps",
                               "warmstart_curves", "warmstart_vs_duration"]
    for path in written.values():
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 10_000


def test_a_warm_start_study_without_durations_has_no_duration_plot(tmp_path):
    assert plots.plot_warmstart_durations({"durations": []}, str(tmp_path / "x.png")) == (
        "skipped: the warm-start study ran without --durations")
    assert not os.listdir(tmp_path)


def test_missing_inputs_are_skipped_with_a_note(tmp_path):
    written = plots.make_plots(str(tmp_path), serving=str(tmp_path / "absent.json"))
    assert written["serving_p99_vs_qps"].startswith("skipped: no input")
    assert written["flops_vs_gain"] == "skipped: no input (not given)"
    assert not os.listdir(tmp_path)

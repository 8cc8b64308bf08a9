"""The ESMM experiment end to end on planted funnel logs, and its table."""

import math
import os
import shutil

import numpy as np

from experiments import esmm
from experiments.ground_truth import truth_metrics
from pipelines.simulate import SimulatorConfig, simulate_logs
from tests.conftest import write_synthetic_clicks

TINY = SimulatorConfig(num_items=600, num_queries=200, num_users=500, num_topics=20,
                       num_terms=200, num_brands=100)


def test_the_experiment_runs_on_funnel_logs_it_is_given(tmp_path):
    logs = str(tmp_path / "logs")
    simulate_logs(logs, esmm.FIRST_DAY, 3, 120, 10, TINY)
    shutil.rmtree(os.path.join(logs, "clicks"), ignore_errors=True)  # planted clicks instead
    write_synthetic_clicks(logs)
    rows = esmm.run(str(tmp_path), 3, 120, 10, seeds=1, batch_size=128, epochs=1,
                    arms=["esmm", "click_only"])
    assert [row["arm"] for row in rows] == ["esmm", "click_only"]
    for row in rows:
        assert 0 < row["cvr_auc"] < 1 and 0 < row["cvr_auc_on_clicks"] < 1
        assert row["kl_to_truth"] is None  # these logs carry no true_cvr_given_click
        assert row["eval"]["cvr"]["examples"] == 1200
    table = esmm.markdown_table(rows).splitlines()
    assert len(table) == 4 and table[2].startswith("| esmm | 0.") and table[3].endswith("n/a |")


def test_truth_metrics_by_hand():
    got = truth_metrics(np.array([0.1, 0.2, 0.4]), np.array([0.2, 0.2, 0.2]))
    assert math.isclose(got["calibration_vs_truth"], 0.7 / 0.6)
    kl = [0.2 * math.log(0.2 / p) + 0.8 * math.log(0.8 / (1 - p)) for p in (0.1, 0.2, 0.4)]
    assert math.isclose(got["kl_to_truth"], sum(kl) / 3)
    assert got["rank_correlation"] is None  # a constant truth ranks nothing
    ranked = truth_metrics(np.array([0.1, 0.3, 0.2]), np.array([0.01, 0.5, 0.2]))
    assert math.isclose(ranked["rank_correlation"], 1.0)


def test_the_table_gives_means_over_seeds():
    rows = [{"arm": "esmm", "seed": s, "cvr_auc": 0.6 + s / 10, "cvr_auc_on_clicks": 0.5,
             "calibration_vs_truth": 1.0, "rank_correlation": 0.3, "kl_to_truth": 0.002}
            for s in (0, 1)]
    assert esmm.markdown_table(rows).splitlines()[2] == (
        "| esmm | 0.6500 | 0.5000 | 1.000 | 0.3000 | 2.00 |")

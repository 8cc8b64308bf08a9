"""The multi-task demo on planted funnel logs: per-task metrics beside the single-task model, and
ESMM served by the local server with every task's scores equal to the offline ones."""

import os
import shutil

from experiments import demo
from pipelines.simulate import SimulatorConfig, simulate_logs
from tests.conftest import write_synthetic_clicks

TINY = SimulatorConfig(num_items=600, num_queries=200, num_users=500, num_topics=20,
                       num_terms=200, num_brands=100)


def test_the_multitask_demo_prints_every_task_beside_the_single_task_model(tmp_path, capsys):
    logs = str(tmp_path / "logs")
    simulate_logs(logs, demo.FIRST_DAY, 3, 100, 10, TINY)
    shutil.rmtree(os.path.join(logs, "clicks"), ignore_errors=True)  # planted clicks instead
    write_synthetic_clicks(logs)
    demo.run_multitask(str(tmp_path), days=3, requests_per_day=100, candidates=10, seed=0)
    out = capsys.readouterr().out
    table = [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| ")]
    assert [row for row in table if row not in ("| model", "| ---")] == [
        "| single-task dcnv2, conversion on every impression", "| ESMM pCTR",
        "| ESMM pCVR, every impression", "| ESMM pCTCVR = pCTR x pCVR",
        "| ESMM pCVR, clicked impressions", "| ESMM ctr served over gRPC",
        "| ESMM cvr served over gRPC", "| ESMM ctcvr served over gRPC",
        "| ESMM cvr_on_clicks served over gRPC"]
    assert "positives: clicked" in out
    # served_difference exits unless every task's served scores equal the offline ones
    assert "outputs ctr, cvr, ctcvr; max |served - offline| ctr " in out

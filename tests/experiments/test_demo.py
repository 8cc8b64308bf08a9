"""The multi-task demo on planted funnel logs: per-task metrics beside the single-task model."""

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
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| single-task dcnv2, conversion on every impression", "| ESMM pCTR",
        "| ESMM pCVR, every impression", "| ESMM pCTCVR = pCTR x pCVR",
        "| ESMM pCVR, clicked impressions"]
    assert "positives: clicked" in out and "issue 13 item 5" in out

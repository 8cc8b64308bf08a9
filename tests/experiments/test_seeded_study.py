"""The seeded experiments' shared means and job end."""

import json

from experiments import seeded_study


def test_means_per_arm_in_first_seen_order_with_none_for_a_missing_metric():
    rows = [{"arm": "b", "auc": 0.6, "map": 0.2}, {"arm": "a", "auc": 0.7, "map": None},
            {"arm": "b", "auc": 0.8, "map": 0.4}]
    arms = list(seeded_study.arm_means(rows, ["auc", "map"]))
    assert [(arm, len(members)) for arm, members, _ in arms] == [("b", 2), ("a", 1)]
    assert arms[0][2]["auc"] == 0.7 and abs(arms[0][2]["map"] - 0.3) < 1e-12
    assert arms[1][2] == {"auc": 0.7, "map": None}
    assert seeded_study.mean_or_none([1.0, None]) is None


def test_run_and_report_prints_the_table_and_writes_the_rows(tmp_path, capsys):
    seen = []

    def run(workdir):
        seen.append(workdir)
        return [{"arm": "x", "auc": 0.5}]

    path = tmp_path / "rows.json"
    rows = seeded_study.run_and_report("t-", str(tmp_path), run, lambda r: f"{len(r)} row",
                                       str(path))
    assert seen == [str(tmp_path)] and rows == [{"arm": "x", "auc": 0.5}]
    assert json.loads(path.read_text()) == rows
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 row" and out[1].startswith("load average (1 min) before / after: ")
    seeded_study.run_and_report("t-", "", run, str)  # a temporary dir when none is given
    assert seen[1] != str(tmp_path) and "t-" in seen[1]

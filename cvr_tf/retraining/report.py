"""The loop's reports: ``retrain_report.json``, its markdown table and the metric-history plot.

```
<work_dir>/reports/<date>/
  retrain_report.md         the decision, its reasons, and candidate vs current per slice
  bless_metric_history.png  the bless metric of candidate and served model over the days so far
  retrain_report.json       everything above as data; written last, so it marks the day done
```

A day whose ``retrain_report.json`` exists is finished: the loop does nothing for it again.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.metrics import format_metric
from cvr_tf.validation import METRIC_DIRECTIONS

REPORTS_DIR = "reports"
REPORT_JSON = "retrain_report.json"
REPORT_MARKDOWN = "retrain_report.md"
HISTORY_PLOT = "bless_metric_history.png"
_TABLE_METRICS = ("auc", "group_auc", "mean_average_precision", "logloss", "calibration")


def report_dir(work_dir: str, day: datetime.date) -> str:
    return os.path.join(work_dir, REPORTS_DIR, day.isoformat())


def read_report(work_dir: str, day: datetime.date) -> dict[str, Any] | None:
    """The finished report of ``day``, or None when the day is not done."""
    path = os.path.join(report_dir(work_dir, day), REPORT_JSON)
    return model_dir_lib.read_json(path) if os.path.exists(path) else None


def history(work_dir: str) -> list[dict[str, Any]]:
    """Every finished report under ``work_dir``, by date."""
    root = os.path.join(work_dir, REPORTS_DIR)
    days = sorted(os.listdir(root)) if os.path.isdir(root) else []
    reports = [read_report(work_dir, datetime.date.fromisoformat(d)) for d in days]
    return [r for r in reports if r is not None]


def _difference(metric: str, candidate: Any, current: Any) -> str:
    if candidate is None or current is None:
        return "n/a"
    change = candidate - current  # "worse" only for metrics with a direction (not calibration)
    worse = metric in METRIC_DIRECTIONS and METRIC_DIRECTIONS[metric] * change < 0
    return f"{change:+.4f}" + (" (worse)" if worse else "")


def markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: decision and reasons, then candidate vs current per slice."""
    decision = report["decision"]
    metric = report["bless_metric"]
    current = report["current"]
    lines = [f"# Retraining {report['model_name']} for {report['date']}", ""]
    verdict = "**blessed**" if decision["blessed"] else "**not blessed**"
    pushed = (f": exported as version {report['exported_version']}"
              if report.get("exported_version") is not None else ": the serving base is "
              "untouched")
    lines += [f"Decision: {verdict}{pushed}.", ""]
    lines += [f"- {'pass' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}"
              for c in decision["checks"]]
    candidate = report["candidate"]
    lines += ["", f"Candidate: trained on {candidate['train_start']}..{candidate['train_end']}, "
              f"{candidate['warm_start']}; model dir {candidate['model_dir']}."]
    lines.append("Current: " + (f"version {current['version']} ({current['model_dir']})."
                                if current else "nothing served."))
    lines.append(f"Holdout: {report['date']}, {report['holdout']['labels']}.")
    task = f" of task `{report['bless_task']}`" if report.get("bless_task") else ""
    lines += ["", f"Bless metric `{metric}`{task} by slice:", "",
              "| slice | examples | positives | candidate | current | difference |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in report["slices"]:
        values = row["metrics"]
        mine = values["candidate"].get(metric)
        theirs = values["current"].get(metric) if "current" in values else None
        lines.append(f"| {row['slice']} | {row['examples']:,} | {row['positives']:,} | "
                     f"{format_metric(mine)} | {format_metric(theirs)} | "
                     f"{_difference(metric, mine, theirs)} |")
    overall = report["slices"][0]["metrics"]
    lines += ["", f"Every metric{task}, overall:", "",
              "| metric | candidate | current | difference |", "| --- | ---: | ---: | ---: |"]
    for name in _TABLE_METRICS:
        mine = overall["candidate"].get(name)
        theirs = overall["current"].get(name) if "current" in overall else None
        lines.append(f"| {name} | {format_metric(mine)} | {format_metric(theirs)} | "
                     f"{_difference(name, mine, theirs)} |")
    seconds = report["wall_seconds"]
    lines += ["", "Wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + "."]
    return "\n".join(lines) + "\n"


def plot_history(reports: Sequence[Mapping[str, Any]], metric: str, path: str) -> None:
    """The overall ``metric`` of candidate and served model on each day's holdout; blessed
    candidates filled, rejected ones crossed."""
    days = [r["date"] for r in reports]
    positions = list(range(len(days)))
    overall = [r["slices"][0]["metrics"] for r in reports]
    figure, axes = plt.subplots(figsize=(7, 4))
    candidate = [m["candidate"].get(metric) for m in overall]
    current = [m["current"].get(metric) if "current" in m else None for m in overall]
    axes.plot(positions, [float("nan") if v is None else v for v in current], "s--",
              color="tab:gray", label="served model (current)")
    axes.plot(positions, [float("nan") if v is None else v for v in candidate], "-",
              color="tab:blue", label="candidate")
    for position, value, report in zip(positions, candidate, reports, strict=True):
        if value is not None:
            blessed = report["decision"]["blessed"]
            axes.plot([position], [value], "o" if blessed else "x", color="tab:blue"
                      if blessed else "tab:red", markersize=8)
    every = max(1, -(-len(days) // 10))  # at most ~10 date labels
    axes.set_xticks(positions[::every], days[::every], rotation=30, ha="right")
    axes.set_xlabel("holdout day")
    axes.set_ylabel(f"{metric} on the holdout day")
    axes.set_title("Daily retraining: blessed (o) and rejected (x) candidates")
    axes.legend(loc="best")
    figure.tight_layout()
    tmp = f"{path}.tmp.png"
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    os.replace(tmp, path)


def write_report(work_dir: str, report: Mapping[str, Any]) -> str:
    """Writes the day's markdown, the history plot (every earlier report and this one) and,
    last, ``retrain_report.json``; returns the markdown's path."""
    day = datetime.date.fromisoformat(report["date"])
    directory = report_dir(work_dir, day)
    os.makedirs(directory, exist_ok=True)
    earlier = [r for r in history(work_dir) if r["date"] < report["date"]]
    plot_history([*earlier, report], report["bless_metric"], os.path.join(directory,
                                                                          HISTORY_PLOT))
    path = os.path.join(directory, REPORT_MARKDOWN)
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        handle.write(markdown(report))
    os.replace(f"{path}.tmp", path)
    model_dir_lib.write_json(os.path.join(directory, REPORT_JSON), report)
    return path

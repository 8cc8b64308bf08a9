"""PNG plots of the scaling, warm-start and serving results (matplotlib, Agg backend).

    python -m experiments.plots --results=experiments/results/scaling_small.jsonl \\
        --warmstart=experiments/results/warmstart_small.json \\
        --serving=experiments/results/serving.json --out=experiments/results/plots

Writes, for each input that exists (a missing one is skipped with a note):

* ``flops_vs_gain.png`` (the paper's Figures 2 and 4): relative mAP gain over the DCNv2
  baseline against dense FLOPs per example (inference cost) and against training FLOPs, one
  series per scaled factor (each backbone family, embedding, data), joint scale-ups in grey,
  the baseline's +-2 sigma seed noise shaded, the fit ``gain = a + b ln FLOPs`` over the
  backbone cells (:mod:`cvr_tf.scaling_laws`) and, when the rows carry it, the gain of the
  Bayes ceiling;
* ``map_vs_window.png`` (Figure 3): mAP against training-window length, a line per (backbone,
  embedding) with two or more windows, and the Bayes ceiling;
* ``warmstart_curves.png``: eval logloss against steps and training seconds, cold vs warm;
* ``warmstart_vs_duration.png`` (Figure 5): test mAP and AUC against the days of new training
  data, cold vs warm-started;
* ``serving_p99_vs_qps.png``: p99 latency against offered QPS, batched vs unbatched and the 1x
  (dcnv2) vs ~8x (dhen) model, from the ``p99_vs_qps`` series of ``experiments.bench_serving``.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from absl import app, flags

from cvr_tf import job
from cvr_tf.scaling_laws import fit_log_linear
from experiments.additivity import one_factor_series, read_rows

FACTOR_COLORS = {"embedding": "tab:purple", "data": "tab:brown"}
FAMILY_COLORS = {"dcnv2": "tab:blue", "masknet": "tab:orange", "dhen": "tab:green",
                 "ensemble": "tab:red", "mlp": "tab:gray"}


def _family_color(backbone: str) -> str:
    return FAMILY_COLORS.get(backbone.split(":")[0], "tab:olive")


def _noise(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r["role"] in ("baseline", "baseline-seed")]
    return statistics.stdev(values) if len(values) > 1 else None


def _ceiling_gain(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The mAP gain over the baseline that the Bayes ceiling would have, if rows carry it."""
    with_ceiling = [r for r in rows if "ceiling" in r and r["map_gain"] is not None]
    if not with_ceiling:
        return None
    row = with_ceiling[0]  # gain = mAP / baseline mAP - 1, so baseline mAP = mAP / (gain + 1)
    baseline_map = row["mean_average_precision"] / (row["map_gain"] + 1.0)
    return row["ceiling"]["mean_average_precision"] / baseline_map - 1.0


def plot_flops_vs_gain(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """Gain vs dense FLOPs/example and vs training FLOPs, per factor (see module docstring).

    Cells without a gain (mAP not computable, or no baseline yet) are left out."""
    rows = [r for r in rows if r["map_gain"] is not None]
    figure, axes = plt.subplots(1, 2, figsize=(13, 6.2), sharey=True)
    sigma = _noise(rows, "map_gain")
    series = one_factor_series(rows)
    for axis, key, label in ((axes[0], "dense_flops_per_example", "dense FLOPs per example"),
                             (axes[1], "train_flops", "training FLOPs (3 x forward x examples)")):
        for name, members in series.items():
            members = sorted(members, key=lambda r: (r[key], r["map_gain"]))
            factor = name.split(":")[0]
            color = (_family_color(name.split(":", 1)[1]) if factor == "backbone"
                     else FACTOR_COLORS[factor])
            marker = {"backbone": "o", "embedding": "s", "data": "^"}[factor]
            axis.plot([r[key] for r in members], [100 * r["map_gain"] for r in members],
                      marker=marker, color=color, label=name.replace("backbone:", ""))
        joint = [r for r in rows if "+" in r["role"]]
        axis.scatter([r[key] for r in joint], [100 * r["map_gain"] for r in joint], marker="x",
                     color="0.35", label="joint scale-ups", zorder=3)
        for row in joint:
            axis.annotate(row["role"].replace("backbone", "B").replace("embedding", "E")
                          .replace("data", "D"), (row[key], 100 * row["map_gain"]),
                          fontsize=7, xytext=(3, 3), textcoords="offset points")
        if sigma is not None:
            axis.axhspan(-200 * sigma, 200 * sigma, color="0.85", zorder=0,
                         label="baseline seed noise (+-2 sigma)")
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    ceiling_gain = _ceiling_gain(rows)
    if ceiling_gain is not None:
        for axis in axes:
            axis.axhline(100 * ceiling_gain, color="k", linewidth=1.2,
                         label=f"Bayes ceiling (true_cvr): {100 * ceiling_gain:+.1f}%")
    backbone_rows = [r for name, members in series.items() if name.startswith("backbone:")
                     for r in members]
    if len({r["dense_flops_per_example"] for r in backbone_rows}) >= 2:
        fit = fit_log_linear([r["dense_flops_per_example"] for r in backbone_rows],
                             [r["map_gain"] for r in backbone_rows])
        flops = sorted(r["dense_flops_per_example"] for r in backbone_rows)
        axes[0].plot(flops, 100 * fit.predict(flops), "k--", linewidth=1,
                     label=f"backbones: gain = {fit.intercept:+.3f} {fit.slope:+.4f} ln FLOPs "
                           f"({100 * fit.per_doubling:+.2f} pts/doubling, R^2 {fit.r_squared:.2f})")
    axes[0].set_ylabel("relative mAP gain vs DCNv2 x1 baseline (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    figure.suptitle("mAP gain per scaled factor")
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_map_vs_window(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """mAP against training days, a line per (backbone, embedding) with two or more windows.

    Cells whose mAP is not computable (None) are left out."""
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    for row in rows:
        if row["mean_average_precision"] is None:
            continue
        key = (row["levels"]["backbone"], row["levels"]["embedding"])
        groups.setdefault(key, {}).setdefault(row["train_days"], []).append(
            row["mean_average_precision"])
    figure, axis = plt.subplots(figsize=(7.5, 5))
    for (backbone, embedding), by_days in groups.items():
        if len(by_days) < 2:
            continue
        days = sorted(by_days)
        means = [statistics.mean(by_days[d]) for d in days]
        errors = [statistics.stdev(by_days[d]) if len(by_days[d]) > 1 else 0.0 for d in days]
        axis.errorbar(days, means, yerr=errors, marker="o", capsize=3,
                      color=_family_color(backbone.split()[0]),
                      linestyle="-" if embedding == "x1" else "--",
                      label=f"{backbone}, embedding {embedding}")
    ceilings = {r["ceiling"]["mean_average_precision"] for r in rows if "ceiling" in r}
    if ceilings:
        axis.axhline(ceilings.pop(), color="k", linewidth=1.2, label="Bayes ceiling (true_cvr)")
    axis.set_xscale("log", base=2)
    all_days = sorted({r["train_days"] for r in rows})
    axis.set_xticks(all_days, [str(d) for d in all_days])
    axis.set_xlabel("training window (days)")
    axis.set_ylabel("eval mAP (same eval window)")
    axis.set_title("mAP vs training window (error bars: sd over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_warmstart(result: Mapping[str, Any], path: str) -> None:
    """Validation logloss against steps and training seconds for the runs on the second window."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    styles = {"cold": ("tab:blue", "-"), "warm": ("tab:blue", "--"),
              "cold_added_feature": ("tab:orange", "-"), "warm_added_feature": ("tab:orange", "--")}
    for run, (color, linestyle) in styles.items():
        curve = result["runs"][run]["validation_curve"]
        for axis, key in zip(axes, ("step", "train_seconds"), strict=True):
            axis.plot([p[key] for p in curve], [p["logloss"] for p in curve], marker=".",
                      color=color, linestyle=linestyle, label=run)
    for name, comparison in result["comparisons"].items():
        color = styles[name][0]
        for axis in axes:
            axis.axhline(comparison["target_logloss"], color=color, linewidth=0.8, alpha=0.6,
                         linestyle=":")
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("training seconds (evaluation excluded)")
    axes[0].set_ylabel("validation logloss")
    axes[0].legend(fontsize=8)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle("Warm vs cold start on the next window (dotted: each cold run's best "
                    "validation logloss, the warm run's target)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_warmstart_durations(result: Mapping[str, Any], path: str) -> str | None:
    """Test mAP and AUC against the days of new data, cold vs warm-started (Figure 5).

    Returns:
      None, or why nothing was drawn (a study run without durations).
    """
    rows = result.get("durations") or []
    if not rows:
        return "skipped: the warm-start study ran without --durations"
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    days = [row["days"] for row in rows]
    for axis, metric, label in ((axes[0], "mean_average_precision", "test mAP"),
                                (axes[1], "auc", "test AUC")):
        for start, style in (("cold", "o-"), ("warm", "s--")):
            axis.plot(days, [row[start]["eval"][metric] for row in rows], style,
                      label=f"{start} start")
        axis.set_xticks(days, [str(d) for d in days])
        axis.set_xlabel("new training data (days before the test window)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("Quality against training-data duration, with and without warm start "
                    f"(warm: from a model of the {result['first_window'][0]}.."
                    f"{result['first_window'][1]} window)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def plot_serving(result: Mapping[str, Any], path: str) -> None:
    """p99 vs offered QPS: dcnv2 batched vs unbatched, and dcnv2 (1x) vs dhen (~8x FLOPs),
    batched and (where measured) unbatched."""
    series = result["p99_vs_qps"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = ((axes[0], ("batched", "unbatched"), "dcnv2: batched vs unbatched"),
              (axes[1], ("dcnv2", "dhen", "dhen_unbatched"),
               "dcnv2 (1x, batched) vs dhen (~8x FLOPs)"))
    for axis, names, title in panels:
        names = [name for name in names if name in series]
        for name in names:
            points = series.get(name, [])
            axis.plot([q for q, _ in points], [p99 for _, p99 in points], marker="o", label=name)
        axis.set_xscale("log")
        axis.set_yscale("log")
        offered = sorted({q for name in names for q, _ in series.get(name, [])})
        axis.set_xticks(offered, [f"{q:g}" for q in offered])
        axis.minorticks_off()
        axis.set_xlabel("offered QPS")
        axis.set_ylabel("p99 latency (ms)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def make_plots(out: str, results: str = "", warmstart: str = "", serving: str = ""
               ) -> dict[str, str]:
    """Writes every plot whose input exists; returns plot name -> path or the skip reason
    (a plot function returns a reason when its input holds nothing to draw)."""
    os.makedirs(out, exist_ok=True)
    done: dict[str, str] = {}
    jobs = (("flops_vs_gain", results, lambda p, o: plot_flops_vs_gain(read_rows(p), o)),
            ("map_vs_window", results, lambda p, o: plot_map_vs_window(read_rows(p), o)),
            ("warmstart_curves", warmstart, lambda p, o: plot_warmstart(_read_json(p), o)),
            ("warmstart_vs_duration", warmstart,
             lambda p, o: plot_warmstart_durations(_read_json(p), o)),
            ("serving_p99_vs_qps", serving, lambda p, o: plot_serving(_read_json(p), o)))
    for name, source, plot in jobs:
        if not source or not os.path.exists(source):
            done[name] = f"skipped: no input ({source or 'not given'})"
            continue
        target = os.path.join(out, f"{name}.png")
        done[name] = plot(source, target) or target
    return done


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import)."""
    flags.DEFINE_string("results", "", "JSONL of experiments.scaling.")
    flags.DEFINE_string("warmstart", "", "JSON of experiments.warmstart.")
    flags.DEFINE_string("serving", "experiments/results/serving.json",
                        "JSON of experiments.bench_serving.")
    flags.DEFINE_string("out", "experiments/results/plots", "Where the PNGs go.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name, where in make_plots(FLAGS.out, FLAGS.results, FLAGS.warmstart,
                                  FLAGS.serving).items():
        print(f"{name}: {where}")


if __name__ == "__main__":
    define_flags()
    job.run(main)

"""Are the gains of backbone, embedding and data scaling independent and additive?

    python -m experiments.additivity --results=experiments/results/scaling_small.jsonl \\
        [--metrics=map_gain,auc,logloss] [--json=experiments/results/additivity_small.json]

reads the scaling study's rows (:mod:`experiments.scaling`) and tests the paper's claim that
the three scale-ups add up, two ways:

1. **Additive main-effects model** over every cell (replicates averaged), by least squares with
   the baseline level of each factor as reference:

       gain(b, e, d) = mu + alpha_b + beta_e + gamma_d + residual,

   reporting R^2 (the share of the variance across cells that main effects explain; the rest is
   interaction plus noise) and the cells with the largest residuals.
2. **Sum of one-factor gains**: each joint cell's gain is predicted as the sum of the gains of
   the one-factor axis cells at its levels, ``g(b, e, d) ~ g(b) + g(e) + g(d)``, and compared
   with the observed gain. Replicated cells (seeds) give the noise ``sigma`` of one run, pooled
   over every replicated cell. The deviation of a joint cell scaled in ``k`` factors,

       D = m_joint - sum_i m_i + (k - 1) m_base,

   is a sum of cell means (``n`` runs each), so by noise alone it has standard deviation

       s_D = sigma sqrt(1 / n_joint + sum_i 1 / n_i + (k - 1)^2 / n_base),

   and ``2 s_D`` is the smallest interaction the design can detect at 2 sigma (its power):
   a deviation beyond it is an interaction.

The claim is supported when no joint cell deviates beyond that band.

The report also fits each factor's one-factor series (the baseline and the cells that change
only that factor) against the resource it scales (:data:`RESOURCES`), with
:mod:`cvr_tf.scaling_laws`: ``gain = a + b ln x`` (gain per doubling ``b ln 2``) and
``mAP = c x^k`` (the exponent ``k``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags

from cvr_tf import job
from cvr_tf.scaling_laws import fit_log_linear, fit_power_law, r_squared
from experiments.grid import FACTORS

NOISE_BAND_SIGMAS = 2.0
# Metrics whose gains are decreases: a joint decrease beyond the sum is super-additive.
LOWER_IS_BETTER = ("logloss",)
# The resource each factor scales, as a result-row column.
RESOURCES = {"backbone": "dense_flops_per_example", "embedding": "embedding_params",
             "data": "train_examples"}


@dataclasses.dataclass(frozen=True)
class CellMean:
    """The mean metric of the cells sharing one level of every factor."""

    levels: dict[str, str]
    value: float
    replicates: int

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(self.levels[f] for f in FACTORS)


@dataclasses.dataclass(frozen=True)
class AdditiveFit:
    """The least-squares additive main-effects model over a set of cells.

    Attributes:
      intercept: ``mu``, the fitted value of the all-baseline cell.
      effects: factor -> level -> effect (0 for the baseline level).
      cells: the cells fitted.
      fitted: the model's value of each cell.
      residuals: observed minus fitted, per cell.
      r_squared: share of the variance across cells the main effects explain.
      degrees_of_freedom: cells minus parameters; 0 means a saturated design, which cannot
        test additivity.
    """

    intercept: float
    effects: dict[str, dict[str, float]]
    cells: list[CellMean]
    fitted: list[float]
    residuals: list[float]
    r_squared: float
    degrees_of_freedom: int


@dataclasses.dataclass(frozen=True)
class JointPrediction:
    """A joint cell's observed gain against the sum of its one-factor gains."""

    levels: dict[str, str]
    scaled: list[str]
    observed: float
    predicted: float
    baseline: float
    noise_band: float

    @property
    def deviation(self) -> float:
        return self.observed - self.predicted

    @property
    def predicted_change(self) -> float:
        """The predicted change from the baseline: the sum of the one-factor changes."""
        return self.predicted - self.baseline

    @property
    def beyond_noise(self) -> bool:
        return abs(self.deviation) > self.noise_band


def average_replicates(rows: Sequence[Mapping[str, Any]], metric: str) -> list[CellMean]:
    """Rows grouped by their factor levels (seeds averaged), in first-seen order."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get(metric) is None:
            raise ValueError(f"row {row.get('cell', row['levels'])} has no {metric!r}; rerun "
                             "experiments.scaling so that the baseline's gains are filled in, "
                             "or drop the cell if its mAP was not computable (map_requests 0)")
        groups.setdefault(tuple(row["levels"][f] for f in FACTORS), []).append(row)
    return [CellMean(levels=dict(members[0]["levels"]),
                     value=float(np.mean([m[metric] for m in members])),
                     replicates=len(members)) for members in groups.values()]


def replicate_sigma(rows: Sequence[Mapping[str, Any]], metric: str) -> float | None:
    """Pooled standard deviation of ``metric`` within groups of replicates (None without any)."""
    groups: dict[tuple[str, ...], list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row["levels"][f] for f in FACTORS), []).append(row[metric])
    squares = sum(float(np.sum((np.array(v) - np.mean(v)) ** 2)) for v in groups.values())
    dof = sum(len(v) - 1 for v in groups.values())
    return math.sqrt(squares / dof) if dof else None


def fit_additive(cells: Sequence[CellMean], baseline: Mapping[str, str]) -> AdditiveFit:
    """Least-squares fit of ``mu + sum_f effect_f(level_f)`` with baseline levels as reference.

    Raises:
      ValueError: when the cells cannot identify every level's effect (a level that only
        appears together with another factor's unique level).
    """
    columns = [(f, level) for f in FACTORS
               for level in dict.fromkeys(c.levels[f] for c in cells) if level != baseline[f]]
    design = np.array([[1.0] + [float(c.levels[f] == level) for f, level in columns]
                       for c in cells])
    y = np.array([c.value for c in cells])
    coefficients, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    if rank < design.shape[1]:
        raise ValueError(f"the additive model's {design.shape[1]} effects are not identifiable "
                         f"from {len(cells)} cells (rank {rank}); add a one-factor axis cell "
                         "for every level")
    fitted = design @ coefficients
    effects = {f: {baseline[f]: 0.0} for f in FACTORS}
    for (f, level), value in zip(columns, coefficients[1:], strict=True):
        effects[f][level] = float(value)
    return AdditiveFit(intercept=float(coefficients[0]), effects=effects, cells=list(cells),
                       fitted=fitted.tolist(), residuals=(y - fitted).tolist(),
                       r_squared=r_squared(y, fitted),
                       degrees_of_freedom=len(cells) - design.shape[1])


def joint_predictions(cells: Sequence[CellMean], baseline: Mapping[str, str],
                      sigma: float | None) -> list[JointPrediction]:
    """Each cell scaled in two or more factors against the sum of its one-factor gains.

    Gains are relative to the baseline cell, so the baseline's own gain is subtracted once per
    extra factor (it is 0 when the metric is the study's ``map_gain``). Cells whose one-factor
    counterparts were not run are left out.
    """
    by_key = {c.key: c for c in cells}
    base = by_key.get(tuple(baseline[f] for f in FACTORS))
    if base is None:
        raise ValueError("no baseline cell among the results; its levels are "
                         f"{dict(baseline)}")
    out = []
    for cell in cells:
        scaled = [f for f in FACTORS if cell.levels[f] != baseline[f]]
        if len(scaled) < 2:
            continue
        singles = [by_key.get(tuple(cell.levels[g] if g == f else baseline[g] for g in FACTORS))
                   for f in scaled]
        if any(single is None for single in singles):
            continue
        predicted = sum(s.value for s in singles) - (len(singles) - 1) * base.value
        runs = 1 / cell.replicates + sum(1 / s.replicates for s in singles) + (
            (len(singles) - 1) ** 2 / base.replicates)
        band = NOISE_BAND_SIGMAS * sigma * math.sqrt(runs) if sigma is not None else math.nan
        out.append(JointPrediction(levels=cell.levels, scaled=scaled, observed=cell.value,
                                   predicted=predicted, baseline=base.value, noise_band=band))
    return out


def points(value: float, metric: str) -> str:
    """``value`` x 100 with its unit: percent for a relative gain, else points of the metric."""
    return f"{100 * value:.2f}{'%' if metric.endswith('gain') else ' pt'}"


def verdict(predictions: Sequence[JointPrediction], sigma: float | None,
            metric: str = "map_gain") -> str:
    """A plain sentence: does the data support independent, additive gains?"""
    if not predictions:
        return ("Not tested: the grid has no joint cell whose one-factor cells were all run; "
                "add a factorial corner.")
    if sigma is None:
        return ("Undecided: no cell was run with several seeds, so the noise is unknown; add "
                "'seeds' (or 'replicated') to the grid.")
    off = [p for p in predictions if p.beyond_noise]
    if not off:
        narrowest = min(p.noise_band for p in predictions)
        largest = max(abs(p.predicted_change) for p in predictions)
        within = (f"all {len(predictions)} joint scale-ups are within {NOISE_BAND_SIGMAS:g} "
                  "sigma of noise of the sum of their one-factor gains")
        if narrowest <= largest:
            return (f"Supported: {within}; the design detects interactions beyond "
                    f"±{points(narrowest, metric)} (2 sigma), smaller than the largest "
                    f"predicted joint change ({points(largest, metric)}).")
        return (f"Not rejected, but the test is weak: {within}, yet the noise band (at least "
                f"±{points(narrowest, metric)}) is wider than every predicted joint change "
                f"(at most {points(largest, metric)}), so interactions as large as the gains "
                "themselves would go unseen; more seeds per cell would sharpen the test.")
    below = sum(p.deviation < 0 for p in off)
    if metric in LOWER_IS_BETTER:
        below = len(off) - below
    kind = ("sub-additive (joint gains fall short of the sum)" if below == len(off) else
            "super-additive (joint gains exceed the sum)" if below == 0 else "mixed in sign")
    return (f"Not supported: {len(off)} of {len(predictions)} joint scale-ups deviate from the "
            f"sum of their one-factor gains by more than {NOISE_BAND_SIGMAS:g} sigma of noise; "
            f"the interactions are {kind}.")


def one_factor_series(rows: Sequence[Mapping[str, Any]]
                      ) -> dict[str, list[Mapping[str, Any]]]:
    """``backbone:<name>`` (per family), ``embedding`` and ``data``: the cells that change only
    that factor from the baseline, plus the baseline (seed 0) where it belongs to the series."""
    baseline = [r for r in rows if r["role"] == "baseline"]
    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["role"] == "backbone":
            series.setdefault(f"backbone:{row['backbone']}", []).append(row)
        elif row["role"] in ("embedding", "data"):
            series.setdefault(row["role"], []).append(row)
    for name, members in series.items():
        if name in ("embedding", "data") or name == f"backbone:{baseline[0]['backbone']}":
            members.extend(baseline)
    return series


def factor_fits(rows: Sequence[Mapping[str, Any]], metric: str = "map_gain"
                ) -> list[dict[str, Any]]:
    """Scaling fits of each one-factor series, and of all backbone cells together.

    For each series with two or more distinct resource values: ``metric = a + b ln x`` and
    ``mAP = c x^k``, where x is the factor's resource (:data:`RESOURCES`).
    """
    series = one_factor_series(rows)
    backbones = [r for r in rows if r["role"] in ("baseline", "backbone")]
    series = {"backbone:all": backbones, **series}
    out = []
    for name, members in series.items():
        resource = RESOURCES[name.split(":")[0]]
        x = [r[resource] for r in members]
        if len(set(x)) < 2:
            continue
        linear = fit_log_linear(x, [r[metric] for r in members])
        power = fit_power_law(x, [r["mean_average_precision"] for r in members])
        out.append({"series": name, "resource": resource, "points": len(members),
                    "range": [min(x), max(x)], "intercept": linear.intercept,
                    "slope": linear.slope, "per_doubling": linear.per_doubling,
                    "log_linear_r_squared": linear.r_squared, "map_exponent": power.exponent,
                    "power_law_r_squared": power.r_squared})
    return out


def analyze(rows: Sequence[Mapping[str, Any]], metric: str = "map_gain") -> dict[str, Any]:
    """The whole analysis of the scaling rows, as a JSON-able dict."""
    baselines = [r for r in rows if r["role"] == "baseline"]
    if not baselines:
        raise ValueError("no row with role 'baseline' in the results")
    baseline = baselines[0]["levels"]
    cells = average_replicates(rows, metric)
    sigma = replicate_sigma(rows, metric)
    fit = fit_additive(cells, baseline)
    predictions = joint_predictions(cells, baseline, sigma)
    variance = float(np.var([c.value for c in cells]))
    order = np.argsort(-np.abs(fit.residuals))
    return {
        "metric": metric, "cells": len(cells), "rows": len(rows), "baseline": baseline,
        "noise_sigma": sigma,
        "replicated_cells": sum(c.replicates > 1 for c in cells),
        "r_squared": fit.r_squared, "degrees_of_freedom": fit.degrees_of_freedom,
        "interaction_and_noise_share": 1.0 - fit.r_squared,
        "noise_share": (sigma ** 2 / variance) if sigma is not None and variance > 0 else None,
        "intercept": fit.intercept, "effects": fit.effects,
        "largest_residuals": [{"levels": fit.cells[i].levels, "observed": fit.cells[i].value,
                               "fitted": fit.fitted[i], "residual": fit.residuals[i]}
                              for i in order[:5]],
        "joint": [{**dataclasses.asdict(p), "deviation": p.deviation,
                   "predicted_change": p.predicted_change, "beyond_noise": p.beyond_noise}
                  for p in predictions],
        "smallest_detectable_interaction": (min(p.noise_band for p in predictions)
                                            if predictions and sigma is not None else None),
        "largest_predicted_joint_change": (max(abs(p.predicted_change) for p in predictions)
                                           if predictions else None),
        "verdict": verdict(predictions, sigma, metric),
        "factor_fits": factor_fits(rows, metric),
    }


def _label(levels: Mapping[str, str]) -> str:
    return ", ".join(levels[f] for f in FACTORS)


def markdown_report(analysis: Mapping[str, Any]) -> str:
    """The analysis as markdown: fit quality, effects, residuals, joint cells, verdict."""
    metric = analysis["metric"]

    def signed(value: float) -> str:
        return ("+" if value >= 0 else "-") + points(abs(value), metric)

    sigma = analysis["noise_sigma"]
    noise_share = analysis["noise_share"]
    lines = [
        f"Additive main-effects fit of `{metric}` over {analysis['cells']} cells "
        f"({analysis['rows']} runs): R^2 = {analysis['r_squared']:.3f} with "
        f"{analysis['degrees_of_freedom']} residual degrees of freedom; interactions and noise "
        f"leave {100 * analysis['interaction_and_noise_share']:.1f}% of the variance across "
        "cells" + ("." if noise_share is None else
                   f", of which noise alone (the seeds' spread) would explain about "
                   f"{100 * noise_share:.1f}%."), ""]
    if sigma is not None:
        lines += [f"Noise: sigma of one run = {points(sigma, metric)}, pooled over the seeds of "
                  f"{analysis['replicated_cells']} replicated cells.", ""]
    lines += ["| factor | level | effect |", "| --- | --- | ---: |"]
    lines += [f"| {factor} | {level} | {signed(value)} |"
              for factor, effects in analysis["effects"].items()
              for level, value in effects.items()]
    def level(value: float) -> str:  # a gain is signed; a metric's own value is not
        return signed(value) if metric.endswith("gain") else f"{value:.4f}"

    lines += ["", "Largest residuals of the additive fit:", "",
              "| cell (backbone, embedding, data) | observed | fitted | residual |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| {_label(r['levels'])} | {level(r['observed'])} | {level(r['fitted'])} | "
              f"{signed(r['residual'])} |" for r in analysis["largest_residuals"]]
    lines += ["", "Joint scale-ups against the sum of one-factor changes (both from the baseline "
              "cell):", "",
              "| cell (backbone, embedding, data) | observed change | sum of one-factor changes | "
              "deviation | 2-sigma band |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {_label(j['levels'])} | {signed(j['observed'] - j['baseline'])} | "
              f"{signed(j['predicted_change'])} | "
              f"{signed(j['deviation'])}{' **' if j['beyond_noise'] else ''} | "
              f"±{points(j['noise_band'], metric)} |" for j in analysis["joint"]]
    lines += ["", f"**Verdict.** {analysis['verdict']}", "",
              f"Per-factor scaling fits (`{metric} = a + b ln x`, `mAP = c x^k`) over the "
              "baseline and the one-factor cells:", "",
              "| series | x | range of x | points | change per doubling of x | R^2 | "
              "mAP exponent k | R^2 (log-log) |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {f['series']} | {f['resource']} | {f['range'][0]:,.0f}-{f['range'][1]:,.0f} | "
              f"{f['points']} | {signed(f['per_doubling'])} | "
              f"{f['log_linear_r_squared']:.2f} | {f['map_exponent']:+.4f} | "
              f"{f['power_law_r_squared']:.2f} |" for f in analysis["factor_fits"]]
    return "\n".join(lines)


def read_rows(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def power_table(analyses: Sequence[Mapping[str, Any]]) -> str:
    """Per metric: the noise of one run, the design's power and the verdict, as markdown."""
    lines = ["| metric | sigma of one run | smallest interaction detectable (2 sigma) | "
             "largest predicted joint change | verdict |", "| --- | ---: | ---: | ---: | --- |"]
    def shown(value: float | None, metric: str, unit: str = "") -> str:
        return "n/a" if value is None else f"{unit}{points(value, metric)}"

    for analysis in analyses:
        metric = analysis["metric"]
        lines.append(f"| {metric} | {shown(analysis['noise_sigma'], metric)} | "
                     f"{shown(analysis['smallest_detectable_interaction'], metric, '±')} | "
                     f"{shown(analysis['largest_predicted_joint_change'], metric)} | "
                     f"{analysis['verdict'].split(':')[0]} |")
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The job's flags, defined when it runs (not on import)."""
    flags.DEFINE_string("results", None, "JSONL of experiments.scaling.")
    flags.DEFINE_list("metrics", ["map_gain", "auc", "logloss"],
                      "Numeric columns to analyze, each on its own.")
    flags.DEFINE_string("json", "", "Also write the analyses here, {metric: analysis}.")
    flags.mark_flag_as_required("results")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        rows = read_rows(FLAGS.results)
        analyses = [analyze(rows, metric) for metric in FLAGS.metrics]
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error!r}", file=sys.stderr)
        sys.exit(2)
    for analysis in analyses:
        print(f"## {analysis['metric']}\n\n{markdown_report(analysis)}\n")
    print(f"## Power and verdicts\n\n{power_table(analyses)}")
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as handle:
            json.dump({a["metric"]: a for a in analyses}, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    define_flags()
    job.run(main)

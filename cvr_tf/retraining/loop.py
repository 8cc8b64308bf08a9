"""One day of the retraining loop: spans -> warm-started candidate -> gate -> push -> report.

:func:`retrain` for ``--date=D``:

1. builds the missing spans of ``D - train_days .. D`` (``pipelines.span_pipeline``; complete
   spans are skipped, half-built ones are staging directories the pipeline cleans);
2. finds the served model: the latest version under ``<export_base>/<model_name>`` (what a
   ``latest`` version policy serves) and, from the record its export wrote, the model dir it
   came from; else the last blessed candidate of earlier reports; else none;
3. trains the candidate on ``D - train_days .. D - 1`` in ``<work_dir>/models/D``,
   warm-started from that model (cold without one); a killed run resumes from its backup;
4. scores candidate and served model on day ``D`` (the holdout), overall and by slice
   (:mod:`cvr_tf.retraining.slices`), and decides (:mod:`cvr_tf.retraining.blessing`); a
   multi-task candidate on one evaluation (``--bless_task``), its output, labels and rows;
5. blessed: exports the candidate as a new version (staged in a hidden directory and renamed,
   so the polling server never sees half a version; a multi-task one with every task's output,
   :mod:`serving.signatures`); not blessed: the base is untouched;
6. writes the report (:mod:`cvr_tf.retraining.report`), ``retrain_report.json`` last.

Idempotent and resumable: a day with a report is a no-op; a rerun after a kill reuses the
finished candidate, removes staging directories of dead exports and, when the kill came after
the export's rename, finds the version already exported from this candidate instead of
exporting it twice. One run at a time per work dir (a lock file).

This module is the one place of ``cvr_tf`` that imports ``pipelines`` and ``serving``
(docs/ARCHITECTURE.md §1): the loop orchestrates them, as ``experiments`` do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from cvr_tf import input as input_lib
from cvr_tf import model_dir as model_dir_lib
from cvr_tf import training
from cvr_tf.callbacks import NaNLossError
from cvr_tf.features import FeatureSpec, FeatureSpecError, resolve_spec
from cvr_tf.retraining import blessing, holdout, slices
from cvr_tf.retraining import report as report_lib
from cvr_tf.retraining.config import RetrainConfig
from pipelines.span_pipeline import INPUT_ERRORS, build_spans
from serving import export, tf_serving_config
from serving.batching import BATCH_SCOPES, BatchingConfig

MODELS_DIR = "models"
LOCK_FILE = ".retrain.lock"
CANDIDATE = "candidate"
CURRENT = "current"

TrainFunction = Callable[[training.TrainConfig], dict[str, Any]]


class RetrainError(RuntimeError):
    """The loop cannot run this day; the message names the cause and the fix."""


@dataclasses.dataclass(frozen=True)
class Served:
    """The version a ``latest`` policy serves, and the model dir its export recorded."""

    version: int
    model_dir: str | None


def candidate_dir(work_dir: str, day: datetime.date) -> str:
    return os.path.join(work_dir, MODELS_DIR, day.isoformat())


@contextlib.contextmanager
def _locked(work_dir: str) -> Iterator[None]:
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, LOCK_FILE), "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainError(f"another retraining run holds {handle.name}; wait for it to "
                               "finish") from None
        yield


def served_version(export_base: str, model_name: str, excluding: str = "") -> Served | None:
    """The latest complete version of the model, or None when the base has none.

    Versions exported from the model dir ``excluding`` are passed over: a run killed after it
    exported its own candidate compares that candidate with what was served before it.
    """
    model_base = os.path.join(export_base, model_name)
    for version in reversed(export.existing_versions(model_base)):
        source = export.exported_from(os.path.join(model_base, str(version)))
        if not excluding or source != os.path.abspath(excluding):
            return Served(version, source)
    return None


def _version_of(model_base: str, model_dir: str) -> int | None:
    """A version already exported from ``model_dir`` (a run killed after its export)."""
    wanted = os.path.abspath(model_dir)
    for version in reversed(export.existing_versions(model_base)):
        if export.exported_from(os.path.join(model_base, str(version))) == wanted:
            return version
    return None


def _last_blessed(work_dir: str, day: datetime.date) -> str | None:
    for report in reversed(report_lib.history(work_dir)):
        if report["date"] < day.isoformat() and report["decision"]["blessed"]:
            return report["candidate"]["model_dir"]
    return None


def _check(config: RetrainConfig) -> tuple[RetrainConfig, FeatureSpec]:
    """Fails before any work on a config that cannot run; returns it, with the default slices
    a spec cannot give dropped (:func:`_fit_default_slices`), and the spans' feature spec."""
    try:
        config.check()
        tf_serving_config.validate_model_name(config.model_name)
        spec = resolve_spec(config.training.feature_spec)
        config = _fit_default_slices(config, spec)
        holdout.check_slicing(spec, config.slice_columns, config.query_column,
                              config.item_column)
    except (FeatureSpecError, OSError) as error:
        raise RetrainError(f"--feature_spec={config.training.feature_spec}: {error}") from error
    except ValueError as error:
        raise RetrainError(str(error)) from error
    if config.batch_scope not in BATCH_SCOPES:
        raise RetrainError(f"--batch_scope={config.batch_scope!r} is not one of "
                           f"{', '.join(BATCH_SCOPES)}")
    if not os.path.isdir(config.logs):
        raise RetrainError(f"--logs={config.logs} is not a directory")
    return config, spec


def _fit_default_slices(config: RetrainConfig, spec: FeatureSpec) -> RetrainConfig:
    """The config without the slicing flags that still hold their defaults (columns of the
    simulator's logs: device, query, item_id) and that ``spec`` cannot slice by, each dropped
    with a log line: a team's own spec need not name them. A value given otherwise must work."""
    defaults = {field.name: field.default for field in dataclasses.fields(RetrainConfig)}
    problems = holdout.slicing_problems(spec, config.slice_columns, config.query_column,
                                        config.item_column)
    dropped = {flag: "" for flag in problems if getattr(config, flag) == defaults[flag]}
    kinds = {"slice_by": "per-value", "query_column": "query-frequency",
             "item_column": "new/returning item"}
    for flag in dropped:
        logging.info("The report has no %s slices: the default --%s=%s names a column this "
                     "feature spec cannot slice by.", kinds[flag], flag, getattr(config, flag))
    return dataclasses.replace(config, **dropped)


def _build_spans(config: RetrainConfig, spec: FeatureSpec) -> dict[str, Any]:
    """Builds the missing spans of the window and the holdout day; returns the run summary."""
    data_dir = config.training.data_dir
    options = {} if config.attribution_days is None else {
        "attribution_days": config.attribution_days}
    try:
        summary = build_spans(config.logs, data_dir, config.train_start, config.date, spec,
                              **options)
    except INPUT_ERRORS as error:
        raise RetrainError(str(error)) from error
    if not input_lib.is_complete_span(input_lib.span_path(data_dir, config.date)):
        raise RetrainError(f"no span for --date={config.date}: {config.logs} has no impressions "
                           f"for that day")
    return summary.to_dict()


def training_window(config: RetrainConfig, warm_start_from: str) -> datetime.date:
    """The first day of the candidate's training window (its last is the day before ``date``).

    Cold, or with ``warm_start_window=train_days``: the whole ``--train_days`` window. Warm with
    ``new_days``: the days after the warm-start model's own training window, so that a daily
    candidate continues on the one day its source has not seen instead of passing again over
    days it was trained on (an extra epoch on those overfits, as a second epoch does in the
    demo); the whole window when the source saw every day of it already.
    """
    if not warm_start_from or config.warm_start_window == "train_days":
        return config.train_start
    run_config = model_dir_lib.path(warm_start_from, model_dir_lib.RUN_CONFIG)
    if not os.path.exists(run_config):
        return config.train_start
    seen_until = datetime.date.fromisoformat(model_dir_lib.read_json(run_config)["train_end"])
    first_new = seen_until + datetime.timedelta(days=1)
    if first_new > config.train_end:  # nothing new (a rerun of an old date): the whole window
        return config.train_start
    return max(first_new, config.train_start)


def _train_candidate(config: RetrainConfig, warm_start_from: str, train_start: datetime.date,
                     train: TrainFunction) -> tuple[dict[str, Any] | None, str | None]:
    """(the candidate's metrics.json, None), or (None, why training failed) for a diverged run.

    A finished candidate of an earlier, interrupted run is reused; an unfinished one resumes.
    """
    model_dir = candidate_dir(config.work_dir, config.date)
    if model_dir_lib.is_finished(model_dir):
        logging.info("Candidate %s is trained already; reusing it.", model_dir)
        return model_dir_lib.read_json(model_dir_lib.path(model_dir, model_dir_lib.METRICS)), None
    train_config = dataclasses.replace(
        config.training, model_dir=model_dir, train_start=train_start,
        train_end=config.train_end, eval_start=config.date, eval_end=config.date,
        warm_start_from=warm_start_from, overwrite=False, continue_training=False)
    try:
        return train(train_config), None
    except NaNLossError as error:
        return None, f"training diverged: {error}"
    except training.ConfigError as error:
        raise RetrainError(f"candidate training: {error}") from error


def _evaluate(config: RetrainConfig, current_dir: str | None
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(metrics by slice of candidate and current, what the query buckets were made of)."""
    data_dir = config.training.data_dir
    candidate = model_dir_lib.load_model(candidate_dir(config.work_dir, config.date))
    columns = holdout.read_day(data_dir, config.date, candidate.spec)
    output, labels, rows = holdout.target(candidate, columns, config.bless_evaluation)
    scores = {CANDIDATE: holdout.score(candidate, columns, output)}
    known_model = candidate
    if current_dir is not None:
        current = model_dir_lib.load_model(current_dir)
        theirs = columns if set(current.spec.column_dtypes(train_only=False)) <= set(columns) \
            else holdout.read_day(data_dir, config.date, current.spec)
        if not np.array_equal(theirs[candidate.spec.group_key], columns[candidate.spec.group_key]):
            raise RetrainError("candidate and current model read the holdout in different row "
                               "orders; they must share the spans' feature spec")
        try:
            scores[CURRENT] = holdout.score(current, theirs, output)
        except ValueError as error:
            task = f" on --bless_task={config.bless_evaluation}" if output else ""
            raise RetrainError(
                f"the served model ({current_dir}) cannot be compared with the candidate{task}: "
                f"{error}. Serve a model of the same tasks first (python -m serving.export), "
                "or retrain into another --model_name") from error
        known_model = current
    query_buckets, query_info = None, {}
    try:
        if config.query_column:
            counts = holdout.window_query_counts(data_dir, config.train_start, config.train_end,
                                                 candidate.spec, config.query_column)
            query_buckets = slices.query_buckets(counts)
            query_info = {
                "head_share": slices.HEAD_SHARE, "torso_share": slices.TORSO_SHARE,
                "window_rows": sum(counts.values()),
                "queries": {b: sum(1 for v in query_buckets.values() if v == b)
                            for b in ("head", "torso", "tail")}}
        known_items = (holdout.model_vocabulary(known_model, config.item_column)
                       if config.item_column else None)
    except ValueError as error:
        raise RetrainError(str(error)) from error
    masks = slices.holdout_slices(
        columns, config.slice_columns, config.query_column, query_buckets, config.item_column,
        known_items)
    if rows is not None:  # an evaluation of some rows only (cvr_on_clicks): every slice's
        masks = {name: mask & rows for name, mask in masks.items()}
    return slices.sliced_metrics(labels, columns[candidate.spec.group_key], scores,
                                 masks), query_info


def _export(config: RetrainConfig) -> int:
    """Exports the blessed candidate (or finds the version a killed run already exported)."""
    model_base = os.path.join(config.export_base, config.model_name)
    model_dir = candidate_dir(config.work_dir, config.date)
    version = _version_of(model_base, model_dir)
    if version is not None:
        logging.info("Version %d was exported from %s by an earlier run.", version, model_dir)
        return version
    path = export.export_model(model_dir, config.export_base, config.model_name,
                               batching=BatchingConfig(scope=config.batch_scope))
    return int(os.path.basename(path))


def retrain(config: RetrainConfig, train: TrainFunction = training.train) -> dict[str, Any]:
    """Runs the loop for ``config.date`` (module docstring); returns the day's report.

    Args:
      config: the loop's configuration.
      train: trains a candidate from its :class:`~cvr_tf.training.TrainConfig`; tests plant a
        bad candidate through it (the default is the training job's function).

    Raises:
      RetrainError: the day cannot run (bad flags, no logs for the day, a served model whose
        model dir is gone); nothing is exported then.
    """
    config, spec = _check(config)
    done = report_lib.read_report(config.work_dir, config.date)
    if done is not None:
        logging.info("%s is done already (%s); nothing to do.", config.date,
                     report_lib.report_dir(config.work_dir, config.date))
        return done
    with _locked(config.work_dir):
        return _retrain_locked(config, spec, train)


def _served_model(config: RetrainConfig) -> tuple[Served | None, str | None]:
    """(the served version, the model dir to score it with), after removing dead staging.

    Raises:
      RetrainError: a version is served whose model dir is unknown or gone.
    """
    model_base = os.path.join(config.export_base, config.model_name)
    removed = export.remove_stale_staging(model_base)
    if removed:
        logging.warning("Removed %d staging dir(s) of exports that did not finish: %s",
                        len(removed), ", ".join(removed))
    served = served_version(config.export_base, config.model_name,
                            excluding=candidate_dir(config.work_dir, config.date))
    if served is None:
        return None, None
    current_dir = served.model_dir or _last_blessed(config.work_dir, config.date)
    if current_dir is None:
        raise RetrainError(
            f"version {served.version} of {model_base} records no model dir (exported before "
            "serving.export recorded it) and no earlier report names a blessed model; "
            "re-export it with python -m serving.export, or remove it")
    if not model_dir_lib.has_model_definition(current_dir):
        raise RetrainError(f"the served model's model dir {current_dir} is gone; the gate needs "
                           "it to score the served model")
    return served, current_dir


def _retrain_locked(config: RetrainConfig, spec: FeatureSpec, train: TrainFunction
                    ) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    began = stage = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal stage
        seconds[name] = time.perf_counter() - stage
        stage = time.perf_counter()

    spans = _build_spans(config, spec)
    lap("spans")
    served, current_dir = _served_model(config)
    warm_start_from = current_dir or _last_blessed(config.work_dir, config.date) or ""
    train_start = training_window(config, warm_start_from)
    record, failure = _train_candidate(config, warm_start_from, train_start, train)
    lap("train")
    sliced, query_info = [], {}
    if failure is None:
        sliced, query_info = _evaluate(config, current_dir)
        overall = sliced[0]["metrics"]
        decision = blessing.decide(overall[CANDIDATE], overall.get(CURRENT), config.bless_metric,
                                   config.bless_tolerance, config.calibration_bounds)
    else:
        decision = blessing.Decision(False, (blessing.Check("trained", False, failure),))
    lap("evaluate")
    version = _export(config) if decision.blessed else None
    lap("export")
    seconds["total"] = time.perf_counter() - began
    report = {
        "date": config.date.isoformat(), "model_name": config.model_name,
        "bless_metric": config.bless_metric, "bless_task": config.bless_evaluation,
        "bless_tolerance": config.bless_tolerance,
        "calibration_bounds": list(config.calibration_bounds),
        "decision": decision.to_dict(), "exported_version": version,
        "candidate": {
            "model_dir": candidate_dir(config.work_dir, config.date),
            "train_start": train_start.isoformat(), "train_end": config.train_end.isoformat(),
            "warm_start": (f"warm-started from {warm_start_from}" if warm_start_from
                           else "cold start"),
            "training": {k: record[k] for k in ("train_steps", "best_step", "train_seconds",
                                                "wall_seconds")} if record else None},
        "current": ({"version": served.version, "model_dir": current_dir}
                    if served is not None else None),
        "holdout": {"day": config.date.isoformat(), "labels": holdout.maturity_note(
            holdout.label_maturity(config.training.data_dir, config.date))},
        "query_buckets": query_info,
        # A failed candidate has no metrics; the report still says why.
        "slices": sliced or [{"slice": slices.OVERALL, "examples": 0, "positives": 0,
                              "metrics": {CANDIDATE: {}}}],
        "spans_built": spans["built"], "wall_seconds": seconds, "config": config.to_record()}
    path = report_lib.write_report(config.work_dir, report)
    logging.info("%s: %s; report %s", config.date,
                 f"blessed, version {version}" if decision.blessed
                 else "not blessed: " + "; ".join(decision.reasons), path)
    return report_lib.read_report(config.work_dir, config.date)  # as a rerun will read it

"""Training/serving skew: logged serving features against the span of the same day.

    python -m serving.skew_check --request_logs='/logs/cvr/requests-2026-01-19-*' \\
        --data_dir=/data/spans --date=2026-01-19 --model_dir=/models/cvr \\
        [--max_missing_rate_change=0.05] [--max_oov_rate_change=0.05] [--max_mean_shift_stds=0.5]

For every serving feature of the model (its recorded spec), over the Predict requests the
request log (:mod:`serving.request_log`) holds for UTC day ``--date`` and over both splits of
that day's span:

* **missing rate**: rows whose column is absent from the request, an empty string or NaN;
* **out-of-vocabulary rate** (features with a vocabulary): tokens, as the feature makes them
  (the text tokenizer for text features), that the model's vocabulary lacks;
* **mean shift** (numeric features): ``(mean_serving - mean_span) / std_span`` of the raw
  column.

It prints a table of all of them and, for each feature past a threshold (an absolute change of
a rate, or a shift in span standard deviations), one line ``SKEW <feature>: ...``, and exits
with status 1 when there is any: put it after the day's span in the daily schedule and it fails
loudly. Columns the spans do not hold (a request-relative feature's group key) are skipped.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import math
import sys
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
from absl import app, flags
from tensorflow_serving.apis import prediction_log_pb2

from cvr_tf import input as input_lib
from cvr_tf import job
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import tf
from cvr_tf.features import Feature, FeatureSpec, spec_from_dict
from serving.request_log import read_request_logs


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """How far serving may drift from the span before the check fails."""

    missing_rate: float = 0.05
    oov_rate: float = 0.05
    mean_shift_stds: float = 0.5


@dataclasses.dataclass(frozen=True)
class FeatureSkew:
    """One feature's statistics in serving and in the span (None: not applicable)."""

    feature: str
    column: str
    serving_missing: float
    span_missing: float
    serving_oov: float | None = None
    span_oov: float | None = None
    mean_shift_stds: float | None = None

    def violations(self, limits: Thresholds) -> list[str]:
        """One phrase per statistic past its limit."""
        out = []
        if abs(self.serving_missing - self.span_missing) > limits.missing_rate:
            out.append(f"missing rate {self.serving_missing:.3f} in serving vs "
                       f"{self.span_missing:.3f} in the span (limit +-{limits.missing_rate:g})")
        if self.serving_oov is not None and abs(self.serving_oov - self.span_oov) > \
                limits.oov_rate:
            out.append(f"out-of-vocabulary rate {self.serving_oov:.3f} in serving vs "
                       f"{self.span_oov:.3f} in the span (limit +-{limits.oov_rate:g})")
        if self.mean_shift_stds is not None and abs(self.mean_shift_stds) > \
                limits.mean_shift_stds:
            out.append(f"mean shifted by {self.mean_shift_stds:+.2f} span standard deviations "
                       f"(limit +-{limits.mean_shift_stds:g})")
        return out


def logged_columns(logs: Iterable[prediction_log_pb2.PredictionLog], day: datetime.date,
                   columns: Mapping[str, str]) -> tuple[dict[str, list[np.ndarray]], int]:
    """(column -> the logged values of each request that sent it, rows logged) over the
    Predict requests of UTC ``day``; a request without a column adds no values for it."""
    values: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    rows = 0
    for log in logs:
        if log.WhichOneof("log_type") != "predict_log":
            continue
        when = datetime.datetime.fromtimestamp(log.log_metadata.timestamp_secs, datetime.UTC)
        if when.date() != day:
            continue
        inputs = log.predict_log.request.inputs
        arrays = {name: tf.make_ndarray(proto).reshape(-1) for name, proto in inputs.items()}
        if not arrays:
            continue
        rows += len(next(iter(arrays.values())))
        for column in columns:
            if column in arrays:
                values[column].append(arrays[column])
    return values, rows


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype == object or values.dtype.kind in "SU":
        return np.array([len(v) == 0 for v in values], dtype=bool)
    return np.zeros(len(values), dtype=bool)


def _strings(values: np.ndarray) -> pa.Array:
    if values.dtype == object or values.dtype.kind == "S":
        return pa.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                         for v in values], pa.string())
    return pa.array(values)


def _oov_rate(feature: Feature, values: np.ndarray, vocabulary: set[str]) -> float:
    tokens = feature.vocabulary_tokens(_strings(values)).to_pylist()
    return sum(t not in vocabulary for t in tokens) / len(tokens) if tokens else 0.0


def _mean_shift(serving: np.ndarray, span: np.ndarray) -> float:
    serving = serving[~np.isnan(serving)].astype(np.float64)
    span = span[~np.isnan(span)].astype(np.float64)
    if not len(serving) or not len(span):
        return 0.0
    gap = float(serving.mean() - span.mean())
    std = float(span.std())
    return gap / std if std > 0 else (0.0 if gap == 0 else math.copysign(math.inf, gap))


def feature_skew(spec: FeatureSpec, vocabularies: Mapping[str, Sequence[str]],
                 serving: Mapping[str, list[np.ndarray]], serving_rows: int,
                 span: Mapping[str, np.ndarray]) -> list[FeatureSkew]:
    """The statistics of every serving feature whose column the span holds."""
    out = []
    for feature in spec.serving_features:
        column = feature.column
        if column not in span or column not in serving:
            continue
        logged = (np.concatenate(serving[column]) if serving[column]
                  else np.zeros(0, span[column].dtype))
        absent = serving_rows - len(logged)
        serving_missing = ((absent + int(_missing(logged).sum())) / serving_rows
                           if serving_rows else 0.0)
        span_missing = float(_missing(span[column]).mean()) if len(span[column]) else 0.0
        stats = {}
        vocabulary = vocabularies.get(feature.table or "")
        if vocabulary is not None and feature.computes_vocabulary:
            known = set(vocabulary)
            stats["serving_oov"] = _oov_rate(feature, logged, known)
            stats["span_oov"] = _oov_rate(feature, span[column], known)
        elif feature.KIND == "numeric":
            stats["mean_shift_stds"] = _mean_shift(logged.astype(np.float64),
                                                   span[column].astype(np.float64))
        out.append(FeatureSkew(feature.name, column, serving_missing, span_missing, **stats))
    return out


def check_skew(request_logs: Sequence[str], data_dir: str, day: datetime.date, model_dir: str
               ) -> tuple[list[FeatureSkew], int, int]:
    """(per-feature statistics, serving rows, span rows) of ``day``."""
    spec_dict, _, vocabularies = model_dir_lib.read_model_definition(model_dir)
    spec = spec_from_dict(spec_dict)
    columns = spec.serving_columns()
    serving, serving_rows = logged_columns(read_request_logs(request_logs), day, columns)
    in_spans = [c for c in columns if c in spec.column_dtypes(train_only=False)]
    span = input_lib.read_columns(data_dir, day, day, spec, columns=in_spans)
    rows = len(next(iter(span.values()))) if span else 0
    return feature_skew(spec, vocabularies, serving, serving_rows, span), serving_rows, rows


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def table(skews: Sequence[FeatureSkew]) -> str:
    lines = ["| feature | column | missing serving | missing span | OOV serving | OOV span | "
             "mean shift (stds) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in skews:
        shift = "" if s.mean_shift_stds is None else f"{s.mean_shift_stds:+.2f}"
        lines.append(f"| {s.feature} | {s.column} | {s.serving_missing:.3f} | "
                     f"{s.span_missing:.3f} | {_rate(s.serving_oov)} | {_rate(s.span_oov)} | "
                     f"{shift} |")
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    defaults = Thresholds()
    flags.DEFINE_string("request_logs", None, "Glob of request log files.")
    flags.DEFINE_string("data_dir", None, "The spans root (the pipeline's --output).")
    flags.DEFINE_string("date", None, "The day to compare, YYYY-MM-DD (UTC for the logs).")
    flags.DEFINE_string("model_dir", None, "The served model's model dir (its spec and "
                        "vocabularies).")
    flags.DEFINE_float("max_missing_rate_change", defaults.missing_rate,
                       "Largest absolute change of a feature's missing rate.")
    flags.DEFINE_float("max_oov_rate_change", defaults.oov_rate,
                       "Largest absolute change of a feature's out-of-vocabulary rate.")
    flags.DEFINE_float("max_mean_shift_stds", defaults.mean_shift_stds,
                       "Largest shift of a numeric feature's mean, in span standard deviations.")
    flags.mark_flags_as_required(["request_logs", "data_dir", "date", "model_dir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        day = datetime.date.fromisoformat(FLAGS.date)
    except ValueError:
        raise app.UsageError(f"--date={FLAGS.date!r} is not a date; use YYYY-MM-DD") from None
    paths = sorted(glob.glob(FLAGS.request_logs))
    if not paths:
        raise app.UsageError(f"--request_logs={FLAGS.request_logs} matches no file")
    try:
        skews, serving_rows, span_rows = check_skew(paths, FLAGS.data_dir, day, FLAGS.model_dir)
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    if not serving_rows:
        raise app.UsageError(f"the request logs hold no Predict request of {day} (UTC)")
    limits = Thresholds(FLAGS.max_missing_rate_change, FLAGS.max_oov_rate_change,
                        FLAGS.max_mean_shift_stds)
    print(f"{day}: {serving_rows:,} logged serving rows vs {span_rows:,} span rows\n")
    print(table(skews))
    failures = [f"SKEW {s.feature}: {'; '.join(s.violations(limits))}" for s in skews
                if s.violations(limits)]
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    job.run(main)

r"""Search logs -> daily TFRecord spans, vocabularies and statistics (a Beam job).

    python -m pipelines.build_tfrecords --logs=DIR --output=DIR \
        --start_date=2026-01-05 --end_date=2026-01-18 [--feature_spec=FILE] \
        [--attribution_days=3] [--label_column=NAME] [--eval_fraction=0.1] [--num_shards=N] \
        [--overwrite] [--on_bad_file=fail|skip_day] \
        [Beam options, e.g. --runner=FlinkRunner --flink_master=HOST:PORT]

Flags this job does not know are Beam pipeline options. Without ``--runner`` the pipeline runs
in this process (``--direct_num_workers=2 --direct_running_mode=multi_processing`` uses two
local worker processes). The work is done by :func:`pipelines.span_pipeline.build_spans`.

The labels are the feature spec's ``labels`` (each joined with its event log within its own
window, see :mod:`pipelines.labels`); a spec without them has one label, joined with
conversions within ``--attribution_days`` or read from ``--label_column``.

With ``--on_bad_file=skip_day`` an unreadable log file costs only the days that need it
(:mod:`pipelines.bad_files`): the job builds the others, prints one ``span D not built: why``
line per skipped day on stderr after the JSON summary, and exits with status 3.
"""

from __future__ import annotations

import datetime
import json
import sys

from absl import app, flags, logging
from apache_beam.options.pipeline_options import PipelineOptions

from cvr_tf import job
from cvr_tf.features import FeatureSpecError, resolve_spec
from pipelines import bad_files
from pipelines.labels import pipeline_labels
from pipelines.span_pipeline import DEFAULT_BATCH_ROWS, INPUT_ERRORS, build_spans

FLAGS = flags.FLAGS
flags.DEFINE_string("logs", None, "Directory with impressions/ and conversions/ date partitions.")
flags.DEFINE_string("output", None, "Directory of the spans (span=YYYY-MM-DD/...).")
flags.DEFINE_string("start_date", None, "First day of the window, YYYY-MM-DD.")
flags.DEFINE_string("end_date", None, "Last day of the window (inclusive), YYYY-MM-DD.")
flags.DEFINE_string("feature_spec", "", "Feature spec JSON/YAML file; empty: the default spec.")
flags.DEFINE_integer("attribution_days", None, "A conversion within this many days after the "
                     "impression makes it a positive (default 3); only for a spec without "
                     "\"labels\", which set their own windows.", lower_bound=0)
flags.DEFINE_string("label_column", None, "Take the label from this impressions column "
                    "instead of joining conversions; only for a spec without \"labels\".")
flags.DEFINE_float("eval_fraction", 0.1, "Share of requests in the eval split.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("num_shards", 0, "Shards per split and span; 0: one per million rows.",
                     lower_bound=0)
flags.DEFINE_integer("batch_rows", DEFAULT_BATCH_ROWS, "Most rows in one Beam element.",
                     lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Rebuild spans that are already complete.")
flags.DEFINE_enum("on_bad_file", bad_files.FAIL, bad_files.ON_BAD_FILE,
                  "An unreadable log file fails the run, or costs only the days that need it "
                  f"(skip_day: the others are built, exit status {bad_files.EXIT_SKIPPED_DAYS}).")
flags.mark_flags_as_required(["logs", "output", "start_date", "end_date"])


def _date(flag: str) -> datetime.date:
    value = FLAGS[flag].value
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise app.UsageError(f"--{flag}={value!r} is not a date; use YYYY-MM-DD") from None


def main(argv: list[str]) -> None:
    start, end = _date("start_date"), _date("end_date")
    if end < start:
        raise app.UsageError(f"--end_date={end} is before --start_date={start}")
    try:
        spec = resolve_spec(FLAGS.feature_spec)
        pipeline_labels(spec, FLAGS.attribution_days, FLAGS.label_column)
    except (FeatureSpecError, ValueError) as error:
        raise app.UsageError(f"--feature_spec={FLAGS.feature_spec}: {error}") from None
    try:
        summary = build_spans(
            FLAGS.logs, FLAGS.output, start, end, spec,
            attribution_days=FLAGS.attribution_days, label_column=FLAGS.label_column,
            eval_fraction=FLAGS.eval_fraction, num_shards=FLAGS.num_shards,
            overwrite=FLAGS.overwrite, batch_rows=FLAGS.batch_rows,
            on_bad_file=FLAGS.on_bad_file, pipeline_options=PipelineOptions(argv[1:]))
    except INPUT_ERRORS as error:
        raise app.UsageError(str(error)) from None
    logging.info("Run summary: %s", json.dumps(summary.totals))
    print(json.dumps({k: v for k, v in summary.to_dict().items() if k != "spans"}, indent=2))
    if summary.bad_days:
        print("\n".join(bad_files.summary_lines(summary.bad_days)), file=sys.stderr)
        sys.exit(bad_files.EXIT_SKIPPED_DAYS)


if __name__ == "__main__":
    job.run(main, flags_parser=lambda argv: flags.FLAGS(argv, known_only=True))

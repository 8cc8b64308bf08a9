"""Warmup records from logged traffic: ``python -m serving.logged_warmup``.

    python -m serving.logged_warmup --request_logs='/logs/cvr/requests-2026-01-19-*' \\
        --model_name=cvr --output=/tmp/warmup_requests [--max_records=100]

TF Serving replays ``assets.extra/tf_serving_warmup_requests`` (``PredictionLog`` records) when
it loads a version; the request log (:mod:`serving.request_log`) holds the same records. This
tool keeps the last ``--max_records`` logged requests (at most
:data:`serving.warmup.MAX_WARMUP_RECORDS`, TF Serving's limit): real requests, with the sizes
and values production sends, instead of synthetic ones. Each keeps its request only: the
response goes, and so do the version and version label it was answered by (a warmup request
runs against the version being loaded); the model name becomes ``--model_name``. The file is
written under a temporary name and renamed. ``serving.export --warmup_requests=FILE`` ships it
in a new version in place of the synthetic requests.
"""

from __future__ import annotations

import glob
import os
from collections import deque
from collections.abc import Iterable

from absl import app, flags
from tensorflow_serving.apis import prediction_log_pb2

from cvr_tf import job
from cvr_tf.compat import tf
from serving.request_log import read_request_logs
from serving.warmup import MAX_WARMUP_RECORDS

_REQUEST_KINDS = ("predict_log", "classify_log", "regress_log")


def warmup_records(logs: Iterable[prediction_log_pb2.PredictionLog], model_name: str,
                   max_records: int = MAX_WARMUP_RECORDS) -> list[prediction_log_pb2.PredictionLog]:
    """The last ``max_records`` logged Predict/Classify/Regress requests as warmup records.

    Raises:
      ValueError: ``max_records`` is not in ``1..MAX_WARMUP_RECORDS``.
    """
    if not 1 <= max_records <= MAX_WARMUP_RECORDS:
        raise ValueError(f"--max_records must be in 1..{MAX_WARMUP_RECORDS} (TF Serving replays "
                         f"at most {MAX_WARMUP_RECORDS}), got {max_records}")
    kept: deque[prediction_log_pb2.PredictionLog] = deque(maxlen=max_records)
    for log in logs:
        kind = log.WhichOneof("log_type")
        if kind not in _REQUEST_KINDS:
            continue
        record = prediction_log_pb2.PredictionLog()
        request = getattr(record, kind).request
        request.CopyFrom(getattr(log, kind).request)
        request.model_spec.name = model_name
        request.model_spec.ClearField("version")
        request.model_spec.ClearField("version_label")
        kept.append(record)
    return list(kept)


def write_warmup_file(records: Iterable[prediction_log_pb2.PredictionLog], path: str) -> int:
    """Writes the records as a TFRecord file (staged, then renamed); returns how many."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    staging, count = f"{path}.tmp-{os.getpid()}", 0
    with tf.io.TFRecordWriter(staging) as writer:
        for record in records:
            writer.write(record.SerializeToString())
            count += 1
    os.replace(staging, path)
    return count


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("request_logs", None, "Glob of request log files (the models.config "
                        "logging_config's filename_prefix followed by -*).")
    flags.DEFINE_string("model_name", "cvr", "Model name the warmup requests carry.")
    flags.DEFINE_string("output", None, "The warmup file to write.")
    flags.DEFINE_integer("max_records", MAX_WARMUP_RECORDS, "The last this many logged "
                         f"requests (at most {MAX_WARMUP_RECORDS}).")
    flags.mark_flags_as_required(["request_logs", "output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    paths = sorted(glob.glob(FLAGS.request_logs))
    if not paths:
        raise app.UsageError(f"--request_logs={FLAGS.request_logs} matches no file")
    try:
        records = warmup_records(read_request_logs(paths), FLAGS.model_name, FLAGS.max_records)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if not records:
        raise app.UsageError(f"{len(paths)} request log file(s) hold no Predict, Classify or "
                             "Regress request")
    print(f"{write_warmup_file(records, FLAGS.output)} warmup records from {len(paths)} file(s) "
          f"written to {FLAGS.output}")


if __name__ == "__main__":
    define_flags()
    job.run(main)

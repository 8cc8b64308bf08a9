"""The training/serving skew check: logged requests of a day against that day's span."""

import datetime
import subprocess
import sys

import numpy as np
import pytest
from tensorflow_serving.apis import prediction_log_pb2

from cvr_tf import input as input_lib
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import tf
from cvr_tf.features import default_spec
from cvr_tf.model import ModelConfig, build_model
from cvr_tf.vocabulary import window_vocabularies
from serving import skew_check
from tests.serving.conftest import REPO, predict_request

SPEC = default_spec()


@pytest.fixture(scope="module")
def served(simulated_spans, tmp_path_factory):
    """A model dir of the spans' spec and vocabularies, and the eval day's serving columns."""
    path = str(tmp_path_factory.mktemp("model"))
    first, last = simulated_spans.day(0), simulated_spans.day(3)
    vocabularies = window_vocabularies(simulated_spans.spans, SPEC, first, last)
    model_dir_lib.save_model_definition(path, build_model(SPEC, vocabularies, ModelConfig()))
    day = simulated_spans.day(4)
    columns = input_lib.read_columns(simulated_spans.spans, day, day, SPEC,
                                     columns=list(SPEC.serving_columns()))
    return path, day, columns


def _logs(columns, day, rows_per_request=10, drop=()):
    """The columns sent as Predict requests of ``rows_per_request`` rows at noon (UTC) of
    ``day``; every other request leaves out the ``drop`` columns."""
    noon = datetime.datetime.combine(day, datetime.time(12), datetime.UTC).timestamp()
    rows = len(next(iter(columns.values())))
    logs = []
    for index, start in enumerate(range(0, rows, rows_per_request)):
        features = {c: v[start:start + rows_per_request] for c, v in columns.items()
                    if not (index % 2 and c in drop)}
        log = prediction_log_pb2.PredictionLog()
        log.log_metadata.timestamp_secs = int(noon)
        log.predict_log.request.CopyFrom(predict_request(features))
        logs.append(log)
    return logs


def _planted(columns):
    skewed = dict(columns)
    skewed["item_price"] = columns["item_price"] * 4  # prices sent in another currency
    skewed["item_id"] = np.array([f"new-{i}".encode() for i in range(len(columns["item_id"]))],
                                 dtype=object)  # a catalog the model never saw
    return skewed


def test_serving_as_trained_shows_no_skew(served, simulated_spans):
    model_dir, day, columns = served
    skews, serving_rows, span_rows = skew_check.check_skew([], simulated_spans.spans, day,
                                                           model_dir)
    assert serving_rows == 0 and span_rows == 3000
    serving, rows = skew_check.logged_columns(_logs(columns, day), day, SPEC.serving_columns())
    span = input_lib.read_columns(simulated_spans.spans, day, day, SPEC,
                                  columns=list(SPEC.serving_columns()))
    _, _, vocabularies = model_dir_lib.read_model_definition(model_dir)
    skews = skew_check.feature_skew(SPEC, vocabularies, serving, rows, span)
    assert [s.feature for s in skews] == [f.name for f in SPEC.serving_features]
    for skew in skews:
        assert skew.violations(skew_check.Thresholds()) == []
        assert skew.serving_missing == skew.span_missing == 0.0
        assert skew.serving_oov == skew.span_oov and skew.mean_shift_stds in (None, 0.0)
    by_name = {s.feature: s for s in skews}
    assert by_name["user_id"].serving_oov is None  # hashed: no vocabulary
    assert 0 < by_name["item_id"].span_oov < 1  # items new since the training window


def test_planted_skew_fails_with_one_line_per_feature(served, simulated_spans, tmp_path):
    model_dir, day, columns = served
    logs = _logs(_planted(columns), day, drop=("device",))
    other_day = _logs(columns, day + datetime.timedelta(days=1))[:3]  # not the checked day
    path = str(tmp_path / "requests-2026-02-06-x.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs + other_day:
            writer.write(log.SerializeToString())
    job = subprocess.run(
        [sys.executable, "-m", "serving.skew_check", f"--request_logs={tmp_path}/requests-*",
         f"--data_dir={simulated_spans.spans}", f"--date={day}", f"--model_dir={model_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert job.returncode == 1, job.stderr[-2000:]
    lines = [line for line in job.stderr.splitlines() if line.startswith("SKEW ")]
    assert [line.split(":")[0] for line in lines] == [
        "SKEW device", "SKEW item_id", "SKEW item_price_log", "SKEW item_price_bucket"]
    assert lines[0] == ("SKEW device: missing rate 0.500 in serving vs 0.000 in the span "
                        "(limit +-0.05)")
    assert lines[1].startswith("SKEW item_id: out-of-vocabulary rate 1.000 in serving vs 0.")
    assert "mean shifted by +" in lines[2] and "span standard deviations" in lines[2]
    assert "3,000 logged serving rows vs 3,000 span rows" in job.stdout
    assert "| item_id | item_id |" in job.stdout

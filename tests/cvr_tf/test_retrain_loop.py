"""The retraining loop end to end: 10 simulated days, a local gRPC server under load.

Day 7 starts cold (nothing served) and is pushed as version 1; the server then serves the base
while a client thread sends requests throughout. Day 8's warm-started candidate is pushed and
served; day 9's candidate is planted bad (trained on shuffled labels, through the loop's
``train`` hook) and is refused; day 10 runs as ``python -m cvr_tf.retrain`` in a subprocess,
killed with SIGKILL in the middle of its export, then again, which finishes it.
"""

import dataclasses
import datetime
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from cvr_tf import input as input_lib
from cvr_tf import training
from cvr_tf.callbacks import NaNLossError
from cvr_tf.compat import tf
from cvr_tf.features import default_spec
from cvr_tf.model import ModelConfig
from cvr_tf.retraining import loop
from cvr_tf.retraining.config import RetrainConfig, training_template
from pipelines.simulate import simulate_logs
from pipelines.simulator_config import SimulatorConfig
from serving.server import start_server
from tests.serving.conftest import predict_request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRST_DAY = datetime.date(2026, 2, 2)
# A small world that a few training steps can learn something of (AUC ~0.65 on a day).
WORLD = SimulatorConfig(num_items=4000, num_queries=500, num_users=3000, num_topics=40)
TRAINING = {"model": ModelConfig(backbone="mlp", vocab_scale=0.25, embedding_dim_scale=0.5),
            "batch_size": 256, "epochs": 1, "log_every_steps": 50}
LOOP = {"train_days": 5, "bless_tolerance": 0.03, "batch_scope": "none"}


def day(index: int) -> datetime.date:
    """The day ``index`` of the simulation, counted from 1."""
    return FIRST_DAY + datetime.timedelta(days=index - 1)


def _config(root, index: int) -> RetrainConfig:
    return RetrainConfig(logs=str(root / "logs"), work_dir=str(root / "work"),
                         export_base=str(root / "export"), date=day(index),
                         training=training_template(str(root / "spans"), **TRAINING), **LOOP)


def train_on_shuffled_labels(config: training.TrainConfig) -> dict:
    """The planted bad candidate: trained from scratch on a copy of the spans whose training
    window's labels are permuted (same base rate, no signal)."""
    copy = f"{config.model_dir}-shuffled-spans"
    shutil.copytree(config.data_dir, copy)
    rng = np.random.default_rng(0)
    label = default_spec().label
    for span in input_lib.list_spans(copy, config.train_start, config.train_end):
        for name in sorted(os.listdir(span)):
            if not name.endswith(input_lib.RECORD_SUFFIX):
                continue
            path = os.path.join(span, name)
            examples = [tf.train.Example.FromString(record.numpy()) for record in
                        tf.data.TFRecordDataset(path, compression_type="GZIP")]
            labels = rng.permutation([e.features.feature[label].int64_list.value[0]
                                      for e in examples])
            with tf.io.TFRecordWriter(path, options="GZIP") as writer:
                for example, value in zip(examples, labels, strict=True):
                    example.features.feature[label].int64_list.value[:] = [int(value)]
                    writer.write(example.SerializeToString())
    return training.train(dataclasses.replace(config, data_dir=copy, warm_start_from=""))


class Load:
    """A client thread sending one search request after another, recording every answer."""

    def __init__(self, target: str, features: dict) -> None:
        self.request = predict_request(features)
        self.target = target
        self.versions: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self._stop.is_set():
                try:
                    response = stub.Predict(self.request, timeout=60)
                except grpc.RpcError as error:
                    self.failures.append(f"{error.code()}: {error.details()}")
                else:
                    self.versions.append(response.model_spec.version.value)
                time.sleep(0.01)

    def wait_for_version(self, version: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.versions and self.versions[-1] == version):
            assert time.monotonic() < deadline, f"version {version} not served in time"
            assert not self.failures, self.failures
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def _flagfile(config: RetrainConfig, path) -> str:
    lines = [f"--logs={config.logs}", f"--data_dir={config.training.data_dir}",
             f"--work_dir={config.work_dir}", f"--export_base={config.export_base}",
             f"--date={config.date}", f"--train_days={config.train_days}",
             f"--bless_tolerance={config.bless_tolerance}", f"--batch_scope={config.batch_scope}",
             "--backbone=mlp", "--vocab_scale=0.25", "--embedding_dim_scale=0.5",
             f"--batch_size={TRAINING['batch_size']}", f"--epochs={TRAINING['epochs']}",
             f"--log_every_steps={TRAINING['log_every_steps']}"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _kill_during_export(config: RetrainConfig, flagfile: str) -> list[str]:
    """Runs the job in a subprocess and SIGKILLs it once its export's staging dir appears;
    returns what the model base held at that moment."""
    model_base = os.path.join(config.export_base, "cvr")
    job = subprocess.Popen([sys.executable, "-m", "cvr_tf.retrain", f"--flagfile={flagfile}"],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while not any(name.startswith(".tmp-") for name in os.listdir(model_base)):
            assert job.poll() is None, job.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the job never reached its export"
            time.sleep(0.005)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
        job.stderr.close()
    return sorted(os.listdir(model_base))


def test_three_days_of_retraining_against_a_served_model_under_load(tmp_path):
    simulate_logs(tmp_path / "logs", FIRST_DAY, 10, requests_per_day=600,
                  candidates_per_request=10, config=WORLD)
    first = loop.retrain(_config(tmp_path, 7))
    assert first["decision"]["blessed"] and first["exported_version"] == 1
    assert first["current"] is None and first["candidate"]["warm_start"] == "cold start"
    assert first["spans_built"] == [day(i).isoformat() for i in range(2, 8)]

    spec = default_spec()
    holdout = input_lib.read_columns(str(tmp_path / "spans"), day(7), day(7), spec)
    features = {c: holdout[c][:10] for c in spec.serving_columns()}
    models_config = tmp_path / "export" / "models.config"
    with start_server(str(models_config), file_system_poll_wait_seconds=0.2) as server:
        load = Load(server.target, features)
        try:
            load.wait_for_version(1)
            second = loop.retrain(_config(tmp_path, 8))
            assert second["decision"]["blessed"], second["decision"]
            assert second["exported_version"] == 2
            assert second["current"]["version"] == 1
            assert second["candidate"]["warm_start"].endswith("models/" + day(7).isoformat())
            # Warm-started on the one day its source has not seen.
            assert (second["candidate"]["train_start"], second["candidate"]["train_end"]) == (
                day(7).isoformat(), day(7).isoformat())
            load.wait_for_version(2)

            bad = loop.retrain(_config(tmp_path, 9), train=train_on_shuffled_labels)
            assert not bad["decision"]["blessed"] and bad["exported_version"] is None
            failed = {c["name"]: c["detail"] for c in bad["decision"]["checks"] if not c["passed"]}
            assert "beyond tolerance 0.03" in failed["no_worse"], failed
            assert sorted(os.listdir(tmp_path / "export" / "cvr")) == ["1", "2"]

            config = _config(tmp_path, 10)
            at_kill = _kill_during_export(config, _flagfile(config, tmp_path / "day10.flags"))
            assert [n for n in at_kill if not n.startswith(".")] == ["1", "2"]
            assert loop.report_lib.read_report(config.work_dir, day(10)) is None
            last = loop.retrain(config)  # cleans the dead export's staging, reuses the candidate
            assert last["decision"]["blessed"] and last["exported_version"] == 3
            assert last["current"]["version"] == 2  # day 9 pushed nothing
            assert sorted(os.listdir(tmp_path / "export" / "cvr")) == ["1", "2", "3"]
            load.wait_for_version(3)
        finally:
            load.stop()
    assert load.failures == []
    assert set(load.versions) == {1, 2, 3}
    assert load.versions == sorted(load.versions)  # each push replaced the one before

    # A finished day is a no-op; a day without logs fails in one line and pushes nothing.
    assert loop.retrain(config) == last
    with pytest.raises(loop.RetrainError, match="no span for --date=2026-02-12"):
        loop.retrain(_config(tmp_path, 11))
    assert sorted(os.listdir(tmp_path / "export" / "cvr")) == ["1", "2", "3"]
    history = loop.report_lib.history(config.work_dir)
    assert [(r["date"], r["exported_version"]) for r in history] == [
        (day(7).isoformat(), 1), (day(8).isoformat(), 2), (day(9).isoformat(), None),
        (day(10).isoformat(), 3)]
    with open(os.path.join(loop.report_lib.report_dir(config.work_dir, day(9)),
                           "retrain_report.md"), encoding="utf-8") as handle:
        assert "Decision: **not blessed**: the serving base is untouched." in handle.read()


def test_a_diverged_candidate_is_reported_and_never_pushed(simulated_spans, tmp_path):
    shutil.copytree(simulated_spans.spans, tmp_path / "spans")
    config = RetrainConfig(logs=simulated_spans.logs, work_dir=str(tmp_path / "work"),
                           export_base=str(tmp_path / "export"), date=simulated_spans.day(5),
                           training=training_template(str(tmp_path / "spans")), train_days=3)

    def diverge(train_config):
        assert (train_config.train_start, train_config.train_end) == (
            simulated_spans.day(2), simulated_spans.day(4))
        raise NaNLossError("the loss is nan at step 3")

    os.makedirs(config.work_dir)
    with open(os.path.join(config.work_dir, loop.LOCK_FILE), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run of the loop
        with pytest.raises(loop.RetrainError, match="another retraining run holds"):
            loop.retrain(config, train=diverge)
    report = loop.retrain(config, train=diverge)
    assert report["decision"]["reasons"] == ["training diverged: the loss is nan at step 3"]
    assert report["exported_version"] is None and report["spans_built"] == []
    assert not os.path.exists(tmp_path / "export" / "cvr")
    with open(os.path.join(loop.report_lib.report_dir(config.work_dir, config.date),
                           "retrain_report.md"), encoding="utf-8") as handle:
        assert "- FAIL trained: training diverged" in handle.read()
    with pytest.raises(loop.RetrainError, match="--slice_by: the feature spec reads no column"):
        loop.retrain(dataclasses.replace(config, date=simulated_spans.day(4), slice_by="nope"))
    assert not os.path.exists(loop.candidate_dir(config.work_dir, simulated_spans.day(4)))


def test_a_corrupt_log_file_fails_the_day_in_one_line_naming_it(simulated_spans, tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(simulated_spans.logs, logs)
    (bad,) = (logs / "impressions" / f"date={simulated_spans.day(5)}").glob("*.parquet")
    bad.write_bytes(b"")
    config = RetrainConfig(logs=str(logs), work_dir=str(tmp_path / "work"),
                           export_base=str(tmp_path / "export"), date=simulated_spans.day(5),
                           training=training_template(str(tmp_path / "spans")), train_days=3)
    message = rf"impressions file {re.escape(str(bad))} is empty \(0 bytes\)"
    with pytest.raises(loop.RetrainError, match=message):
        loop.retrain(config)
    assert not os.path.exists(tmp_path / "export")

"""Distributed training on localhost clusters: multi-worker mirrored and parameter server.

Every task is a real ``python -m cvr_tf.train`` process with its own TF_CONFIG, on free ports
of 127.0.0.1, as on a real cluster. (``mirrored`` on one CPU is tested in test_training.py.)
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from cvr_tf import distribute, training
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import keras, tf
from cvr_tf.embedding import FeatureEmbedding
from cvr_tf.features import default_spec

STEPS = 4
PROCESS_SECONDS = 300


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _cluster(**task_counts: int) -> dict[str, list[str]]:
    ports = iter(_free_ports(sum(task_counts.values())))
    return {task: [f"127.0.0.1:{next(ports)}" for _ in range(count)]
            for task, count in task_counts.items()}


class _Tasks:
    """The cluster's processes, each logging to ``<log_dir>/<type><index>.log``.

    A context manager: on exit, whatever failed, it kills the tasks still running.
    """

    def __init__(self, spans, model_dir, strategy: str, cluster: dict[str, list[str]], log_dir):
        self.command = [
            sys.executable, "-m", "cvr_tf.train", f"--data_dir={spans.spans}",
            f"--model_dir={model_dir}", f"--train_start={spans.day(0)}",
            f"--train_end={spans.day(3)}", f"--eval_start={spans.day(4)}",
            f"--eval_end={spans.day(4)}", f"--steps={STEPS}", "--batch_size=64",
            "--backbone=mlp", "--log_every_steps=2", f"--strategy={strategy}",
            "--group_batches=on",  # request-grouped input under every multi-process strategy
            # Every optimizer option must work across tasks too (the tables: Lazy Adam's row
            # updates, on the parameter servers' shards of each table).
            "--optimizer=adamw", "--weight_decay=0.01", "--embedding_learning_rate=0.05",
            "--embedding_l2=1e-4", "--clipnorm=1.0", "--lr_schedule=cosine", "--warmup_steps=2"]
        self.cluster = cluster
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> "_Tasks":
        return self

    def __exit__(self, *exc_info) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    def start(self, task_type: str, index: int) -> str:
        """Starts the task; returns its name."""
        name = f"{task_type}{index}"
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": self.cluster, "task": {"type": task_type, "index": index}}))
        with open(self.log_dir / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(self.command, env=env, stdout=log,
                                                    stderr=subprocess.STDOUT)
        return name

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def wait(self, name: str) -> int:
        try:
            return self.processes[name].wait(timeout=PROCESS_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {PROCESS_SECONDS}s:\n{self.log(name)[-3000:]}")

    def assert_succeeded(self, name: str) -> None:
        assert self.wait(name) == 0, f"{name} failed:\n{self.log(name)[-3000:]}"



def _final_progress(log: str) -> tuple[float, float]:
    """(loss, auc) of the last progress line of a task's log."""
    loss, auc = re.findall(rf"step {STEPS}/{STEPS}  loss (\S+)  auc (\S+)", log)[-1]
    return float(loss), float(auc)


def _checkpoint_values(path: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
            if name.endswith("VARIABLE_VALUE")}


def test_multi_worker_mirrored_workers_train_the_same_weights(simulated_spans, tmp_path):
    model_dir = tmp_path / "model"
    with _Tasks(simulated_spans, model_dir, "multi_worker_mirrored", _cluster(worker=2),
                tmp_path) as tasks:
        workers = [tasks.start("worker", 0), tasks.start("worker", 1)]
        for name in workers:
            tasks.assert_succeeded(name)

    chief = model_dir_lib.latest_checkpoint(model_dir)
    other = tf.train.latest_checkpoint(model_dir / ".worker-1" / "checkpoints")
    assert chief.endswith(f"ckpt-{STEPS}") and other.endswith(f"ckpt-{STEPS}")
    chief_values, other_values = _checkpoint_values(chief), _checkpoint_values(other)
    assert chief_values.keys() == other_values.keys()
    assert chief_values["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"] == STEPS
    for name, value in chief_values.items():
        np.testing.assert_allclose(other_values[name], value, atol=1e-6, err_msg=name)
    # Both log the same global loss and AUC (fit's default reduction would sum them: AUC > 1).
    progress = [_final_progress(tasks.log(name)) for name in workers]
    assert progress[0] == progress[1] and 0 < progress[0][1] <= 1
    metrics = model_dir_lib.read_json(model_dir / "metrics.json")
    assert metrics["train_steps"] == STEPS and metrics["config"]["strategy"] == (
        "multi_worker_mirrored")


def test_parameter_server_partitions_tables_across_ps_tasks(simulated_spans, tmp_path):
    model_dir = tmp_path / "model"
    with _Tasks(simulated_spans, model_dir, "parameter_server",
                _cluster(chief=1, worker=1, ps=2), tmp_path) as tasks:
        servers = [tasks.start("ps", 0), tasks.start("ps", 1), tasks.start("worker", 0)]
        tasks.assert_succeeded(tasks.start("chief", 0))
        assert all(tasks.processes[name].poll() is None for name in servers), (
            "worker and ps tasks serve until they are stopped")
        for name in servers:
            tasks.processes[name].send_signal(signal.SIGTERM)
        for name in servers:
            assert tasks.wait(name) == 0, f"{name} did not stop cleanly:\n{tasks.log(name)}"

    metrics = model_dir_lib.read_json(model_dir / "metrics.json")
    assert metrics["train_steps"] == STEPS and metrics["config"]["strategy"] == "parameter_server"
    ps_devices = ["/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"]
    devices = metrics["embedding_table_devices"]
    # user_id's 50000 x 32 floats (6.4 MB) are cut in two, one shard on each ps task.
    assert sorted(devices["feature_embedding/user_id"]) == ps_devices
    assert {d for shards in devices.values() for d in shards} == set(ps_devices)
    assert _final_progress(tasks.log("chief0"))[0] > 0
    # The partitioned checkpoint restores into an unpartitioned model with the same scores.
    assert model_dir_lib.latest_checkpoint(model_dir).endswith(f"ckpt-{STEPS}")
    model = model_dir_lib.load_model(model_dir)
    tables = {f"{layer.name}/{table}": variable for layer in model.submodules
              if isinstance(layer, FeatureEmbedding) for table, variable in layer.tables.items()}
    assert tables.keys() == devices.keys()
    for name, variable in tables.items():  # ceil(bytes / MIN_SHARD_BYTES) shards, 2 at most
        size = variable.shape.num_elements() * variable.dtype.size
        assert len(devices[name]) == (2 if size > distribute.MIN_SHARD_BYTES else 1), name
    day = simulated_spans.day(4)
    evaluated = training.evaluate_window(model, simulated_spans.spans, day, day, default_spec())
    assert evaluated["logloss"] == pytest.approx(metrics["eval"]["logloss"], abs=1e-6)
    keras.backend.clear_session()


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("begin")

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append((batch, round(float(logs["loss"]), 6)))

    def on_train_end(self, logs=None):
        self.calls.append("end")


class _LastLoss(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epoch_losses = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_losses.append(round(float(logs["loss"]), 6))


def test_epoch_end_batch_hooks_replay_each_step_of_an_epoch():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    recorder, last = _Recorder(), _LastLoss()
    hooks = distribute.EpochEndBatchHooks([recorder], steps_per_epoch=3)
    data = tf.data.Dataset.from_tensors((tf.ones([4, 2]), tf.zeros([4, 1]))).repeat()
    model.fit(data, epochs=2, steps_per_epoch=3, callbacks=[hooks, last], verbose=0)
    assert not hooks._implements_train_batch_hooks()  # what ParameterServerStrategy requires
    assert recorder.model is model
    first, second = last.epoch_losses
    assert recorder.calls == ["begin", (0, first), (1, first), (2, first), (0, second),
                              (1, second), (2, second), "end"]


@pytest.mark.parametrize("cluster, expected", [
    (None, "default"),
    ({"worker": ["a:1", "b:1"]}, "multi_worker_mirrored"),
    ({"chief": ["a:1"], "worker": ["b:1"]}, "multi_worker_mirrored"),
    ({"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]}, "parameter_server"),
])
def test_auto_strategy_follows_tf_config(monkeypatch, cluster, expected):
    if cluster is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                    "task": {"type": "worker", "index": 0}}))
    assert distribute.resolve_strategy_name("auto") == expected
    assert distribute.is_server_task() == (expected == "parameter_server")


def test_bad_strategy_settings_name_the_fix(monkeypatch):
    with pytest.raises(ValueError, match="unknown --strategy 'horovod'; use one of auto"):
        distribute.resolve_strategy_name("horovod")
    monkeypatch.setenv("TF_CONFIG", "{cluster: 1}")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["127.0.0.1:1"]},
                                                "task": {"type": "chief", "index": 0}}))
    with pytest.raises(ValueError, match="parameter_server needs TF_CONFIG with 'ps' tasks"):
        distribute.make_strategy("parameter_server")

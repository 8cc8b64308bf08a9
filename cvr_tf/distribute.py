"""Distributed training: ``--strategy`` picks a ``tf.distribute`` strategy, TF_CONFIG the cluster.

Strategies:

- ``default``: one device; no cluster.
- ``mirrored``: synchronous data parallelism over the local GPUs (or the CPU); no cluster.
- ``multi_worker_mirrored``: synchronous all-reduce across machines; every task trains.
- ``parameter_server``: asynchronous workers; variables live on ``ps`` tasks, each cut into
  ``ceil(bytes / MIN_SHARD_BYTES)`` shards, at most one per ps task, so that the big embedding
  tables are partitioned over all of them; a chief drives the training.
- ``auto``: ``parameter_server`` when TF_CONFIG has ``ps`` tasks, ``multi_worker_mirrored``
  when it has several workers, ``mirrored`` with several GPUs, else ``default``.

Running at scale. Every process runs the same command line; only TF_CONFIG differs. ``--data_dir``
and ``--model_dir`` must be one file system every task sees (GCS, S3, HDFS, NFS), and
``--batch_size`` is always the global batch of one training step.

``mirrored``, one machine with several GPUs, no TF_CONFIG; each step's batch is split over
the GPUs::

    python -m cvr_tf.train --flagfile=run.flags --strategy=mirrored

``multi_worker_mirrored``, N machines: start the job on each, with TF_CONFIG listing all workers
and this task's index (0 on host0, 1 on host1)::

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 0}}' \\
        python -m cvr_tf.train --flagfile=run.flags --strategy=multi_worker_mirrored

Each worker reads its own part of the input files (Keras shards them) and the gradients are
all-reduced, so the weights stay identical on every worker. Worker 0 is the chief: it writes
``model_config.json``, ``vocab/``, ``checkpoints/``, ``logs/`` and ``metrics.json`` (see
:mod:`cvr_tf.model_dir`); worker ``i > 0`` writes its copy of the final checkpoint to
``<model_dir>/.worker-<i>/checkpoints/``. Every step waits for every worker, so the job cannot go
on without one: start all of them again with the same flags and they resume from ``backup/``.

``parameter_server``: start the ps tasks and the workers first (they serve until stopped; SIGTERM
or SIGINT ends them with status 0), then the chief, which runs the training and exits when done;
stop the servers then::

    CLUSTER='"cluster": {"chief": ["c0:2222"], "worker": ["w0:2222", "w1:2222"],
                         "ps": ["p0:2222", "p1:2222"]}'
    # first on p0, p1, w0 and w1, each with its own type ("ps" or "worker") and index; on p0:
    TF_CONFIG="{$CLUSTER, \\"task\\": {\\"type\\": \\"ps\\", \\"index\\": 0}}" \\
        python -m cvr_tf.train --flagfile=run.flags --strategy=parameter_server
    # on c0:
    TF_CONFIG="{$CLUSTER, \\"task\\": {\\"type\\": \\"chief\\", \\"index\\": 0}}" \\
        python -m cvr_tf.train --flagfile=run.flags --strategy=parameter_server

The chief schedules steps of ``--batch_size`` examples on whichever worker is free; each
worker keeps every ``num_workers``-th batch of the input. Workers and ps tasks ignore the
training flags, but ``train.py`` still requires ``--data_dir``, ``--model_dir`` and
``--train_end``: passing the chief's command line everywhere is simplest. Only the chief
writes to ``--model_dir``. Keras runs callbacks only between epochs here, so the chief trains in
epochs of ``gcd(steps, --log_every_steps, --eval_every_steps)`` steps and backs up to
``backup/`` at each epoch end, instead of every ``--checkpoint_every_steps``. The final
checkpoint holds each table whole, whatever its partitioning: it restores into an unpartitioned
model (export, warm start). ``metrics.json`` records the devices of each embedding table's
shards (``embedding_table_devices``). A lost worker's steps are rescheduled on the others; a
lost ps task or chief stops the job: restart them with the same flags to resume from
``backup/``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from absl import logging

from cvr_tf.compat import keras, tf
from cvr_tf.embedding import FeatureEmbedding

STRATEGIES = ("auto", "default", "mirrored", "multi_worker_mirrored", "parameter_server")
# Under parameter_server a variable gets ceil(bytes / MIN_SHARD_BYTES) shards, at most one per ps.
MIN_SHARD_BYTES = 256 << 10


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable (empty when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw[:200]!r}") from error


def resolve_strategy_name(name: str) -> str:
    """The concrete strategy ``auto`` stands for here."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown --strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    cluster = tf_config().get("cluster", {})
    if cluster.get("ps"):
        return "parameter_server"
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return "multi_worker_mirrored"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def is_server_task() -> bool:
    """True for the ``worker`` and ``ps`` tasks of a parameter-server cluster."""
    config = tf_config()
    return bool(config.get("cluster", {}).get("ps")) and (
        config.get("task", {}).get("type") in ("worker", "ps"))


def serve_cluster_task() -> None:
    """Runs this worker/ps task's ``tf.distribute.Server`` until SIGTERM or SIGINT, then returns."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    logging.info("Serving %s task %d of the parameter-server cluster.", resolver.task_type,
                 resolver.task_id)
    if resolver.task_type == "worker":
        # Workers only run functions the chief schedules; they must not grab all GPU memory.
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id,
                                  protocol=resolver.rpc_layer or "grpc", start=True)
    # server.join() never returns and blocks signal handlers: wait on an event they set instead.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    logging.info("Stopped %s task %d (%s).", resolver.task_type, resolver.task_id, server.target)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for ``--strategy=name`` (see the module docstring)."""
    name = resolve_strategy_name(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
    if not num_ps:
        raise ValueError("--strategy=parameter_server needs TF_CONFIG with 'ps' tasks, e.g. "
                         '{"cluster": {"chief": [...], "worker": [...], "ps": [...]}, '
                         '"task": {"type": "chief", "index": 0}}')
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=MIN_SHARD_BYTES, max_shards=num_ps)
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


def embedding_table_devices(model: keras.Model) -> dict[str, list[str]]:
    """``<embedding layer>/<table>`` -> the device of each shard of the table's variable.

    Under ``parameter_server`` a table of more than ``MIN_SHARD_BYTES`` is a ``ShardedVariable``
    with one shard per ps task (fewer for tables below ``num_ps * MIN_SHARD_BYTES``); elsewhere
    each table is one variable (one device string).
    """
    devices = {}
    for layer in model.submodules:
        if isinstance(layer, FeatureEmbedding):
            for table, variable in layer.tables.items():
                shards = (variable.variables
                          if isinstance(variable, tf.__internal__.distribute.ShardedVariable)
                          else [variable])
                devices[f"{layer.name}/{table}"] = [shard.device for shard in shards]
    return devices


class EpochEndBatchHooks(keras.callbacks.Callback):
    """Replays an epoch's batch ends to step-level callbacks at the epoch's end.

    Keras refuses batch-level callbacks under ``ParameterServerStrategy``: steps run
    asynchronously on the workers, and their results exist only once the coordinator joins, at
    the end of each epoch. The training job therefore trains in epochs of ``steps_per_epoch``
    steps, chosen so that every logging or evaluation step ends an epoch, and wraps its
    step-level callbacks in this one. At an epoch's end every step of it has run, so the wrapped
    callbacks see ``steps_per_epoch`` batch ends with that epoch's final logs.

    Args:
      callbacks: callbacks that implement ``on_train_begin``, ``on_train_batch_begin``,
        ``on_train_batch_end`` and ``on_train_end`` (their other hooks are not called). The
        first step of an epoch begins with the epoch, so a callback timing its steps from
        begin to end sees the epoch's wall time.
      steps_per_epoch: the ``steps_per_epoch`` given to ``fit``.
    """

    def __init__(self, callbacks: Sequence[keras.callbacks.Callback], steps_per_epoch: int
                 ) -> None:
        super().__init__()
        self.callbacks = list(callbacks)
        self.steps_per_epoch = steps_per_epoch

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:  # the epoch's first step begins with it
            callback.on_train_batch_begin(0, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for batch in range(self.steps_per_epoch):
            for callback in self.callbacks:
                if batch:  # the others begin where the replay of the one before ended
                    callback.on_train_batch_begin(batch, logs)
                callback.on_train_batch_end(batch, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_train_end(logs)

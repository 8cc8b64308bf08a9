"""Server-side batching (``--enable_batching``): merge concurrent requests, run once, split.

This is TF Serving's shared batch scheduler in miniature, configured by a
:class:`~serving.batching.BatchingConfig` (``TF_SERVING_DEFAULTS`` without a file). Each (model,
version, signature) has a :class:`BatchQueue`; one pool of ``num_batch_threads`` threads serves
every queue. A request becomes a task appended to the queue's newest open batch when it fits
(the merged size stays ``<= max_batch_size`` and the inputs' non-batch dimensions agree, unless
``pad_variable_length_inputs``), otherwise it opens a new batch. A batch runs when it is full,
when a newer batch was opened behind it, or ``batch_timeout_micros`` after its first task
arrived. Running a batch concatenates every input along dimension 0, pads the batch up to the
next of ``allowed_batch_sizes`` with copies of its first row, calls the signature once, and hands
each task its slice of every output.

Refusals use TF Serving's codes and messages: a request larger than ``max_batch_size`` is
``INVALID_ARGUMENT`` ("Task size ... is larger than maximum input batch size ..."), and a queue
already holding ``max_enqueued_batches`` batches answers ``UNAVAILABLE`` (retry later).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
import numpy as np

from serving.batching import BatchingConfig
from serving.errors import ServingError

RunFunction = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchStats:
    """Work done by a scheduler since it started.

    Attributes:
        batches: Merged batches run.
        tasks: Requests served by them.
        rows: Request rows (candidates) in them.
        padded_rows: Rows after padding to ``allowed_batch_sizes``.
    """

    batches: int = 0
    tasks: int = 0
    rows: int = 0
    padded_rows: int = 0


class _Task:
    """One request waiting in a queue."""

    __slots__ = ("abandoned", "done", "error", "inputs", "outputs", "shape_key", "size")

    def __init__(self, inputs: Mapping[str, np.ndarray], size: int) -> None:
        self.inputs = inputs
        self.size = size
        self.shape_key = tuple(
            sorted((name, array.shape[1:], array.dtype.str) for name, array in inputs.items())
        )
        self.done = threading.Event()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: ServingError | None = None
        self.abandoned = False


class _Batch:
    """Tasks that will run together."""

    __slots__ = ("opened_at", "shape_key", "size", "tasks")

    def __init__(self, task: _Task, now: float) -> None:
        self.tasks = [task]
        self.size = task.size
        self.shape_key = task.shape_key
        self.opened_at = now


def _task_size(inputs: Mapping[str, np.ndarray]) -> int:
    sizes = set()
    for name, array in inputs.items():
        if array.ndim == 0:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Batching Run() input tensors must have at least one dimension; input '{name}' "
                "is a scalar. Send it with a batch dimension or disable --enable_batching",
            )
        sizes.add(array.shape[0])
    if len(sizes) != 1:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Batching Run() input tensors must have equal 0th-dimension size; got "
            + ", ".join(f"{name}={array.shape[0]}" for name, array in sorted(inputs.items())),
        )
    return sizes.pop()


def _pad_to(array: np.ndarray, trailing: tuple[int, ...]) -> np.ndarray:
    """Pads the non-batch dimensions of ``array`` up to ``trailing`` with its first element."""
    if array.shape[1:] == trailing:
        return array
    fill = array.flat[0] if array.size else np.zeros((), array.dtype).item()
    padded = np.full((array.shape[0], *trailing), fill, dtype=array.dtype)
    padded[tuple(slice(0, size) for size in array.shape)] = array
    return padded


def _merge(tasks: list[_Task], options: BatchingConfig) -> tuple[dict[str, np.ndarray], int]:
    """Concatenates the tasks' inputs and pads the batch to an allowed size."""
    total = sum(task.size for task in tasks)
    target = options.padded_size(total)
    merged = {}
    for name in tasks[0].inputs:
        arrays = [task.inputs[name] for task in tasks]
        if options.pad_variable_length_inputs:
            if len({array.ndim for array in arrays}) != 1:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{name}' has different ranks across batched requests; padding needs "
                    "equal ranks",
                )
            trailing = tuple(np.max([array.shape[1:] for array in arrays], axis=0).tolist())
            arrays = [_pad_to(array, trailing) for array in arrays]
        batch = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        if target > total:
            batch = np.concatenate([batch, np.repeat(batch[:1], target - total, axis=0)])
        merged[name] = batch
    return merged, target


class BatchQueue:
    """The batching queue of one (model, version, signature); created by the scheduler."""

    def __init__(self, scheduler: BatchScheduler, run: RunFunction, name: str,
                 observe: Callable[[int], None] | None = None) -> None:
        self.name = name
        self._scheduler = scheduler
        self._run = run
        self._observe = observe
        self.batches: collections.deque[_Batch] = collections.deque()

    def submit(
        self, inputs: Mapping[str, np.ndarray], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Queues a request, waits for its batch to run, and returns the request's outputs.

        Args:
            inputs: Validated input alias -> array, all batched along dimension 0.
            deadline: ``time.monotonic()`` when the caller stops waiting.

        Returns:
            Output alias -> this request's rows of the merged outputs.

        Raises:
            ServingError: ``INVALID_ARGUMENT`` for a request larger than ``max_batch_size`` or
                unbatchable inputs, ``UNAVAILABLE`` when the queue is full or the server is
                stopping, ``DEADLINE_EXCEEDED`` when ``deadline`` passes first, or the error
                the merged run raised.
        """
        size = _task_size(inputs)
        limit = self._scheduler.options.max_batch_size
        if size > limit:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {size} is larger than maximum input batch size {limit}; split the "
                f"request into requests of at most {limit} rows or raise max_batch_size",
            )
        task = _Task(inputs, size)
        self._scheduler.enqueue(self, task)
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not task.done.wait(remaining):
            task.abandoned = True
            raise ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request's deadline passed while it waited in batching queue {self.name}",
            )
        if task.error is not None:
            raise task.error
        return task.outputs

    def process(self, batch: _Batch) -> None:
        """Runs one batch and completes its tasks (called by a batch thread)."""
        tasks = [task for task in batch.tasks if not task.abandoned]
        try:
            if not tasks:
                return
            merged, padded = _merge(tasks, self._scheduler.options)
            rows = sum(task.size for task in tasks)
            self._scheduler.count(len(tasks), rows, padded)
            if self._observe is not None:
                self._observe(rows)
            outputs = self._run(merged)
            for name, output in outputs.items():
                if output.ndim == 0 or output.shape[0] != padded:
                    raise ServingError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"output '{name}' of {self.name} has shape {list(output.shape)}, not "
                        f"[{padded}, ...]: server-side batching needs every output batched along "
                        "dimension 0; serve this model without --enable_batching",
                    )
            start = 0
            for task in tasks:
                stop = start + task.size
                task.outputs = {name: output[start:stop] for name, output in outputs.items()}
                start = stop
        except ServingError as error:
            for task in tasks:
                task.error = error
        except Exception as error:  # reported to every waiting request
            for task in tasks:
                task.error = ServingError(grpc.StatusCode.INTERNAL, f"batch failed: {error!r}")
        finally:
            for task in tasks:
                task.done.set()


class BatchScheduler:
    """A pool of batch threads shared by every :class:`BatchQueue`.

    Args:
        options: The batching parameters (``scope`` is ignored).

    Raises:
        ValueError: parameters the server cannot batch with
            (:meth:`~serving.batching.BatchingConfig.check_server_side`).
    """

    def __init__(self, options: BatchingConfig) -> None:
        options.check_server_side()
        self.options = options
        self._timeout_s = options.batch_timeout_micros / 1e6
        self._condition = threading.Condition()
        self._queues: list[BatchQueue] = []
        self._next_queue = 0
        self._stopped = False
        self._stats = BatchStats()
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-thread-{index}", daemon=True)
            for index in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def stats(self) -> BatchStats:
        """Batches, requests and rows run so far."""
        with self._condition:
            return self._stats

    def count(self, tasks: int, rows: int, padded_rows: int) -> None:
        """Records one merged batch (called by a queue before running it)."""
        with self._condition:
            stats = self._stats
            self._stats = BatchStats(
                stats.batches + 1,
                stats.tasks + tasks,
                stats.rows + rows,
                stats.padded_rows + padded_rows,
            )

    def add_queue(self, run: RunFunction, name: str,
                  observe: Callable[[int], None] | None = None) -> BatchQueue:
        """Creates the queue whose batches run through ``run`` (merged inputs -> outputs);
        ``observe`` is told the rows of every batch it runs (before padding)."""
        queue = BatchQueue(self, run, name, observe)
        with self._condition:
            self._queues.append(queue)
        return queue

    def remove_queue(self, queue: BatchQueue) -> None:
        """Drops a queue (its version was unloaded; no request is in flight on it any more)."""
        with self._condition:
            self._queues.remove(queue)

    def enqueue(self, queue: BatchQueue, task: _Task) -> None:
        """Adds a task to the queue's open batch or a new one (see the module docstring)."""
        options = self.options
        with self._condition:
            if self._stopped:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            last = queue.batches[-1] if queue.batches else None
            if (
                last is not None
                and last.size + task.size <= options.max_batch_size
                and (options.pad_variable_length_inputs or last.shape_key == task.shape_key)
            ):
                last.tasks.append(task)
                last.size += task.size
            elif len(queue.batches) >= options.max_enqueued_batches:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full "
                    f"({queue.name}: {len(queue.batches)} batches, max_enqueued_batches="
                    f"{options.max_enqueued_batches}); retry with backoff",
                )
            else:
                queue.batches.append(_Batch(task, time.monotonic()))
            self._condition.notify()

    def _pop_ready(self, now: float) -> tuple[BatchQueue, _Batch] | None:
        count = len(self._queues)
        for offset in range(count):
            queue = self._queues[(self._next_queue + offset) % count]
            if not queue.batches:
                continue
            first = queue.batches[0]
            if (
                len(queue.batches) > 1
                or first.size >= self.options.max_batch_size
                or now - first.opened_at >= self._timeout_s
            ):
                self._next_queue = (self._next_queue + offset + 1) % count
                return queue, queue.batches.popleft()
        return None

    def _next_wake(self, now: float) -> float | None:
        waits = [
            queue.batches[0].opened_at + self._timeout_s - now
            for queue in self._queues
            if queue.batches
        ]
        return max(min(waits), 0.0) if waits else None

    def _work(self) -> None:
        while True:
            with self._condition:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    picked = self._pop_ready(now)
                    if picked is not None:
                        break
                    self._condition.wait(self._next_wake(now))
            queue, batch = picked
            queue.process(batch)

    def stop(self) -> None:
        """Stops the batch threads; tasks still queued fail with ``UNAVAILABLE``."""
        with self._condition:
            self._stopped = True
            pending = [
                task for queue in self._queues for batch in queue.batches for task in batch.tasks
            ]
            for queue in self._queues:
                queue.batches.clear()
            self._condition.notify_all()
        for task in pending:
            task.error = ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            task.done.set()
        for thread in self._threads:
            thread.join()

"""One loaded version of a model: its signatures, their metadata, and the requests in flight on it.

A :class:`Servable` is what TF Serving calls a servable: ``<base_path>/<version>`` loaded with the
``serve`` tag. Each signature is resolved once at load into a :class:`SignatureRunner` (the concrete
function, its ``SignatureDef`` and parsed input specs), so requests never look up or retrace
anything. With server-side batching, each runner sends its calls through a batching queue.

A decoupled export (``embed``: raw columns -> ``embeddings``; ``dense``: ``embeddings`` ->
outputs; ``serving_default``: raw columns -> the same outputs) has its ``serving_default`` run
as the two stages it is made of (:class:`StagedRunner`): ``embed`` in the request thread, then
``dense`` (through the dense signature's server-side batching queue with ``--enable_batching``,
else straight into its in-graph batching), so that the two stages are timed apart and, with
server-side batching, the server's dense queue merges the dense work of concurrent requests
while the embedding lookups stay per request, the export's own design. The scores are the
same; two calls cost about 0.1 ms more than one at 100 rows (measured in process on a dcnv2
export: 5.79-5.98 ms against 5.72-5.84 ms).

The version tracks requests in flight so that a hot reload can retire it without failing them:
:meth:`Servable.try_acquire` refuses new requests once :meth:`Servable.retire` was called, and
``retire`` returns when the last request in flight has released it.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import grpc
import numpy as np
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from cvr_tf.compat import tf
from serving.errors import ServingError, from_tf_error
from serving.server import metrics
from serving.server.batch_scheduler import BatchQueue, BatchScheduler
from serving.tensors import InputSpec, input_specs, validate_inputs

SERVE_TAG = "serve"
EMBED_SIGNATURE, DENSE_SIGNATURE, DEFAULT_SIGNATURE = "embed", "dense", "serving_default"
_GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")
BATCHING_OP_TYPES = frozenset({"BatchFunction", "Batch"})
_INIT_OP_SIGNATURE = "__saved_model_init_op"


_DATA_SHARD = re.compile(r"^variables\.data-(\d{5})-of-(\d{5})$")
_VARIABLE_OPS = frozenset({"VarHandleOp", "VariableV2", "Variable"})


def _readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _has_variables(path: str) -> bool:
    """Whether the SavedModel's graph holds variables (so it needs a ``variables/`` checkpoint)."""
    try:
        meta_graph = read_meta_graph(path)
    except Exception:  # an unreadable graph: loading reports why, and rewriting it retries
        return False
    if any(node.WhichOneof("kind") == "variable" for node in meta_graph.object_graph_def.nodes):
        return True
    return any(node.op in _VARIABLE_OPS for node in meta_graph.graph_def.node)


def is_complete_version(path: str | os.PathLike) -> bool:
    """Whether a version directory holds a whole SavedModel, ready to load.

    Complete means: ``saved_model.pb`` (or ``.pbtxt``) readable, and ``variables/variables.index``
    readable with every data shard ``variables.data-<i>-of-<n>`` for ``i < n`` present, unless the
    graph has no variables at all. So a copy that writes ``saved_model.pb`` before ``variables/``
    is picked up once the variables are there, instead of failing to load. TF Serving's own
    caveat still applies: a data shard being rewritten in place can look complete; write versions
    to a temporary directory and rename them into the base path (as ``serving.export`` does).
    """
    path = os.fspath(path)
    if not any(_readable(os.path.join(path, name)) for name in _GRAPH_FILES):
        return False
    variables = os.path.join(path, "variables")
    if not _readable(os.path.join(variables, "variables.index")):
        return not _has_variables(path)
    shards: dict[int, set[int]] = {}
    for name in os.listdir(variables):
        match = _DATA_SHARD.match(name)
        if match and _readable(os.path.join(variables, name)):
            shards.setdefault(int(match[2]), set()).add(int(match[1]))
    return any(found == set(range(count)) for count, found in shards.items())


def version_fingerprint(path: str | os.PathLike) -> tuple:
    """Names, sizes and modification times of a version's files: changes when they are rewritten."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:  # removed while listing
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def read_meta_graph(path: str | os.PathLike) -> meta_graph_pb2.MetaGraphDef:
    """Reads the ``serve`` MetaGraphDef of the SavedModel in ``path`` without loading it.

    Args:
        path: A version directory.

    Returns:
        The MetaGraphDef whose tags are exactly ``{"serve"}`` (TF Serving's default tag set).

    Raises:
        ServingError: ``FAILED_PRECONDITION`` when there is no such meta graph.
    """
    saved_model = saved_model_pb2.SavedModel()
    binary = os.path.join(path, "saved_model.pb")
    if os.path.isfile(binary):
        with open(binary, "rb") as handle:
            saved_model.ParseFromString(handle.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt"), encoding="utf-8") as handle:
            text_format.Parse(handle.read(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {SERVE_TAG}:
            return meta_graph
    found = [sorted(meta_graph.meta_info_def.tags) for meta_graph in saved_model.meta_graphs]
    raise ServingError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"the SavedModel in {path} has no meta graph tagged {{'serve'}} (found {found}); export it "
        "with tf.saved_model.save or tag it 'serve'",
    )


def batching_ops(meta_graph: meta_graph_pb2.MetaGraphDef) -> list[str]:
    """Lists the in-graph batching ops (``BatchFunction``/``Batch``) of a MetaGraphDef.

    Args:
        meta_graph: A SavedModel's meta graph.

    Returns:
        ``"<function>/<node>"`` for each batching op, including those inside library functions.
    """
    found = [node.name for node in meta_graph.graph_def.node if node.op in BATCHING_OP_TYPES]
    for function in meta_graph.graph_def.library.function:
        found += [
            f"{function.signature.name}/{node.name}"
            for node in function.node_def
            if node.op in BATCHING_OP_TYPES
        ]
    return found


class SignatureRunner:
    """Runs one signature of a loaded version on numpy inputs.

    Attributes:
        name: The signature key, e.g. ``serving_default``.
        signature_def: The ``SignatureDef`` from the MetaGraphDef (method name, tensor infos).
        specs: Input alias -> :class:`InputSpec`.
        output_names: The signature's output aliases.
    """

    def __init__(self, name: str, function, signature_def: meta_graph_pb2.SignatureDef) -> None:
        self.name = name
        self.signature_def = signature_def
        self.specs: dict[str, InputSpec] = input_specs(signature_def)
        self.output_names = frozenset(signature_def.outputs)
        self._function = function
        self._batch_queue: BatchQueue | None = None

    @property
    def method_name(self) -> str:
        """``tensorflow/serving/predict``, ``.../classify`` or ``.../regress``."""
        return self.signature_def.method_name

    def attach_batch_queue(self, queue: BatchQueue) -> None:
        """Routes later calls through a server-side batching queue."""
        self._batch_queue = queue

    def call(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the signature function on already validated inputs, without batching.

        Raises:
            ServingError: with TensorFlow's code when the graph fails (e.g. an in-graph
                ``BatchFunction`` refusing a batch larger than its ``max_batch_size``).
        """
        try:
            # Ready tensors skip the concrete function's per-call matching of numpy arguments
            # (about 0.6 ms of a 100-row call, all of it under the GIL).
            outputs = self._function(**{k: tf.convert_to_tensor(v) for k, v in inputs.items()})
        except tf.errors.OpError as error:
            raise from_tf_error(error) from error
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def _checked_filter(self, output_filter: Iterable[str]) -> list[str]:
        """The requested output aliases; INVALID_ARGUMENT for one the signature lacks."""
        wanted = list(output_filter)
        for alias in wanted:
            if alias not in self.output_names:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(self.output_names))}}}.",
                )
        return wanted

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_filter: Iterable[str] = (),
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Validates inputs, runs the signature (batched if configured) and filters outputs.

        Args:
            inputs: Input alias -> array.
            output_filter: Output aliases to return; empty returns every output.
            deadline: ``time.monotonic()`` after which a request still queued for batching is
                dropped with ``DEADLINE_EXCEEDED``.

        Returns:
            Output alias -> array.

        Raises:
            ServingError: ``INVALID_ARGUMENT`` for bad inputs or an unknown output alias, or the
                error of the batching queue or of TensorFlow.
        """
        wanted = self._checked_filter(output_filter)
        validate_inputs(self.name, self.specs, inputs)
        outputs = self.execute(inputs, deadline)
        return {name: outputs[name] for name in wanted} if wanted else outputs

    def execute(self, inputs: Mapping[str, np.ndarray],
                deadline: float | None = None) -> dict[str, np.ndarray]:
        """Runs the signature on inputs already known to fit it (batched if configured)."""
        if self._batch_queue is None:
            return self.call(inputs)
        return self._batch_queue.submit(inputs, deadline)


class StagedRunner(SignatureRunner):
    """A decoupled export's ``serving_default`` run as its stages: ``embed``, then ``dense``.

    Args:
        name: The signature key (``serving_default``).
        signature_def: Its ``SignatureDef``.
        embed: The ``embed`` runner, called in the request thread.
        dense: The ``dense`` runner (with its batching queue, if any).
        observe: Called with ``(stage, seconds)`` after each stage.
    """

    def __init__(self, name: str, signature_def: meta_graph_pb2.SignatureDef,
                 embed: SignatureRunner, dense: SignatureRunner,
                 observe: Callable[[str, float], None]) -> None:
        super().__init__(name, None, signature_def)
        self._embed, self._dense, self._observe = embed, dense, observe

    def call(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Both stages without the dense queue (the whole-signature path of warmup)."""
        return self._dense.call(self._embed.call(inputs))

    def run(self, inputs: Mapping[str, np.ndarray], output_filter: Iterable[str] = (),
            deadline: float | None = None) -> dict[str, np.ndarray]:
        wanted = self._checked_filter(output_filter)
        validate_inputs(self.name, self.specs, inputs)
        started = time.perf_counter()
        embeddings = self._embed.call(inputs)
        embedded = time.perf_counter()
        self._observe("embed", embedded - started)
        outputs = self._dense.execute(embeddings, deadline)  # embed's outputs fit dense
        self._observe("dense", time.perf_counter() - embedded)
        return {name: outputs[name] for name in wanted} if wanted else outputs


def staged_signatures(signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]) -> bool:
    """Whether ``serving_default`` is ``dense(embed(x))`` by the signatures' contract: ``embed``
    outputs exactly what ``dense`` takes, and ``serving_default`` takes ``embed``'s inputs and
    returns ``dense``'s outputs."""
    names = {EMBED_SIGNATURE, DENSE_SIGNATURE, DEFAULT_SIGNATURE}
    if not names <= set(signature_defs):
        return False
    embed, dense = signature_defs[EMBED_SIGNATURE], signature_defs[DENSE_SIGNATURE]
    default = signature_defs[DEFAULT_SIGNATURE]
    return (set(embed.outputs) == set(dense.inputs) and set(default.inputs) == set(embed.inputs)
            and set(default.outputs) == set(dense.outputs))


class Servable:
    """One loaded, servable version of a model.

    Attributes:
        model_name: The model's name in the config.
        version: The version number (the directory name).
        path: The version directory.
        signature_defs: Every ``SignatureDef`` of the meta graph, as GetModelMetadata reports them.
        runners: Signature key -> :class:`SignatureRunner`.
    """

    def __init__(
        self,
        model_name: str,
        version: int,
        path: str,
        meta_graph: meta_graph_pb2.MetaGraphDef,
        loaded,
        batch_scheduler: BatchScheduler | None = None,
        serving_metrics: metrics.ServingMetrics | None = None,
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.path = path
        self.signature_defs = meta_graph.signature_def
        self._metrics = serving_metrics
        self.runners: dict[str, SignatureRunner] = {
            name: SignatureRunner(name, function, meta_graph.signature_def[name])
            for name, function in loaded.signatures.items()
        }
        staged = staged_signatures(self.signature_defs)
        self._loaded = loaded  # keeps the variables the signature functions capture alive
        self._batch_scheduler = batch_scheduler
        self._queues = []
        if batch_scheduler is not None:
            for runner in self.runners.values():
                if staged and runner.name == DEFAULT_SIGNATURE:
                    continue  # its stages use the embed runner and the dense queue
                queue = batch_scheduler.add_queue(
                    runner.call, f"{model_name}/{version}/{runner.name}",
                    functools.partial(self._observe, metrics.BATCH_SIZE, signature=runner.name),
                )
                runner.attach_batch_queue(queue)
                self._queues.append(queue)
        if staged:
            self.runners[DEFAULT_SIGNATURE] = StagedRunner(
                DEFAULT_SIGNATURE, self.signature_defs[DEFAULT_SIGNATURE],
                self.runners[EMBED_SIGNATURE], self.runners[DENSE_SIGNATURE],
                lambda stage, seconds: self._observe(metrics.STAGE_LATENCY, seconds * 1e6,
                                                     stage=stage))
        self._condition = threading.Condition()
        self._in_flight = 0
        self._retired = False

    def _observe(self, metric: str, value: float, **labels: str) -> None:
        if self._metrics is not None:
            self._metrics.observe(metric, value, model_name=self.model_name,
                                  version=str(self.version), **labels)

    def observe_request(self, signature: str, seconds: float) -> None:
        """Records a request's time on this version (``signature_latency``)."""
        self._observe(metrics.SIGNATURE_LATENCY, seconds * 1e6, signature=signature)

    def signature(self, name: str) -> SignatureRunner:
        """Returns the runner of a signature.

        Raises:
            ServingError: ``FAILED_PRECONDITION`` when the version has no such signature (TF
                Serving's code for an unknown ``signature_name``).
        """
        runner = self.runners.get(name)
        if runner is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature name: "{name}" not found in signature def of model '
                f"'{self.model_name}' version {self.version}; available signatures: "
                f"{sorted(self.runners)}",
            )
        return runner

    def try_acquire(self) -> bool:
        """Counts one more request in flight; ``False`` once the version is being retired."""
        with self._condition:
            if self._retired:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Ends a request started with :meth:`try_acquire`."""
        with self._condition:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._condition.notify_all()

    def retire(self) -> None:
        """Refuses new requests, waits for those in flight, then closes the batching queues."""
        with self._condition:
            self._retired = True
            self._condition.wait_for(lambda: self._in_flight == 0)
        for queue in self._queues:
            self._batch_scheduler.remove_queue(queue)
        self._queues.clear()


def load_servable(
    model_name: str,
    version: int,
    path: str | os.PathLike,
    batch_scheduler: BatchScheduler | None = None,
    serving_metrics: metrics.ServingMetrics | None = None,
) -> Servable:
    """Loads ``<base_path>/<version>`` and resolves its signatures.

    Args:
        model_name: The model's name in the config.
        version: The version number.
        path: The version directory.
        batch_scheduler: With server-side batching (``--enable_batching``), the shared scheduler
            whose queues the signatures run through.
        serving_metrics: Where the version's signature, stage and batch metrics go.

    Returns:
        The loaded version (not yet warmed up).

    Raises:
        ServingError: ``FAILED_PRECONDITION`` when the SavedModel has no ``serve`` meta graph, or
            when server-side batching is on and the graph already batches (``BatchFunction`` ops):
            batching twice only adds queueing delay.
    """
    path = os.fspath(path)
    meta_graph = read_meta_graph(path)
    if batch_scheduler is not None:
        in_graph = batching_ops(meta_graph)
        if in_graph:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model '{model_name}' version {version} ({path}) already batches in its graph "
                f"({len(in_graph)} BatchFunction ops, e.g. {in_graph[0]}) and the server runs with "
                "--enable_batching: that would batch twice. Start the server without "
                "--enable_batching, or export the model without in-graph batching.",
            )
    loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
    runnable = {name for name in meta_graph.signature_def if name != _INIT_OP_SIGNATURE}
    if runnable != set(loaded.signatures):
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"model '{model_name}' version {version}: the signature functions "
            f"{sorted(loaded.signatures)} do not match the SignatureDefs {sorted(runnable)}; "
            "re-export the SavedModel",
        )
    return Servable(model_name, version, path, meta_graph, loaded, batch_scheduler,
                    serving_metrics)

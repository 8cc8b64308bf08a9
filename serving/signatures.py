"""The split serving signatures of a CVR model, as a ``tf.Module`` ready for SavedModel export.

- ``embed``: raw serving columns ``[batch]`` -> ``embeddings [batch, D]``; lookups, hashing
  and gathers, pinned to the CPU. The raw columns are ``spec.serving_columns()``: for a
  ``request_relative`` feature its raw column and the group key, from which the model's column
  is derived over the rows of the call (one search request per call), before any batching.
- ``dense``: ``embeddings`` -> the probabilities; the dense device, batched.
- ``serving_default``: raw serving columns -> the probabilities; embed in the request thread,
  then the batched dense part.

The probabilities (:func:`output_names`, their one source) are one output ``probabilities
[batch]`` for a single-task model, and one ``[batch]`` output per task, named by the task, for a
multi-task model (``--tasks``): ``ctr``, ``cvr`` and ``ctcvr`` for ESMM (``--tasks=ctr,ctcvr``),
``cvr`` for a click-space pCVR model (:attr:`cvr_tf.tasks.TaskSet.outputs`). Every output
comes from the same batched dense call; a client picks some with ``output_filter``.

Batching is TensorFlow's in-graph ``BatchFunction`` op. Its queue is keyed by the op's node
name, so every batched function is built in its own name scope: two different functions
behind one queue would silently return each other's outputs. ``dense`` and ``serving_default``
deliberately share the one batched dense function, so all dense work merges into the same
batches. With ``scope="whole"`` the whole raw-features -> probabilities function is batched
instead (the monolithic baseline of the serving benchmark), and with ``scope="none"`` nothing is.

Device pins: lookups on ``/device:CPU:0``; the dense ops on ``dense_device`` (default
``/device:GPU:0``). Function call ops record the tracing context's soft placement, so a
GPU-pinned SavedModel still runs, on the CPU, where no GPU exists.

Precision: with ``dense_precision="bfloat16"`` the backbone computes in bfloat16
(:func:`bfloat16_dense_part`): its matrix products run on the CPU's bfloat16 units (AVX512_BF16,
AMX) through oneDNN with float32 accumulation (about 3x the float32 rate of a large product
here; DHEN's dense part as a whole 2.3x faster at 1,600 rows, no faster at 100, where the casts
cost what the products save); the embeddings, the layer norms, the logit head and the sigmoid
stay float32. In a multi-task model the experts (instances of the backbone) and their gates
compute in bfloat16, the towers, logit heads and probabilities in float32. It is an export-side
rewrite, plain ``Cast`` and bfloat16 ``MatMul`` ops in the graph, so it also reaches the
function behind ``BatchFunction``, which TensorFlow's oneDNN auto-mixed-precision graph rewrite
(what ``tensorflow_model_server --mixed_precision=bfloat16`` turns on) did not when measured in
process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cvr_tf import tasks as tasks_lib
from cvr_tf.compat import keras, tf
from cvr_tf.layers.mmoe import MultiGateMixture
from cvr_tf.model import CVRModel, ModelConfig
from serving.batching import BatchingConfig

EMBED_SIGNATURE = "embed"
DENSE_SIGNATURE = "dense"
DEFAULT_SIGNATURE = "serving_default"
EMBEDDINGS = "embeddings"
PROBABILITIES = "probabilities"
DEVICES = {"gpu": "/device:GPU:0", "cpu": "/device:CPU:0", "none": None}
DENSE_PRECISIONS = ("float32", "bfloat16")
_MIXED_BFLOAT16 = "mixed_bfloat16"


def output_names(config: ModelConfig) -> tuple[str, ...]:
    """The outputs of ``dense`` and ``serving_default`` for a model of ``config``, each a
    probability ``[batch]``: ``("probabilities",)`` for a single-task model, else its tasks'
    outputs (:attr:`cvr_tf.tasks.TaskSet.outputs`; ``("ctr", "cvr", "ctcvr")`` for
    ``--tasks=ctr,ctcvr``). The export writes these names; servers and clients read them back
    from the signature."""
    task_set = tasks_lib.parse_tasks(config.tasks, config.backbone_config)
    return (PROBABILITIES,) if task_set is None else task_set.outputs


def batch_function(batching: BatchingConfig, name: str) -> Callable[[Callable], Callable]:
    """A decorator batching a function of tensors in the graph (TensorFlow's
    ``BatchFunction``), with ``batching``'s parameters, its op in the name scope ``name``."""
    decorator = tf.nondifferentiable_batch_function(
        num_batch_threads=batching.num_batch_threads,
        max_batch_size=batching.max_batch_size,
        batch_timeout_micros=batching.batch_timeout_micros,
        allowed_batch_sizes=list(batching.allowed_batch_sizes) or None,
        max_enqueued_batches=batching.max_enqueued_batches,
        autograph=False,
        enable_large_batch_splitting=True,
    )

    def wrap(fn: Callable) -> Callable:
        batched = decorator(fn)

        def in_scope(*args: tf.Tensor) -> tf.Tensor:
            with tf.name_scope(name):
                return batched(*args)

        return in_scope

    return wrap


def bfloat16_dense_part(model: CVRModel) -> keras.Model:
    """A copy of ``model.dense_part`` whose backbone computes in bfloat16.

    The backbone (for a multi-task model: the mixture of experts, each an instance of the
    backbone, with their gates) is rebuilt under Keras' ``mixed_bfloat16`` policy: its weights
    stay float32 (a copy of the model's) and are cast to bfloat16 when read, its matrix products
    and activations run in bfloat16 with float32 accumulation, and its layer norms in float32
    (:class:`cvr_tf.layers.norm.LayerNorm`). The logit heads (and a multi-task model's towers)
    and the sigmoid stay float32, so the logit ``w . h + b`` and the probability are not
    rounded to bfloat16's 8 bits.
    """
    backbone = (model.dense_part.get_layer(tasks_lib.EXPERTS) if model.task_set is not None
                else model.backbone.layer)

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer is not backbone:
            return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
        config = {**layer.get_config(), "dtype": _MIXED_BFLOAT16}
        if isinstance(layer, MultiGateMixture):  # the experts are the backbones
            config["experts"] = [{**expert, "config": {**expert["config"],
                                                        "dtype": _MIXED_BFLOAT16}}
                                 for expert in config["experts"]]
        return layer.__class__.from_config(config)

    # Layers a backbone creates inside itself take the global policy, not its own.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(_MIXED_BFLOAT16)
    try:
        copy = keras.models.clone_model(model.dense_part, clone_function=clone)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.dense_part.get_weights())
    return copy


class ServingModule(tf.Module):
    """One copy of the model's variables behind the ``embed``/``dense``/``serving_default``.

    It holds the model's two parts, not the model: what is served is their composition and
    nothing else (the training-only bias tower stays out of the SavedModel).

    Every signature checks its request before any work, so that TF Serving answers
    INVALID_ARGUMENT: float inputs (raw numeric columns, ``embeddings``) must be finite, as the
    training pipeline requires of its rows (the message names the input); with batching on, a
    request of more than ``max_batch_size`` rows is refused by all three signatures alike.
    Outputs have static ranks (``embeddings [batch, D]``, each probability ``[batch]``) in the
    signature metadata.

    Args:
      model: the trained model.
      batching: in-graph batching parameters (default :class:`BatchingConfig`).
      dense_device: device string for the dense ops, or None to leave them unpinned.
      jit_compile_dense: compile the dense part with XLA (``tf.function(jit_compile=True)``);
        tensorflow_model_server then needs ``--xla_cpu_compilation_enabled=true`` on CPU hosts.
      dense_precision: ``float32``, or ``bfloat16`` for the backbone
        (:func:`bfloat16_dense_part`).
    """

    def __init__(
        self,
        model: CVRModel,
        batching: BatchingConfig | None = None,
        dense_device: str | None = DEVICES["gpu"],
        jit_compile_dense: bool = False,
        dense_precision: str = "float32",
    ) -> None:
        super().__init__(name="cvr_serving")
        if dense_precision not in DENSE_PRECISIONS:
            raise ValueError(f"dense_precision {dense_precision!r} unknown; use one of "
                             f"{', '.join(DENSE_PRECISIONS)}")
        batching = batching or BatchingConfig()
        self.embedding_part = model.embedding_part
        self.dense_part = (bfloat16_dense_part(model) if dense_precision == "bfloat16"
                           else model.dense_part)
        self._dense_device = dense_device
        self._max_rows = batching.max_batch_size if batching.scope != "none" else None
        # Model columns (what embedding_part reads) and the serving inputs they come from: a
        # request_relative feature's column is derived from its raw column and the group key
        # of the call's rows, before any batching (which may split or merge requests).
        self._columns = model.spec.column_dtypes(train_only=False)
        self._derive_columns = model.spec.derive_serving_columns
        self.input_signature = {
            c: tf.TensorSpec([None], tf.dtypes.as_dtype(d), name=c)
            for c, d in model.spec.serving_columns().items()
        }
        self.embedding_dim = model.embedding_part.output_shape[-1]
        self.output_names = output_names(model.config)
        dense = self._dense_probabilities
        if jit_compile_dense:
            dense = tf.function(dense, jit_compile=True, autograph=False)

        if batching.scope == "dense":
            self._run_dense = batch_function(batching, "dense_batch")(dense)
        else:
            self._run_dense = dense
        if batching.scope == "whole":
            whole = batch_function(batching, "whole_model_batch")(
                lambda *columns: dense(self._embed(dict(zip(self._columns, columns, strict=True))))
            )
            self._run_whole = lambda features: whole(*(features[c] for c in self._columns))
        else:
            self._run_whole = lambda features: self._run_dense(self._embed(features))

        self.embed = tf.function(
            lambda features: {EMBEDDINGS: self._embed(self._model_columns(features))},
            input_signature=[self.input_signature],
            autograph=False,
        )
        self.dense = tf.function(
            lambda embeddings: self._outputs(
                self._run_dense(self._checked({EMBEDDINGS: embeddings})[EMBEDDINGS])),
            input_signature=[
                tf.TensorSpec([None, self.embedding_dim], tf.float32, name=EMBEDDINGS)
            ],
            autograph=False,
        )
        self.serving_default = tf.function(
            lambda features: self._outputs(self._run_whole(self._model_columns(features))),
            input_signature=[self.input_signature],
            autograph=False,
        )

    def _checked(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """``inputs`` behind the request checks: at most the batching limit of rows (one check
        of every input's rows at once: a few ops, not a few per input), finite floats."""
        checks = []
        if self._max_rows is not None:
            by_dtype: dict[tf.DType, list[tf.Tensor]] = {}
            for tensor in inputs.values():
                by_dtype.setdefault(tensor.dtype, []).append(tensor)
            rows = tf.concat([shape if tensor.shape.rank == 1 else shape[:1]  # columns: [rows]
                              for tensors in by_dtype.values()
                              for shape, tensor in zip(tf.shape_n(tensors, out_type=tf.int64),
                                                       tensors, strict=True)], axis=0)
            checks.append(tf.debugging.assert_less_equal(
                tf.reduce_max(rows), tf.constant(self._max_rows, tf.int64),
                message=f"the request has more rows than max_batch_size={self._max_rows}; split "
                        "the request or export with a larger --max_batch_size",
            ))
        for name, tensor in inputs.items():
            if tensor.dtype.is_floating:
                checks.append(tf.debugging.assert_all_finite(
                    tensor, message=f"input '{name}' holds NaN or infinite values; send finite "
                                    "numbers (the training pipeline rejects such rows)",
                ))
        with tf.control_dependencies(checks):
            return {name: tf.identity(tensor) for name, tensor in inputs.items()}

    def _model_columns(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The checked serving inputs mapped to the model's columns
        (:meth:`cvr_tf.features.FeatureSpec.derive_serving_columns`), on the CPU."""
        checked = self._checked(features)
        with tf.device("/device:CPU:0"):
            return self._derive_columns(checked)

    def _embed(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        with tf.device("/device:CPU:0"):
            return tf.ensure_shape(self.embedding_part(dict(features)), [None, self.embedding_dim])

    def _dense_probabilities(self, embeddings: tf.Tensor) -> tf.Tensor | dict[str, tf.Tensor]:
        if self._dense_device is None:
            return self.dense_part(embeddings)
        with tf.device(self._dense_device):
            return self.dense_part(embeddings)

    def _outputs(self, probabilities: tf.Tensor | Mapping[str, tf.Tensor]
                 ) -> dict[str, tf.Tensor]:
        """The dense part's probabilities (a tensor, or by task) as the signature's outputs
        (:func:`output_names`). The batch op's outputs have no static shape; the signature
        promises ``[batch]``."""
        if not isinstance(probabilities, Mapping):
            probabilities = {PROBABILITIES: probabilities}
        return {name: tf.ensure_shape(probabilities[name], [None]) for name in self.output_names}

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The three signatures, keyed by their SavedModel names."""
        return {
            EMBED_SIGNATURE: self.embed.get_concrete_function(),
            DENSE_SIGNATURE: self.dense.get_concrete_function(),
            DEFAULT_SIGNATURE: self.serving_default.get_concrete_function(),
        }

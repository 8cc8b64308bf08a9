"""The split serving signatures of a CVR model, as a ``tf.Module`` ready for SavedModel export.

- ``embed``: raw serving columns ``[batch]`` -> ``embeddings [batch, D]``; lookups, hashing
  and gathers, pinned to the CPU.
- ``dense``: ``embeddings`` -> ``probabilities [batch]``; the dense device, batched.
- ``serving_default``: raw serving columns -> ``probabilities``; embed in the request thread,
  then the batched dense part.

Batching is TensorFlow's in-graph ``BatchFunction`` op. Its queue is keyed by the op's node
name, so every batched function is built in its own name scope: two different functions
behind one queue would silently return each other's outputs. ``dense`` and ``serving_default``
deliberately share the one batched dense function, so all dense work merges into the same
batches. With ``scope="whole"`` the whole raw-features -> probabilities function is batched
instead (the monolithic baseline of the serving benchmark), and with ``scope="none"`` nothing is.

Device pins: lookups on ``/device:CPU:0``; the dense ops on ``dense_device`` (default
``/device:GPU:0``). Function call ops record the tracing context's soft placement, so a
GPU-pinned SavedModel still runs, on the CPU, where no GPU exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from cvr_tf.compat import tf
from cvr_tf.model import CVRModel

EMBED_SIGNATURE = "embed"
DENSE_SIGNATURE = "dense"
DEFAULT_SIGNATURE = "serving_default"
EMBEDDINGS = "embeddings"
PROBABILITIES = "probabilities"
BATCH_SCOPES = ("dense", "whole", "none")
DEVICES = {"gpu": "/device:GPU:0", "cpu": "/device:CPU:0", "none": None}


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """In-graph batching parameters (TF Serving's ``BatchingParameters`` names).

    Attributes:
      scope: ``dense`` (decoupled: batch the dense part only), ``whole`` (batch the whole
        model) or ``none``.
      max_batch_size: largest merged batch; larger requests are split.
      batch_timeout_micros: how long the first request of a batch waits for others.
      num_batch_threads: batches run in parallel.
      max_enqueued_batches: queue depth beyond which requests fail with UNAVAILABLE.
      allowed_batch_sizes: sizes a batch is padded up to; the last equals ``max_batch_size``.
    """

    scope: str = "dense"
    max_batch_size: int = 4096
    batch_timeout_micros: int = 2000
    num_batch_threads: int = 2
    max_enqueued_batches: int = 64
    allowed_batch_sizes: tuple[int, ...] = (256, 512, 1024, 2048, 4096)

    def __post_init__(self) -> None:
        if self.scope not in BATCH_SCOPES:
            raise ValueError(f"batching scope {self.scope!r} unknown; use one of {BATCH_SCOPES}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ValueError(
                f"allowed_batch_sizes {sizes} must increase strictly and end at "
                f"max_batch_size {self.max_batch_size}"
            )
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")

    def batch_function(self, name: str) -> Callable[[Callable], Callable]:
        """A decorator batching a function of tensors, its op in the name scope ``name``."""
        decorator = tf.nondifferentiable_batch_function(
            num_batch_threads=self.num_batch_threads,
            max_batch_size=self.max_batch_size,
            batch_timeout_micros=self.batch_timeout_micros,
            allowed_batch_sizes=list(self.allowed_batch_sizes) or None,
            max_enqueued_batches=self.max_enqueued_batches,
            autograph=False,
        )

        def wrap(fn: Callable) -> Callable:
            batched = decorator(fn)

            def in_scope(*args: tf.Tensor) -> tf.Tensor:
                with tf.name_scope(name):
                    return batched(*args)

            return in_scope

        return wrap


class ServingModule(tf.Module):
    """One copy of the model's variables behind the ``embed``/``dense``/``serving_default``.

    It holds the model's two parts, not the model: what is served is their composition and
    nothing else (the training-only bias tower stays out of the SavedModel).

    Args:
      model: the trained model.
      batching: in-graph batching parameters (default :class:`BatchingConfig`).
      dense_device: device string for the dense ops, or None to leave them unpinned.
    """

    def __init__(
        self,
        model: CVRModel,
        batching: BatchingConfig | None = None,
        dense_device: str | None = DEVICES["gpu"],
    ) -> None:
        super().__init__(name="cvr_serving")
        batching = batching or BatchingConfig()
        self.embedding_part = model.embedding_part
        self.dense_part = model.dense_part
        self._dense_device = dense_device
        self._columns = model.spec.column_dtypes(train_only=False)
        self.input_signature = {
            c: tf.TensorSpec([None], tf.dtypes.as_dtype(d), name=c)
            for c, d in self._columns.items()
        }
        self.embedding_dim = model.embedding_part.output_shape[-1]

        if batching.scope == "dense":
            self._run_dense = batching.batch_function("dense_batch")(self._dense_probabilities)
        else:
            self._run_dense = self._dense_probabilities
        if batching.scope == "whole":
            whole = batching.batch_function("whole_model_batch")(self._whole_model)
            self._run_whole = lambda features: whole(*(features[c] for c in self._columns))
        else:
            self._run_whole = lambda features: self._run_dense(self._embed(features))

        self.embed = tf.function(
            lambda features: {EMBEDDINGS: self._embed(features)},
            input_signature=[self.input_signature],
            autograph=False,
        )
        self.dense = tf.function(
            lambda embeddings: {PROBABILITIES: self._run_dense(embeddings)},
            input_signature=[
                tf.TensorSpec([None, self.embedding_dim], tf.float32, name=EMBEDDINGS)
            ],
            autograph=False,
        )
        self.serving_default = tf.function(
            lambda features: {PROBABILITIES: self._run_whole(features)},
            input_signature=[self.input_signature],
            autograph=False,
        )

    def _embed(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        with tf.device("/device:CPU:0"):
            return self.embedding_part(dict(features))

    def _dense_probabilities(self, embeddings: tf.Tensor) -> tf.Tensor:
        if self._dense_device is None:
            return self.dense_part(embeddings)
        with tf.device(self._dense_device):
            return self.dense_part(embeddings)

    def _whole_model(self, *columns: tf.Tensor) -> tf.Tensor:
        features = dict(zip(self._columns, columns, strict=True))
        return self._dense_probabilities(self._embed(features))

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The three signatures, keyed by their SavedModel names."""
        return {
            EMBED_SIGNATURE: self.embed.get_concrete_function(),
            DENSE_SIGNATURE: self.dense.get_concrete_function(),
            DEFAULT_SIGNATURE: self.serving_default.get_concrete_function(),
        }

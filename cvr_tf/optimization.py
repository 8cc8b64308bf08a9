"""Optimizers, learning-rate schedules and regularization of a training run.

The embedding tables and the dense network get optimizers of their own (the sparse/dense split of
TorchRec and EasyRec): a table row is updated only in the steps whose batch looks it up, so the
tables usually want a larger learning rate (or Adagrad) than the dense weights, which every step
updates. The tables' default is Lazy Adam (:mod:`cvr_tf.lazy_adam`), whose step costs what the
batch looks up rather than the whole table.

Learning rate at step ``t`` of ``T`` with ``w`` warm-up steps and base rate ``r``:

    warm-up (t < w):  r * (t + 1) / w
    constant:         r
    linear:           r * (1 - p)                 p = (t - w) / max(T - w, 1), clipped to [0, 1]
    cosine:           r * (1 + cos(pi p)) / 2

Regularization:

* ``weight_decay`` (decoupled, Loshchilov & Hutter 2019): every dense kernel ``W`` shrinks by
  ``lr * weight_decay * W`` per step, whatever the optimizer; biases and normalization weights
  are exempt, as usual. The tables are exempt: decaying every row every step would pull rows the
  batch never saw toward zero.
* ``embedding_l2``: ``lambda / B * sum_i sum_{rows r looked up for example i} ||r||^2`` is added
  to the batch's loss (B its size): only the rows the batch reads, once per lookup, so frequent
  ids are regularized in proportion to how often they are trained (see
  :func:`embedding_l2_penalty`).
* ``clipnorm``: each variable's gradient is rescaled to norm at most ``clipnorm`` (Keras
  semantics), for both optimizers; a table's sparse gradient by the norm of its slices, one per
  lookup.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.lazy_adam import LazyAdam

OPTIMIZERS = ("adam", "adamw", "adagrad", "sgd")
# The tables may also use Lazy Adam (cvr_tf.lazy_adam): Adam on the rows a batch looks up only.
EMBEDDING_OPTIMIZERS = ("", *OPTIMIZERS, "lazy_adam")
SCHEDULES = ("constant", "linear", "cosine")
# Dense variables of these names (the last part of the variable name) are exempt from weight
# decay: biases and normalization offsets and scales.
NO_DECAY = ("bias", "beta", "gamma")


def _field(default: Any, help_text: str, **metadata: Any) -> Any:
    """A config field whose help text is its training-job flag's help (cvr_tf.config_flags)."""
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """How the weights are updated; each field is a flag of the training job."""

    optimizer: str = _field("adam", "Optimizer of the dense network (and of the tables unless "
                            "--embedding_optimizer).", choices=OPTIMIZERS)
    learning_rate: float = _field(1e-3, "Base learning rate of --optimizer.")
    momentum: float = _field(0.9, "Momentum of sgd (ignored by the others).")
    embedding_optimizer: str = _field(
        "lazy_adam", "Optimizer of the embedding tables: lazy_adam (Adam on the rows each batch "
        "looks up only, cvr_tf.lazy_adam), one of --optimizer's, or empty for --optimizer's "
        "own.", choices=EMBEDDING_OPTIMIZERS)
    embedding_learning_rate: float = _field(0.0, "Base learning rate of the tables; 0: "
                                            "--learning_rate.")
    lr_schedule: str = _field("constant", "Decay of both learning rates after warm-up over the "
                              "run's steps.", choices=SCHEDULES)
    warmup_steps: int = _field(0, "Steps of linear learning-rate warm-up from 0.")
    weight_decay: float = _field(0.0, "Decoupled weight decay of dense kernels (not biases, "
                                 "norms or tables), per unit of learning rate.")
    embedding_l2: float = _field(0.0, "L2 penalty on the embedding rows each batch looks up, "
                                 "per example.")
    clipnorm: float = _field(0.0, "Clip each gradient to this norm; 0: no clipping.")

    def check(self) -> None:
        """Raises ValueError naming the flag of a value that cannot train."""
        for name in ("learning_rate",):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("embedding_learning_rate", "momentum", "weight_decay", "embedding_l2",
                     "clipnorm", "warmup_steps"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"--{name} must be >= 0, got {value}")
        if self.momentum >= 1:
            raise ValueError(f"--momentum must be below 1, got {self.momentum}")
        for name, allowed in (("optimizer", OPTIMIZERS),
                              ("embedding_optimizer", EMBEDDING_OPTIMIZERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name}={getattr(self, name)!r} is not one of "
                                 f"{', '.join(repr(a) if not a else a for a in allowed)}")


@register_keras_serializable(package="cvr_tf")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``base_rate`` over ``warmup_steps``, then constant, linear or cosine
    decay to 0 at ``total_steps`` (formulas in the module docstring)."""

    def __init__(self, base_rate: float, total_steps: int, warmup_steps: int = 0,
                 decay: str = "constant") -> None:
        if decay not in SCHEDULES:
            raise ValueError(f"--lr_schedule={decay!r} is not one of {', '.join(SCHEDULES)}")
        self.base_rate = float(base_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        rate = tf.constant(self.base_rate, tf.float32)
        if self.decay != "constant":
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            rate *= (1.0 - progress if self.decay == "linear"
                     else 0.5 * (1.0 + tf.cos(math.pi * progress)))
        if self.warmup_steps:
            rate *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self) -> dict[str, Any]:
        return {"base_rate": self.base_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay}


_OPTIMIZER_CLASSES = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                      "adagrad": keras.optimizers.Adagrad, "sgd": keras.optimizers.SGD,
                      "lazy_adam": LazyAdam}


def _optimizer(kind: str, rate: float, config: OptimizerConfig, total_steps: int,
               decayed: bool, name: str) -> keras.optimizers.Optimizer:
    schedule: Any = rate
    if config.lr_schedule != "constant" or config.warmup_steps:
        schedule = WarmupDecay(rate, total_steps, config.warmup_steps, config.lr_schedule)
    common: dict[str, Any] = {"learning_rate": schedule, "name": name}
    if config.clipnorm:
        common["clipnorm"] = config.clipnorm
    if decayed and config.weight_decay:
        common["weight_decay"] = config.weight_decay
    if kind == "adamw":
        common.setdefault("weight_decay", 0.0)
    if kind == "sgd":
        common["momentum"] = config.momentum
    return _OPTIMIZER_CLASSES[kind](**common)


def make_optimizers(config: OptimizerConfig, total_steps: int
                    ) -> tuple[keras.optimizers.Optimizer, keras.optimizers.Optimizer]:
    """(dense optimizer, embedding optimizer) of a run of ``total_steps`` steps.

    The dense one decays weights (``weight_decay``); the embedding one never does.
    """
    config.check()
    dense = _optimizer(config.optimizer, config.learning_rate, config, total_steps,
                       decayed=True, name="dense_optimizer")
    embedding = _optimizer(config.embedding_optimizer or config.optimizer,
                           config.embedding_learning_rate or config.learning_rate, config,
                           total_steps, decayed=False, name="embedding_optimizer")
    return dense, embedding


def exempt_from_decay(optimizer: keras.optimizers.Optimizer,
                      variables: Sequence[tf.Variable]) -> None:
    """Exempts biases and normalization weights among ``variables`` from weight decay."""
    if getattr(optimizer, "weight_decay", None):
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in variables
                      if v.name.rsplit("/", 1)[-1].split(":")[0] in NO_DECAY])


def embedding_l2_penalty(gradients: Sequence[Any], tables: Sequence[tf.Variable],
                         l2: float, batch_size: tf.Tensor
                         ) -> tuple[list[Any], tf.Tensor]:
    """Adds ``embedding_l2``'s gradient to the tables' gradients; returns them and the penalty.

    The gradient of a table is an ``IndexedSlices`` with one slice per lookup, so the rows the
    batch read are ``tf.gather(table, indices)`` (once per lookup). With ``c = l2 / B``, the
    penalty ``c * sum ||r||^2`` has gradient ``2 c r`` per lookup, appended as further slices
    of the same indices; no other row is touched. Dense gradients (a table read whole) get
    ``2 c * table`` and ``c ||table||^2``.
    """
    scale = l2 / tf.cast(batch_size, tf.float32)
    penalty = tf.constant(0.0)
    result = []
    for gradient, table in zip(gradients, tables, strict=True):
        if gradient is None:
            result.append(gradient)
            continue
        if isinstance(gradient, tf.IndexedSlices):
            rows = tf.gather(table, gradient.indices)
            penalty += scale * tf.reduce_sum(tf.square(rows))
            result.append(tf.IndexedSlices(
                tf.concat([gradient.values, 2.0 * scale * rows], 0),
                tf.concat([gradient.indices, gradient.indices], 0), gradient.dense_shape))
        else:
            penalty += scale * tf.reduce_sum(tf.square(table))
            result.append(gradient + 2.0 * scale * table)
    return result, penalty

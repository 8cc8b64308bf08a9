"""Multi-gate mixture of experts (MMoE; PLE's customized gate control; a shared bottom).

Experts ``e_1 .. e_K`` are networks on the same input ``x`` (any layer mapping ``[batch, D]`` to
``[batch, W]``, e.g. a backbone). Each gate ``t`` (one per task tower) reads its own subset
``S_t`` of the experts and mixes them with softmax weights computed from ``x``:

    g_t(x) = softmax(W_t x + b_t)            over the experts of S_t (sums to 1)
    y_t    = sum_{k in S_t} g_t(x)_k e_k(x)

* **MMoE** (Ma et al., KDD 2018): every gate reads every expert, ``S_t = {1..K}``.
* **PLE**'s customized gate control (CGC, Tang et al., RecSys 2020; one extraction level): the
  experts are shared ones plus each task's own, and gate ``t`` reads the shared experts and
  task ``t``'s.
* **Shared bottom**: one expert, read by every gate; a gate with a single expert is that expert
  (``g = 1``), so it has no weights.

Each expert runs once per call, whichever gates read it. Cost (:mod:`cvr_tf.flops`): the
experts', plus per gate with ``k = |S_t| > 1`` experts ``2 D k`` (its logits) and ``2 k W``
(the mixture, a batched matrix product).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.flops import Cost, dense_cost


@register_keras_serializable(package="cvr_tf")
class MultiGateMixture(keras.layers.Layer):
    """Experts mixed by one softmax gate per output (see the module docstring).

    Example:

        ```python
        experts = [keras.layers.Dense(16, activation="relu") for _ in range(4)]
        mmoe = MultiGateMixture(experts, {"ctr": [0, 1, 2, 3], "cvr": [0, 1, 2, 3]})
        outputs = mmoe(tf.random.normal([32, 64]))  # {"ctr": [32, 16], "cvr": [32, 16]}
        ```

    Args:
        experts: The expert layers, each mapping [batch, D] to [batch, W] (the same W).
        gates: Output name -> indices of the experts its gate mixes, in order; each non-empty,
            without repeats.
        **kwargs: Keras ``Layer`` arguments.

    Input shape: [batch, D]. Output: a dict, name -> [batch, W].
    """

    def __init__(self, experts: Sequence[keras.layers.Layer],
                 gates: Mapping[str, Sequence[int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not experts:
            raise ValueError("MultiGateMixture needs at least one expert, got none")
        if not gates:
            raise ValueError("MultiGateMixture needs at least one gate, got none")
        self._experts = list(experts)
        self._gates = {name: [int(i) for i in indices] for name, indices in gates.items()}
        for name, indices in self._gates.items():
            if not indices or len(set(indices)) != len(indices) or \
                    not all(0 <= i < len(self._experts) for i in indices):
                raise ValueError(f"gate {name!r} must list distinct expert indices in "
                                 f"[0, {len(self._experts)}), got {indices}")
        # A gate over one expert is that expert: no weights.
        self._gate_logits = {name: keras.layers.Dense(len(indices), name=f"gate_{name}")
                             for name, indices in self._gates.items() if len(indices) > 1}

    def gate_weights(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Gate name -> ``g_t(x)`` [batch, |S_t|]: softmax weights over its experts."""
        inputs = tf.convert_to_tensor(inputs)
        return {name: (tf.nn.softmax(self._gate_logits[name](inputs))
                       if name in self._gate_logits else
                       tf.ones([tf.shape(inputs)[0], 1], inputs.dtype))
                for name in self._gates}

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        outputs = [expert(inputs, training=training) for expert in self._experts]
        weights = self.gate_weights(inputs)
        mixed = {}
        for name, indices in self._gates.items():
            if len(indices) == 1:
                mixed[name] = outputs[indices[0]]
                continue
            chosen = tf.stack([outputs[i] for i in indices], axis=1)  # [batch, k, W]
            mixed[name] = tf.squeeze(tf.matmul(weights[name][:, None, :], chosen), axis=1)
        return mixed

    def compute_output_shape(self, input_shape: tf.TensorShape) -> dict[str, tf.TensorShape]:
        shape = self._experts[0].compute_output_shape(tf.TensorShape(input_shape))
        return dict.fromkeys(self._gates, shape)

    def cost(self, input_dim: int) -> Cost:
        """Analytic cost for one example of width ``input_dim`` (see the module docstring)."""
        width = int(self._experts[0].compute_output_shape((None, input_dim))[-1])
        total = sum((expert.cost(input_dim) for expert in self._experts), Cost())
        for indices in self._gates.values():
            if len(indices) > 1:
                total += dense_cost(input_dim, len(indices)) + Cost(flops=2 * len(indices) * width)
        return total

    def get_config(self) -> dict[str, Any]:
        experts = [keras.layers.serialize(expert) for expert in self._experts]
        gates = {name: list(indices) for name, indices in self._gates.items()}
        return {**super().get_config(), "experts": experts, "gates": gates}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiGateMixture:
        config = dict(config)
        experts = [keras.layers.deserialize(expert) for expert in config.pop("experts")]
        return cls(experts, **config)


__all__ = ["MultiGateMixture"]

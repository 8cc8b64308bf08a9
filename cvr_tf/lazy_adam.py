"""Lazy Adam: Adam that updates only the embedding rows a batch looks up.

Keras' Adam treats a sparse gradient (the ``IndexedSlices`` of a table lookup) as a dense one in
all but the gradient itself: every step it decays both moment tables and moves every row of the
table by its momentum, so one step of a 1.6M-row table costs six passes over 1.6M x d floats
whatever the batch looks up. Lazy Adam (TF Addons ``LazyAdam``; TorchRec and EasyRec's sparse
Adam) keeps Adam's update but only for the rows ``R`` of the batch. With ``g_r`` the gradient of
row ``r`` summed over its lookups in the batch, ``t`` the step (from 1), rate ``eta_t``:

    for r in R:   m_r <- beta_1 m_r + (1 - beta_1) g_r
                  v_r <- beta_2 v_r + (1 - beta_2) g_r^2
                  w_r <- w_r - alpha_t m_r / (sqrt(v_r) + epsilon)
                  alpha_t = eta_t sqrt(1 - beta_2^t) / (1 - beta_1^t)
    rows not in R: unchanged (weights and both moments).

That is Keras' dense Adam update (its bias correction by the global step included) restricted to
``R``, so a table read whole (a dense gradient) gets exactly Keras' Adam. The difference from
Keras' sparse path is what happens to the rows the batch did not read: Keras decays their moments
and keeps moving them by their momentum; here they wait until a batch reads them again, which is
what a sparse id should do (Adam's momentum on an item nobody searched for is not information).
The cost of a step is proportional to the rows looked up, not to the table.
"""

from __future__ import annotations

from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf


@register_keras_serializable(package="cvr_tf")
class LazyAdam(keras.optimizers.Adam):
    """Adam whose sparse updates touch only the rows looked up (module docstring).

    It takes Keras Adam's arguments and has its slot variables, so checkpoints of the two are
    interchangeable. ``amsgrad`` is not supported: its running maximum would need the same lazy
    treatment.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("amsgrad"):
            raise ValueError("LazyAdam does not support amsgrad; use keras.optimizers.Adam")
        super().__init__(*args, **kwargs)

    def update_step(self, gradient: Any, variable: tf.Variable) -> None:
        if not isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable)
            return
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
                 / (1 - tf.pow(beta_1, step)))
        epsilon = self.epsilon
        if getattr(self, "adaptive_epsilon", False):  # Keras' option, applied as it does
            epsilon = epsilon * tf.sqrt(1 - tf.pow(beta_2, step))
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]

        rows, position = tf.unique(gradient.indices)
        row_gradient = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * row_gradient
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(row_gradient)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))

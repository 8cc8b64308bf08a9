"""Layer normalization over the last axis, in plain element-wise ops.

Keras' ``LayerNormalization`` computes a last-axis norm as a ``FusedBatchNormV3`` on a reshaped
input, which TensorFlow's oneDNN CPU kernels run several times slower than the few element-wise
ops it stands for: in the DHEN backbone at 100 rows its 8 norms took a third of the dense
part's op time. :class:`LayerNorm` keeps Keras' layer (its weights ``gamma`` and ``beta``, its
config, its checkpoints) and replaces only the computation.
"""

from __future__ import annotations

from cvr_tf.compat import keras, register_keras_serializable, tf


@register_keras_serializable(package="cvr_tf")
class LayerNorm(keras.layers.LayerNormalization):
    """Layer normalization over the last axis (Ba, Kiros and Hinton 2016).

    For ``x`` of width D, with ``mu = mean_i x_i`` and ``var = mean_i (x_i - mu)^2``:

        y = (x - mu) / sqrt(var + epsilon) * gamma + beta

    the same function as ``keras.layers.LayerNormalization(axis=-1)`` (equal up to float
    rounding), computed with a mean, a centering, a second mean, ``rsqrt`` and a scale and
    shift. Inputs in ``float16``/``bfloat16`` are normalized in float32, as Keras does.

    Example:

        ```python
        norm = LayerNorm(name="norm")
        y = norm(tf.random.normal([8, 64]))  # [8, 64], each row of mean 0 and variance ~1
        ```

    Args:
        **kwargs: ``keras.layers.LayerNormalization`` arguments; ``axis`` must be the last.
    """

    def build(self, input_shape: tf.TensorShape) -> None:
        super().build(input_shape)
        if list(self.axis) != [len(tf.TensorShape(input_shape)) - 1]:
            raise ValueError(f"LayerNorm normalizes the last axis only, got axis={list(self.axis)}")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        dtype = inputs.dtype
        x = tf.cast(inputs, tf.float32) if dtype in (tf.float16, tf.bfloat16) else inputs
        centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
        y = centered * tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            y = y * tf.cast(self.gamma, y.dtype)
        if self.center:
            y = y + tf.cast(self.beta, y.dtype)
        return tf.cast(y, dtype)

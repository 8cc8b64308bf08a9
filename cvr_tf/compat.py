"""The one place for TensorFlow/Keras version specifics.

Import ``tf`` and ``keras`` from here: ``keras`` is ``tf_keras`` (the Keras 2 API), which
tensorflow-recommenders and TF Serving-friendly SavedModels need on TensorFlow >= 2.16.
"""

import cvr_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

register_keras_serializable = keras.saving.register_keras_serializable

__all__ = ["keras", "register_keras_serializable", "tf"]

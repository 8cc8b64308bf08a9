"""The one place for TensorFlow/Keras version specifics.

Import ``tf`` and ``keras`` from here. ``keras`` is ``tf_keras`` (the Keras 2 API), which
tensorflow-recommenders needs on TensorFlow >= 2.16; the package's ``__init__`` has set
``TF_USE_LEGACY_KERAS=1`` by the time this module runs, so ``tf.keras`` is the same module.
"""

import tensorflow as tf
import tf_keras as keras

register_keras_serializable = keras.saving.register_keras_serializable

__all__ = ["keras", "register_keras_serializable", "tf"]

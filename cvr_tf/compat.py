"""The one place for TensorFlow/Keras version specifics.

Import ``tf`` and ``keras`` from here. ``keras`` is ``tf_keras`` (the Keras 2 API), which
tensorflow-recommenders needs on TensorFlow >= 2.16; the package's ``__init__`` has set
``TF_USE_LEGACY_KERAS=1`` by the time this module runs, so ``tf.keras`` is the same module.

TensorFlow's savers and SavedModel writer log through absl at INFO, one line per checkpoint
(``Sharding callback duration``), per renamed signature input and per fingerprint: in an absl
job (whose default verbosity is INFO) every backup and export buried the job's own lines.
:class:`QuietTensorFlowInfo` drops INFO and DEBUG records that TensorFlow's own files emit
through absl; their warnings and errors, and every record of ours, pass.
"""

import logging
import os

import tensorflow as tf
import tf_keras as keras

register_keras_serializable = keras.saving.register_keras_serializable


class QuietTensorFlowInfo(logging.Filter):
    """Drops records below WARNING emitted from inside the ``tensorflow`` package."""

    PACKAGE = os.path.dirname(tf.__file__) if getattr(tf, "__file__", None) else ""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.WARNING and self.PACKAGE
                    and record.pathname.startswith(self.PACKAGE))


logging.getLogger("absl").addFilter(QuietTensorFlowInfo())

__all__ = ["keras", "register_keras_serializable", "tf"]

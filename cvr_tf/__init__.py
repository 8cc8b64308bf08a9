"""cvr-tf: build, scale and serve search conversion-rate (CVR) prediction models.

Importing this package selects the Keras 2 API (``tf_keras``) for TensorFlow by setting
``TF_USE_LEGACY_KERAS=1`` before ``tf.keras`` is first resolved; tensorflow-recommenders needs it.
All TensorFlow-version-specific code lives in this file and in :mod:`cvr_tf.compat`.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ["TF_USE_LEGACY_KERAS"].lower() not in ("1", "true"):
    raise ImportError(
        "cvr_tf needs the Keras 2 API but "
        f"TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}; "
        "unset it or set TF_USE_LEGACY_KERAS=1 before starting Python."
    )


def _check_keras_flavour() -> None:
    """Fails early when TensorFlow already resolved ``tf.keras`` to Keras 3."""
    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    if not tf.keras.__name__.startswith("tf_keras"):
        raise ImportError(
            "TensorFlow was imported and tf.keras resolved to Keras 3 before cvr_tf was imported. "
            "Import cvr_tf first, or set TF_USE_LEGACY_KERAS=1 in the environment."
        )


_check_keras_flavour()

__version__ = "0.1.0"

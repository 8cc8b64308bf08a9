"""Suite-wide set-up: select the Keras 2 API before any test module imports TensorFlow."""

import cvr_tf  # noqa: F401

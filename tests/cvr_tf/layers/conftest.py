"""Shared checks for the layer tests: set known weights by name, and serialization round trips."""

import re
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from cvr_tf.compat import keras


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)


@pytest.fixture
def assign_weights() -> Callable[[keras.layers.Layer, Mapping[str, object]], None]:
    """Sets a built layer's weights: ``{regex on the weight name: value}``, one match each."""

    def assign(layer: keras.layers.Layer, values: Mapping[str, object]) -> None:
        for pattern, value in values.items():
            matches = [w for w in layer.weights if re.search(pattern, w.name)]
            assert len(matches) == 1, (pattern, [w.name for w in layer.weights])
            matches[0].assign(np.asarray(value, np.float32))

    return assign


@pytest.fixture
def assert_round_trip(tmp_path) -> Callable[[keras.layers.Layer, np.ndarray], None]:
    """Checks that an unbuilt layer survives serialize/deserialize and a model save/load."""

    def check(layer: keras.layers.Layer, inputs: np.ndarray) -> None:
        copy = keras.layers.deserialize(keras.layers.serialize(layer))
        assert copy.get_config() == layer.get_config()
        assert type(copy) is type(layer)
        model_inputs = keras.Input(shape=inputs.shape[1:])
        model = keras.Model(model_inputs, layer(model_inputs))
        expected = model(inputs).numpy()
        model.save(tmp_path / "model.keras")
        restored = keras.models.load_model(tmp_path / "model.keras")
        np.testing.assert_allclose(restored(inputs).numpy(), expected, rtol=1e-6, atol=1e-6)

    return check

"""ESMM's product structure and its stable log-probabilities, against numpy."""

import numpy as np
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.layers.esmm import (
    EntireSpaceProduct,
    log1mexp,
    log_probabilities,
    product_log_probabilities,
)

A = np.asarray([-3.0, 0.0, 2.5, 40.0], np.float32)   # click logits
B = np.asarray([1.0, -2.0, 0.5, 40.0], np.float32)   # conversion logits


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def test_ctcvr_is_the_product_of_ctr_and_cvr():
    layer = EntireSpaceProduct(("ctr", "cvr", "ctcvr"))
    out = layer({"ctr": tf.constant(A), "cvr": tf.constant(B)})
    assert list(out) == ["ctr", "cvr", "ctcvr"]
    np.testing.assert_allclose(out["ctr"].numpy(), _sigmoid(A), rtol=1e-6)
    np.testing.assert_allclose(out["cvr"].numpy(), _sigmoid(B), rtol=1e-6)
    np.testing.assert_allclose(out["ctcvr"].numpy(), _sigmoid(A) * _sigmoid(B), rtol=1e-6)
    assert np.all(out["ctcvr"].numpy() <= np.minimum(out["ctr"], out["cvr"]))


def test_log_probabilities_match_numpy_even_where_the_product_is_near_one():
    log_p, log_q = product_log_probabilities(tf.constant(A), tf.constant(B))
    p = _sigmoid(A) * _sigmoid(B)
    np.testing.assert_allclose(log_p.numpy(), np.log(p), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(log_q[:3].numpy(), np.log1p(-p[:3]), rtol=1e-5)
    # p = 1 - 8.5e-18 rounds to 1 in floating point; log(1 - p) = log(2 e^-40) stays exact.
    np.testing.assert_allclose(log_q.numpy()[3], np.log(2.0) - 40.0, rtol=1e-5)
    single_p, single_q = log_probabilities(tf.constant(A))
    np.testing.assert_allclose(single_p.numpy(), np.log(_sigmoid(A)), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(single_q.numpy(), np.log(_sigmoid(-A)), rtol=1e-5)


def test_log1mexp_has_finite_gradients_on_both_branches():
    x = tf.constant([-1e-8, -0.5, -0.7, -5.0, -100.0, 0.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = log1mexp(x)
    np.testing.assert_allclose(y[:5].numpy(), np.log(-np.expm1(x[:5].numpy().astype(np.float64))),
                               rtol=1e-5)
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))


def test_esmm_loss_is_the_log_loss_of_the_product_with_gradients_to_both_towers():
    labels = np.asarray([1.0, 0.0, 1.0, 0.0], np.float32)
    a, b = tf.Variable(A[:3].tolist() + [1.0]), tf.Variable(B[:3].tolist() + [-1.0])
    with tf.GradientTape() as tape:
        log_p, log_q = product_log_probabilities(a, b)
        loss = tf.reduce_mean(-labels * log_p - (1 - labels) * log_q)
    p = _sigmoid(a.numpy()) * _sigmoid(b.numpy())
    np.testing.assert_allclose(loss.numpy(), np.mean(-labels * np.log(p)
                                                     - (1 - labels) * np.log1p(-p)), rtol=1e-5)
    grad_a, grad_b = tape.gradient(loss, [a, b])
    # d/da of -y log p - (1-y) log(1-p), p = s(a) s(b): (p - y) / (1 - p) * (1 - s(a)) / n.
    sa, sb = _sigmoid(a.numpy()), _sigmoid(b.numpy())
    np.testing.assert_allclose(grad_a.numpy(), (p - labels) / (1 - p) * (1 - sa) / 4, rtol=1e-4)
    np.testing.assert_allclose(grad_b.numpy(), (p - labels) / (1 - p) * (1 - sb) / 4, rtol=1e-4)


def test_serialization_and_bad_outputs():
    layer = EntireSpaceProduct(["ctr", "ctcvr"], name="probabilities")
    copy = keras.layers.deserialize(keras.layers.serialize(layer))
    assert copy.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="outputs must be some of ctr, cvr, ctcvr"):
        EntireSpaceProduct(["ctr", "click"])
    with pytest.raises(ValueError, match="needs the logits of \\['cvr'\\]"):
        layer({"ctr": tf.constant(A)})

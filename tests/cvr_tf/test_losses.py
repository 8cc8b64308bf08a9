"""Tests of cvr_tf.losses against plain numpy/python references."""

import math

import numpy as np
import pytest

from cvr_tf import losses
from cvr_tf.compat import tf

# Plain references, one example or one request at a time.


def reference_pointwise(labels, logits, weights=None):
    weights = np.ones(len(labels)) if weights is None else weights
    total = weight_sum = 0.0
    for y, s, w in zip(labels, logits, weights, strict=True):
        p = 1.0 / (1.0 + math.exp(-s))
        total += w * -(y * math.log(p) + (1 - y) * math.log(1 - p))
        weight_sum += w
    return total / weight_sum


def reference_listwise(labels, logits, groups, weights=None):
    """sum_g W_g L_g / sum_g W_g over requests with a positive (see the docstring's formulas)."""
    weights = np.ones(len(labels)) if weights is None else weights
    requests = {}
    for y, s, g, w in zip(labels, logits, groups, weights, strict=True):
        requests.setdefault(g, []).append((y, s, w))
    weighted_loss_sum = request_weight_sum = 0.0
    for items in requests.values():
        positives = sum(y for y, _, _ in items)
        if positives == 0:
            continue
        top = max(s for _, s, _ in items)
        log_normalizer = top + math.log(sum(math.exp(s - top) for _, s, _ in items))
        weighted_labels = sum(w * y for y, _, w in items)
        if weighted_labels == 0:
            continue
        request_loss = -sum(w * y * (s - log_normalizer) for y, s, w in items) / weighted_labels
        request_weight = weighted_labels / positives
        weighted_loss_sum += request_weight * request_loss
        request_weight_sum += request_weight
    return weighted_loss_sum / request_weight_sum if request_weight_sum else 0.0


def random_batch(seed, n=64, n_requests=12):
    """Scattered requests incl. one without positives and a single-item one; graded labels."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_requests, size=n)
    groups[-1] = n_requests  # a single-item request
    logits = rng.normal(0.0, 3.0, size=n)
    labels = (rng.random(n) < 0.3).astype(np.float64)
    labels[rng.random(n) < 0.1] = 2.0  # graded relevance is allowed for the listwise loss
    labels[groups == 0] = 0.0  # a request without positives
    weights = rng.uniform(0.0, 2.0, size=n)
    return labels, logits, groups, weights


# pointwise_logloss


def test_pointwise_logloss_hand_worked():
    loss = losses.pointwise_logloss([1.0, 0.0], [0.0, 0.0])
    assert float(loss) == pytest.approx(math.log(2), rel=1e-6)
    weighted = losses.pointwise_logloss([1.0, 0.0], [0.0, 2.0], weights=[3.0, 1.0])
    expected = (3 * math.log(2) + math.log(1 + math.exp(2))) / 4
    assert float(weighted) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_pointwise_logloss_matches_reference(seed):
    labels, logits, _, weights = random_batch(seed)
    binary = np.minimum(labels, 1.0)
    assert float(losses.pointwise_logloss(binary, logits)) == pytest.approx(
        reference_pointwise(binary, logits), rel=1e-12
    )
    # Column vectors [batch, 1], as Keras heads produce, give the same value.
    weighted = losses.pointwise_logloss(binary[:, None], logits[:, None], weights[:, None])
    assert float(weighted) == pytest.approx(reference_pointwise(binary, logits, weights), rel=1e-12)


def test_pointwise_logloss_of_empty_batch_is_zero():
    assert float(losses.pointwise_logloss(tf.zeros([0]), tf.zeros([0]))) == 0.0


# listwise_softmax_cross_entropy


def test_listwise_hand_worked():
    loss = losses.listwise_softmax_cross_entropy(
        labels=[1.0, 0.0, 0.0, 1.0, 0.0],
        logits=[2.0, 1.0, 0.0, 5.0, 5.0],
        group_ids=[b"a", b"a", b"b", b"c", b"c"],
    )
    # Request a: -log softmax([2, 1])_0 = log(1 + e^-1); b has no positive; c: a tie, log 2.
    assert float(loss) == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("key_type", ["int", "string"])
def test_listwise_matches_reference(seed, key_type):
    labels, logits, groups, weights = random_batch(seed)
    group_ids = groups if key_type == "int" else np.array([b"q%d" % g for g in groups])
    unweighted = losses.listwise_softmax_cross_entropy(labels, logits, group_ids)
    weighted = losses.listwise_softmax_cross_entropy(labels, logits, group_ids, weights)
    assert unweighted.dtype == tf.float64
    assert float(unweighted) == pytest.approx(reference_listwise(labels, logits, groups), rel=1e-12)
    assert float(weighted) == pytest.approx(
        reference_listwise(labels, logits, groups, weights), rel=1e-12
    )


def test_listwise_unweighted_is_mean_over_requests_with_positive():
    # The brief's formula directly: -sum_i y_i log softmax(s)_i / sum_i y_i, mean over requests.
    labels, logits, groups, _ = random_batch(seed=3)
    per_request = []
    for g in np.unique(groups):
        y, s = labels[groups == g], logits[groups == g]
        if y.sum() > 0:
            log_softmax = s - s.max() - np.log(np.exp(s - s.max()).sum())
            per_request.append(-(y * log_softmax).sum() / y.sum())
    loss = losses.listwise_softmax_cross_entropy(labels, logits, groups)
    assert float(loss) == pytest.approx(np.mean(per_request), rel=1e-12)


def test_listwise_is_invariant_to_a_constant_added_to_one_request():
    labels, logits, groups, weights = random_batch(seed=4)
    shifted = logits + np.where(groups == 5, 1000.0, 0.0)
    shifted = shifted + np.where(groups == 6, -1000.0, 0.0)
    base = losses.listwise_softmax_cross_entropy(labels, logits, groups, weights)
    moved = losses.listwise_softmax_cross_entropy(labels, shifted, groups, weights)
    assert float(moved) == pytest.approx(float(base), rel=1e-9)
    # The same holds in float32 with large logits: the per-request max keeps exp() finite.
    moved32 = losses.listwise_softmax_cross_entropy(
        labels.astype(np.float32), shifted.astype(np.float32), groups, weights.astype(np.float32)
    )
    assert float(moved32) == pytest.approx(float(base), rel=1e-4)


def test_listwise_without_positives_is_zero_with_zero_gradient():
    logits = tf.constant([0.5, -1.0, 3.0])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.listwise_softmax_cross_entropy([0.0, 0.0, 0.0], logits, [1, 1, 2])
    assert float(loss) == 0.0
    np.testing.assert_array_equal(tape.gradient(loss, logits).numpy(), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("loss_name", ["logloss", "listwise_softmax"])
def test_gradients_are_finite_and_match_finite_differences(loss_name):
    labels, logits, groups, weights = random_batch(seed=5, n=24, n_requests=5)
    labels = np.minimum(labels, 1.0)
    reference = reference_pointwise if loss_name == "logloss" else None
    loss_fn = losses.get_loss(loss_name)
    logits_tensor = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits_tensor)
        loss = loss_fn(labels, logits_tensor, group_ids=groups, weights=weights)
    gradient = tape.gradient(loss, logits_tensor).numpy()
    assert np.isfinite(gradient).all()

    def loss_at(values):
        if reference is not None:
            return reference(labels, values, weights)
        return reference_listwise(labels, values, groups, weights)

    step = 1e-6
    numeric = [
        (loss_at(logits + step * unit) - loss_at(logits - step * unit)) / (2 * step)
        for unit in np.eye(len(logits))
    ]
    np.testing.assert_allclose(gradient, numeric, atol=1e-7)
    if loss_name == "listwise_softmax":  # no gradient reaches requests without a positive
        np.testing.assert_array_equal(gradient[groups == 0], 0.0)
        np.testing.assert_array_equal(gradient[-1], 0.0)  # a single-item request: softmax is 1


def test_listwise_gradients_are_finite_for_extreme_logits():
    logits = tf.constant([1e4, -1e4, 0.0, 3e4, 3e4], dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.listwise_softmax_cross_entropy(
            [0.0, 1.0, 0.0, 1.0, 0.0], logits, [1, 1, 1, 2, 2]
        )
    assert np.isfinite(float(loss))
    assert np.isfinite(tape.gradient(loss, logits).numpy()).all()


# Graph mode, distribution and XLA.


def test_losses_run_in_tf_function_with_unknown_batch_size():
    signature = [
        tf.TensorSpec([None, 1], tf.float32),
        tf.TensorSpec([None, 1], tf.float32),
        tf.TensorSpec([None], tf.string),
    ]

    @tf.function(input_signature=signature)
    def both(labels, logits, group_ids):
        return (
            losses.get_loss("logloss")(labels, logits, group_ids),
            losses.get_loss("listwise_softmax")(labels, logits, group_ids),
        )

    labels, logits, groups, _ = random_batch(seed=6)
    labels = np.minimum(labels, 1.0)
    keys = tf.constant([b"q%d" % g for g in groups])
    pointwise, listwise = both(
        tf.constant(labels[:, None], tf.float32), tf.constant(logits[:, None], tf.float32), keys
    )
    assert float(pointwise) == pytest.approx(reference_pointwise(labels, logits), rel=1e-5)
    assert float(listwise) == pytest.approx(reference_listwise(labels, logits, groups), rel=1e-5)


def test_listwise_runs_under_a_distribution_strategy():
    labels, logits, groups, _ = random_batch(seed=7)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        step = tf.function(
            lambda y, s, g: strategy.run(losses.listwise_softmax_cross_entropy, args=(y, s, g))
        )
        per_replica = step(tf.constant(labels), tf.constant(logits), tf.constant(groups))
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    assert float(loss) == pytest.approx(reference_listwise(labels, logits, groups), rel=1e-12)


def test_listwise_compiles_with_xla_for_integer_request_keys():
    labels, logits, groups, weights = random_batch(seed=8)
    compiled = tf.function(losses.listwise_softmax_cross_entropy, jit_compile=True)
    loss = compiled(tf.constant(labels), tf.constant(logits), tf.constant(groups), weights)
    assert float(loss) == pytest.approx(
        reference_listwise(labels, logits, groups, weights), rel=1e-9
    )


# Errors


def test_get_loss_lists_the_options_for_an_unknown_name():
    assert losses.get_loss("listwise_softmax") is losses.listwise_softmax_cross_entropy
    with pytest.raises(
        ValueError, match=r"unknown loss 'softmax'.*\['listwise_softmax', 'logloss'\]"
    ):
        losses.get_loss("softmax")


def test_mismatched_lengths_are_named():
    with pytest.raises(ValueError, match="labels has 3 values but logits has 2"):
        losses.pointwise_logloss([1.0, 0.0, 1.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="weights has 1 values but logits has 2"):
        losses.pointwise_logloss([1.0, 0.0], [0.1, 0.2], weights=[1.0])
    with pytest.raises(ValueError, match="group_ids has 3 values but logits has 2"):
        losses.listwise_softmax_cross_entropy([1.0, 0.0], [0.1, 0.2], [1, 1, 2])


# Log-probability losses: ESMM's products and delayed feedback.

def _log_probabilities(logits):
    logits = np.asarray(logits, np.float64)
    return -np.logaddexp(0, -logits), -np.logaddexp(0, logits)


def test_log_probability_logloss_equals_the_pointwise_loss_of_the_same_probabilities():
    labels, logits, weights = [1, 0, 1, 0], [2.0, -1.0, -0.5, 3.0], [1.0, 2.0, 0.0, 0.5]
    log_p, log_q = _log_probabilities(logits)
    got = losses.log_probability_logloss(tf.constant(labels), log_p, log_q, weights)
    assert got.numpy() == pytest.approx(reference_pointwise(labels, logits, weights), rel=1e-9)
    masked = losses.log_probability_logloss(tf.constant(labels), log_p, log_q, [0.0] * 4)
    assert masked.numpy() == 0.0  # e.g. a click-space loss on a batch without clicks


def reference_fake_negative_weighting(labels, logits, weights):
    """Ktena et al.'s weighted loss over the stream: every row a negative, positives twice."""
    total = examples = 0.0
    for y, s, v in zip(labels, logits, weights, strict=True):
        f = 1.0 / (1.0 + math.exp(-s))
        total += v * (1 - f) * (1 + f) * -math.log(1 - f)  # the impression, logged negative
        examples += v
        if y:
            total += v * (1 + f) * -math.log(f)  # its positive, arrived later
            examples += v
    return total / examples


def test_fake_negative_weighting_against_the_stream_written_plainly():
    labels, logits, weights = [1, 0, 1, 0, 0], [2.0, -1.0, -0.5, 3.0, 0.0], [1, 2, 1, 0.5, 1]
    got = losses.fake_negative_weighted_logloss(tf.constant(labels),
                                                *_log_probabilities(logits), weights)
    assert got.numpy() == pytest.approx(
        reference_fake_negative_weighting(labels, logits, weights), rel=1e-9)


@pytest.mark.parametrize("observed_rate", [0.05, 0.3])
def test_fake_negative_weighting_is_stationary_at_the_observed_positive_rate(observed_rate):
    # A constant model f on rows of which a share q carries a positive: the weights p = f are
    # held fixed (stop_gradient), so the gradient in f vanishes at f = q, the rate the stream
    # has observed (the delayed positives still missing are not corrected for).
    labels = tf.constant([1.0] * int(100 * observed_rate) + [0.0] * int(100 * (1 - observed_rate)))
    for f, sign in ((observed_rate, 0), (observed_rate * 0.8, -1), (observed_rate * 1.2, 1)):
        logit = tf.Variable(math.log(f / (1 - f)))
        with tf.GradientTape() as tape:
            log_p = -tf.nn.softplus(-logit) * tf.ones_like(labels)
            log_q = -tf.nn.softplus(logit) * tf.ones_like(labels)
            loss = losses.fake_negative_weighted_logloss(labels, log_p, log_q)
        gradient = float(tape.gradient(loss, logit))
        assert (gradient == pytest.approx(0.0, abs=1e-6)) if sign == 0 else (
            np.sign(gradient) == sign)

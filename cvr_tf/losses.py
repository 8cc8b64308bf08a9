"""Training losses on logits: pointwise logloss and listwise softmax cross-entropy per request.

Both are graph-safe (plain TensorFlow ops, usable inside ``tf.function`` and under any
``tf.distribute`` strategy) and return one scalar: the weighted mean over the examples
(pointwise) or requests (listwise) of the batch they are given. Under a distribution strategy
each replica computes the loss of its own part of the global batch and the gradients are summed
over replicas, so a training step that calls these functions directly must divide the loss by
``tf.distribute.get_strategy().num_replicas_in_sync`` (Keras does this only for losses passed
to ``compile``). Both compile with XLA
(``jit_compile=True``) as long as request keys are integers: XLA has no string type, so hash
string keys to ints first (e.g. ``tf.strings.to_hash_bucket_fast``) when compiling.

All losses from :func:`get_loss` share one call signature,
``loss(labels, logits, group_ids, weights=None) -> scalar``, so the training step does not need
to know which one it runs.
"""

from collections.abc import Callable

from cvr_tf.compat import tf

LossFunction = Callable[..., tf.Tensor]
"""``(labels, logits, group_ids, weights=None) -> scalar tf.Tensor``."""


def _as_flat(name: str, values: tf.Tensor, dtype: tf.DType | None = None) -> tf.Tensor:
    """Returns ``values`` as a rank-1 tensor (``[batch]`` and ``[batch, 1]`` both accepted)."""
    tensor = tf.convert_to_tensor(values, name=name)
    if dtype is not None:
        tensor = tf.cast(tensor, dtype)
    return tf.reshape(tensor, [-1])


def _flat_inputs(
    labels: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor | None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Flattens and casts labels, logits and weights (ones when ``None``) to a float dtype.

    The loss is computed in float32 (float64 when the logits are float64), so mixed-precision
    logits do not lose precision in the log-sum-exp.
    """
    logits = tf.convert_to_tensor(logits, name="logits")
    dtype = tf.float64 if logits.dtype == tf.float64 else tf.float32
    logits = _as_flat("logits", logits, dtype)
    labels = _as_flat("labels", labels, dtype)
    _check_same_length("labels", labels, logits)
    if weights is None:
        weights = tf.ones_like(logits)
    else:
        weights = _as_flat("weights", weights, dtype)
        _check_same_length("weights", weights, logits)
    return labels, logits, weights


def _check_same_length(name: str, tensor: tf.Tensor, logits: tf.Tensor) -> None:
    """Raises when the static lengths are known and differ (dynamic lengths fail in the ops)."""
    if not tensor.shape.is_compatible_with(logits.shape):
        raise ValueError(
            f"{name} has {tensor.shape[0]} values but logits has {logits.shape[0]}; "
            f"pass one {name} value per logit (shape [batch] or [batch, 1])"
        )


def pointwise_logloss(
    labels: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor | None = None
) -> tf.Tensor:
    """Weighted mean sigmoid cross-entropy of each example on its own.

        loss = sum_i w_i l_i / sum_i w_i,
        l_i = -y_i log sigmoid(s_i) - (1 - y_i) log(1 - sigmoid(s_i))

    computed stably from the logits ``s``. Unlike Keras' ``sample_weight`` (which divides by the
    batch size), the weights are normalized, so scaling all of them leaves the loss unchanged.

    Args:
        labels: conversions in [0, 1], shape [batch] or [batch, 1].
        logits: pre-sigmoid scores, same length.
        weights: optional non-negative example weights, same length (all 1 when ``None``).

    Returns:
        A scalar; 0.0 when the weights sum to zero (e.g. an empty batch).
    """
    labels, logits, weights = _flat_inputs(labels, logits, weights)
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.math.divide_no_nan(tf.reduce_sum(weights * losses), tf.reduce_sum(weights))


def log_probability_logloss(
    labels: tf.Tensor, log_p: tf.Tensor, log_q: tf.Tensor, weights: tf.Tensor | None = None
) -> tf.Tensor:
    """:func:`pointwise_logloss` of a probability given as ``log p`` and ``log q = log(1 - p)``.

        loss = sum_i w_i (-y_i log p_i - (1 - y_i) log q_i) / sum_i w_i

    For a probability that is no single sigmoid (ESMM's product, :mod:`cvr_tf.layers.esmm`),
    whose log-probabilities are computed without forming ``p``.

    Returns:
        A scalar; 0.0 when the weights sum to zero (e.g. a batch without a clicked row for a
        loss over the clicked rows).
    """
    labels, log_p, weights = _flat_inputs(labels, log_p, weights)
    log_q = _as_flat("log_q", log_q, log_p.dtype)
    losses = -labels * log_p - (1.0 - labels) * log_q
    return tf.math.divide_no_nan(tf.reduce_sum(weights * losses), tf.reduce_sum(weights))


def fake_negative_weighted_logloss(
    labels: tf.Tensor, log_p: tf.Tensor, log_q: tf.Tensor, weights: tf.Tensor | None = None
) -> tf.Tensor:
    """Fake negative weighting (Ktena et al., RecSys 2019) of a delayed-feedback stream.

    The stream holds every impression once as a negative, logged when it is shown, and every
    positive once more as a positive when its event arrives (:mod:`cvr_tf.delayed_feedback`
    says how the daily spans make that stream: a row with ``y = 1`` is both). Its label
    distribution is ``b(1 | x) = p(x) / (1 + p(x))``; the importance weights ``p / b`` and
    ``(1 - p) / b(0 | x)`` turn its log loss into one whose minimum is ``f = p``:

        loss = sum_i v_i [y_i (1 + p_i) (-log f_i) + (1 - p_i)(1 + p_i) (-log(1 - f_i))]
               / sum_i v_i (1 + y_i)

    with ``f`` the model's probability, ``p = stop_gradient(f)`` its current value standing in
    for the unknown true one, ``v`` the example weights, and the denominator the stream's
    examples (each impression once, each positive twice).

    Returns:
        A scalar; 0.0 for an empty batch.
    """
    labels, log_p, weights = _flat_inputs(labels, log_p, weights)
    log_q = _as_flat("log_q", log_q, log_p.dtype)
    p = tf.stop_gradient(tf.exp(log_p))
    losses = -labels * (1.0 + p) * log_p - (1.0 - p) * (1.0 + p) * log_q
    return tf.math.divide_no_nan(tf.reduce_sum(weights * losses),
                                 tf.reduce_sum(weights * (1.0 + labels)))


def listwise_softmax_cross_entropy(
    labels: tf.Tensor,
    logits: tf.Tensor,
    group_ids: tf.Tensor,
    weights: tf.Tensor | None = None,
) -> tf.Tensor:
    """Softmax cross-entropy within each request, averaged over the requests with a positive.

    For each request ``g`` in the batch, with ``p_g = softmax(s over the items of g)``:

        L_g = -sum_{i in g} w_i y_i log p_g(i) / sum_{i in g} w_i y_i
        W_g = sum_{i in g} w_i y_i / sum_{i in g} y_i      (mean weight of g's positives)
        loss = sum_g W_g L_g / sum_g W_g

    With unit weights, ``W_g = 1`` for every request with a positive, so the loss is the plain
    mean of ``L_g`` over those requests. Requests without a positive (``W_g = 0/0``) count with
    ``W_g = 0``: they add nothing to the loss and their logits receive no gradient. The
    log-softmax subtracts each request's max logit first, so large logits do not overflow; the
    loss is unchanged when a constant is added to all logits of one request.

    A request is what shares a group id within this batch: a request split across batches
    contributes one term per part, each a softmax over that part's items only. Batch by request
    (or keep the batches large) when that matters.

    Args:
        labels: non-negative relevance, usually 0/1 conversions, shape [batch] or [batch, 1].
        logits: pre-softmax scores, same length.
        group_ids: request key of each example, int or string, same length, in any order.
        weights: optional non-negative example weights, same length (all 1 when ``None``).

    Returns:
        A scalar; 0.0 when no request in the batch has a positive.
    """
    labels, logits, weights = _flat_inputs(labels, logits, weights)
    group_ids = _as_flat("group_ids", group_ids)
    _check_same_length("group_ids", group_ids, logits)
    request_keys, requests = tf.unique(group_ids, out_idx=tf.int32)
    n_requests = tf.size(request_keys)

    def per_request_sum(values: tf.Tensor) -> tf.Tensor:
        return tf.math.unsorted_segment_sum(values, requests, n_requests)

    max_logit = tf.math.unsorted_segment_max(logits, requests, n_requests)
    shifted = logits - tf.gather(tf.stop_gradient(max_logit), requests)
    log_normalizer = tf.math.log(per_request_sum(tf.exp(shifted)))
    log_softmax = shifted - tf.gather(log_normalizer, requests)

    weighted_labels = weights * labels
    positives = per_request_sum(labels)
    cross_entropy = -per_request_sum(weighted_labels * log_softmax)
    weighted_losses = tf.math.divide_no_nan(cross_entropy, positives)  # W_g L_g
    request_weights = tf.math.divide_no_nan(per_request_sum(weighted_labels), positives)  # W_g
    return tf.math.divide_no_nan(tf.reduce_sum(weighted_losses), tf.reduce_sum(request_weights))


def _pointwise_logloss_ignoring_groups(
    labels: tf.Tensor,
    logits: tf.Tensor,
    group_ids: tf.Tensor,
    weights: tf.Tensor | None = None,
) -> tf.Tensor:
    """:func:`pointwise_logloss` with the shared loss signature (``group_ids`` is unused)."""
    del group_ids
    return pointwise_logloss(labels, logits, weights)


_LOSSES: dict[str, LossFunction] = {
    "logloss": _pointwise_logloss_ignoring_groups,
    "listwise_softmax": listwise_softmax_cross_entropy,
}
LOSS_NAMES = tuple(_LOSSES)
LISTWISE_LOSSES = ("listwise_softmax",)
"""Losses over the candidates of a request: training batches them by request
(:mod:`cvr_tf.request_batches`)."""


def get_loss(name: str) -> LossFunction:
    """Returns the loss called ``name``, as ``loss(labels, logits, group_ids, weights=None)``.

    Args:
        name: ``"logloss"`` (pointwise, the default of the training job) or
            ``"listwise_softmax"`` (softmax cross-entropy per request).

    Returns:
        The loss function; it returns a scalar tensor.

    Raises:
        ValueError: for an unknown name, listing the options.
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(_LOSSES)}")
    return _LOSSES[name]

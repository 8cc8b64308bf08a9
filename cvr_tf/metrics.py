"""Exact offline evaluation of conversion predictions over a whole eval set.

Every metric is computed exactly (no histogram buckets, unlike ``keras.metrics.AUC``) with
vectorized numpy in O(n log n): the examples are sorted once by prediction and once by request,
and per-request quantities come from running sums over those orders, never from a Python loop
over requests. :func:`evaluate` shares the two sorts between all metrics, so the training job and
the served-score check compute the same numbers with the same code.

Conventions:
    * ``labels`` are 0/1 conversions, ``predictions`` are probabilities in [0, 1] (apply a
      sigmoid to logits first), ``groups`` are request keys (bytes, str or int; any order, a
      request's rows need not be contiguous). Arrays may be 1-D or shaped ``[n, 1]``.
    * Malformed input (empty arrays, mismatched lengths, NaN or out-of-range predictions,
      non-binary labels, missing request keys) raises ``ValueError`` naming the argument.
    * A metric that is not computable on well-formed data (AUC without a positive or without a
      negative, mAP without a ranking request, gAUC without a request of both classes,
      calibration without a positive) is ``None`` (JSON ``null``), neither raising nor a
      ``nan`` that poisons averages and is not JSON, so :func:`evaluate` still reports
      everything else, with the count of requests each ranking metric averages beside it.
      Readers format values with :func:`format_metric` (``n/a`` for None).
    * Ranking metrics average only the requests that rank something: mAP those with at least
      two candidates and one positive (a lone candidate's AP is 1 whatever the model), gAUC those
      with both a positive and a negative. One-row-per-request data therefore gives ``None`` and
      a count of 0, never a flattering 1.0.

Example:
    >>> evaluate(labels=[1, 0, 0, 1], predictions=[0.9, 0.2, 0.4, 0.3],
    ...          groups=[b"r1", b"r1", b"r2", b"r2"])["mean_average_precision"]
    0.75
"""

import numpy as np
import numpy.typing as npt
import pandas as pd

ArrayLike = npt.ArrayLike

LOGLOSS_EPS = 1e-7
"""Default clipping margin of :func:`logloss` (also used by :func:`evaluate`)."""


def _as_vector(name: str, values: ArrayLike) -> np.ndarray:
    """Returns ``values`` as a non-empty 1-D array, accepting a single column ``[n, 1]``."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (or one column of shape [n, 1]) but has shape {array.shape}; "
            f"pass one value per example"
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty; evaluation needs at least one example")
    return array


def _check_length(name: str, array: np.ndarray, expected: int) -> None:
    if array.shape[0] != expected:
        raise ValueError(
            f"{name} has {array.shape[0]} rows but labels has {expected}; "
            f"pass exactly one {name} entry per label"
        )


def _as_float_vector(name: str, values: ArrayLike) -> np.ndarray:
    array = _as_vector(name, values)
    try:
        return array.astype(np.float64, copy=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric but has dtype {array.dtype}: {error}") from None


def _first_index(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _checked_labels(labels: ArrayLike) -> np.ndarray:
    """Returns ``labels`` as float64 0/1 values, or raises naming the first bad label."""
    array = _as_float_vector("labels", labels)
    bad = (array != 0.0) & (array != 1.0)
    if bad.any():
        index = _first_index(bad)
        raise ValueError(
            f"labels must be 0 or 1 but labels[{index}] = {array[index]} "
            f"({int(bad.sum())} such values); binarize them first, e.g. labels = (quantity > 0)"
        )
    return array


def _checked_predictions(predictions: ArrayLike, expected: int) -> np.ndarray:
    """Returns ``predictions`` as float64, checking length, NaN and the [0, 1] range."""
    array = _as_float_vector("predictions", predictions)
    _check_length("predictions", array, expected)
    nan = np.isnan(array)
    if nan.any():
        raise ValueError(
            f"predictions contain {int(nan.sum())} NaN values (first at index "
            f"{_first_index(nan)}); the model output is invalid, check training for divergence"
        )
    outside = (array < 0.0) | (array > 1.0)
    if outside.any():
        index = _first_index(outside)
        raise ValueError(
            f"predictions must be probabilities in [0, 1] but predictions[{index}] = "
            f"{array[index]} ({int(outside.sum())} such values); pass sigmoid(logits), not logits"
        )
    return array


def _checked_weights(weights: ArrayLike | None, expected: int) -> np.ndarray:
    """Returns ``weights`` as float64 (ones when ``None``), checking they are finite and >= 0."""
    if weights is None:
        return np.ones(expected)
    array = _as_float_vector("weights", weights)
    _check_length("weights", array, expected)
    bad = ~np.isfinite(array) | (array < 0.0)
    if bad.any():
        index = _first_index(bad)
        raise ValueError(
            f"weights must be finite and non-negative but weights[{index}] = {array[index]}"
        )
    return array


def _group_codes(groups: ArrayLike, expected: int) -> tuple[np.ndarray, int]:
    """Maps request keys to dense codes ``0 .. n_groups - 1`` by hashing (no sort needed)."""
    array = _as_vector("groups", groups)
    _check_length("groups", array, expected)
    codes, uniques = pd.factorize(array)
    missing = codes < 0
    if missing.any():
        raise ValueError(
            f"groups has {int(missing.sum())} missing request keys (None/NaN, first at index "
            f"{_first_index(missing)}); drop those rows or give every example its request_id"
        )
    return codes, len(uniques)


def _score_order(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Indices sorting by prediction ascending, positives before negatives among equal scores.

    Two stable sorts (least significant key first) instead of ``np.lexsort``: sorting the 0/1
    labels is nearly free, and :func:`_sorted_by_request` reuses this order for a third key.
    """
    positives_first = np.argsort(labels == 0.0, kind="stable")
    return positives_first[np.argsort(predictions[positives_first], kind="stable")]


def _checked_with_groups(
    labels: ArrayLike, predictions: ArrayLike, groups: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """Validated (labels, predictions, request codes, number of requests, score order)."""
    labels = _checked_labels(labels)
    predictions = _checked_predictions(predictions, labels.shape[0])
    codes, n_groups = _group_codes(groups, labels.shape[0])
    return labels, predictions, codes, n_groups, _score_order(labels, predictions)


def _sorted_by_request(
    labels: np.ndarray, predictions: np.ndarray, codes: np.ndarray, score_order: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predictions, codes) sorted by (request, prediction, positives first)."""
    order = score_order[np.argsort(codes[score_order], kind="stable")]
    return labels[order], predictions[order], codes[order]


def _run_ids(*sorted_keys: np.ndarray) -> np.ndarray:
    """Numbers the runs of consecutive equal keys ``0, 1, ...`` (a new run when any key changes)."""
    starts = np.zeros(sorted_keys[0].shape[0], dtype=bool)
    starts[0] = True
    for key in sorted_keys:
        starts[1:] |= key[1:] != key[:-1]
    return np.cumsum(starts) - 1


def _sum_before_within_run(values: np.ndarray, run_ids: np.ndarray) -> np.ndarray:
    """For each element, the sum of the values before it in its own run (0 for a run's first)."""
    before = np.cumsum(values) - values
    run_starts = np.flatnonzero(np.diff(run_ids, prepend=-1))
    return before - before[run_starts][run_ids]


def _correct_pair_weights(
    labels: np.ndarray,
    predictions: np.ndarray,
    weights: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
) -> np.ndarray:
    """Per group, the weight of correctly ordered pairs, ties counting half.

        correct_g = sum_{i in P_g, j in N_g} w_i w_j ([s_i > s_j] + 1/2 [s_i = s_j])

    The arrays must be sorted by (group, prediction). Within a group, each block of tied scores
    adds ``pos(block) * (neg(below the block) + neg(block) / 2)``.
    """
    positive_weight = weights * labels
    blocks = _run_ids(codes, predictions)
    block_positive = np.bincount(blocks, weights=positive_weight)
    block_negative = np.bincount(blocks, weights=weights - positive_weight)
    block_codes = codes[np.flatnonzero(np.diff(blocks, prepend=-1))]
    negative_below = _sum_before_within_run(block_negative, _run_ids(block_codes))
    block_correct = block_positive * (negative_below + 0.5 * block_negative)
    return np.bincount(block_codes, weights=block_correct, minlength=n_groups)


def format_metric(value: float | None, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``, or ``n/a`` for a metric that was not computable."""
    return "n/a" if value is None else format(value, spec)


def _auc(labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray) -> float | None:
    """AUC of validated arrays sorted by prediction."""
    one_group = np.zeros(labels.shape[0], dtype=np.int64)
    correct = _correct_pair_weights(labels, predictions, weights, one_group, 1)[0]
    positive = float(np.dot(weights, labels))
    negative = float(np.dot(weights, 1.0 - labels))
    if positive == 0.0 or negative == 0.0:
        return None
    return float(correct / (positive * negative))


def _group_auc(
    labels: np.ndarray, predictions: np.ndarray, codes: np.ndarray, n_groups: int
) -> float | None:
    """gAUC of validated arrays sorted by (group, prediction)."""
    ones = np.ones(labels.shape[0])
    correct = _correct_pair_weights(labels, predictions, ones, codes, n_groups)
    positives = np.bincount(codes, weights=labels, minlength=n_groups)
    sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    negatives = sizes - positives
    mixed = _group_auc_requests(labels, codes, n_groups)
    if not mixed.any():
        return None
    request_auc = correct[mixed] / (positives[mixed] * negatives[mixed])
    return float(np.dot(sizes[mixed], request_auc) / sizes[mixed].sum())


def _map_requests(labels: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Mask of the requests mAP averages: at least two candidates and one positive."""
    positives = np.bincount(codes, weights=labels, minlength=n_groups)
    sizes = np.bincount(codes, minlength=n_groups)
    return (positives > 0) & (sizes >= 2)


def _group_auc_requests(labels: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Mask of the requests gAUC averages: both a positive and a negative."""
    positives = np.bincount(codes, weights=labels, minlength=n_groups)
    sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    return (positives > 0) & (sizes - positives > 0)


def _mean_average_precision(labels: np.ndarray, codes: np.ndarray, n_groups: int
                            ) -> float | None:
    """mAP of validated arrays sorted by (group, prediction, positives first).

    Reversed, that order ranks each request by prediction descending with negatives first among
    ties: the pessimistic tie-break.
    """
    ranked_labels = labels[::-1]
    ranked_codes = codes[::-1]
    requests = _run_ids(ranked_codes)
    rank = _sum_before_within_run(np.ones(labels.shape[0]), requests) + 1.0
    positives_so_far = _sum_before_within_run(ranked_labels, requests) + ranked_labels
    precision_at_positives = ranked_labels * positives_so_far / rank
    precision_sums = np.bincount(ranked_codes, weights=precision_at_positives, minlength=n_groups)
    positives = np.bincount(codes, weights=labels, minlength=n_groups)
    ranking = _map_requests(labels, codes, n_groups)
    if not ranking.any():
        return None
    return float(np.mean(precision_sums[ranking] / positives[ranking]))


def _logloss(labels: np.ndarray, predictions: np.ndarray, eps: float) -> float:
    if not 0.0 <= eps < 0.5:
        raise ValueError(
            f"eps must be in [0, 0.5) but is {eps!r}; the default {LOGLOSS_EPS} suits float32"
        )
    clipped = np.clip(predictions, eps, 1.0 - eps)
    with np.errstate(divide="ignore"):
        log_likelihood = np.where(labels == 1.0, np.log(clipped), np.log1p(-clipped))
    return float(-np.mean(log_likelihood))


def _calibration(labels: np.ndarray, predictions: np.ndarray) -> float | None:
    positives = float(labels.sum())
    if positives == 0.0:
        return None
    return float(predictions.sum() / positives)


def auc(labels: ArrayLike, predictions: ArrayLike, weights: ArrayLike | None = None
        ) -> float | None:
    """Exact ROC AUC: the probability that a positive scores above a negative, ties counting 1/2.

    With example weights ``w`` (all 1 by default), positives ``P`` and negatives ``N``:

        AUC = sum_{i in P, j in N} w_i w_j ([s_i > s_j] + 1/2 [s_i = s_j])
              / (sum_{i in P} w_i * sum_{j in N} w_j)

    Unweighted, this is the Mann-Whitney U statistic computed from average ranks. A constant
    predictor scores 0.5.

    Args:
        labels: 0/1 conversions, shape [n].
        predictions: probabilities in [0, 1], shape [n].
        weights: optional non-negative example weights, shape [n].

    Returns:
        The AUC, or None when there is no positive or no negative (positive weight).

    Raises:
        ValueError: on empty, mismatched, NaN, out-of-range or non-binary input.
    """
    labels = _checked_labels(labels)
    predictions = _checked_predictions(predictions, labels.shape[0])
    weights = _checked_weights(weights, labels.shape[0])
    order = _score_order(labels, predictions)
    return _auc(labels[order], predictions[order], weights[order])


def logloss(labels: ArrayLike, predictions: ArrayLike, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy with predictions clipped to ``[eps, 1 - eps]``.

        logloss = -(1/n) sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)],  p_i = clip(s_i, eps, 1-eps)

    Args:
        labels: 0/1 conversions, shape [n].
        predictions: probabilities in [0, 1], shape [n].
        eps: clipping margin in [0, 0.5); it bounds each term by -log(eps) (about 16.1 for 1e-7).

    Returns:
        The mean logloss (``inf`` only when ``eps`` is 0 and a prediction is confidently wrong).

    Raises:
        ValueError: on malformed input or ``eps`` outside [0, 0.5).
    """
    labels = _checked_labels(labels)
    return _logloss(labels, _checked_predictions(predictions, labels.shape[0]), eps)


def mean_average_precision(labels: ArrayLike, predictions: ArrayLike, groups: ArrayLike
                           ) -> float | None:
    """Mean over requests of the average precision (AP) of each request's ranking by prediction.

    For a request with positives ``P`` ranked by prediction (descending), with ``k`` the 1-based
    rank of an item:

        AP = (1/|P|) sum_{k in P} precision@k,   precision@k = |P in top k| / k
        mAP = mean of AP over requests with at least two candidates and one positive

    Other requests are skipped (they neither raise nor lower mAP): without a positive AP is
    undefined, and a lone candidate's AP is 1 whatever the model predicts. Ties are ranked
    pessimistically: among items with equal predictions, negatives come before positives, so a
    constant predictor gets the worst AP possible, not a lucky order.
    E.g. a ranking with labels [1, 0, 1] has AP = (1/1 + 2/3) / 2 = 5/6.

    Args:
        labels: 0/1 conversions, shape [n].
        predictions: probabilities in [0, 1], shape [n].
        groups: request key of each example (bytes, str or int), shape [n], in any order.

    Returns:
        The mAP, or None when no request has two candidates and a positive.

    Raises:
        ValueError: on malformed input or missing request keys.
    """
    labels, predictions, codes, n_groups, score_order = _checked_with_groups(
        labels, predictions, groups
    )
    labels, _, codes = _sorted_by_request(labels, predictions, codes, score_order)
    return _mean_average_precision(labels, codes, n_groups)


def group_auc(labels: ArrayLike, predictions: ArrayLike, groups: ArrayLike) -> float | None:
    """gAUC: the per-request AUC averaged over requests, weighted by impressions.

        gAUC = sum_g n_g AUC_g / sum_g n_g

    over the requests ``g`` with both a positive and a negative (the only ones whose AUC is
    defined), ``n_g`` being the number of examples (impressions) of request ``g`` and ``AUC_g``
    the tie-aware AUC of :func:`auc` within the request.

    Args:
        labels: 0/1 conversions, shape [n].
        predictions: probabilities in [0, 1], shape [n].
        groups: request key of each example (bytes, str or int), shape [n], in any order.

    Returns:
        The gAUC, or None when no request has both a positive and a negative.

    Raises:
        ValueError: on malformed input or missing request keys.
    """
    labels, predictions, codes, n_groups, score_order = _checked_with_groups(
        labels, predictions, groups
    )
    labels, predictions, codes = _sorted_by_request(labels, predictions, codes, score_order)
    return _group_auc(labels, predictions, codes, n_groups)


def calibration(labels: ArrayLike, predictions: ArrayLike) -> float | None:
    """Ratio of predicted to observed conversions: ``sum_i p_i / sum_i y_i``.

    1.0 is calibrated on aggregate; above 1 the model over-predicts conversions.

    Args:
        labels: 0/1 conversions, shape [n].
        predictions: probabilities in [0, 1], shape [n].

    Returns:
        The ratio, or None when there is no positive.

    Raises:
        ValueError: on malformed input.
    """
    labels = _checked_labels(labels)
    return _calibration(labels, _checked_predictions(predictions, labels.shape[0]))


def no_examples() -> dict[str, float | int | None]:
    """What :func:`evaluate` reports for no examples at all (e.g. pCVR on the clicked
    impressions of a window without a click): every metric None, every count 0."""
    metrics = ("auc", "logloss", "mean_average_precision", "group_auc", "calibration",
               "positive_rate")
    counts = ("examples", "requests", "requests_with_positive", "map_requests",
              "group_auc_requests")
    return {**dict.fromkeys(metrics), **dict.fromkeys(counts, 0)}


def evaluate(labels: ArrayLike, predictions: ArrayLike, groups: ArrayLike
             ) -> dict[str, float | int | None]:
    """All metrics of this module over one eval set, validating and sorting the input once.

    Args:
        labels: 0/1 conversions, shape [n].
        predictions: probabilities in [0, 1], shape [n].
        groups: request key of each example (bytes, str or int), shape [n], in any order.

    Returns:
        A dict with ``auc``, ``logloss``, ``mean_average_precision``, ``group_auc`` and
        ``calibration`` (as the functions of the same names; uncomputable ones are None), plus
        ``examples``, ``requests``, ``requests_with_positive``, ``map_requests`` and
        ``group_auc_requests`` (ints: the requests mAP and gAUC average) and ``positive_rate``.

    Raises:
        ValueError: on malformed input or missing request keys.
    """
    labels, predictions, codes, n_groups, score_order = _checked_with_groups(
        labels, predictions, groups
    )
    request_labels, request_predictions, request_codes = _sorted_by_request(
        labels, predictions, codes, score_order
    )
    positives_per_request = np.bincount(codes, weights=labels, minlength=n_groups)
    return {
        "auc": _auc(labels[score_order], predictions[score_order], np.ones(labels.shape[0])),
        "logloss": _logloss(labels, predictions, LOGLOSS_EPS),
        "mean_average_precision": _mean_average_precision(request_labels, request_codes, n_groups),
        "group_auc": _group_auc(request_labels, request_predictions, request_codes, n_groups),
        "calibration": _calibration(labels, predictions),
        "examples": int(labels.shape[0]),
        "requests": n_groups,
        "requests_with_positive": int(np.count_nonzero(positives_per_request)),
        "map_requests": int(np.count_nonzero(_map_requests(labels, codes, n_groups))),
        "group_auc_requests": int(np.count_nonzero(_group_auc_requests(labels, codes, n_groups))),
        "positive_rate": float(labels.mean()),
    }

"""Tests of cvr_tf.metrics: hand-worked cases and plain-loop reference implementations."""

import json
import math

import numpy as np
import pytest

from cvr_tf import metrics

# Plain reference implementations: loops over pairs and requests, written for clarity only.


def reference_auc(labels, predictions, weights=None):
    weights = [1.0] * len(labels) if weights is None else weights
    correct = total = 0.0
    for i in range(len(labels)):
        for j in range(len(labels)):
            if labels[i] == 1 and labels[j] == 0:
                pair = weights[i] * weights[j]
                total += pair
                if predictions[i] > predictions[j]:
                    correct += pair
                elif predictions[i] == predictions[j]:
                    correct += 0.5 * pair
    return correct / total if total else None


def reference_requests(labels, predictions, groups):
    requests = {}
    for label, prediction, group in zip(labels, predictions, groups, strict=True):
        requests.setdefault(group, []).append((prediction, label))
    return list(requests.values())


def reference_average_precision(items):
    # Pessimistic ties: higher prediction first, and among equal predictions negatives first.
    ranked = sorted(items, key=lambda item: (-item[0], item[1]))
    hits = 0
    precisions = []
    for rank, (_, label) in enumerate(ranked, start=1):
        if label == 1:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions)


def reference_map(labels, predictions, groups):
    aps = [
        reference_average_precision(items)
        for items in reference_requests(labels, predictions, groups)
        if len(items) >= 2 and any(label == 1 for _, label in items)
    ]
    return sum(aps) / len(aps) if aps else None


def reference_group_auc(labels, predictions, groups):
    weighted_sum = impressions = 0.0
    for items in reference_requests(labels, predictions, groups):
        request_labels = [label for _, label in items]
        if 0 < sum(request_labels) < len(request_labels):
            request_auc = reference_auc(request_labels, [p for p, _ in items])
            weighted_sum += len(items) * request_auc
            impressions += len(items)
    return weighted_sum / impressions if impressions else None


def reference_logloss(labels, predictions, eps=1e-7):
    total = 0.0
    for label, prediction in zip(labels, predictions, strict=True):
        p = min(max(prediction, eps), 1 - eps)
        total -= math.log(p) if label == 1 else math.log(1 - p)
    return total / len(labels)


def random_eval_set(seed, n=400, n_requests=60):
    """Requests of uneven sizes (some single-item), scattered rows, many tied predictions."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_requests, size=n) ** 2 // n_requests  # skewed request sizes
    groups[rng.choice(n, size=8, replace=False)] = n_requests + np.arange(8)  # single-item requests
    predictions = rng.integers(0, 9, size=n) / 8.0  # 9 distinct values: plenty of ties
    labels = (rng.random(n) < 0.1 + 0.4 * predictions).astype(np.int64)
    labels[groups == 0] = 0  # a large request without any positive
    labels[groups == groups.max()] = 1  # a request without any negative
    return labels, predictions, groups


# Hand-worked cases.


def test_auc_hand_worked_with_a_tie():
    # Pairs (pos, neg): (0.8, 0.4)=1, (0.8, 0.1)=1, (0.4, 0.4)=1/2, (0.4, 0.1)=1 -> 3.5 / 4.
    assert metrics.auc([1, 0, 1, 0], [0.8, 0.4, 0.4, 0.1]) == 0.875


def test_weighted_auc_hand_worked():
    # The positive (0.5) beats the negative at 0.1 (weight 1) only: 1 * 1 / (1 * (3 + 1)).
    assert metrics.auc([1, 0, 0], [0.5, 0.9, 0.1], weights=[1.0, 3.0, 1.0]) == 0.25


def test_auc_of_constant_predictor_is_one_half():
    assert metrics.auc([1, 0, 0, 1, 0], [0.3] * 5) == 0.5


def test_average_precision_of_one_zero_one_ranking():
    value = metrics.mean_average_precision([1, 0, 1], [0.9, 0.5, 0.1], ["q"] * 3)
    assert value == pytest.approx((1 / 1 + 2 / 3) / 2, abs=1e-15)


def test_map_skips_requests_without_positive_and_averages_the_rest():
    labels = [1, 0, 0, 1, 0, 0]
    predictions = [0.9, 0.2, 0.4, 0.3, 0.7, 0.6]
    groups = [b"a", b"a", b"b", b"b", b"c", b"c"]  # AP(a) = 1, AP(b) = 1/2, c has no positive
    assert metrics.mean_average_precision(labels, predictions, groups) == 0.75


def test_map_ranks_ties_pessimistically():
    # A constant predictor puts the 2 positives of 5 items last: AP = (1/4 + 2/5) / 2.
    value = metrics.mean_average_precision([1, 0, 1, 0, 0], [0.5] * 5, [7] * 5)
    assert value == pytest.approx(0.325, abs=1e-15)
    # A tie only between a positive and a negative: the negative goes first.
    assert metrics.mean_average_precision([0, 1, 1], [0.4, 0.4, 0.9], [1, 1, 1]) == pytest.approx(
        (1 / 1 + 2 / 3) / 2, abs=1e-15
    )


def test_group_auc_hand_worked():
    labels = [1, 0, 0, 0, 1, 0, 0, 0, 0]
    predictions = [0.9, 0.5, 0.95, 0.2, 0.7, 0.1, 0.2, 0.3, 0.4]
    groups = ["r1", "r1", "r1", "r2", "r2", "r3", "r3", "r3", "r3"]
    # AUC(r1) = 1/2 over 3 impressions, AUC(r2) = 1 over 2, r3 has no positive: (1.5 + 2) / 5.
    assert metrics.group_auc(labels, predictions, groups) == pytest.approx(0.7, abs=1e-15)


def test_logloss_hand_worked_and_clipped():
    assert metrics.logloss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2), abs=1e-15)
    # A confidently wrong prediction costs -log(eps), not infinity.
    assert metrics.logloss([1], [0.0]) == pytest.approx(-math.log(1e-7), rel=1e-12)
    assert metrics.logloss([1, 0], [1.0, 0.0], eps=0.0) == 0.0


def test_calibration_hand_worked():
    assert metrics.calibration([1, 0, 1, 0], [0.5, 0.5, 0.25, 0.25]) == 0.75


def test_evaluate_hand_worked():
    result = metrics.evaluate(
        labels=[1, 0, 0, 1, 0, 0],
        predictions=[0.9, 0.2, 0.4, 0.3, 0.7, 0.6],
        groups=[b"a", b"a", b"b", b"b", b"c", b"c"],
    )
    assert result["mean_average_precision"] == 0.75
    assert result["group_auc"] == pytest.approx((2 * 1.0 + 2 * 0.0) / 4, abs=1e-15)
    assert result["auc"] == 5 / 8  # 0.9 beats all 4 negatives, 0.3 beats 0.2 only
    assert result["calibration"] == pytest.approx(3.1 / 2, abs=1e-15)
    assert result["logloss"] == pytest.approx(
        reference_logloss([1, 0, 0, 1, 0, 0], [0.9, 0.2, 0.4, 0.3, 0.7, 0.6]), abs=1e-15
    )
    assert result["examples"] == 6
    assert result["requests"] == 3
    assert result["requests_with_positive"] == 2
    assert result["positive_rate"] == pytest.approx(1 / 3, abs=1e-15)


# Random data against the references.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_references_on_random_data_with_ties(seed):
    labels, predictions, groups = random_eval_set(seed)
    weights = np.random.default_rng(seed + 100).uniform(0.0, 3.0, size=len(labels))
    result = metrics.evaluate(labels, predictions, groups)
    assert result["auc"] == pytest.approx(reference_auc(labels, predictions), abs=1e-12)
    assert result["mean_average_precision"] == pytest.approx(
        reference_map(labels, predictions, groups), abs=1e-12
    )
    assert result["group_auc"] == pytest.approx(
        reference_group_auc(labels, predictions, groups), abs=1e-12
    )
    assert result["logloss"] == pytest.approx(reference_logloss(labels, predictions), abs=1e-12)
    assert result["calibration"] == pytest.approx(predictions.sum() / labels.sum(), abs=1e-12)
    assert result["requests"] == len(set(groups))
    assert result["requests_with_positive"] == len(set(groups[labels == 1]))
    assert metrics.auc(labels, predictions, weights) == pytest.approx(
        reference_auc(labels, predictions, weights), abs=1e-12
    )


def test_single_metric_functions_agree_with_evaluate():
    labels, predictions, groups = random_eval_set(seed=3)
    result = metrics.evaluate(labels, predictions, groups)
    assert metrics.auc(labels, predictions) == result["auc"]
    assert metrics.logloss(labels, predictions) == result["logloss"]
    assert (
        metrics.mean_average_precision(labels, predictions, groups)
        == (result["mean_average_precision"])
    )
    assert metrics.group_auc(labels, predictions, groups) == result["group_auc"]
    assert metrics.calibration(labels, predictions) == result["calibration"]


def test_metrics_do_not_depend_on_row_order_or_key_type():
    labels, predictions, groups = random_eval_set(seed=4)
    expected = metrics.evaluate(labels, predictions, groups)
    shuffle = np.random.default_rng(5).permutation(len(labels))
    key_types = {
        "bytes": np.array([b"request-%d" % g for g in groups[shuffle]], dtype=object),
        "str": [f"request-{g}" for g in groups[shuffle]],
        "int": groups[shuffle].astype(np.int32),
    }
    for keys in key_types.values():
        result = metrics.evaluate(labels[shuffle], predictions[shuffle], keys)
        assert result == pytest.approx(expected, abs=1e-12)


def test_column_vectors_are_accepted():
    labels, predictions, groups = random_eval_set(seed=6)
    result = metrics.evaluate(labels[:, None], predictions[:, None], groups[:, None])
    assert result == metrics.evaluate(labels, predictions, groups)


def test_metrics_that_are_not_computable_are_none_and_json_null():
    all_negative = metrics.evaluate([0, 0, 0], [0.1, 0.2, 0.3], ["a", "a", "b"])
    for name in ("auc", "mean_average_precision", "group_auc", "calibration"):
        assert all_negative[name] is None, name
    assert all_negative["logloss"] == pytest.approx(reference_logloss([0, 0, 0], [0.1, 0.2, 0.3]))
    assert (all_negative["requests_with_positive"], all_negative["map_requests"],
            all_negative["group_auc_requests"]) == (0, 0, 0)
    assert '"auc": null' in json.dumps(all_negative, allow_nan=False)
    assert metrics.auc([1, 1], [0.2, 0.3]) is None
    assert metrics.calibration([0, 0], [0.2, 0.3]) is None
    # Every request is single-item, so no request has both a positive and a negative.
    assert metrics.group_auc([1, 0], [0.2, 0.3], ["a", "b"]) is None
    assert metrics.mean_average_precision([1, 0], [0.2, 0.3], ["a", "b"]) is None


def test_one_row_requests_give_no_ranking_metric_and_count_zero_requests():
    # A lone positive candidate has AP 1 whatever the model: it must not make mAP 1.0.
    one_row = metrics.evaluate([1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4], ["a", "b", "c", "d"])
    assert one_row["mean_average_precision"] is None and one_row["group_auc"] is None
    assert (one_row["map_requests"], one_row["group_auc_requests"]) == (0, 0)
    assert one_row["requests_with_positive"] == 2 and one_row["requests"] == 4
    assert one_row["auc"] == 0.25  # pointwise metrics stay computable: 1 of 4 pairs in order


def test_format_metric_says_na_for_a_metric_that_is_not_computable():
    assert metrics.format_metric(None) == "n/a"
    assert metrics.format_metric(0.123456) == "0.1235"
    assert metrics.format_metric(0.123456, ".5f") == "0.12346"


def test_ranking_metrics_count_only_the_requests_they_average():
    labels = [1, 1, 0, 1, 1, 0, 0]
    predictions = [0.9, 0.2, 0.4, 0.3, 0.8, 0.7, 0.6]
    # a: lone positive (skipped by both); b: AP 1/2, AUC 0; c: positives only (mAP, not gAUC);
    # d: negative only (neither).
    groups = ["a", "b", "b", "c", "c", "d", "d"]
    result = metrics.evaluate(labels, predictions, groups)
    assert result["mean_average_precision"] == pytest.approx((0.5 + 1.0) / 2, abs=1e-15)
    assert result["group_auc"] == 0.0
    assert (result["map_requests"], result["group_auc_requests"]) == (2, 1)


# Malformed input.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [1, 0], "predictions": [0.5]}, "predictions has 1 rows but labels has 2"),
        ({"labels": [], "predictions": []}, "labels is empty"),
        ({"labels": [1, 0], "predictions": [0.5, math.nan]}, r"predictions contain 1 NaN"),
        ({"labels": [1, 0], "predictions": [0.5, 1.5]}, r"predictions\[1\] = 1.5"),
        ({"labels": [1, 0], "predictions": [-2.0, 0.5]}, "pass sigmoid"),
        ({"labels": [1, 2], "predictions": [0.5, 0.5]}, r"labels\[1\] = 2.0"),
        ({"labels": [[1, 0]], "predictions": [0.5, 0.5]}, r"labels must be 1-D .* shape \(1, 2\)"),
        ({"labels": [1, 0], "predictions": ["a", "b"]}, "predictions must be numeric"),
    ],
)
def test_malformed_labels_and_predictions_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        metrics.evaluate(groups=[1] * len(kwargs["labels"]), **kwargs)


def test_malformed_groups_weights_and_eps_are_named():
    with pytest.raises(ValueError, match="groups has 1 rows but labels has 2"):
        metrics.group_auc([1, 0], [0.5, 0.5], ["a"])
    with pytest.raises(ValueError, match="groups has 1 missing request keys"):
        metrics.mean_average_precision([1, 0], [0.5, 0.5], ["a", None])
    with pytest.raises(ValueError, match=r"weights\[0\] = -1.0"):
        metrics.auc([1, 0], [0.5, 0.5], weights=[-1.0, 1.0])
    with pytest.raises(ValueError, match="weights has 3 rows"):
        metrics.auc([1, 0], [0.5, 0.5], weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="eps must be in"):
        metrics.logloss([1, 0], [0.5, 0.5], eps=0.5)

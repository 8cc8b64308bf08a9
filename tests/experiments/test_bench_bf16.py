"""bf16 benchmark: the accuracy comparison on hand-made scores, and requests read from spans."""

import numpy as np
import pytest

from cvr_tf.features import default_spec
from experiments import bench_bf16


def test_compare_reports_differences_and_both_aucs():
    labels = np.array([0, 1, 0, 1, 0, 1])
    groups = np.array([b"a", b"a", b"a", b"b", b"b", b"b"])
    fp32 = np.array([0.1, 0.4, 0.3, 0.8, 0.2, 0.6], np.float32)
    bf16 = np.array([0.1, 0.4, 0.45, 0.8, 0.2, 0.6], np.float32)  # one pair now misordered
    result = bench_bf16.compare(fp32, bf16, labels, groups)
    assert result["rows"] == 6
    assert result["max_abs_difference"] == pytest.approx(0.15, abs=1e-6)
    assert result["mean_abs_difference"] == pytest.approx(0.025, abs=1e-6)
    assert result["auc_fp32"] == 1.0 and result["auc_bf16"] == pytest.approx(8 / 9)
    # Request a: 0.4 beats 0.1 but not 0.45; request b is unchanged.
    assert result["group_auc_fp32"] == 1.0 and result["group_auc_bf16"] == pytest.approx(0.75)


def test_day_requests_are_whole_requests_with_aligned_labels(simulated_spans):
    spec = default_spec()
    requests, labels, keys = bench_bf16.day_requests(simulated_spans.spans,
                                                     simulated_spans.day(5))
    assert len(requests) == len(set(keys.tolist())) > 0
    assert sum(len(r[spec.serving_features[0].column]) for r in requests) == len(labels)
    assert set(requests[0]) == set(spec.serving_columns())
    sizes = [len(next(iter(r.values()))) for r in requests]
    assert keys[sizes[0] - 1] == keys[0] and keys[sizes[0]] != keys[0]  # one request per call
    assert set(np.unique(labels)) <= {0, 1}


def test_call_ms_interleaves_the_functions_rounds():
    order = []

    def make(name):
        def function(**features):
            order.append(name)
            return {"probabilities": features["x"] * 2.0}
        return function

    timings = bench_bf16.call_ms({"a": make("a"), "b": make("b")},
                                 [{"x": np.ones(3, np.float32)}], calls=2, rounds=3)
    assert set(timings) == {"a", "b"} and min(timings.values()) > 0
    # A warm-up call each, then rounds of 2 calls alternating between the functions.
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3

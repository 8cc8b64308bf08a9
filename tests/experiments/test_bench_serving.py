"""Serving benchmark: the summaries on hand-made points, a tiny in-process run and a tiny run on a
real local server."""

import json
import os

import pytest

from cvr_tf.features import default_spec
from experiments import bench_serving as bench
from experiments import serving_report, serving_sweep
from experiments.dense_scan import dense_scan, scan_table
from experiments.inprocess_load import run_inprocess_load
from experiments.serving_exports import (
    REQUEST_COLUMNS,
    export_variants,
    request_features,
    synthetic_vocabularies,
)
from serving import export
from serving.batching import BatchingConfig


def _point(model, qps, per_s, p99, errors=None, requests=None, window=5.0):
    """A point as ``measure`` makes it: ``requests`` sent in ``window`` s (default qps * window)."""
    point = {
        "model": model, "target_qps": qps, "requests_per_s": per_s, "errors": errors or {},
        "requests": qps * window if requests is None else requests, "send_window_s": window,
        "latency_ms": {"p50": p99 / 4, "p95": p99 / 2, "p99": p99, "max": p99, "mean": p99 / 3},
    }
    point["sustained"] = serving_sweep.sustained(point)
    return point


UNBATCHED = [_point("u", 50, 50, 8.0), _point("u", 100, 99, 20.0), _point("u", 200, 120, 900.0)]
BATCHED = [_point("b", 50, 50, 6.0), _point("b", 100, 100, 9.0), _point("b", 200, 199, 16.0),
           _point("b", 400, 390, 45.0), _point("b", 800, 500, 700.0)]


def test_synthetic_vocabularies_fill_the_default_caps():
    spec = default_spec()
    full, small = synthetic_vocabularies(spec), synthetic_vocabularies(spec, 50)
    assert {t: len(v) for t, v in full.items()} == {
        "user_segment": 16, "device": 8, "query": 10000, "terms": 5000, "item_id": 30000,
        "item_category": 200, "item_brand": 1000}
    assert {t: len(v) for t, v in small.items()} == {
        "user_segment": 16, "device": 8, "query": 50, "terms": 50, "item_id": 50,
        "item_category": 50, "item_brand": 50}
    assert full["item_id"][:2] == ["item_id0", "item_id1"]


def test_sustained_compares_answers_with_the_realized_send_rate():
    assert serving_sweep.sustained(_point("m", 50, 44.0, 10.0, requests=220))  # Poisson: 220 sent
    # answers lag sends:
    assert not serving_sweep.sustained(_point("m", 50, 41.0, 10.0, requests=220))
    assert not serving_sweep.sustained(_point("m", 50, 50.0, 10.0, errors={"UNAVAILABLE": 1}))


def test_sweep_retries_a_point_that_does_not_keep_up_before_it_stops_climbing():
    # Model "m" stalls once at 200 QPS (another job's burst) and for good at 400 QPS.
    outcomes = {(200, 0): 150.0, (400, 0): 300.0, (400, 1): 310.0}
    calls = {}

    def measure(model, qps, duration_s, seed):
        attempt = calls.setdefault((model, qps), [])
        attempt.append(seed)
        served = outcomes.get((qps, len(attempt) - 1), qps) if model == "m" else qps
        point = _point(model, qps, served, 10.0, window=duration_s)
        return {**point, "cpu_ms_per_request": 1.0, "load_average_1m": 0.5}

    logged = []
    points = serving_sweep.sweep(measure, ["m", "n"], [100.0, 200.0, 400.0], duration_s=2.0,
                                 timeout_s=0.0, log=logged.append)
    by_model = [(p["model"], p["target_qps"], p["sustained"], len(p.get("retried", [])))
                for p in points]
    assert by_model == [("m", 100, True, 0), ("n", 100, True, 0), ("n", 200, True, 0),
                        ("m", 200, True, 1), ("m", 400, False, 1), ("n", 400, True, 0)]
    assert points[3]["retried"][0]["requests_per_s"] == 150.0
    assert len(logged) == 8 and sum("(retry)" in line for line in logged) == 2


def test_batched_vs_unbatched_at_the_unbatched_p99_and_a_fixed_budget():
    at_reference, fixed = serving_sweep.compare_at_equal_p99(BATCHED, UNBATCHED, 10.0)
    # The unbatched model's best sustained point is 99 req/s at p99 20 ms; within 20 ms the
    # batched model sustains 199 req/s. Within 10 ms: 100 vs 50 req/s.
    assert at_reference["p99_budget_ms"] == 20.0
    assert at_reference["batched"]["requests_per_s"] == 199
    assert at_reference["unbatched"]["requests_per_s"] == 99
    assert at_reference["throughput_ratio"] == 2.01
    assert (fixed["budget"], fixed["throughput_ratio"]) == ("fixed 10 ms", 2.0)
    assert not fixed["batched_capped_by_ladder"]
    capped = serving_sweep.compare_at_equal_p99(BATCHED[:3], UNBATCHED, 10.0)[0]
    assert capped["batched_capped_by_ladder"]
    nothing = serving_sweep.compare_at_equal_p99(BATCHED, [_point("u", 50, 10, 5.0)], 1.0)
    assert [row["budget"] for row in nothing] == ["fixed 1 ms"]
    assert nothing[0]["throughput_ratio"] is None and nothing[0]["batched"] is None


def test_p99_ratios_pair_the_common_loads():
    rows = serving_sweep.p99_ratios(BATCHED, UNBATCHED)
    assert [(r["qps"], r["p99_ratio"], r["both_sustained"]) for r in rows] == [
        (50, 1.33, True), (100, 2.22, True), (200, 56.25, False)]


def test_summary_series_for_the_latency_plot():
    points = [_point(bench.BATCHED, p["target_qps"], p["requests_per_s"],
                     p["latency_ms"]["p99"]) for p in BATCHED]
    points += [_point(bench.UNBATCHED, 50, 50, 8.0), _point(bench.EIGHT_X, 50, 50, 12.0)]
    summary = serving_sweep.summarize(points, 50.0, bench.BATCHED, bench.UNBATCHED, bench.WHOLE,
                                      bench.EIGHT_X)
    series = summary["p99_vs_qps"]
    assert set(series) == {"batched", "unbatched", "dcnv2", "dhen"}
    assert series["batched"] == series["dcnv2"] == [
        [50, 6.0], [100, 9.0], [200, 16.0], [400, 45.0], [800, 700.0]]
    assert series["dhen"] == [[50, 12.0]] and summary["decoupled_vs_whole"] == []
    assert summary["dhen_vs_dcnv2"][0]["p99_ratio"] == 2.0


def test_latency_target_pairs_dhen_with_dcnv2_where_unbatched_dhen_fails():
    points = [_point(bench.BATCHED, 100, 100, 4.0), _point(bench.BATCHED, 300, 299, 5.0),
              _point(bench.EIGHT_X_UNBATCHED, 100, 100, 20.0),
              _point(bench.EIGHT_X_UNBATCHED, 300, 150, 900.0),
              _point(bench.EIGHT_X, 100, 100, 9.0), _point(bench.EIGHT_X, 300, 299, 7.0)]
    rows = bench.latency_target(points, {bench.EIGHT_X: bench.EIGHT_X_UNBATCHED})
    # At 100 QPS unbatched dhen keeps up, so only 300 QPS counts: 7 / 5 = 1.4 <= 1.5.
    assert [(r["qps"], r["p99_ratio"], r["met"]) for r in rows] == [(300, 1.4, True)]
    # Each batched export is judged where its own unbatched twin (same precision) fails.
    points += [_point(bench.EIGHT_X_BF16_UNBATCHED, 100, 50, 900.0),
               _point(bench.EIGHT_X_BF16, 100, 100, 8.0), _point(bench.EIGHT_X_BF16, 300, 250, 9.0)]
    rows = bench.latency_target(points, {bench.EIGHT_X: bench.EIGHT_X_UNBATCHED,
                                         bench.EIGHT_X_BF16: bench.EIGHT_X_BF16_UNBATCHED})
    assert [(r["qps"], r["model"], r["p99_ratio"], r["met"]) for r in rows] == [
        (100, bench.EIGHT_X_BF16, 2.0, False), (300, bench.EIGHT_X, 1.4, True),
        (300, bench.EIGHT_X_BF16, 1.8, False)]


def test_requests_share_their_user_and_query():
    requests = request_features(7, count=2, vocabulary_limit=20)
    for request in requests:
        assert {len(set(request[column])) for column in REQUEST_COLUMNS} == {1}
        assert len(set(request["item_id"])) > 1 and len(request["item_id"]) == 7
    assert requests[0]["query"][0] != requests[1]["query"][0] or \
        requests[0]["user_id"][0] != requests[1]["user_id"][0]


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    batching = BatchingConfig(max_batch_size=400, batch_timeout_micros=0,
                                         num_batch_threads=1, allowed_batch_sizes=())
    variants = [v for v in bench.VARIANTS if v.name in (bench.BATCHED, bench.UNBATCHED)]
    workdir = str(tmp_path_factory.mktemp("bench"))
    export_base, models = export_variants(workdir, batching, variants, vocabulary_limit=20)
    return workdir, export_base, models, request_features(100, count=2, vocabulary_limit=20)


def test_tiny_inprocess_run(tiny_exports):
    _, _, models, requests = tiny_exports
    functions = {name: bench.load_signature(m["path"]) for name, m in models.items()}
    measure = bench.inprocess_measure(functions, requests, threads=4, timeout_s=5.0)
    logged = []
    points = serving_sweep.sweep(measure, list(functions), [100.0], duration_s=0.3,
                                 timeout_s=0.0, log=logged.append, retries=0)
    assert [p["model"] for p in points] == [bench.BATCHED, bench.UNBATCHED] and len(logged) == 2
    for point in points:
        assert point["requests"] == point["ok"] + sum(point["errors"].values()) > 0
        assert point["candidates"] == 100 * point["ok"]
        assert 0 < point["latency_ms"]["p50"] <= point["latency_ms"]["p99"]
    rows = bench.dense_utilization(points, models, [bench.BATCHED])
    assert rows[0]["dense_gflops"] == pytest.approx(
        models[bench.BATCHED]["dense_flops_per_example"] * points[0]["candidates_per_s"] / 1e9)


def test_dense_scan_times_the_dense_signature_by_batch_size(tiny_exports):
    _, _, models, _ = tiny_exports
    model = models[bench.UNBATCHED]
    rows = dense_scan(model["path"], model["dense_flops_per_example"], sizes=(10, 40), calls=2,
                      repeats=2)
    assert [row["rows"] for row in rows] == [10, 40]
    for row in rows:
        assert row["ms"] > 0 and row["ms_per_100_rows"] == pytest.approx(
            row["ms"] * 100 / row["rows"], rel=1e-2)
        assert row["gflops"] == pytest.approx(
            model["dense_flops_per_example"] * row["rows"] / row["ms"] / 1e6, rel=2e-2, abs=0.1)
    table = "\n".join(scan_table({"m": rows}, {"float32": 100.0, "bfloat16": 400.0}))
    headroom = rows[0]["ms_per_100_rows"] / rows[1]["ms_per_100_rows"]
    assert "| m | 10 |" in table and f"| m | batching headroom | | {headroom:.2f}x |" in table


def test_inprocess_load_counts_refusals_by_status(tiny_exports):
    _, _, models, requests = tiny_exports
    function = bench.load_signature(models[bench.BATCHED]["path"])
    too_big = request_features(401, count=1, vocabulary_limit=20)  # over max_batch_size=400
    report = run_inprocess_load(function, too_big, qps=50.0, duration_s=0.2, threads=2)
    assert report.ok == 0 and report.errors == {"INVALID_ARGUMENT": report.requests}
    late = run_inprocess_load(function, requests, qps=50.0, duration_s=0.2, threads=1,
                              timeout_s=0.0)
    assert late.ok == 0 and late.errors == {"DEADLINE_EXCEEDED": late.requests}


def test_tiny_run_on_a_local_server(tiny_exports):
    workdir, export_base, models, requests = tiny_exports
    logged = []
    with bench.server_process(os.path.join(export_base, export.MODELS_CONFIG), list(models),
                              os.path.join(workdir, "server.log")) as server:
        points = serving_sweep.sweep(bench.grpc_measure(server, requests, 1.0), list(models),
                                     [200.0], duration_s=0.2, timeout_s=1.0, log=logged.append,
                                     retries=0)
        # Nothing left queued after this light sweep: one quiet window and the probe may start.
        waited = server.wait_until_idle(timeout_s=30.0, window_s=0.2)
        overhead = bench.server_overhead(server, bench.BATCHED, models[bench.BATCHED]["path"],
                                         requests[0], calls=3, warmup_calls=1)
    assert 0.2 <= waited < 30.0
    assert not os.path.exists(f"/proc/{server.pid}")  # terminated and reaped
    assert [p["model"] for p in points] == [bench.BATCHED, bench.UNBATCHED] and len(logged) == 2
    for point in points:
        assert point["requests"] == point["ok"] + sum(point["errors"].values()) > 0
        assert point["cpu_ms_per_request"] > 0 and point["send_window_s"] == 1.0
        assert point["server_drained_s"] >= 0.5  # each point waited for a quiet server
    assert overhead["overhead_ms"] == pytest.approx(
        overhead["grpc_ms"] - overhead["in_process_ms"], abs=1e-3)
    assert overhead["server_cpu_ms_per_request"] > 0
    summary = serving_sweep.summarize(points, 50.0, bench.BATCHED, bench.UNBATCHED, bench.WHOLE,
                                      bench.EIGHT_X)
    tables = "\n".join(serving_report.summary_tables(summary, 8.2, "gRPC")
                       + serving_report.overhead_table([overhead]))
    assert "(a) dcnv2 batched" in tables and f"| {bench.BATCHED} | 3 |" in tables
    json.dumps({"points": points, **summary})

"""The load test: closed and open loops, report bookkeeping, CLI, and a 30 s soak."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cvr_tf.compat import tf
from serving.limits import ServerLimits
from serving.loadtest import run_load, run_overload, synthetic_requests
from serving.server import start_server
from serving.tensors import InputSpec
from serving.tf_serving_config import single_model_config
from tests.serving.conftest import REPO, candidates, free_port


def assert_counts_add_up(report):
    assert report.requests == report.ok + sum(report.errors.values())
    assert report.candidates_per_s == pytest.approx(report.candidates / report.duration_s)
    assert report.requests_per_s == pytest.approx(report.ok / report.duration_s)


def test_closed_loop_sends_the_requested_count(server):
    report = run_load(
        server.target, "cvr", concurrency=4, candidates=20, duration_s=None, num_requests=40
    )
    assert (report.requests, report.ok, report.errors) == (40, 40, {})
    assert report.candidates == 800
    lat = report.latency_ms
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert_counts_add_up(report)
    assert "40 sent, 40 ok, 0 failed" in report.table()


def test_open_loop_fixed_arrivals_and_errors_by_code(server):
    report = run_load(
        server.target,
        "cvr",
        mode="open",
        qps=40,
        arrival="fixed",
        duration_s=1.0,
        requests=[candidates(5), candidates(3)],
    )
    assert report.requests == 39  # sends at 1/40 s, 2/40 s, ... strictly before 1 s
    assert (report.ok, report.errors, report.candidates) == (39, {}, 20 * 5 + 19 * 3)
    assert_counts_add_up(report)

    bad = candidates(4)
    bad["item_price"] = bad["item_price"].astype(np.float64)
    report = run_load(
        server.target, "cvr", mode="open", qps=100, duration_s=0.3, requests=[bad], seed=1
    )
    assert report.requests > 0 and report.ok == 0
    assert report.errors == {"INVALID_ARGUMENT": report.requests}
    assert_counts_add_up(report)
    assert json.loads(report.to_json())["errors"] == {"INVALID_ARGUMENT": report.requests}


def test_synthetic_requests_follow_the_signature():
    specs = {
        "query": InputSpec("query", tf.string, (-1,)),
        "price": InputSpec("price", tf.float32, (-1,)),
        "embeddings": InputSpec("embeddings", tf.float32, (-1, 4)),
        "count": InputSpec("count", tf.int64, None),
    }
    (request,) = synthetic_requests(specs, candidates=7, count=1)
    assert {name: (array.shape, array.dtype.name) for name, array in request.items()} == {
        "query": ((7,), "object"),
        "price": ((7,), "float32"),
        "embeddings": ((7, 4), "float32"),
        "count": ((7,), "int64"),
    }
    assert request["query"][0].startswith(b"query_")


def test_refuses_non_local_targets():
    with pytest.raises(ValueError, match="127.0.0.1"):
        run_load("10.1.2.3:8500", "cvr", num_requests=1)


def test_cli_prints_a_table_and_writes_json(server, tmp_path):
    output = tmp_path / "load.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.loadtest",
            f"--server={server.target}",
            "--model_name=cvr",
            "--concurrency=2",
            "--candidates=10",
            "--duration_s=0",
            "--num_requests=20",
            f"--output_json={output}",
        ],
        check=True,
        cwd=REPO,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert "20 sent, 20 ok, 0 failed" in result.stdout
    assert "latency (ms)" in result.stdout
    report = json.loads(output.read_text())
    assert (report["requests"], report["ok"], report["candidates"]) == (20, 20, 200)


def test_soak_32_clients_for_30_seconds_without_errors(cvr_base):
    # The default server serves 32 closed-loop clients unrefused (the robustness target of
    # docs/ARCHITECTURE.md §9).
    with start_server(single_model_config("cvr", cvr_base)) as server:
        report = run_load(server.target, "cvr", concurrency=32, candidates=100, duration_s=30.0)
    print(report.table())
    assert report.errors == {}
    assert report.ok == report.requests > 100
    assert_counts_add_up(report)


def test_overload_sheds_fast_and_retries_keep_serving(cvr_base):
    limits = ServerLimits(max_in_flight_per_model=1, max_queued_per_model=1)
    with start_server(single_model_config("cvr", cvr_base), limits=limits) as server:
        reports = run_overload(
            server.target,
            "cvr",
            overload_factor=3.0,
            concurrency=4,
            candidates=20,
            duration_s=1.0,
            timeout_s=1.0,
            max_retries=3,
        )
    capacity, shed, retried = (
        reports[name] for name in ("capacity", "overload", "overload_with_retries")
    )
    assert capacity.ok > 0 and capacity.errors.get("DEADLINE_EXCEEDED", 0) == 0
    for report in (shed, retried):
        assert_counts_add_up(report)
        assert report.offered_qps > capacity.requests_per_s
        assert set(report.errors) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
        assert report.ok > 0
    assert shed.retries == 0 and retried.retries > 0
    assert "retries" in retried.table()


def test_cli_reports_an_unreachable_server_in_one_line():
    target = f"127.0.0.1:{free_port()}"  # nobody listens
    result = subprocess.run(
        [sys.executable, "-m", "serving.loadtest", f"--server={target}", "--model_name=cvr",
         "--num_requests=1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"error: --model_name=cvr at --server={target}: UNAVAILABLE: ")
    assert last.endswith(f"; is a server listening on --server={target}?")

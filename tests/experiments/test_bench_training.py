"""The training benchmark end to end on a tiny window: every figure it prints is there."""

import pytest

from experiments import bench_training


def test_tiny_benchmark_measures_every_variant(tmp_path):
    data_dir = bench_training.prepare_spans(str(tmp_path / "data"), days=2, requests_per_day=60,
                                            candidates=10)
    lines: list[str] = []
    result = bench_training.benchmark(
        data_dir, days=2, backbones=["mlp"], batch_size=32, steps=6, warmup_steps=2,
        input_batches=3, warmup_batches=1, model_root=str(tmp_path / "models"),
        report=lines.append, matmul_size=128, xla_steps=3)
    assert result["matmul_peak_gflops"] == max(result["matmul_peak_before"]["gflops"],
                                               result["matmul_peak_after"]["gflops"]) > 0
    before, after = result["training"]
    assert (before["embedding_optimizer"], after["embedding_optimizer"]) == ("adam", "lazy_adam")
    assert before["speedup"] == 1.0 and after["speedup"] > 0
    for row in result["training"]:
        gflops = 3 * row["dense_flops_per_example"] * row["examples_per_second"] / 1e9
        assert row["dense_gflops"] == round(gflops, 1)
        assert row["fraction_of_peak"] == round(gflops / result["matmul_peak_gflops"], 3)
    [xla] = result["xla"]
    assert xla["step_ms"] > 0 and xla["xla_step_ms"] > 0
    assert xla["xla_speedup"] == pytest.approx(xla["step_ms"] / xla["xla_step_ms"], rel=0.05)
    table = bench_training.markdown_tables(result)
    assert "| mlp x1, after: defaults |" in table and "| mlp | " in table
    assert lines[0].startswith("fp32 matmul peak")

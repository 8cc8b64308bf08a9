"""``python -m serving.server`` as a process: TF Serving's flags, and graceful SIGTERM."""

import dataclasses
import signal
import subprocess
import sys
import time

import grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.batching import TF_SERVING_DEFAULTS, write_batching_parameters
from serving.tensors import to_ndarray
from tests.serving.conftest import REPO, candidates, free_port, predict_request


def test_sigterm_finishes_the_request_in_flight_and_exits_zero(tmp_path, cvr_base):
    batching_file = tmp_path / "batching_parameters.txt"
    write_batching_parameters(batching_file, dataclasses.replace(
        TF_SERVING_DEFAULTS, max_batch_size=32, batch_timeout_micros=1_500_000,
        num_batch_threads=1))
    port = free_port()
    with open(tmp_path / "server.log", "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.server",
                f"--port={port}",
                "--host=127.0.0.1",
                "--model_name=cvr",
                f"--model_base_path={cvr_base}",
                "--enable_batching",
                f"--batching_parameters_file={batching_file}",
                "--file_system_poll_wait_seconds=0.5",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=120)
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                in_flight = stub.Predict.future(predict_request(candidates(4)), timeout=30)
                time.sleep(0.3)  # the request now waits 1.5 s in the batching queue
                process.send_signal(signal.SIGTERM)
                response = in_flight.result()
                assert to_ndarray(response.outputs["probabilities"], "p").shape == (4,)
                assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    output = (tmp_path / "server.log").read_text()
    assert f"Running gRPC ModelServer at 127.0.0.1:{port}" in output
    assert "shutting down: finishing calls in flight" in output


def test_startup_errors_are_one_line_naming_the_cause(tmp_path, server):
    in_use = server.target.rsplit(":", 1)[1]  # the fixture's server listens there
    cases = {  # flags -> the last line on stderr; the three servers start side by side
        (f"--port={in_use}", "--model_name=cvr", f"--model_base_path={tmp_path}"):
            f"error: [Errno 98] could not bind gRPC to 127.0.0.1:{in_use}; is another server "
            "using it?",
        (f"--port={free_port()}", "--model_name=cvr", f"--model_base_path={tmp_path / 'none'}"):
            f"error: NOT_FOUND: Could not find base path {tmp_path / 'none'} for servable cvr; "
            "create it or fix base_path in the model config",
        (f"--model_config_file={tmp_path / 'models.config'}",):
            f"error: --model_config_file: [Errno 2] No such file or directory: "
            f"'{tmp_path / 'models.config'}'",
    }
    processes = {flags: subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--host=127.0.0.1", *flags], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for flags in cases}
    for flags, process in processes.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 1 and "Traceback" not in stderr
        assert stderr.splitlines()[-1] == cases[flags]

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

"""One batching dataclass and one reader/writer of TF Serving's batching_parameters.txt; the
export side never imports the server."""

import dataclasses
import subprocess
import sys

import pytest
from absl import flags

from cvr_tf import config_flags
from serving.batching import (
    TF_SERVING_DEFAULTS,
    BatchingConfig,
    read_batching_parameters,
    write_batching_parameters,
)
from tests.serving.conftest import REPO


def test_text_file_round_trip(tmp_path):
    path = tmp_path / "batching_parameters.txt"
    config = BatchingConfig(scope="none", max_batch_size=128, batch_timeout_micros=2000,
                            max_enqueued_batches=50, num_batch_threads=2,
                            allowed_batch_sizes=(32, 64, 128), pad_variable_length_inputs=True)
    write_batching_parameters(path, config)
    assert path.read_text() == (
        "max_batch_size {\n  value: 128\n}\n"
        "batch_timeout_micros {\n  value: 2000\n}\n"
        "max_enqueued_batches {\n  value: 50\n}\n"
        "num_batch_threads {\n  value: 2\n}\n"
        "allowed_batch_sizes: 32\nallowed_batch_sizes: 64\nallowed_batch_sizes: 128\n"
        "pad_variable_length_inputs: true\n"
    )
    assert read_batching_parameters(path) == config


def test_fields_a_file_leaves_out_keep_the_given_defaults(tmp_path):
    path = tmp_path / "batching_parameters.txt"
    path.write_text("max_batch_size { value: 8 }\n")
    server = read_batching_parameters(path)  # tensorflow_model_server's defaults
    assert server == dataclasses.replace(TF_SERVING_DEFAULTS, max_batch_size=8)
    assert (server.batch_timeout_micros, server.max_enqueued_batches) == (0, 10)
    assert server.padded_size(5) == 5
    export = read_batching_parameters(path, BatchingConfig(scope="whole"))
    assert export == BatchingConfig(scope="whole", max_batch_size=8, allowed_batch_sizes=())


@pytest.mark.parametrize(("text", "message"), [
    ("max_batch_size { value: 0 }", "max_batch_size=0 must be >= 1"),
    ("max_batch_size { value: 8 } batch_timeout_micros { value: -1 }",
     "batch_timeout_micros=-1"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2",
     "must be positive, increase strictly"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 16", "end at most at max_batch_size=8"),
    ("max_batch_size: 8", "not a valid tensorflow.serving.BatchingParameters text proto"),
])
def test_a_bad_file_names_itself_and_the_field(tmp_path, text, message):
    path = tmp_path / "b.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        read_batching_parameters(path)
    assert str(path) in str(raised.value)


def test_the_server_batches_only_what_it_need_not_split():
    in_graph = BatchingConfig(max_batch_size=16384, allowed_batch_sizes=(256, 4096))
    with pytest.raises(ValueError, match="last entry of allowed_batch_sizes=.* must equal"):
        in_graph.check_server_side()
    server_side = in_graph.server_side()
    server_side.check_server_side()
    assert (server_side.scope, server_side.max_batch_size) == ("none", 4096)


def test_the_export_batching_flags_come_from_the_dataclass():
    values = flags.FlagValues()
    config_flags.define_flags(BatchingConfig, flag_values=values)
    values(["export", "--batch_scope=none", "--allowed_batch_sizes=", "--max_batch_size=1600"])
    assert config_flags.build(BatchingConfig, values) == BatchingConfig(
        scope="none", max_batch_size=1600, allowed_batch_sizes=())
    values(["export", "--allowed_batch_sizes=100,200"])
    assert config_flags.build(BatchingConfig, values).allowed_batch_sizes == (100, 200)


def test_exporting_never_imports_the_server_runtime():
    probe = ("import sys, serving.export, serving.logged_warmup; "
             "print(sorted(m for m in sys.modules if m.startswith(('serving.server', 'grpc'))))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"

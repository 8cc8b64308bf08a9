"""TF Serving config files: exact text, round trips through the readers, validation errors."""

import shlex

import pytest

from serving import tf_serving_config as config
from serving.server.model_manager import select_versions


def test_models_config_text_and_round_trip(tmp_path):
    path = tmp_path / "models.config"
    written = config.write_models_config(
        path,
        [
            config.ModelEntry("cvr", "/models/cvr", config.latest_versions(2), {"stable": 1}),
            ("ranker", "/models/ranker", config.specific_versions([3, 1])),
            ("all", "/models/all", config.all_versions()),
        ],
    )
    text = path.read_text()
    assert 'name: "cvr"' in text
    assert "latest {\n        num_versions: 2\n      }" in text
    assert 'version_labels {\n      key: "stable"\n      value: 1\n    }' in text
    assert "specific {\n        versions: 1\n        versions: 3\n      }" in text
    assert text.count('model_platform: "tensorflow"') == 3
    assert config.read_models_config(path) == written


def test_monitoring_config_round_trip(tmp_path):
    path = tmp_path / "monitoring.config"
    written = config.write_monitoring_config(path)
    assert path.read_text() == (
        'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n'
    )
    assert config.read_monitoring_config(path) == written


def test_model_server_command_line():
    command = config.model_server_command(
        "/m/models.config",
        batching_parameters_file="/m/batching parameters.txt",
        monitoring_config_file="/m/monitoring.config",
    )
    assert shlex.split(command) == [
        "tensorflow_model_server",
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/m/models.config",
        "--file_system_poll_wait_seconds=1",
        "--enable_batching=true",
        "--batching_parameters_file=/m/batching parameters.txt",
        "--monitoring_config_file=/m/monitoring.config",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model_config_list { config { name: "a" } }', "has no base_path"),
        (
            'model_config_list { config { name: "a" base_path: "/x" } '
            'config { name: "a" base_path: "/y" } }',
            "appears twice",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/x" model_platform: "onnx" } }',
            "only 'tensorflow'",
        ),
        ("model_config_list { config { nme: 1 } }", "not a valid tensorflow.serving"),
    ],
)
def test_invalid_models_config_is_refused(tmp_path, text, message):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        config.read_models_config(path)


def test_version_policies():
    on_disk = {1, 2, 5, 7}
    assert select_versions(config.ServableVersionPolicy(), on_disk) == {7}
    assert select_versions(config.latest_versions(2), on_disk) == {5, 7}
    assert select_versions(config.specific_versions([2, 3]), on_disk) == {2}
    assert select_versions(config.all_versions(), on_disk) == on_disk
    assert select_versions(config.latest_versions(3), set()) == set()


@pytest.mark.parametrize("name", ["", "../escape", "/abs", "a/b", "..", ".hidden", "a b", "x\\y"])
def test_model_names_that_are_not_one_safe_path_segment_are_refused(name):
    with pytest.raises(ValueError, match="is invalid: use 1-255 letters"):
        config.validate_model_name(name)


def test_the_server_config_refuses_an_unsafe_model_name():
    with pytest.raises(ValueError, match="model name '../escape' is invalid"):
        config.models_config([("../escape", "/models/x")])


@pytest.mark.parametrize("name", ["cvr", "cvr-8x.v2", "CVR_2026"])
def test_tf_serving_model_names_are_accepted(name):
    config.validate_model_name(name)

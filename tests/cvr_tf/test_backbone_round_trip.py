"""Every backbone variant survives the model dir: load_model and warm start rebuild it exactly.

``model_config.json`` records ``backbone_config`` and ``dropout`` (``dataclasses.asdict``), so
export, warm start and resume, which all rebuild from it, get exactly the trained architecture.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from cvr_tf import model_dir as model_dir_lib
from cvr_tf import warm_start as warm_start_lib
from cvr_tf.compat import keras, tf
from cvr_tf.features import default_spec
from cvr_tf.model import ModelConfig, build_model
from serving import warmup

SPEC = default_spec()
VOCABS = {t: [f"tok{i}" for i in range(10)] for t in SPEC.vocabulary_tables()}
VARIANTS = [
    ModelConfig(backbone="mlp", backbone_config={"widths": [32, 16], "layer_norm": True},
                dropout=0.1),
    ModelConfig(backbone="dcnv2", backbone_config={
        "cross": "mixture", "rank": 8, "experts": 2, "structure": "parallel", "mlp": [32]}),
    ModelConfig(backbone="masknet", backbone_config={
        "structure": "serial", "blocks": 2, "block_width": 16}),
    ModelConfig(backbone="dhen", backbone_config={
        "layers": 1, "modules": ["mask", "mlp"], "combiner": "sum", "mlp": [32]}),
    # Members in non-alphabetical order: model_config.json sorts keys, the list keeps the order.
    ModelConfig(backbone="ensemble", dropout=0.2, backbone_config={"members": [
        {"mlp": {"widths": [16]}}, {"dcnv2": {"cross": "low_rank", "rank": 8, "mlp": [16]}}]}),
]


@pytest.mark.parametrize("config", VARIANTS, ids=[c.backbone for c in VARIANTS])
def test_model_dir_and_warm_start_rebuild_the_variant(tmp_path, config):
    keras.backend.clear_session()
    keras.utils.set_random_seed(4)
    model = build_model(SPEC, VOCABS, config)
    features = {c: tf.constant(v) for c, v in warmup.synthetic_features(SPEC, VOCABS, 8,
                                                                        seed=1).items()}
    expected, layer_config = model(features).numpy(), model.backbone.layer.get_config()
    model_dir_lib.save_model_definition(tmp_path, model)
    tf.train.CheckpointManager(model_dir_lib.checkpoint(model),
                               os.path.join(tmp_path, model_dir_lib.CHECKPOINT_DIR), 1).save(1)
    recorded = model_dir_lib.read_json(os.path.join(tmp_path, model_dir_lib.MODEL_CONFIG))
    assert recorded["model"] == dataclasses.asdict(config)

    loaded = model_dir_lib.load_model(tmp_path)
    assert loaded.config == config
    assert loaded.backbone.layer.get_config() == layer_config
    np.testing.assert_allclose(loaded(features).numpy(), expected, rtol=1e-5, atol=1e-6)

    source = warm_start_lib.read_source_weights(tmp_path)
    rebuilt = model_dir_lib.build_from_definition(*model_dir_lib.read_model_definition(tmp_path))
    report = warm_start_lib.warm_start(rebuilt, source)
    assert report.fresh == [] and report.carried
    assert rebuilt.backbone.layer.get_config() == layer_config
    np.testing.assert_allclose(rebuilt(features).numpy(), expected, rtol=1e-5, atol=1e-6)
    keras.backend.clear_session()


def test_the_config_keeps_options_in_json_form_so_resume_compares_equal():
    config = ModelConfig(backbone="mlp", backbone_config={"widths": (64, 32), 1: "x"})
    assert config.backbone_config == {"widths": [64, 32], "1": "x"}
    assert ModelConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config

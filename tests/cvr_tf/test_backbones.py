"""Tests for the backbones registry and its compute accounting."""

import numpy as np
import pytest

from cvr_tf.backbones import available_backbones, build_backbone, scaled_widths
from cvr_tf.compat import keras, tf
from cvr_tf.flops import measured_flops

FIELD_DIMS = [16] * 14
INPUT_DIM = sum(FIELD_DIMS)
NAMES = ["dcnv2", "dhen", "ensemble", "masknet", "mlp"]


def test_available_backbones():
    assert available_backbones() == NAMES


@pytest.mark.parametrize("scale", [1.0, 2.0])
@pytest.mark.parametrize("name", NAMES)
def test_analytic_counts_match_tensorflow(name, scale):
    backbone = build_backbone(name, INPUT_DIM, FIELD_DIMS, scale)
    measured = measured_flops(backbone.layer, INPUT_DIM)
    # The profiler also counts elementwise ops (bias adds, products, residuals), which the
    # analytic count leaves out: measured is a little above, never below.
    assert backbone.flops_per_example <= measured <= 1.10 * backbone.flops_per_example
    assert backbone.param_count == backbone.layer.count_params()
    outputs = backbone.layer(tf.zeros([2, INPUT_DIM]))
    assert outputs.shape == (2, backbone.output_dim)
    assert (backbone.name, backbone.scale) == (name, scale)


def test_dhen_has_about_eight_times_the_flops_of_dcnv2():
    dcnv2 = build_backbone("dcnv2", INPUT_DIM, FIELD_DIMS).flops_per_example
    dhen = build_backbone("dhen", INPUT_DIM, FIELD_DIMS).flops_per_example
    assert 6 <= dhen / dcnv2 <= 10
    assert (dcnv2, dhen) == (481_280, 3_709_440)  # the module docstring's table


@pytest.mark.parametrize("name", NAMES)
def test_flops_grow_about_linearly_in_scale(name):
    flops = [build_backbone(name, INPUT_DIM, FIELD_DIMS, s).flops_per_example for s in (1, 2, 4)]
    np.testing.assert_allclose([flops[1] / flops[0], flops[2] / flops[0]], [2, 4], rtol=0.05)


def test_scaled_widths_multiply_mlp_flops():
    def mlp_flops(widths):
        all_widths = [100, *widths]
        return sum(a * b for a, b in zip(all_widths[:-1], all_widths[1:], strict=True))

    assert scaled_widths(100, [64, 32], 1.0) == [64, 32]
    for scale in (0.5, 3.0, 8.0):
        ratio = mlp_flops(scaled_widths(100, [64, 32], scale)) / mlp_flops([64, 32])
        assert ratio == pytest.approx(scale, rel=0.03)
    assert scaled_widths(100, [10], 3.0) == [30]


def test_ensemble_concatenates_its_members():
    members = [build_backbone(name, INPUT_DIM, FIELD_DIMS) for name in ("dcnv2", "masknet")]
    for name in ("ensemble", "ensemble:dcnv2+masknet"):
        ensemble = build_backbone(name, INPUT_DIM, FIELD_DIMS)
        assert ensemble.output_dim == sum(m.output_dim for m in members)
        assert ensemble.flops_per_example == sum(m.flops_per_example for m in members)
        assert ensemble.param_count == sum(m.param_count for m in members)
    three = build_backbone("ensemble:dcnv2+masknet+dhen", INPUT_DIM, FIELD_DIMS)
    assert three.output_dim == 128 + 128 + INPUT_DIM
    members = three.layer.get_config()["members"]
    assert [member["config"]["name"] for member in members] == ["dcnv2", "masknet", "dhen"]


def test_backbone_layer_round_trips_through_serialization():
    backbone = build_backbone("ensemble:mlp+dhen", INPUT_DIM, FIELD_DIMS, 0.5)
    x = np.random.default_rng(0).normal(size=(2, INPUT_DIM)).astype(np.float32)
    expected = backbone.layer(x).numpy()
    copy = keras.layers.deserialize(keras.layers.serialize(backbone.layer))
    copy(x)
    copy.set_weights(backbone.layer.get_weights())
    np.testing.assert_allclose(copy(x).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("transformer", {}, "unknown backbone 'transformer'; available: dcnv2, dhen, ensemble"),
        ("ensemble:dcnv2+gbdt", {}, "unknown ensemble member 'gbdt' in 'ensemble:dcnv2\\+gbdt'; "
                                   "members are dcnv2, dhen, masknet, mlp"),
        ("ensemble:dcnv2+dcnv2", {}, "names a member twice"),
        ("ensemble:ensemble", {}, "unknown ensemble member 'ensemble'"),
        ("dcnv2", {"scale": 0.0}, "scale must be positive, got 0.0"),
        ("dcnv2", {"field_dims": [16] * 13}, "must sum to input_dim=224"),
    ],
)
def test_invalid_arguments(name, kwargs, message):
    arguments = {"input_dim": INPUT_DIM, "field_dims": FIELD_DIMS, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_backbone(name, **arguments)

"""Backbone options: each option changes the built layer as documented, bad ones fail in one line.

FLOPs and params at 14 fields of 16 (D = 224), per the convention of cvr_tf.flops. Hand checks:
MLP [64, 32]: 2 (224*64 + 64*32) = 32,768 FLOPs, 224*64+64 + 64*32+32 = 16,480 params; a rank-32
cross layer: 4*224*32 = 28,672 FLOPs, 2*224*32 + 224 = 14,560 params, so 3 of them and the MLP
[256, 128] (180,224 FLOPs, 90,496 params) are 266,240 FLOPs and 134,176 params.
"""

import pathlib
import re

import numpy as np
import pytest
import yaml

from cvr_tf.backbones import build_backbone, scaled_widths
from cvr_tf.compat import tf

FIELD_DIMS = [16] * 14
INPUT_DIM = sum(FIELD_DIMS)


def _build(name, options=None, scale=1.0, dropout=0.0):
    return build_backbone(name, INPUT_DIM, FIELD_DIMS, scale, options=options, dropout=dropout)


@pytest.mark.parametrize(
    ("name", "options", "flops", "params", "output_dim"),
    [
        ("mlp", {"widths": [64, 32]}, 32_768, 16_480, 32),
        ("mlp", {"widths": [64, 32], "layer_norm": True}, 32_768, 16_480 + 2 * 96, 32),
        ("dcnv2", {"layers": 2}, 380_928, 191_296, 128),
        ("dcnv2", {"cross": "low_rank", "rank": 32}, 266_240, 134_176, 128),
        ("dcnv2", {"cross": "low_rank"}, 330_752, 166_432, 128),  # rank D / 4 = 56
        ("dcnv2", {"cross": "mixture", "rank": 16, "experts": 2}, 272_000, 137_056, 128),
        ("dcnv2", {"cross": "mixture"}, 862_976, 432_544, 128),  # 4 experts of rank 56
        ("dcnv2", {"structure": "parallel"}, 481_280, 241_696, 224 + 128),
        ("dcnv2", {"mlp": [64]}, 329_728, 165_600, 64),
        ("masknet", {"blocks": 1}, 528_384, 265_824, 128),
        ("masknet", {"block_width": 32}, 1_361_920, 684_896, 128),
        ("masknet", {"reduction_ratio": 1}, 851_968, 429_440, 128),
        ("masknet", {"mlp": [64]}, 1_314_816, 661_216, 64),
        ("masknet", {"structure": "serial"}, 962_560, 483_808, 64),
        ("masknet", {"structure": "serial", "blocks": 2, "block_width": 32}, 647_168, 325_312,
         32),
        ("dhen", {"layers": 1}, 1_854_720, 911_680, 224),
        ("dhen", {"modules": ["cross", "mlp"]}, 2_207_744, 1_107_904, 224),
        ("dhen", {"combiner": "sum"}, 2_906_624, 1_421_504, 224),
        ("dhen", {"mlp": [64]}, 2_218_496, 1_075_776, 224),
        ("ensemble", {"members": [{"mlp": {"widths": [64, 32]}},
                                  {"dcnv2": {"cross": "low_rank", "rank": 32}}]},
         32_768 + 266_240, 16_480 + 134_176, 32 + 128),
    ],
)
def test_each_option_changes_the_layer(name, options, flops, params, output_dim):
    backbone = _build(name, options)
    assert (backbone.flops_per_example, backbone.param_count, backbone.output_dim) == (
        flops, params, output_dim)
    backbone.layer(tf.zeros([1, INPUT_DIM]))
    assert backbone.layer.count_params() == params


def test_defaults_are_the_scale_one_architectures():
    for name in ("mlp", "dcnv2", "masknet", "dhen", "ensemble"):
        default, spelled_out = _build(name), _build(name, {})
        assert default.layer.get_config() == spelled_out.layer.get_config()
    assert _build("dcnv2").options.cross == "full"


def test_scale_applies_on_top_of_the_options():
    dcnv2 = _build("dcnv2", {"layers": 2, "mlp": [64]}, scale=2.0).layer.get_config()
    assert dcnv2["num_cross_layers"] == 4
    assert dcnv2["mlp_units"] == scaled_widths(INPUT_DIM, [64], 2.0) == [128]
    assert _build("masknet", {"blocks": 2}, scale=1.5).layer.get_config()["num_blocks"] == 3
    serial = _build("masknet", {"structure": "serial", "blocks": 2}, scale=2.0)
    assert serial.layer.get_config()["block_units"] == [64] * 4
    assert _build("dhen", {"layers": 3}, scale=2.0).layer.get_config()["num_layers"] == 6
    assert _build("mlp", {"widths": [10]}, scale=3.0).layer.get_config()["units"] == [30]


def test_dropout_reaches_every_mlp_and_options_override_it():
    assert _build("mlp", dropout=0.25).layer.get_config()["dropout"] == 0.25
    assert _build("dcnv2", dropout=0.25).layer.get_config()["dropout"] == 0.25
    assert _build("masknet", dropout=0.25).layer.get_config()["dropout"] == 0.25
    assert _build("dhen", dropout=0.25).layer.get_config()["mlp_dropout"] == 0.25
    assert _build("dcnv2", {"dropout": 0.5}, dropout=0.25).layer.get_config()["dropout"] == 0.5
    ensemble = _build("ensemble", {"dropout": 0.5, "members": [{"mlp": {"dropout": 0.1}},
                                                               "dhen"]}, dropout=0.25)
    members = [m["config"] for m in ensemble.layer.get_config()["members"]]
    assert (members[0]["dropout"], members[1]["mlp_dropout"]) == (0.1, 0.5)
    # Dropout acts in training only; it adds no FLOPs or parameters.
    backbone = _build("mlp", {"widths": [64, 32]}, dropout=0.5)
    assert (backbone.flops_per_example, backbone.param_count) == (32_768, 16_480)
    x = tf.ones([4, INPUT_DIM])
    inference = backbone.layer(x, training=False).numpy()
    np.testing.assert_array_equal(backbone.layer(x, training=False).numpy(), inference)
    assert not np.allclose(backbone.layer(x, training=True).numpy(), inference)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("dcnv2", {"crosss": "full"}, "backbone_config: unknown option 'crosss'; valid options: "
         "layers, cross, rank, experts, structure, mlp, layer_norm, dropout"),
        ("dcnv2", {"cross": "foo"},
         "backbone_config.cross: 'foo' is not one of full, low_rank, mixture"),
        ("dcnv2", {"layers": "3"},
         "backbone_config.layers: expected an integer, got '3' \\(str\\)"),
        ("dcnv2", {"layers": True}, "backbone_config.layers: expected an integer, got True"),
        ("dcnv2", {"layers": 0}, "backbone_config.layers: must be >= 1, got 0"),
        ("dcnv2", {"rank": 8}, "backbone_config.rank: a full-rank cross has no rank"),
        ("dcnv2", {"cross": "low_rank", "experts": 2},
         "backbone_config.experts: only a mixture cross has experts"),
        ("dcnv2", {"structure": "side"},
         "backbone_config.structure: 'side' is not one of stacked, parallel"),
        ("mlp", {"widths": [64, 0]}, "backbone_config.widths\\[1\\]: must be >= 1, got 0"),
        ("mlp", {"widths": []}, "backbone_config.widths: expected a non-empty list, got \\[\\]"),
        ("mlp", {"layer_norm": "yes"}, "backbone_config.layer_norm: expected true or false"),
        ("mlp", {"dropout": 1.5}, "backbone_config.dropout: must be < 1.0, got 1.5"),
        ("masknet", {"structure": "serial", "mlp": [64]},
         "backbone_config.mlp: a serial MaskNet has no MLP"),
        ("masknet", {"reduction_ratio": 0}, "backbone_config.reduction_ratio: must be > 0.0, "
         "got 0"),
        ("masknet", {"reduction_ratio": "two"}, "backbone_config.reduction_ratio: expected a "
         "number, got 'two'"),
        ("dhen", {"modules": ["cross", "gbdt"]},
         "backbone_config.modules\\[1\\]: 'gbdt' is not one of cross, mask, attention, mlp"),
        ("dhen", {"modules": ["mlp", "mlp"]}, "backbone_config.modules: \\['mlp', 'mlp'\\] names a "
         "module twice"),
        ("dhen", {"combiner": "max"}, "backbone_config.combiner: 'max' is not one of concat, sum"),
        ("ensemble", {"members": ["mlp", {"gbdt": {}}]}, "backbone_config.members\\[1\\]: "
         "unknown member 'gbdt'; members are dcnv2, dhen, masknet, mlp"),
        ("ensemble", {"members": []}, "backbone_config.members: an ensemble needs at least one"),
        ("ensemble", {"members": {"dcnv2": {}}}, "backbone_config.members: expected a list"),
        ("ensemble", {"members": [{"dcnv2": {}, "mlp": {}}]}, "backbone_config.members\\[0\\]: "
         "expected a backbone name or {name: options}"),
        ("ensemble", {"members": ["mlp", "mlp"]},
         "backbone_config.members\\[1\\]: 'mlp' is already a member"),
        ("ensemble", {"members": [{"dcnv2": {"cross": "foo"}}]},
         "backbone_config.members.dcnv2.cross: 'foo' is not one of full, low_rank, mixture"),
        ("ensemble", {"members": [{"mlp": {"rank": 3}}]}, "backbone_config.members.mlp: unknown "
         "option 'rank'; valid options: widths, layer_norm, dropout"),
        ("ensemble:dcnv2+mlp", {"members": ["dhen"]},
         "backbone_config.members: backbone 'ensemble:dcnv2\\+mlp' already names the members"),
        ("mlp", ["widths"], "backbone_config: expected a mapping of options, got \\['widths'\\]"),
    ],
)
def test_bad_options_fail_in_one_line_naming_the_key(name, options, message):
    with pytest.raises(ValueError, match=f"^{message}") as error:
        _build(name, options)
    assert "\n" not in str(error.value)


def test_bad_model_dropout():
    with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\), got 1.0$"):
        _build("mlp", dropout=1.0)


def test_ensemble_name_members_take_per_member_options():
    backbone = _build("ensemble:mlp+dcnv2", {"dropout": 0.1})
    names = [m["config"]["name"] for m in backbone.layer.get_config()["members"]]
    assert names == ["mlp", "dcnv2"]
    assert [name for name, _ in backbone.options.members] == ["mlp", "dcnv2"]
    assert backbone.options.members[1][1].dropout == 0.1


def test_readme_example_files_build():
    text = (pathlib.Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("#### Backbone options"):text.index("#### Adding a backbone")]
    examples = re.findall(r"```yaml\n# --backbone=(\w+)\n(.*?)```", section, re.S)
    examples += [("ensemble", block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]
    assert sorted(name for name, _ in examples) == ["dcnv2", "dhen", "ensemble", "masknet", "mlp"]
    for name, block in examples:
        options = yaml.safe_load(block)
        assert options and _build(name, options).options != _build(name).options

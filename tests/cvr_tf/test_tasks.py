"""Multi-task models: --tasks parsing, ESMM/MMoE/PLE heads over a backbone, losses, accounting."""

import math

import numpy as np
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.features import default_spec, spec_from_dict
from cvr_tf.flops import measured_flops
from cvr_tf.model import CVRModel, ModelConfig, build_model
from cvr_tf.tasks import parse_tasks

SPEC = spec_from_dict({**default_spec().to_dict(), "labels": {
    "clicked": {"events": "clicks", "window_hours": 1},
    "converted": {"events": "conversions", "attribution_days": 3}}})
VOCABS = {t: [f"tok{i}" for i in range(20)] for t in SPEC.vocabulary_tables()}
VOCABS["terms"] = ["red", "shoe", "blue", "bag"]
ESMM = ModelConfig(backbone="mlp", tasks="ctr,ctcvr")


def _batch(clicked=(1, 1, 0, 1), converted=(1, 0, 0, 1), positions=(1, 5, 9, 2)):
    return {
        "user_id": tf.constant(["u0", "u1", "u2", "u3"]),
        "user_segment": tf.constant(["tok1", "tok2", "zz", "tok1"]),
        "device": tf.constant(["tok0"] * 4),
        "query": tf.constant(["red shoe", "", "bag", "blue bag"]),
        "item_id": tf.constant(["tok3", "tok4", "new", "tok5"]),
        "item_title": tf.constant(["red shoe", "blue", "", "bag"]),
        "item_category": tf.constant(["tok1"] * 4),
        "item_brand": tf.constant(["tok2"] * 4),
        "item_price": tf.constant([10.0, 0.5, 99.0, 20.0]),
        "position": tf.constant(positions, tf.int64),
        "clicked": tf.constant(clicked, tf.int64),
        "converted": tf.constant(converted, tf.int64),
        "request_id": tf.constant(["r1", "r1", "r2", "r2"]),
    }


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _bce(labels, p):
    labels = np.asarray(labels, np.float64)
    return float(np.mean(-labels * np.log(p) - (1 - labels) * np.log1p(-p)))


@pytest.fixture(scope="module")
def esmm() -> CVRModel:
    keras.utils.set_random_seed(3)
    return build_model(SPEC, VOCABS, ESMM)


def test_what_each_task_set_trains_outputs_and_evaluates():
    esmm = parse_tasks("ctr,ctcvr")
    assert (esmm.towers, esmm.outputs, esmm.trained, esmm.primary) == (
        ("ctr", "cvr"), ("ctr", "cvr", "ctcvr"), ("ctr", "ctcvr"), "ctcvr")
    assert esmm.evaluated == ("ctr", "cvr", "ctcvr", "cvr_on_clicks")
    click_only = parse_tasks("cvr")
    assert (click_only.towers, click_only.trained, click_only.evaluated) == (
        ("cvr",), ("cvr",), ("cvr", "cvr_on_clicks"))
    assert parse_tasks("ctr,cvr").trained == ("ctr", "cvr")
    assert parse_tasks("") is None


def test_targets_put_cvr_on_clicks_and_ctcvr_on_every_impression():
    click, conversion = np.array([1.0, 1.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 1.0])
    trained = parse_tasks("cvr").training_targets(click, conversion)
    labels, mask = trained["cvr"]
    np.testing.assert_array_equal(labels, conversion)
    np.testing.assert_array_equal(mask, click)
    evaluated = parse_tasks("ctr,ctcvr").evaluation_targets(click, conversion)
    output, labels, mask = evaluated["ctcvr"]
    assert output == "ctcvr" and mask is None
    np.testing.assert_array_equal(labels, [1.0, 0.0, 0.0, 0.0])
    assert evaluated["cvr"][2] is None and evaluated["cvr_on_clicks"][2] is click


def test_structures_plan_their_experts_and_gates():
    assert parse_tasks("ctr,ctcvr").gates() == (1, {"ctr": [0], "cvr": [0]})
    mmoe = parse_tasks("ctr,ctcvr", {"tasks": {"structure": "mmoe", "experts": 3}})
    assert mmoe.gates() == (3, {"ctr": [0, 1, 2], "cvr": [0, 1, 2]})
    ple = parse_tasks("ctr,ctcvr", {"tasks": {"structure": "ple", "task_experts": 2}})
    assert ple.gates() == (6, {"ctr": [2, 3, 0, 1], "cvr": [4, 5, 0, 1]})


@pytest.mark.parametrize("tasks, config, message", [
    ("ctr,click", {}, "--tasks=ctr,click: name each of ctr, cvr, ctcvr at most once"),
    ("ctr,ctr", {}, "at most once"),
    ("ctcvr", {}, "ctcvr is pCTR x pCVR \\(ESMM\\) and needs ctr; use --tasks=ctr,ctcvr"),
    ("", {"tasks": {}}, "backbone_config.tasks configures multi-task heads but --tasks is empty"),
    ("ctr,ctcvr", {"tasks": {"experts": 2}},
     "backbone_config.tasks.experts: only structure mmoe or ple has experts"),
    ("ctr,ctcvr", {"tasks": {"structure": "moe"}}, "'moe' is not one of shared_bottom, mmoe"),
    ("ctr,ctcvr", {"tasks": {"tower": [8]}}, "unknown option 'tower'"),
    ("ctr,ctcvr", {"tasks": {"towers": {"ctcvr": [8]}}},
     "towers: 'ctcvr' is not one of ctr, cvr"),
    ("ctr,ctcvr", {"tasks": {"towers": {"cvr": [8, 0]}}}, "towers.cvr: expected a list of"),
    ("ctr,ctcvr", {"tasks": {"loss_weights": {"cvr": 1.0}}},
     "loss_weights: 'cvr' is not one of ctr, ctcvr"),
    ("ctr,ctcvr", {"tasks": {"loss_weights": {"ctr": -1}}}, "loss_weights.ctr: expected a num"),
])
def test_bad_tasks_fail_in_one_line_naming_the_flag_or_key(tasks, config, message):
    with pytest.raises(ValueError, match=message):
        parse_tasks(tasks, config)


def test_esmm_returns_every_probability_by_name_with_ctcvr_the_product(esmm):
    served = esmm(_batch())
    assert list(served) == ["ctr", "cvr", "ctcvr"]
    np.testing.assert_allclose(served["ctcvr"].numpy(),
                               served["ctr"].numpy() * served["cvr"].numpy(), rtol=1e-6)
    embeddings = esmm.embedding_part({c: _batch()[c] for c in SPEC.column_dtypes(False)})
    dense = esmm.dense_part(embeddings)
    assert isinstance(dense, dict) and set(dense) == {"ctr", "cvr", "ctcvr"}
    for task in dense:
        np.testing.assert_array_equal(dense[task].numpy(), served[task].numpy())
        assert dense[task].shape == (4,)
    served_fn = esmm.served_probabilities({c: _batch()[c] for c in SPEC.column_dtypes(False)})
    np.testing.assert_allclose(served_fn["cvr"].numpy(), served["cvr"].numpy(), rtol=1e-6)


def test_the_position_bias_joins_the_click_tower_in_training_only(esmm):
    near, far = esmm.training_logits(_batch()), esmm.training_logits(_batch(positions=(9, 1, 1, 3)))
    assert not np.allclose(near["ctr"].numpy(), far["ctr"].numpy())
    np.testing.assert_array_equal(near["cvr"].numpy(), far["cvr"].numpy())
    np.testing.assert_array_equal(esmm(_batch())["ctr"].numpy(),
                                  esmm(_batch(positions=(9, 1, 1, 3)))["ctr"].numpy())


def test_esmm_loss_is_ctr_plus_ctcvr_log_loss_on_every_impression(esmm):
    batch = _batch()
    loss, labels, probabilities = esmm.compute_training_loss(batch, training=False)
    logits = esmm.training_logits(batch, training=False)
    p_ctr = _sigmoid(logits["ctr"].numpy())
    p_ctcvr = p_ctr * _sigmoid(logits["cvr"].numpy())
    click, conversion = np.array([1, 1, 0, 1]), np.array([1, 0, 0, 1])
    assert float(loss) == pytest.approx(_bce(click, p_ctr) + _bce(click * conversion, p_ctcvr),
                                        rel=1e-5)
    np.testing.assert_array_equal(labels.numpy(), click * conversion)  # the primary: ctcvr
    np.testing.assert_allclose(probabilities.numpy(), p_ctcvr, rtol=1e-5)


def test_a_click_space_cvr_model_ignores_impressions_without_a_click():
    keras.utils.set_random_seed(4)
    model = build_model(SPEC, VOCABS, ModelConfig(backbone="mlp", tasks="cvr",
                                                  position_debiasing=False))
    loss, _, _ = model.compute_training_loss(_batch(), training=False)
    # Row 3 has no click: its conversion label does not count.
    again, _, _ = model.compute_training_loss(_batch(converted=(1, 0, 1, 1)), training=False)
    assert float(loss) == pytest.approx(float(again), rel=1e-6)
    p = model(_batch())["cvr"].numpy()
    assert float(loss) == pytest.approx(_bce([1, 0, 1], p[[0, 1, 3]]), rel=1e-5)


def test_loss_weights_and_fake_negative_weighting_reach_every_task():
    keras.utils.set_random_seed(5)
    weighted = build_model(SPEC, VOCABS, ModelConfig(
        backbone="mlp", tasks="ctr,ctcvr", position_debiasing=False,
        backbone_config={"tasks": {"loss_weights": {"ctr": 0.0}}}))
    batch = _batch()
    p = weighted(batch)
    conversion = np.array([1, 0, 0, 1]) * np.array([1, 1, 0, 1])
    assert float(weighted.compute_training_loss(batch)[0]) == pytest.approx(
        _bce(conversion, p["ctcvr"].numpy()), rel=1e-5)
    weighted.compile(optimizer="sgd", fake_negative_weighting=True)
    f = p["ctcvr"].numpy().astype(np.float64)
    stream = ((1 - f) * (1 + f) * -np.log1p(-f) + conversion * (1 + f) * -np.log(f)).sum()
    assert float(weighted.compute_training_loss(batch)[0]) == pytest.approx(
        stream / (4 + conversion.sum()), rel=1e-5)


@pytest.mark.parametrize("structure", ["shared_bottom", "mmoe", "ple"])
def test_flops_and_params_match_the_parts_and_tensorflows_count(structure):
    keras.backend.clear_session()
    model = build_model(SPEC, VOCABS, ModelConfig(
        backbone="dcnv2", tasks="ctr,ctcvr", backbone_config={"tasks": {"structure": structure}}))
    experts = model.task_set.gates()[0]
    assert model.dense_parameter_count == model.dense_part.count_params()
    width = model.backbone.output_dim  # the towers' input
    towers = 2 * (2 * width * 64 + 2 * 64)  # MLP [64] and the logit, per tower
    assert model.dense_flops_per_example >= experts * model.backbone.flops_per_example + towers
    measured = measured_flops(model.dense_part, 217)
    assert model.dense_flops_per_example <= measured <= 1.1 * model.dense_flops_per_example


def test_a_multi_task_model_round_trips_and_names_missing_labels(esmm):
    clone = CVRModel.from_config(esmm.get_config())
    clone.set_weights(esmm.get_weights())
    np.testing.assert_array_equal(clone(_batch())["cvr"].numpy(), esmm(_batch())["cvr"].numpy())
    with pytest.raises(ValueError, match="needs the click label 'clicked', which is not a label "
                                         "of the spans \\(converted\\)"):
        build_model(default_spec(), VOCABS, ESMM)
    with pytest.raises(ValueError, match="trains with --loss=logloss only"):
        build_model(SPEC, VOCABS, ModelConfig(tasks="ctr,ctcvr", loss="listwise_softmax"))


def test_fit_lowers_both_losses():
    keras.utils.set_random_seed(6)
    model = build_model(SPEC, VOCABS, ModelConfig(backbone="mlp", tasks="ctr,ctcvr",
                                                  backbone_config={"tasks": {"structure": "mmoe",
                                                                             "experts": 2}}))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=[keras.metrics.AUC(name="auc")])
    history = model.fit(tf.data.Dataset.from_tensors(_batch()).repeat(3), epochs=2, verbose=0)
    assert 0 < history.history["loss"][1] < history.history["loss"][0]
    assert math.isfinite(history.history["auc"][1])

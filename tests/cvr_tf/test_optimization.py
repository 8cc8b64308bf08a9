"""Optimizers, schedules and regularizers: each moves the weights exactly as its formula says.

One training step of a small model, eager, compared with the update computed by hand from the
gradient of the same batch.
"""

import numpy as np
import pytest

from cvr_tf.compat import keras, tf
from cvr_tf.model import ModelConfig, build_model
from cvr_tf.optimization import OptimizerConfig, WarmupDecay, exempt_from_decay, make_optimizers
from tests.cvr_tf.test_model import SPEC, VOCABS, _batch


def _model(**optimization):
    """A small model compiled with ``optimization``; its tables follow ``--optimizer`` unless
    told otherwise (their own default, Lazy Adam, is pinned by test_lazy_adam.py)."""
    optimization.setdefault("embedding_optimizer", "")
    keras.backend.clear_session()
    keras.utils.set_random_seed(3)
    model = build_model(SPEC, VOCABS, ModelConfig(backbone="mlp"))
    config = OptimizerConfig(**optimization)
    dense, embedding = make_optimizers(config, total_steps=10)
    model.compile(optimizer=dense, embedding_optimizer=embedding,
                  embedding_l2=config.embedding_l2)
    exempt_from_decay(dense, model.dense_variables)
    return model


def _step(model):
    """(weights before, gradients, weights after, logged loss) of one train_step."""
    batch = _batch()
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss, _, _ = model.compute_training_loss(batch)
    gradients = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)]
    before = [v.numpy() for v in variables]
    logs = model.train_step(batch)
    return before, gradients, [v.numpy() for v in variables], float(logs["loss"]), float(loss)


def _is_table(model, variable):
    return any(variable is table for table in model.embedding_variables)


@pytest.mark.parametrize("decay, steps, expected", [
    ("constant", [0, 1, 2, 9], [0.5, 1.0, 1.0, 1.0]),
    ("linear", [0, 2, 6, 10, 12], [0.5, 1.0, 0.5, 0.0, 0.0]),
    ("cosine", [2, 4, 6, 10], [1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.0]),
])
def test_warmup_decay_follows_its_formula(decay, steps, expected):
    schedule = WarmupDecay(1.0, total_steps=10, warmup_steps=2, decay=decay)
    np.testing.assert_allclose([float(schedule(s)) for s in steps], expected, atol=1e-6)
    assert WarmupDecay(**schedule.get_config()).get_config() == schedule.get_config()


def test_sgd_moves_tables_and_dense_weights_at_their_own_rates():
    model = _model(optimizer="sgd", momentum=0.0, learning_rate=0.1, embedding_learning_rate=2.0)
    before, gradients, after, _, _ = _step(model)
    for variable, old, gradient, new in zip(model.trainable_variables, before, gradients, after,
                                            strict=True):
        rate = 2.0 if _is_table(model, variable) else 0.1
        np.testing.assert_allclose(new, old - rate * gradient, atol=1e-6, err_msg=variable.name)


def test_embedding_l2_shrinks_only_the_rows_the_batch_looks_up():
    plain = _step(_model(optimizer="sgd", momentum=0.0, learning_rate=0.1))
    model = _model(optimizer="sgd", momentum=0.0, learning_rate=0.1, embedding_l2=0.5)
    before, _, after, logged_loss, loss = _step(model)
    table_index = next(i for i, v in enumerate(model.trainable_variables)
                       if "item_id_embedding" in v.name)
    change = after[table_index] - plain[2][table_index]
    # item_id looks up tok3, tok4, tok5 (rows 4, 5, 6) and the OOV row 0, once each; batch 4.
    looked_up = [0, 4, 5, 6]
    np.testing.assert_allclose(change[looked_up], -0.1 * 2 * 0.5 / 4 * before[table_index][
        looked_up], atol=1e-7)
    untouched = [r for r in range(len(change)) if r not in looked_up]
    np.testing.assert_array_equal(change[untouched], 0.0)
    for i, variable in enumerate(model.trainable_variables):  # dense weights: no penalty
        if not _is_table(model, variable):
            np.testing.assert_allclose(after[i], plain[2][i], atol=1e-7, err_msg=variable.name)
    assert logged_loss > loss  # the logged loss includes the penalty


def test_weight_decay_shrinks_dense_kernels_only():
    plain = _step(_model(optimizer="sgd", momentum=0.0, learning_rate=0.1))
    model = _model(optimizer="sgd", momentum=0.0, learning_rate=0.1, weight_decay=0.5)
    before, _, after, _, _ = _step(model)
    decayed = 0
    for i, variable in enumerate(model.trainable_variables):
        if "kernel" in variable.name:  # W' = W - lr wd W - lr g
            np.testing.assert_allclose(after[i], plain[2][i] - 0.1 * 0.5 * before[i], atol=1e-6)
            decayed += 1
        else:  # biases, normalization weights and tables
            np.testing.assert_allclose(after[i], plain[2][i], atol=1e-7, err_msg=variable.name)
    assert decayed >= 4


def test_clipnorm_bounds_each_dense_gradient():
    # (A table's gradient is clipped as Keras clips IndexedSlices: by the norm of its slices.)
    model = _model(optimizer="sgd", momentum=0.0, learning_rate=1.0, clipnorm=1e-3)
    before, gradients, after, _, _ = _step(model)
    for variable, old, gradient, new in zip(model.trainable_variables, before, gradients, after,
                                            strict=True):
        if _is_table(model, variable):
            continue
        norm = np.linalg.norm(gradient)
        expected = gradient * min(1.0, 1e-3 / norm) if norm else gradient
        np.testing.assert_allclose(old - new, expected, atol=1e-7)


def test_adam_first_step_is_the_learning_rate_times_the_gradient_sign():
    before, gradients, after, _, _ = _step(_model(optimizer="adam", learning_rate=1e-3))
    for old, gradient, new in zip(before, gradients, after, strict=True):
        # m / (sqrt(v) + eps) after bias correction: g / (|g| + eps / sqrt(1 - beta_2))
        expected = 1e-3 * gradient / (np.abs(gradient) + 1e-7 / np.sqrt(1 - 0.999))
        np.testing.assert_allclose(old - new, expected, atol=1e-7)  # float32 weights


def test_adagrad_first_step_follows_its_accumulator():
    before, gradients, after, _, _ = _step(_model(optimizer="adagrad", learning_rate=0.1))
    for old, gradient, new in zip(before, gradients, after, strict=True):
        # accumulator 0.1 + g^2 (Keras's initial value 0.1), step lr g / sqrt(accumulator)
        np.testing.assert_allclose(old - new, 0.1 * gradient / np.sqrt(0.1 + gradient**2),
                                   atol=1e-6)


def test_adamw_decays_by_default_only_when_asked():
    model = _model(optimizer="adamw", learning_rate=1e-3, weight_decay=0.1)
    assert model.optimizer.weight_decay == pytest.approx(0.1)
    assert not getattr(model.embedding_optimizer, "weight_decay", None)
    _step(model)


@pytest.mark.parametrize("change, message", [
    (dict(learning_rate=0.0), "--learning_rate must be positive"),
    (dict(momentum=1.0), "--momentum must be below 1"),
    (dict(embedding_l2=-1.0), "--embedding_l2 must be >= 0"),
    (dict(clipnorm=float("nan")), "--clipnorm must be >= 0"),
])
def test_bad_values_name_the_flag(change, message):
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**change).check()

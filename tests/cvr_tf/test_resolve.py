"""A spec resolved against a training window, alone and end to end through a model dir."""

import dataclasses
import datetime
import json
import os
import shutil

import numpy as np
import pytest

from cvr_tf import model_dir as model_dir_lib
from cvr_tf import training
from cvr_tf.compat import tf
from cvr_tf.embedding import FeatureEmbedding
from cvr_tf.features import FeatureSpecError, default_spec, spec_from_dict
from cvr_tf.input import make_dataset, span_path
from cvr_tf.model import ModelConfig
from cvr_tf.quantiles import SKETCH_SIZE
from cvr_tf.resolve import resolve_for_window
from cvr_tf.statistics import STATISTICS_FILE, window_statistics
from tests.cvr_tf.test_statistics import DAY, SPEC, write_span


def test_resolution_fills_auto_and_quantiles_from_the_window(tmp_path):
    write_span(tmp_path, DAY, [1.0, 2.0, 3.0], [7] * 3)
    write_span(tmp_path, DAY + datetime.timedelta(days=1), [4.0, 5.0, 6.0, 7.0, 8.0], [7] * 5)
    resolved, vocabularies = resolve_for_window(SPEC, tmp_path, DAY,
                                                DAY + datetime.timedelta(days=1))
    assert vocabularies == {}
    prices = np.arange(1.0, 9.0)
    price_log = resolved.feature("price_log")
    assert price_log.normalization is None
    np.testing.assert_allclose([price_log.mean, price_log.std],
                               [np.log1p(prices).mean(), np.log1p(prices).std()], rtol=1e-12)
    # 8 values, 4 buckets: the first values reaching ranks 2, 4 and 6.
    assert resolved.feature("price_bucket").boundaries == (2.0, 4.0, 6.0)
    position = resolved.feature("position")
    assert (position.mean, position.std) == (7.0, 1.0)  # a constant column: std 1, field 0
    assert "normalization" not in resolved.to_dict()["features"][1]
    assert resolved.embedding_parameter_count() == 3 * 16 + 4 * 16
    first_day, _ = resolve_for_window(SPEC, tmp_path, DAY, DAY)
    # 3 values, 4 buckets: ranks 0.75, 1.5 and 2.25 are reached at 1, 2 and 3.
    assert first_day.feature("price_bucket").boundaries == (1.0, 2.0, 3.0)
    explicit = spec_from_dict({"features": [SPEC.feature("brand").to_dict()]})
    assert resolve_for_window(explicit, tmp_path, DAY, DAY)[0] is explicit  # nothing to read


def test_an_unresolved_spec_builds_no_layer_and_an_empty_column_is_named(tmp_path):
    with pytest.raises(FeatureSpecError, match="price_log, price_bucket, position take "
                                               "numbers from a training window"):
        FeatureEmbedding.from_spec(SPEC, {})
    write_span(tmp_path, DAY, [], [])
    with pytest.raises(FeatureSpecError, match="'price_log': column 'price' has no values in "
                                               "the training window"):
        resolve_for_window(SPEC, tmp_path, DAY, DAY)


def _auto_spec_file(path) -> str:
    spec = default_spec().to_dict()
    for feature in spec["features"]:
        if feature["name"] == "item_price_log":
            feature.pop("mean"), feature.pop("std", None)
            feature["normalization"] = "auto"
        if feature["name"] == "item_price_bucket":
            feature["boundaries"] = "quantiles:8"
    path.write_text(json.dumps(spec))
    return str(path)


def test_auto_and_quantiles_end_to_end_through_the_model_dir(simulated_spans, tmp_path):
    spans = simulated_spans
    config = training.TrainConfig(
        data_dir=spans.spans, model_dir=str(tmp_path / "m"), train_start=spans.day(0),
        train_end=spans.day(1), eval_start=spans.day(4), eval_end=spans.day(4), batch_size=128,
        steps=2, log_every_steps=2, checkpoint_every_steps=2,
        feature_spec=_auto_spec_file(tmp_path / "spec.json"), model=ModelConfig(backbone="mlp"))
    training.train(config)
    spec_dict, _, vocabularies = model_dir_lib.read_model_definition(config.model_dir)
    recorded = spec_from_dict(spec_dict)
    # The numbers of the window's train split, as numpy computes them from the shards.
    prices = np.concatenate([
        batch["item_price"].numpy() for batch in make_dataset(
            spans.spans, spans.day(0), spans.day(1), recorded, split="train", batch_size=4096,
            shuffle=False)]).astype(np.float64)
    price_log = recorded.feature("item_price_log")
    np.testing.assert_allclose([price_log.mean, price_log.std],
                               [np.log1p(prices).mean(), np.log1p(prices).std()], rtol=1e-6)
    # Each boundary is its j/8 quantile within the rank error the spans' sketches record.
    boundaries = recorded.feature("item_price_bucket").boundaries
    error = window_statistics(spans.spans, ["item_price"], spans.day(0),
                              spans.day(1))["item_price"].sketch.rank_error
    assert len(boundaries) == 7 and 0 < error <= 4 * len(prices) / SKETCH_SIZE
    prices32 = prices.astype(np.float32)
    for j, b in enumerate(np.float32(boundaries), start=1):
        target = j / 8 * len(prices)
        assert np.sum(prices32 < b) < target + error and np.sum(prices32 <= b) >= target - error
    # The rebuilt (served) model applies the recorded numbers.
    model = model_dir_lib.build_from_definition(spec_dict, ModelConfig(backbone="mlp"),
                                                vocabularies)
    layer = next(x for x in model.embedding_part.layers if isinstance(x, FeatureEmbedding))
    index = layer.feature_names.index("item_price_log")
    offset = sum(layer.field_dims[:index])
    columns = {c: tf.constant([b"x"]) for c in recorded.column_dtypes(train_only=False)}
    columns["item_price"] = tf.constant([50.0])
    out = layer(columns).numpy()
    np.testing.assert_allclose(out[0, offset],
                               (np.log1p(50.0) - price_log.mean) / price_log.std, rtol=1e-5)


def test_spans_without_statistics_fail_training_in_one_line(simulated_spans, tmp_path):
    spans = shutil.copytree(simulated_spans.spans, tmp_path / "spans")
    os.remove(os.path.join(span_path(spans, simulated_spans.day(0)), STATISTICS_FILE))
    config = training.TrainConfig(
        data_dir=str(spans), model_dir=str(tmp_path / "m"), train_start=simulated_spans.day(0),
        train_end=simulated_spans.day(0), eval_start=simulated_spans.day(4),
        eval_end=simulated_spans.day(4), feature_spec=_auto_spec_file(tmp_path / "spec.json"))
    span = span_path(spans, simulated_spans.day(0))
    with pytest.raises(training.ConfigError, match=f"span {span} has no {STATISTICS_FILE}.*"
                                                   "pipelines.build_tfrecords --overwrite"):
        training.train(dataclasses.replace(config, steps=1))

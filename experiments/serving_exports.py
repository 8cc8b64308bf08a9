"""The serving benchmark's models: untrained model dirs of the default spec, exported in several
variants (backbone x batching scope x XLA), and synthetic requests for them.

Latency does not depend on the weights; the vocabularies are made-up tokens at the default
spec's caps, so the embedding tables have their real sizes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import keras, tf
from cvr_tf.features import FeatureSpec, default_spec
from cvr_tf.model import CVRModel, ModelConfig, build_model
from serving import export, signatures, warmup


@dataclasses.dataclass(frozen=True)
class Variant:
    """One export of the benchmark: a backbone, an in-graph batching scope, XLA or not, the
    dense part's precision, and padded batch sizes that replace the run's (``None`` keeps
    them)."""

    name: str
    backbone: str
    scope: str
    jit_compile_dense: bool = False
    allowed_batch_sizes: tuple[int, ...] | None = None
    dense_precision: str = "float32"


def synthetic_vocabularies(spec: FeatureSpec, limit: int | None = None) -> dict[str, list[str]]:
    """``vocabulary_size`` made-up tokens per computed vocabulary (at most ``limit``)."""
    sizes = {table: features[0].vocabulary_size
             for table, features in spec.vocabulary_tables().items()}
    return {table: [f"{table}{index}" for index in range(min(size, limit or size))]
            for table, size in sizes.items()}


def make_model_dir(path: str, spec: FeatureSpec, vocabularies: Mapping[str, Sequence[str]],
                   backbone: str, seed: int = 0) -> CVRModel:
    """An untrained model dir as the training job leaves it (definition + one checkpoint)."""
    keras.utils.set_random_seed(seed)
    model = build_model(spec, vocabularies, ModelConfig(backbone=backbone))
    model_dir_lib.save_model_definition(path, model)
    tf.train.CheckpointManager(
        model_dir_lib.checkpoint(model), os.path.join(path, model_dir_lib.CHECKPOINT_DIR), 1
    ).save(checkpoint_number=1)
    return model


def export_variants(
    workdir: str, batching: signatures.BatchingConfig, variants: Sequence[Variant],
    vocabulary_limit: int | None = None,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Builds one model dir per backbone and exports each variant as version 1 of its name.

    Returns:
        The export base (its ``models.config`` lists every variant) and, per variant, its
        version directory (``path``), backbone, scope, XLA flag, precision, FLOPs per example
        and parameters.
    """
    spec = default_spec()
    vocabularies = synthetic_vocabularies(spec, vocabulary_limit)
    export_base = os.path.join(workdir, "export")
    built = {backbone: make_model_dir(os.path.join(workdir, backbone), spec, vocabularies,
                                      backbone)
             for backbone in sorted({variant.backbone for variant in variants})}
    exported = {}
    for variant in variants:
        model = built[variant.backbone]
        exported[variant.name] = {
            "path": export.export_model(
                os.path.join(workdir, variant.backbone), export_base, variant.name, version=1,
                batching=dataclasses.replace(
                    batching, scope=variant.scope,
                    allowed_batch_sizes=batching.allowed_batch_sizes
                    if variant.allowed_batch_sizes is None else variant.allowed_batch_sizes),
                dense_device="cpu",
                jit_compile_dense=variant.jit_compile_dense,
                dense_precision=variant.dense_precision),
            "backbone": variant.backbone,
            "scope": variant.scope,
            "jit_compile_dense": variant.jit_compile_dense,
            "dense_precision": variant.dense_precision,
            "backbone_flops_per_example": model.backbone.flops_per_example,
            "dense_flops_per_example": model.dense_flops_per_example,
            "dense_params": model.dense_parameter_count,
            "embedding_params": model.embedding_parameter_count,
        }
    return export_base, exported


# The default spec's columns that one search request shares: its user, device and query.
REQUEST_COLUMNS = ("user_id", "user_segment", "device", "query")


def request_features(candidates: int, count: int = 32, vocabulary_limit: int | None = None,
                     seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` search requests of ``candidates`` rows of raw serving columns (vocabulary
    tokens): the :data:`REQUEST_COLUMNS` hold one value per request, as a search request's
    candidates share its user and query; the item columns vary by row."""
    spec = default_spec()
    vocabularies = synthetic_vocabularies(spec, vocabulary_limit)
    requests = []
    for index in range(count):
        columns = warmup.synthetic_features(spec, vocabularies, candidates, seed=seed + index)
        for column in REQUEST_COLUMNS:
            columns[column] = np.repeat(columns[column][:1], candidates)
        requests.append(columns)
    return requests

"""Warm start: initialize a new model from a previous model dir, across changed vocabularies.

For every variable of the new model, in order of preference:

1. **remapped**: a vocabulary table present in both models with the same embedding dim. Row
   ``i + 1`` of the new table (token ``new[i]``) takes row ``j + 1`` of the old table when
   ``old[j] == new[i]``; the out-of-vocabulary row 0 is carried; new tokens keep their fresh
   initialization. Old tokens absent from the new vocabulary are dropped (counted).
2. **carried**: any other variable whose name and shape match one of the old model (dense
   layers of an unchanged backbone, hashed and bucketized tables of unchanged size).
3. **fresh**: everything else (new features, changed backbone layers, resized tables).

Names are Keras variable names, which depend on construction order; both models are therefore
built in a freshly cleared Keras session, as the training job does. Optimizer slots are not
carried: a warm start is a new run that begins from the old weights. The report is written to
``warm_start.json`` by the training job.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import keras
from cvr_tf.embedding import FeatureEmbedding
from cvr_tf.model import CVRModel


@dataclasses.dataclass(frozen=True)
class SourceWeights:
    """The weights of a previous model by variable name, and its vocabulary per table variable."""

    model_dir: str
    checkpoint: str
    weights: dict[str, np.ndarray]
    vocabularies: dict[str, list[str]]  # table variable name -> tokens


@dataclasses.dataclass
class WarmStartReport:
    source: str
    checkpoint: str
    carried: list[str] = dataclasses.field(default_factory=list)
    remapped: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    fresh: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _vocabulary_tables(model: CVRModel) -> dict[str, list[str]]:
    """Variable name -> tokens for each vocabulary table of the model's embedding layers."""
    out: dict[str, list[str]] = {}
    for layer in model.submodules:
        if isinstance(layer, FeatureEmbedding):
            for table, variable in layer.tables.items():
                if table in model.vocabularies:
                    out[variable.name] = model.vocabularies[table]
    return out


def read_source_weights(source_dir: str | os.PathLike) -> SourceWeights:
    """Loads a previous model's latest checkpoint into named numpy arrays.

    Clears the Keras session before and after, so that the new model is built with the same
    name counters as the old one was.
    """
    keras.backend.clear_session()
    old = model_dir_lib.load_model(source_dir)
    source = SourceWeights(
        model_dir=os.fspath(source_dir),
        checkpoint=model_dir_lib.latest_checkpoint(source_dir) or "",
        weights={v.name: v.numpy() for v in old.variables},
        vocabularies=_vocabulary_tables(old))
    keras.backend.clear_session()
    return source


def _remap_rows(new_value: np.ndarray, old_value: np.ndarray, new_tokens: list[str],
                old_tokens: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    old_index = {token: j for j, token in enumerate(old_tokens)}
    found = [(i, old_index[t]) for i, t in enumerate(new_tokens) if t in old_index]
    out = new_value.copy()
    out[0] = old_value[0]
    if found:
        new_rows, old_rows = (np.array(rows) + 1 for rows in zip(*found, strict=True))
        out[new_rows] = old_value[old_rows]
    return out, {"tokens_carried": len(found), "tokens_new": len(new_tokens) - len(found),
                 "tokens_dropped": len(old_tokens) - len(found)}


def warm_start(model: CVRModel, source: SourceWeights) -> WarmStartReport:
    """Assigns ``source``'s weights to ``model`` where they fit; returns what happened."""
    report = WarmStartReport(source=source.model_dir, checkpoint=source.checkpoint)
    new_vocabularies = _vocabulary_tables(model)
    for variable in model.variables:
        name = variable.name
        old_value = source.weights.get(name)
        same_dim = old_value is not None and old_value.shape[1:] == tuple(variable.shape[1:])
        if name in new_vocabularies and name in source.vocabularies and same_dim:
            value, counts = _remap_rows(variable.numpy(), old_value, new_vocabularies[name],
                                        source.vocabularies[name])
            variable.assign(value)
            report.remapped[name] = counts
        elif old_value is not None and old_value.shape == tuple(variable.shape):
            variable.assign(old_value)
            report.carried.append(name)
        else:
            report.fresh.append(name)
    return report

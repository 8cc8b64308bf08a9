"""A spec resolved against a training window: the vocabularies and the numbers it leaves open.

A spec may leave numbers to the data: ``vocabulary_size`` vocabularies (top-K tokens seen at
least ``min_count`` times), ``"normalization": "auto"`` (mean and std) and
``"boundaries": "quantiles:N"``. :func:`resolve_for_window` computes all of them from the
pipeline's per-span token counts and statistics of the training window only, and returns a spec
holding concrete numbers: the one the model is built from and stores in its model dir
(``model_config.json``), so the exported model and serving apply exactly these values.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

from cvr_tf.features import FeatureSpec
from cvr_tf.statistics import window_statistics
from cvr_tf.vocabulary import window_vocabularies


def resolve_for_window(spec: FeatureSpec, data_dir: str | os.PathLike, start: datetime.date,
                       end: datetime.date) -> tuple[FeatureSpec, dict[str, list[str]]]:
    """(resolved spec, vocabularies) of ``spec`` over the spans of ``start..end``.

    Args:
      spec: the feature spec, possibly with ``auto`` / ``quantiles:N`` features.
      data_dir: the pipeline's output directory.
      start: first day of the training window, inclusive.
      end: last day, inclusive.

    Returns:
      The spec with every window-dependent number filled in (a spec without any is returned
      as is), and table -> tokens, most frequent first (see
      :func:`cvr_tf.vocabulary.window_vocabularies`).

    Raises:
      FileNotFoundError: a span lacks its token counts or statistics (naming it and the fix).
      FeatureSpecError: a column has no value in the window.
    """
    vocabularies = window_vocabularies(data_dir, spec, start, end)
    columns = list(dict.fromkeys(f.column for f in spec.features if f.needs_statistics))
    if not columns:
        return spec, vocabularies
    statistics = window_statistics(data_dir, columns, start, end)
    features = tuple(f.resolved(statistics[f.column]) if f.needs_statistics else f
                     for f in spec.features)
    return dataclasses.replace(spec, features=features), vocabularies


__all__ = ["resolve_for_window"]

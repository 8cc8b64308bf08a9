"""One chunk of a day's impressions -> encoded shards, statistics, token counts, dead letters.

The per-chunk work of the pipeline, free of Beam so it can be called and tested directly:

    raw rows --validate--> good rows + dead letters
             --label-----> one column per label (event joins, or 0/1 columns of the logs)
             --hash------> split (train/eval) and shard of each row, by request
             --encode----> serialized tf.Examples (tfx-bsl, whole table at once)
             --count-----> vocabulary token counts and numeric statistics of the train rows

A spec with ``request_relative`` features needs whole requests, which a chunk need not hold (a
request may straddle two row groups). Its chunks therefore leave their rows unencoded, as Arrow
tables per (split, shard); all rows of a request share their split and shard, so once a shard's
parts are together (:meth:`ImpressionProcessor.encode_requests`, called by the shard's
assembly) the per-request columns are derived in numpy, once per request, and encoded. Spans of
specs without such features are encoded per chunk, as before, byte for byte.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from cvr_tf.features import FeatureSpec
from cvr_tf.features.labels import LabelSpec
from cvr_tf.statistics import Statistics, compute_statistics
from cvr_tf.vocabulary import TokenCounts, count_tokens
from pipelines.encode import ExampleEncoder, eval_mask, request_hashes, shard_indices
from pipelines.labels import (
    ITEM_ID,
    JOIN_KEYS,
    REQUEST_ID,
    TS,
    attribute_events,
    event_windows,
    pipeline_labels,
)
from pipelines.spans import SpanStats
from pipelines.validation import LABEL, TIMESTAMP, ColumnRule, Validated, spec_rules, validate


@dataclasses.dataclass
class ChunkOutput:
    """What one chunk contributes to its span.

    Attributes:
      shards: ``(split, shard) -> serialized tf.Examples`` (only non-empty groups); for a spec
        with ``request_relative`` features, the example rows (an Arrow table) instead.
      stats: row accounting of the chunk.
      token_counts: table -> token -> count over the chunk's train rows.
      rejected: dead-letter rows.
      statistics: numeric column -> statistics of the chunk's train rows.
    """

    shards: dict[tuple[str, int], np.ndarray | pa.Table]
    stats: SpanStats
    token_counts: TokenCounts
    rejected: pa.Table
    statistics: Statistics = dataclasses.field(default_factory=dict)


class ImpressionProcessor:
    """Turns chunks of impressions into :class:`ChunkOutput` (picklable, for Beam workers).

    Args:
      spec: the feature spec; examples get exactly ``spec.log_columns()``.
      labels: the labels to derive (:func:`pipelines.labels.pipeline_labels`); default the
        spec's (or its one label joined with conversions within 3 days).
      eval_fraction: share of requests in the eval split.
    """

    def __init__(self, spec: FeatureSpec, labels: Sequence[LabelSpec] | None = None,
                 eval_fraction: float = 0.1):
        self.spec = spec
        self.labels = tuple(labels) if labels is not None else pipeline_labels(spec)
        if [label.name for label in self.labels] != list(spec.label_names):
            raise ValueError(f"labels {[label.name for label in self.labels]} are not the spec's "
                             f"{list(spec.label_names)}")
        self.event_windows = event_windows(self.labels)
        self.eval_fraction = eval_fraction
        self._encoder = ExampleEncoder(spec.log_columns(), spec.tfmd_schema())
        derived = {f.input_column for f in spec.request_features}
        # Columns of a chunk's example rows: what the examples hold, except the columns derived
        # per request, and the raw columns these are derived from.
        self._row_columns = list(dict.fromkeys(
            [*(c for c in spec.log_columns() if c not in derived),
             *(f.column for f in spec.request_features)]))

    def data_definition(self) -> dict[str, object]:
        """The options that decide a span's labels and split, recorded in its ``stats.json``.

        A span built with other values must never be mixed with new ones (see
        :func:`pipelines.spans.plan_spans`). A spec without ``labels`` records its one label as
        spans always did (``"label": {"attribution_days": 3}`` or ``{"column": ...}``), so
        spans built before labels could be named stay valid.
        """
        if not self.spec.labels:
            (label,) = self.labels
            return {"label": {k: v for k, v in label.to_dict().items() if k != "events"},
                    "eval_fraction": self.eval_fraction}
        return {"labels": {label.name: label.to_dict() for label in self.labels},
                "eval_fraction": self.eval_fraction}

    def rules(self) -> list[ColumnRule]:
        """Rules of every impressions column read: keys, ``ts``, the spec's columns, labels."""
        rules = {REQUEST_ID: ColumnRule(REQUEST_ID, self.key_dtypes()[REQUEST_ID]),
                 TS: ColumnRule(TS, TIMESTAMP)}
        if self.event_windows:
            rules[ITEM_ID] = ColumnRule(ITEM_ID, self.key_dtypes()[ITEM_ID])
        for rule in spec_rules(self.spec):
            rules.setdefault(rule.column, rule)
        for label in self.labels:
            if label.column is not None:
                rules[label.column] = ColumnRule(label.column, LABEL)
        return list(rules.values())

    def key_dtypes(self) -> dict[str, str]:
        """dtypes of the join keys: the spec's when it reads them as features, else string."""
        columns = self.spec.column_dtypes()
        return {key: columns.get(key, "string") for key in JOIN_KEYS}

    def required_columns(self) -> dict[str, str]:
        """Column -> why it is read (for the error when the logs lack it)."""
        reasons = {REQUEST_ID: "the pipeline needs (request key of the join)",
                   ITEM_ID: "the pipeline needs (item key of the label joins)",
                   TS: "the pipeline needs (impression time, ms)"}
        for f in self.spec.features:
            reasons.setdefault(f.column, f"feature {f.name!r} of the spec reads")
        reasons.setdefault(self.spec.group_key, "the spec's group_key names")
        if self.spec.weight:
            reasons.setdefault(self.spec.weight, "the spec's weight names")
        for label in self.labels:
            if label.column is not None:
                reasons[label.column] = f"label {label.name!r} is read from"
        return {rule.column: reasons[rule.column] for rule in self.rules()}

    def encode_requests(self, rows: pa.Table) -> np.ndarray:
        """Serialized tf.Examples of example rows holding whole requests (the rows a spec with
        ``request_relative`` features leaves unencoded), with the per-request columns derived
        (:meth:`cvr_tf.features.FeatureSpec.derive_request_columns`), in row order."""
        sources = {self.spec.group_key, *(f.column for f in self.spec.request_features)}
        raw = {c: rows.column(c).to_numpy() for c in sources}
        for column, values in self.spec.derive_request_columns(raw).items():
            rows = rows.append_column(column, pa.array(values, pa.float32()))
        return self._encoder.encode(rows)

    def process(self, table: pa.Table, day: datetime.date,
                events: Mapping[str, pa.Table | None], num_shards: int) -> ChunkOutput:
        """Validates, labels, splits, encodes and counts one chunk of ``day``'s impressions.

        Args:
          table: impressions as read (at least the :meth:`required_columns`).
          day: the partition's day.
          events: label name -> the distinct events of its log on the days its window reaches
            (:func:`pipelines.labels.event_days`), or None when there are none; labels read
            from a column need no entry.
          num_shards: shards per split of the span.
        """
        validated = validate(table, self.rules(), day)
        rows = validated.rows
        labels = {label.name: self._label(label, rows, events.get(label.name))
                  for label in self.labels}
        hashes = request_hashes(rows.column(self.spec.group_key))
        is_eval = eval_mask(hashes, self.eval_fraction)
        examples = pa.table({
            column: pa.array(labels[column]) if column in labels else rows.column(column)
            for column in self._row_columns})
        groups = _group_by_shard(is_eval, shard_indices(hashes, num_shards))
        if self.spec.request_features:  # encoded by encode_requests, once requests are whole
            shards = {key: examples.take(positions) for key, positions in groups.items()}
        else:
            records = self._encoder.encode(examples)
            shards = {key: records[positions] for key, positions in groups.items()}
        train_rows = rows.filter(pa.array(~is_eval))
        return ChunkOutput(
            shards=shards,
            stats=_stats(validated, labels, self.spec.label, is_eval),
            token_counts=count_tokens(train_rows, self.spec),
            rejected=validated.rejected,
            statistics=compute_statistics(train_rows, self.spec))


    @staticmethod
    def _label(label: LabelSpec, rows: pa.Table, events: pa.Table | None) -> np.ndarray:
        if label.column is not None:
            return rows.column(label.column).to_numpy()
        if events is None:
            return np.zeros(rows.num_rows, dtype=np.int64)
        return attribute_events(rows, events, label.window_ms)


def _group_by_shard(is_eval: np.ndarray, shards: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """Row positions grouped by (split, shard), each group in row order."""
    group = is_eval.astype(np.int64) * (int(shards.max(initial=0)) + 1) + shards
    order = np.argsort(group, kind="stable")
    boundaries = np.flatnonzero(np.diff(group[order])) + 1
    out = {}
    for positions in np.split(order, boundaries):
        if len(positions):
            first = positions[0]
            out[("eval" if is_eval[first] else "train", int(shards[first]))] = positions
    return out


def _stats(validated: Validated, labels: Mapping[str, np.ndarray], primary: str,
           is_eval: np.ndarray) -> SpanStats:
    written = validated.rows.num_rows
    rejected = validated.rejected.num_rows
    by_label = {name: {"positives": int(values.sum()),
                       "train_positives": int(values[~is_eval].sum()),
                       "eval_positives": int(values[is_eval].sum())}
                for name, values in labels.items()}
    return SpanStats(
        rows_in=written + rejected, rows_written=written, rows_rejected=rejected,
        rejected_by_reason=validated.rejected_counts(), train_rows=int((~is_eval).sum()),
        eval_rows=int(is_eval.sum()), **by_label[primary], positives_by_label=by_label)


__all__ = ["ChunkOutput", "ImpressionProcessor"]

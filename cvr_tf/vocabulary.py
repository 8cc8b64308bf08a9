"""Token counting and top-K vocabularies, shared by the pipeline and the training job.

The pipeline counts, per span, how often each token of each vocabulary table occurs in the
span's *training* split (``span=D/token_counts/<table>.tsv``). A vocabulary for any window of
days is then a merge of those counts, so the training job builds its vocabularies from exactly
its training window and never from evaluation days:

    counts(token) = sum over spans d in [start, end] of counts_d(token)
    vocabulary    = the K most frequent tokens with counts(token) >= min_count, ties broken by
                    token (code-point order),
    K             = MAX_VOCAB_SCALE * vocabulary_size

written one token per line, most frequent first (the model adds its out-of-vocabulary row).

Tokens are what the model looks up, as each kind defines them
(:meth:`cvr_tf.features.Feature.vocabulary_tokens`): a categorical column's value (int64 values
as decimal strings); for a ``text`` feature, the first ``max_tokens`` tokens of
:func:`cvr_tf.tokenizer.tokenize`, the very function the model runs. Empty tokens and tokens
holding a line break are never counted: a line-based vocabulary file cannot hold them, so the
model maps them to the OOV row.
"""

from __future__ import annotations

import collections
import datetime
import os
from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from cvr_tf.features import MAX_VOCAB_SCALE, Feature, FeatureSpec
from cvr_tf.input import list_spans

TOKEN_COUNTS_DIR = "token_counts"
VOCAB_DIR = "vocab"

TokenCounts = dict[str, collections.Counter]


def feature_tokens(values: pa.Array | pa.ChunkedArray, feature: Feature) -> pa.Array:
    """The vocabulary tokens a column contributes through ``feature`` (nulls skipped).

    Args:
      values: the feature's column, string or int64.
      feature: a categorical or text feature.

    Returns:
      A flat string array of tokens, one per occurrence.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return feature.vocabulary_tokens(values.drop_null())


def count_tokens(table: pa.Table, spec: FeatureSpec) -> TokenCounts:
    """Token counts of every vocabulary table of ``spec`` in ``table``.

    Features sharing a table (e.g. query terms and title terms) add into one count.
    """
    counts: TokenCounts = {}
    for name, features in spec.vocabulary_tables().items():
        counter = counts.setdefault(name, collections.Counter())
        for feature in features:
            tokens = feature_tokens(table.column(feature.column), feature)
            if len(tokens) == 0:
                continue
            frequencies = pc.value_counts(tokens)
            counter.update(dict(zip(frequencies.field("values").to_pylist(),
                                    frequencies.field("counts").to_pylist(), strict=True)))
    return counts


def merge_token_counts(parts: Iterable[Mapping[str, Mapping[str, int]]]) -> TokenCounts:
    """Sums per-table token counts."""
    merged: TokenCounts = {}
    for part in parts:
        for name, counter in part.items():
            merged.setdefault(name, collections.Counter()).update(counter)
    return merged


def ranked_tokens(counts: Mapping[str, int], limit: int | None = None,
                  min_count: int = 1) -> list[str]:
    """Tokens by decreasing count, ties by token; at most ``limit`` of them, each counted at
    least ``min_count`` times."""
    ranked = sorted(((token, count) for token, count in counts.items() if count >= min_count),
                    key=lambda item: (-item[1], item[0]))
    return [token for token, _ in ranked[:limit]]


def vocabulary_limits(spec: FeatureSpec) -> dict[str, int]:
    """Table -> most tokens the pipeline keeps: ``MAX_VOCAB_SCALE * vocabulary_size``."""
    return {name: MAX_VOCAB_SCALE * features[0].vocabulary_size
            for name, features in spec.vocabulary_tables().items()}


def write_token_counts(directory: str | os.PathLike, counts: Mapping[str, Mapping[str, int]]
                       ) -> None:
    """Writes ``<directory>/<table>.tsv``: ``count<TAB>token`` lines, most frequent first."""
    os.makedirs(directory, exist_ok=True)
    for name, counter in counts.items():
        with open(os.path.join(directory, f"{name}.tsv"), "w", encoding="utf-8") as handle:
            for token in ranked_tokens(counter):
                handle.write(f"{counter[token]}\t{token}\n")


def read_token_counts(directory: str | os.PathLike, tables: Iterable[str]) -> TokenCounts:
    """Reads the counts :func:`write_token_counts` wrote for ``tables``.

    Raises:
      FileNotFoundError: a table has no counts file (the span was built with another spec).
    """
    counts: TokenCounts = {}
    for name in tables:
        path = os.path.join(os.fspath(directory), f"{name}.tsv")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"no token counts for vocabulary table {name!r} in {path}: the span was built "
                "with a spec without that table; rebuild it with pipelines.build_tfrecords "
                "--overwrite and the current --feature_spec")
        counter: collections.Counter = collections.Counter()
        with open(path, encoding="utf-8", newline="\n") as handle:
            for line in handle:
                count, token = line.rstrip("\n").split("\t", 1)
                counter[token] = int(count)
        counts[name] = counter
    return counts


def vocabulary_dir(data_dir: str | os.PathLike, start: datetime.date,
                   end: datetime.date) -> str:
    """``<data_dir>/vocab/<start>_<end>``: where the pipeline writes its window's vocabularies."""
    return os.path.join(os.fspath(data_dir), VOCAB_DIR, f"{start.isoformat()}_{end.isoformat()}")


def window_vocabularies(data_dir: str | os.PathLike, spec: FeatureSpec, start: datetime.date,
                        end: datetime.date) -> dict[str, list[str]]:
    """Top-K vocabularies of ``spec``'s tables over the complete spans of ``start..end``.

    Args:
      data_dir: the pipeline's output directory.
      spec: feature spec; its ``vocabulary_tables()`` are computed, K as in
        :func:`vocabulary_limits`, without tokens counted fewer than ``min_count`` times.
      start: first day, inclusive.
      end: last day, inclusive.

    Returns:
      Table -> tokens, most frequent first.
    """
    tables = spec.vocabulary_tables()
    counts = merge_token_counts(
        read_token_counts(os.path.join(span, TOKEN_COUNTS_DIR), tables)
        for span in list_spans(data_dir, start, end))
    limits = vocabulary_limits(spec)
    return {name: ranked_tokens(counts.get(name, {}), limits[name], features[0].min_count)
            for name, features in tables.items()}


def write_vocabularies(directory: str | os.PathLike,
                       vocabularies: Mapping[str, Sequence[str]]) -> None:
    """Writes ``<directory>/<table>.txt``, one token per line (read by ``spec.load_vocabularies``).

    Each file is written under a temporary name and renamed, so readers never see half a file.
    """
    os.makedirs(directory, exist_ok=True)
    for name, tokens in vocabularies.items():
        bad = [t for t in tokens if not t or "\n" in t or "\r" in t]
        if bad:
            raise ValueError(f"vocabulary {name!r} holds token {bad[0]!r}, which one line of a "
                             "vocabulary file cannot hold; drop empty tokens and line breaks")
        path = os.path.join(os.fspath(directory), f"{name}.txt")
        with open(f"{path}.tmp", "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(f"{token}\n" for token in tokens)
        os.replace(f"{path}.tmp", path)


__all__ = ["TOKEN_COUNTS_DIR", "VOCAB_DIR", "count_tokens", "feature_tokens",
           "merge_token_counts", "ranked_tokens", "read_token_counts", "vocabulary_dir",
           "vocabulary_limits", "window_vocabularies", "write_token_counts",
           "write_vocabularies"]

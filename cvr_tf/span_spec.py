"""Self-describing spans: each span records the feature spec that built it.

The pipeline writes ``span=D/feature_spec.json`` (the spec's dict form plus its ``fingerprint``)
before ``_SUCCESS``. The training job then needs no ``--feature_spec`` for the spans it reads
(:func:`spec_for_training`): by default it trains with the spans' own spec, and a spec it is
given must be the one that built them, so a model never reads columns with another vocabulary
cap, normalization or validation than the one its data went through.

The fingerprint is the SHA-256 of the spec's canonical JSON (keys sorted, no white space), so two
specs have the same fingerprint exactly when their dict forms are equal.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os

from cvr_tf.features import FeatureSpec, FeatureSpecError, load_spec, spec_from_dict
from cvr_tf.input import list_spans

SPEC_FILE = "feature_spec.json"


def spec_fingerprint(spec: FeatureSpec) -> str:
    """SHA-256 (hex) of the canonical JSON of ``spec.to_dict()``."""
    canonical = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def self_contained(spec: FeatureSpec) -> FeatureSpec:
    """The spec with relative ``vocabulary_file`` paths made absolute (against its base_dir)."""
    features = tuple(f.with_base_dir(spec.base_dir) for f in spec.features)
    return dataclasses.replace(spec, features=features, base_dir="")


def write_span_spec(directory: str | os.PathLike, spec: FeatureSpec) -> None:
    """Writes ``<directory>/feature_spec.json``: the self-contained spec and its fingerprint."""
    spec = self_contained(spec)
    record = {"fingerprint": spec_fingerprint(spec), **spec.to_dict()}
    path = os.path.join(os.fspath(directory), SPEC_FILE)
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(f"{path}.tmp", path)


def read_span_spec(span: str | os.PathLike) -> FeatureSpec | None:
    """The spec a span recorded, or None for a span built before spans recorded it."""
    path = os.path.join(os.fspath(span), SPEC_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    record.pop("fingerprint", None)
    return spec_from_dict(record)


def spec_differences(given: FeatureSpec, built: FeatureSpec) -> list[str]:
    """What differs between two specs, one phrase per feature or top-level field."""
    out = []
    for field in ("label", "labels", "group_key", "weight"):
        if getattr(given, field) != getattr(built, field):
            out.append(f"{field} ({getattr(given, field)!r} vs {getattr(built, field)!r})")
    given_features = {f.name: f.to_dict() for f in given.features}
    built_features = {f.name: f.to_dict() for f in built.features}
    for name in dict.fromkeys([*built_features, *given_features]):
        if name not in given_features:
            out.append(f"{name} (only in the spans)")
        elif name not in built_features:
            out.append(f"{name} (not in the spans)")
        elif given_features[name] != built_features[name]:
            keys = sorted(set(given_features[name]) | set(built_features[name]))
            changed = [k for k in keys
                       if given_features[name].get(k) != built_features[name].get(k)]
            out.append(f"{name} ({', '.join(changed)})")
    if not out and given.names != built.names:
        out.append(f"feature order ({', '.join(given.names)} vs {', '.join(built.names)})")
    return out


def unmet_needs(given: FeatureSpec, built: FeatureSpec) -> list[str]:
    """What ``given`` reads that spans built with ``built`` lack: a column (or one of another
    dtype), or a vocabulary the pipeline computed for ``built`` only. A spec that differs from
    the spans' in features computable from their columns (a new hashed or bucketized feature,
    a dropped one) trains on them, as a warm start across changed features needs."""
    columns, tables = built.column_dtypes(), built.vocabulary_tables()
    unmet = [f"column {column!r} ({dtype}) " + ("is not in the spans" if column not in columns
                                                 else f"is {columns[column]} in the spans")
             for column, dtype in given.column_dtypes().items() if columns.get(column) != dtype]
    unmet += [f"vocabulary {table!r} was not computed for the spans"
              for table in given.vocabulary_tables() if table not in tables]
    return unmet


def spec_for_training(data_dir: str | os.PathLike, spec_path_or_empty: str | None,
                      start: datetime.date, end: datetime.date) -> FeatureSpec:
    """The spec to train on the spans of ``start..end`` with (for ``--feature_spec``).

    Args:
      data_dir: the pipeline's ``--output`` directory.
      spec_path_or_empty: a spec file, or empty to use the spec the spans recorded.
      start: first day of the training window, inclusive.
      end: last day, inclusive.

    Returns:
      The spans' spec, or the given one when it is the spans' spec (keeping its ``base_dir``).

    Raises:
      FeatureSpecError: the window has no complete span, its spans were built with different
        specs, the spans record no spec and none is given, or the given spec reads a column or
        vocabulary the spans lack (naming them and the fix).
    """
    try:
        spans = list_spans(data_dir, start, end)
    except FileNotFoundError as error:
        raise FeatureSpecError(str(error)) from None
    recorded = {span: read_span_spec(span) for span in spans}
    built_with = {spec_fingerprint(s): (span, s) for span, s in recorded.items() if s is not None}
    if len(built_with) > 1:
        first, second = list(built_with.values())[:2]
        raise FeatureSpecError(
            f"spans {first[0]} and {second[0]} were built with different feature specs "
            f"({'; '.join(spec_differences(second[1], first[1]))}); rebuild {start}..{end} with "
            "one spec (pipelines.build_tfrecords --feature_spec=... --overwrite)")
    unrecorded = [span for span, s in recorded.items() if s is None]
    if not spec_path_or_empty:
        if unrecorded:
            raise FeatureSpecError(
                f"span {unrecorded[0]} records no feature spec (built by an older pipeline); "
                "pass the spec that built it with --feature_spec, or rebuild the spans with "
                "--overwrite")
        return next(iter(built_with.values()))[1]
    given = load_spec(spec_path_or_empty)
    if built_with:
        built = next(iter(built_with.values()))[1]
        unmet = unmet_needs(self_contained(given), built)
        if unmet:
            raise FeatureSpecError(
                f"feature spec {spec_path_or_empty} needs what the spans of {start}..{end} in "
                f"{os.fspath(data_dir)} do not hold: {'; '.join(unmet)}; train without "
                "--feature_spec to use the spans' spec, or rebuild the spans with this one "
                f"(pipelines.build_tfrecords --feature_spec={spec_path_or_empty} --overwrite)")
    return given


__all__ = ["SPEC_FILE", "read_span_spec", "self_contained", "spec_differences",
           "spec_fingerprint", "spec_for_training", "write_span_spec"]

"""Log rows vs the feature spec: conformed columns for good rows, dead letters for the rest.

Every row read ends up either written or rejected with exactly one reason (the first that
applies, in this order), so ``rows_in == rows_written + rows_rejected`` holds by construction:

``unknown_date_partition``
    the row's partition directory is not a valid date (``date=2026-13-45``).
``missing_value``
    null (or a float NaN) in a required column (one whose features give no ``default_value``;
    with one, the default is written instead).
``wrong_type``
    a value that cannot be read as the column's dtype: e.g. ``"abc"`` or a list where the spec
    says float32, ``2.5`` where it says int64, a float where it says string.
``bad_timestamp``
    ``ts`` unparsable, or not inside the partition's day (UTC). ``ts`` is epoch milliseconds
    (an integer or its text), an Arrow timestamp, or ISO 8601 text (UTC without an offset).
``out_of_range``
    below the feature's ``min_value`` / above its ``max_value``, infinite, too large for
    float32, a label other than 0/1, or a conversion's ``quantity`` <= 0.

Columns are checked whole (vectorized with pyarrow/numpy/pandas); accepted input types are
strings, integers, floats (integral for int64), numeric strings, dictionary-encoded strings,
and Arrow timestamps for ``ts``. A dead letter keeps the original row as read.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cvr_tf.features import FeatureSpec
from cvr_tf.features.labels import MS_PER_DAY

UNKNOWN_DATE_PARTITION = "unknown_date_partition"
MISSING_VALUE = "missing_value"
WRONG_TYPE = "wrong_type"
BAD_TIMESTAMP = "bad_timestamp"
OUT_OF_RANGE = "out_of_range"
REASONS = (UNKNOWN_DATE_PARTITION, MISSING_VALUE, WRONG_TYPE, BAD_TIMESTAMP, OUT_OF_RANGE)

TIMESTAMP = "timestamp"  # rule dtype of ``ts``: epoch milliseconds (int64)
LABEL = "label"          # rule dtype of a label read from the logs: int64 0/1
_ARROW_TYPES = {"string": pa.string(), "int64": pa.int64(), "float32": pa.float32(),
                TIMESTAMP: pa.int64(), LABEL: pa.int64()}


@dataclasses.dataclass(frozen=True)
class ColumnRule:
    """What one log column must hold.

    Attributes:
      column: column name.
      dtype: ``string``, ``int64``, ``float32``, ``timestamp`` (ms) or ``label`` (0/1).
      min_value: smallest valid value (numerics).
      max_value: largest valid value (numerics).
      positive: values must be > 0 (numerics; e.g. a conversion's quantity).
      default: written for a null (or NaN) instead of rejecting the row (``default_value`` of
        the spec's features on the column).
    """

    column: str
    dtype: str
    min_value: float | None = None
    max_value: float | None = None
    positive: bool = False
    default: str | float | None = None


def spec_rules(spec: FeatureSpec) -> list[ColumnRule]:
    """Rules of the columns the spec's features, group key and weight read (not the label).

    A column read by several features takes the tightest bounds among them.
    """
    rules: dict[str, ColumnRule] = {spec.group_key: ColumnRule(spec.group_key, "string")}
    for f in spec.features:
        rule = rules.get(f.column, ColumnRule(f.column, f.dtype))
        low = [v for v in (rule.min_value, f.min_value) if v is not None]
        high = [v for v in (rule.max_value, f.max_value) if v is not None]
        rules[f.column] = dataclasses.replace(
            rule, min_value=max(low) if low else None, max_value=min(high) if high else None,
            default=rule.default if f.default_value is None else f.default_value)
    if spec.weight:
        rules[spec.weight] = ColumnRule(spec.weight, "float32", min_value=0.0)
    return list(rules.values())


@dataclasses.dataclass
class Validated:
    """Outcome of :func:`validate`.

    Attributes:
      rows: the good rows, one column per rule, conformed to the rule's dtype (string, int64,
        float32).
      rejected: the other rows as read, plus ``reason``, ``column`` and ``detail`` columns.
    """

    rows: pa.Table
    rejected: pa.Table

    def rejected_counts(self) -> dict[str, int]:
        """Reason -> rejected rows."""
        if self.rejected.num_rows == 0:
            return {}
        counts = pc.value_counts(self.rejected.column("reason").combine_chunks())
        return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                        strict=True))


@dataclasses.dataclass
class _Checked:
    """One column's conformed values and per-row failure masks."""

    values: pa.Array | None
    missing: np.ndarray
    wrong: np.ndarray
    detail: str = ""
    range_failures: list[tuple[str, np.ndarray, str]] = dataclasses.field(default_factory=list)


def validate(table: pa.Table, rules: Sequence[ColumnRule], day: datetime.date | None
             ) -> Validated:
    """Splits a table of one partition into conformed good rows and dead letters.

    Args:
      table: rows as read from the logs.
      rules: one per required column (all must exist in ``table``).
      day: the partition's day (``ts`` must lie inside it); None for an unknown date partition,
        whose rows are all rejected.

    Returns:
      The good rows (columns in rule order) and the rejected rows with their reasons.
    """
    n = table.num_rows
    if day is None:
        return Validated(rows=_empty_rows(rules),
                         rejected=reject_all(table, UNKNOWN_DATE_PARTITION, "",
                                             "partition directory name is not date=YYYY-MM-DD"))
    checked = [_check_column(table.column(rule.column).combine_chunks(), rule, day)
               for rule in rules]
    reason = np.full(n, -1, dtype=np.int64)
    which = np.zeros(n, dtype=np.int64)
    details: list[tuple[str, str, str]] = []

    def mark(mask: np.ndarray, code: str, column: str, detail: str) -> None:
        fresh = mask & (reason < 0)
        if fresh.any():
            reason[fresh] = REASONS.index(code)
            which[fresh] = len(details)
            details.append((code, column, detail))

    for rule, check in zip(rules, checked, strict=True):
        mark(check.missing, MISSING_VALUE, rule.column, f"{rule.column} is null")
    for rule, check in zip(rules, checked, strict=True):
        code = BAD_TIMESTAMP if rule.dtype == TIMESTAMP else WRONG_TYPE
        mark(check.wrong & ~check.missing, code, rule.column, check.detail)
    for stage in (BAD_TIMESTAMP, OUT_OF_RANGE):
        for rule, check in zip(rules, checked, strict=True):
            for code, mask, detail in check.range_failures:
                if code == stage:
                    mark(mask & ~check.missing & ~check.wrong, code, rule.column, detail)
    good = reason < 0
    rows = pa.table({rule.column: check.values.filter(pa.array(good))
                     for rule, check in zip(rules, checked, strict=True)})
    bad = np.flatnonzero(~good)
    rejected = table.take(pa.array(bad))
    labels = [details[i] for i in which[bad]]
    rejected = rejected.append_column("reason", pa.array([x[0] for x in labels], pa.string()))
    rejected = rejected.append_column("column", pa.array([x[1] for x in labels], pa.string()))
    rejected = rejected.append_column("detail", pa.array([x[2] for x in labels], pa.string()))
    return Validated(rows=rows, rejected=rejected)


def reject_all(table: pa.Table, reason: str, column: str, detail: str) -> pa.Table:
    """Every row of ``table`` as a dead letter with one reason."""
    n = table.num_rows
    return (table.append_column("reason", pa.array([reason] * n, pa.string()))
            .append_column("column", pa.array([column] * n, pa.string()))
            .append_column("detail", pa.array([detail] * n, pa.string())))


def dead_letter_lines(rejected: pa.Table) -> Iterator[str]:
    """JSON lines ``{"reason", "column", "detail", "row": {original columns}}``."""
    meta = ("reason", "column", "detail")
    for record in rejected.to_pylist():
        row = {k: v for k, v in record.items() if k not in meta}
        yield json.dumps({**{k: record[k] for k in meta}, "row": row}, default=str,
                         ensure_ascii=False, sort_keys=False)


def _empty_rows(rules: Sequence[ColumnRule]) -> pa.Table:
    return pa.table({r.column: pa.array([], _ARROW_TYPES[r.dtype]) for r in rules})


def _check_column(array: pa.Array, rule: ColumnRule, day: datetime.date) -> _Checked:
    check = _conform(array, rule, day)
    if rule.default is None or not check.missing.any():
        return check
    # The rule's default stands for a missing value: written, and no other check applies to it.
    kept = ~check.missing
    return _Checked(
        values=pc.if_else(pa.array(check.missing), pa.scalar(rule.default, check.values.type),
                          check.values),
        missing=np.zeros_like(kept), wrong=check.wrong & kept, detail=check.detail,
        range_failures=[(code, mask & kept, detail)
                        for code, mask, detail in check.range_failures])


def _conform(array: pa.Array, rule: ColumnRule, day: datetime.date) -> _Checked:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    missing = array.is_null().to_numpy(zero_copy_only=False)
    if rule.dtype == "string":
        return _check_string(array, missing, rule)
    numbers, wrong, detail = _to_numbers(array, rule)
    if pa.types.is_floating(array.type):
        missing = missing | np.isnan(numbers)
    wrong = wrong & ~missing
    usable = ~(missing | wrong)
    check = _Checked(values=None, missing=missing, wrong=wrong, detail=detail)
    if rule.dtype == TIMESTAMP:
        start = (day - datetime.date(1970, 1, 1)).days * MS_PER_DAY
        outside = usable & ((numbers < start) | (numbers >= start + MS_PER_DAY))
        as_seconds = outside & (numbers * 1000 >= start) & (numbers * 1000 < start + MS_PER_DAY)
        hint = ("; the values read as epoch seconds would be: write ts in milliseconds"
                if as_seconds.any() else "")
        check.range_failures.append((BAD_TIMESTAMP, outside,
                                     f"ts is not inside the partition's day {day} (UTC){hint}"))
    if rule.dtype == "float32":
        with np.errstate(over="ignore"):  # too large for float32 -> inf -> out_of_range
            numbers = numbers.astype(np.float32)
        check.range_failures.append((OUT_OF_RANGE, usable & ~np.isfinite(numbers),
                                     f"{rule.column} is infinite or too large for float32"))
    if rule.dtype == LABEL:
        check.range_failures.append((OUT_OF_RANGE, usable & (numbers != 0) & (numbers != 1),
                                     f"label column {rule.column} must be 0 or 1"))
    if rule.min_value is not None:
        check.range_failures.append((OUT_OF_RANGE, usable & (numbers < rule.min_value),
                                     f"{rule.column} must be >= {rule.min_value}"))
    if rule.max_value is not None:
        check.range_failures.append((OUT_OF_RANGE, usable & (numbers > rule.max_value),
                                     f"{rule.column} must be <= {rule.max_value}"))
    if rule.positive:
        check.range_failures.append((OUT_OF_RANGE, usable & (numbers <= 0),
                                     f"{rule.column} must be > 0"))
    filled = np.where(usable, numbers, 0)
    check.values = pa.array(filled.astype(_ARROW_TYPES[rule.dtype].to_pandas_dtype()))
    return check


def _check_string(array: pa.Array, missing: np.ndarray, rule: ColumnRule) -> _Checked:
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        return _Checked(values=pc.cast(array, pa.string()), missing=missing,
                        wrong=np.zeros(len(array), bool))
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        try:
            return _Checked(values=pc.cast(array, pa.string()), missing=missing,
                            wrong=np.zeros(len(array), bool))
        except pa.ArrowInvalid:
            detail = f"{rule.column} holds bytes that are not valid UTF-8"
    else:
        detail = f"{rule.column} is {kind} in the logs but the spec says string"
    return _Checked(values=pa.nulls(len(array), pa.string()), missing=missing,
                    wrong=~missing, detail=detail)


def _timestamp_text(array: pa.Array) -> tuple[np.ndarray, np.ndarray, str]:
    """Epoch milliseconds of ``ts`` written as text: epoch milliseconds, or an ISO 8601 time
    (``2026-01-05T10:00:00``, ``2026-01-05 10:00:00+01:00``; without an offset it is UTC, as the
    partitions' days are), and the mask of text that is neither."""
    text = pd.Series(array.fill_null("").to_numpy(zero_copy_only=False), dtype=object)
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    times = pd.to_datetime(text.where(np.isnan(numbers)), utc=True, errors="coerce",
                           format="ISO8601")
    parsed = ~np.isnan(numbers) | times.notna().to_numpy()
    since_epoch_ms = ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")).to_numpy(
        dtype=np.float64, na_value=np.nan)
    epoch_ms = np.where(times.notna(), since_epoch_ms, np.nan_to_num(numbers))
    wrong = ~parsed & ~array.is_null().to_numpy(zero_copy_only=False)
    return (np.where(parsed, np.floor(epoch_ms), 0).astype(np.int64), wrong,
            "ts holds text that is neither epoch milliseconds nor an ISO 8601 time")


def _to_numbers(array: pa.Array, rule: ColumnRule) -> tuple[np.ndarray, np.ndarray, str]:
    """Float64 values (0 where unusable), a wrong-type mask and its message.

    int64 targets read integers exactly (through int64, not float64) when the input allows.
    """
    n = len(array)
    kind = array.type
    integral_target = rule.dtype in ("int64", TIMESTAMP, LABEL)
    detail = f"{rule.column} is {kind} in the logs but the spec says {rule.dtype}"
    if pa.types.is_boolean(kind) and rule.dtype == LABEL:
        array, kind = pc.cast(array, pa.int64()), pa.int64()
    if pa.types.is_timestamp(kind) and rule.dtype == TIMESTAMP:
        raw = array.cast(pa.int64()).fill_null(0).to_numpy()
        per_ms = {"s": 1, "ms": 1, "us": 1000, "ns": 1_000_000}[kind.unit]
        ms = raw * 1000 if kind.unit == "s" else raw // per_ms
        return ms, np.zeros(n, bool), detail
    if pa.types.is_integer(kind):
        if pa.types.is_uint64(kind):
            raw = array.fill_null(0).to_numpy()
            too_big = raw > np.iinfo(np.int64).max
            values = np.where(too_big, 0, raw).astype(np.int64)
            return values.astype(np.float64) if not integral_target else values, too_big, detail
        values = pc.cast(array, pa.int64()).fill_null(0).to_numpy()
        return (values if integral_target else values.astype(np.float64)), np.zeros(n, bool), detail
    if pa.types.is_floating(kind):
        values = pc.cast(array, pa.float64()).fill_null(0.0).to_numpy()
    elif (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and rule.dtype == TIMESTAMP:
        return _timestamp_text(array)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if integral_target:
            try:
                return pc.cast(array, pa.int64()).fill_null(0).to_numpy(), np.zeros(n, bool), detail
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        text = array.fill_null("0").to_numpy(zero_copy_only=False)
        values = pd.to_numeric(text, errors="coerce").astype(np.float64)
        parse_failed = np.isnan(values) & ~array.is_null().to_numpy(zero_copy_only=False)
        values = np.where(parse_failed, 0.0, values)
        if not integral_target:
            return values, parse_failed, f"{rule.column} holds text that is not a number"
        fraction = ~np.isfinite(values) | (values != np.round(values))
        return values, parse_failed | fraction, f"{rule.column} holds text that is not an integer"
    else:
        return np.zeros(n), np.ones(n, bool), detail
    if not integral_target:
        return values, np.zeros(n, bool), detail
    finite = np.isfinite(values)
    integral = finite & (values == np.round(np.where(finite, values, 0))) & (np.abs(values) < 2**63)
    unusable = ~integral & ~np.isnan(values)
    return np.where(integral, values, 0.0), unusable, f"{rule.column} holds non-integer numbers"


__all__ = ["BAD_TIMESTAMP", "ColumnRule", "LABEL", "MISSING_VALUE", "MS_PER_DAY", "OUT_OF_RANGE",
           "REASONS", "TIMESTAMP", "UNKNOWN_DATE_PARTITION", "Validated", "WRONG_TYPE",
           "dead_letter_lines", "reject_all", "spec_rules", "validate"]

"""Delayed feedback: training spans whose labels are not fully observed yet.

Conversions arrive hours to days after the impression, so the freshest spans carry labels that
are still incomplete: their negatives include impressions whose conversion has not been logged
yet (*fake negatives*). The pipeline records, per span and label, whether the label's window is
fully observed (``stats.json`` ``maturity``, :func:`pipelines.labels.label_maturity`), and
rebuilds an immature span once its events arrive. The training job reads those records for the
labels its model trains on and, by ``--delayed_feedback``:

``none`` (default)
    refuses a training window holding an immature span, in one line naming the spans, the
    label and the fixes;
``exclude``
    trains (and validates) without the immature spans;
``as_observed``
    trains on them with their labels as observed, fake negatives included (the naive
    baseline, for comparisons);
``fake_negative_weighting``
    trains on them with fake negative weighting (Ktena et al., "Addressing Delayed Feedback for
    Continuous Training with Neural Networks in CTR prediction", RecSys 2019).

**Fake negative weighting on daily spans.** Ktena et al. train on a stream that logs every
impression at once as a negative and, when its conversion arrives, logs it again as a positive.
A span built at time T holds the labels as observed at T, which is exactly that stream cut at T:
a row with label 0 is the impression's negative (fake if its conversion is still to come), a
row with label 1 is its negative *and* its positive. The training window is read as that stream
(every span of it, mature or not: a mature span is the stream of a day whose positives have
all arrived) and each example is weighted by the paper's importance weights, with ``p`` the
model's own prediction under ``stop_gradient``: ``1 + p`` for the positive, ``(1 - p)(1 + p)``
for the negative (:func:`cvr_tf.losses.fake_negative_weighted_logloss`; for every task of a
multi-task model). On a stream where all positives have arrived the weighted loss is minimized
by the true conversion probability, where unweighted training on the same stream would learn
``p / (1 + p)``. Where positives are still missing it is minimized by the share observed so
far, as unweighted training on the span's labels is: the weighting undoes the duplication of
the stream, not the delay. What it gains on the freshest days is measured by
``experiments/delayed_feedback.py`` (experiments/README.md).

The test window (``--eval_start..--eval_end``) is read whole whatever the mode; its immature
spans are logged and recorded in ``metrics.json`` (their metrics understate the positives).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

from absl import logging

from cvr_tf.input import span_day

NONE = "none"
EXCLUDE = "exclude"
AS_OBSERVED = "as_observed"
FAKE_NEGATIVE_WEIGHTING = "fake_negative_weighting"
MODES = (NONE, EXCLUDE, AS_OBSERVED, FAKE_NEGATIVE_WEIGHTING)
"""Values of ``--delayed_feedback``."""
STATS_FILE = "stats.json"


class ImmatureLabelsError(ValueError):
    """Training spans hold immature labels and ``--delayed_feedback`` says nothing about them."""


@dataclasses.dataclass(frozen=True)
class Immature:
    """One immature label of one span (from its ``stats.json``).

    Attributes:
      span: the span directory.
      label: the label.
      record: its maturity record (``events``, ``needs_events_through``,
        ``events_observed_through``, ``mature``, ``missing_partitions``).
    """

    span: str
    label: str
    record: dict[str, Any]

    @property
    def day(self) -> datetime.date:
        return span_day(self.span)


def _maturity(span: str) -> dict[str, dict[str, Any]] | None:
    with open(os.path.join(span, STATS_FILE), encoding="utf-8") as handle:
        return json.load(handle).get("maturity")


def immature_labels(spans: Sequence[str], labels: Sequence[str]) -> list[Immature]:
    """The immature ones among ``labels`` in ``spans``, in span order.

    Spans built before spans recorded maturity have no record: they count as mature (logged).
    """
    out, unrecorded = [], []
    for span in spans:
        maturity = _maturity(span)
        if maturity is None:
            unrecorded.append(span)
            continue
        out += [Immature(span, label, maturity[label]) for label in labels
                if label in maturity and not maturity[label].get("mature", True)]
    if unrecorded:
        logging.warning("%d span(s) (first %s) record no label maturity (built before spans "
                        "recorded it); taking their labels as complete.", len(unrecorded),
                        unrecorded[0])
    return out


@dataclasses.dataclass(frozen=True)
class Plan:
    """What training does with its window's immature spans.

    Attributes:
      mode: the ``--delayed_feedback`` value.
      immature: the immature labels of the training window.
      excluded_days: the days training leaves out (``exclude``).
    """

    mode: str
    immature: tuple[Immature, ...]
    excluded_days: tuple[datetime.date, ...]

    def to_record(self) -> dict[str, Any]:
        """The plan as ``metrics.json`` records it."""
        by_span: dict[str, list[str]] = {}
        for item in self.immature:
            by_span.setdefault(item.day.isoformat(), []).append(item.label)
        return {"mode": self.mode, "immature_spans": by_span,
                "excluded_days": [day.isoformat() for day in self.excluded_days]}


def plan(spans: Sequence[str], labels: Sequence[str], mode: str) -> Plan:
    """Checks the training window's spans for immature ``labels`` and plans by ``mode``.

    Raises:
      ImmatureLabelsError: immature spans and mode ``none``, or mode ``exclude`` would leave no
        span; one line naming the spans, the label and the fixes.
      ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"--delayed_feedback={mode!r} is not one of {', '.join(MODES)}")
    immature = tuple(immature_labels(spans, labels))
    if not immature:
        return Plan(mode, (), ())
    if mode == NONE:
        raise ImmatureLabelsError(_refusal(immature))
    excluded = tuple(sorted({item.day for item in immature})) if mode == EXCLUDE else ()
    if len(excluded) == len(spans):
        raise ImmatureLabelsError(
            f"--delayed_feedback=exclude leaves no training span: every span of the window has "
            f"an immature label ({_describe(immature)}); end the training window earlier")
    logging.warning("Training window: %s; --delayed_feedback=%s %s.", _describe(immature), mode,
                    {EXCLUDE: "leaves those spans out",
                     AS_OBSERVED: "trains on their labels as observed (fake negatives included)",
                     FAKE_NEGATIVE_WEIGHTING: "trains with fake negative weighting"}[mode])
    return Plan(mode, immature, excluded)


def _describe(immature: Sequence[Immature]) -> str:
    """``spans D1, D2 have immature label 'x' (clicks observed through D, needs D')``."""
    parts = []
    for label in dict.fromkeys(item.label for item in immature):
        items = [item for item in immature if item.label == label]
        last = items[-1].record
        parts.append(
            f"span(s) {', '.join(item.day.isoformat() for item in items)} have immature label "
            f"{label!r} ({last.get('events')} observed through "
            f"{last.get('events_observed_through')}; the last span's window needs "
            f"{last.get('needs_events_through')})")
    return "; ".join(parts)


def _refusal(immature: Sequence[Immature]) -> str:
    return (f"training {_describe(immature)}: their negatives include events that have not "
            "arrived yet. Wait for them and rebuild the spans (pipelines.build_tfrecords rebuilds "
            "immature spans once their events arrive), end the training window earlier, or pass "
            "--delayed_feedback=exclude (train without them) or "
            "--delayed_feedback=fake_negative_weighting (Ktena et al. 2019)")


__all__ = ["AS_OBSERVED", "EXCLUDE", "FAKE_NEGATIVE_WEIGHTING", "Immature",
           "ImmatureLabelsError", "MODES", "NONE", "Plan", "immature_labels", "plan"]

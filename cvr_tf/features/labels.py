"""Labels of the spans: what each 0/1 column means and how the pipeline derives it.

A spec may name several labels (``"labels"``), each one int64 column of the spans::

    "labels": {"clicked":   {"events": "clicks", "window_hours": 1},
               "converted": {"events": "conversions", "attribution_days": 3},
               "bought":    {"column": "bought"}}

``events`` labels are joined by the pipeline (:mod:`pipelines.labels`) with the event log of that
name, ``<logs>/<events>/date=YYYY-MM-DD/*.parquet`` (``request_id``, ``item_id``, ``ts``)::

    label_i = 1  iff  exists e: (e.request_id, e.item_id) = (i.request_id, i.item_id)
                                and 0 <= e.ts - ts_i <= window

with the window given in hours (``window_hours``, a number) or days (``attribution_days``, an
integer). ``column`` labels are read from a 0/1 column of the impressions instead. The spec's
``label`` names the one label single-task models train on; a spec without ``labels`` has just that
one, joined with conversions within the pipeline's ``--attribution_days`` (or read from its
``--label_column``), as before labels could be named.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from cvr_tf.features.base import FeatureSpecError

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
IMPRESSIONS = "impressions"  # the impressions log: no events table may take its name
_FIELDS = ("events", "window_hours", "attribution_days", "column")


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """One label column of the spans and how the pipeline derives it.

    Attributes:
      name: the column's name in the spans.
      events: the event log joined with the impressions (e.g. ``clicks``, ``conversions``).
      window_hours: the join window after the impression, in hours (events labels).
      attribution_days: the join window in days (events labels; instead of ``window_hours``).
      column: a 0/1 impressions column the label is read from (instead of ``events``).
    """

    name: str
    events: str | None = None
    window_hours: float | None = None
    attribution_days: int | None = None
    column: str | None = None

    def __post_init__(self) -> None:
        where = f"label {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise FeatureSpecError(f"label names must be non-empty strings, got {self.name!r}")
        if (self.events is None) == (self.column is None):
            raise FeatureSpecError(f"{where}: give exactly one of 'events' (an event log to "
                                   "join, e.g. \"clicks\") and 'column' (a 0/1 impressions column)")
        for field in ("events", "column"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise FeatureSpecError(f"{where}: {field} must be a non-empty string, got "
                                       f"{value!r}")
        if self.column is not None:
            if self.window_hours is not None or self.attribution_days is not None:
                raise FeatureSpecError(f"{where}: a 'column' label has no window; drop "
                                       "window_hours/attribution_days")
            return
        if "/" in self.events or self.events.startswith((".", "_")) or \
                self.events == IMPRESSIONS:
            raise FeatureSpecError(f"{where}: events {self.events!r} must name an event log "
                                   "directory of the logs (e.g. \"clicks\"), not impressions")
        if (self.window_hours is None) == (self.attribution_days is None):
            raise FeatureSpecError(f"{where}: give exactly one of window_hours and "
                                   "attribution_days (the join window after the impression)")
        hours, days = self.window_hours, self.attribution_days
        if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float)
                                  or not math.isfinite(hours) or hours < 0):
            raise FeatureSpecError(f"{where}: window_hours must be a number >= 0, got {hours!r}")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
            raise FeatureSpecError(f"{where}: attribution_days must be an integer >= 0, got "
                                   f"{days!r}")

    @property
    def window_ms(self) -> int | None:
        """The join window in milliseconds (None for a column label)."""
        if self.attribution_days is not None:
            return self.attribution_days * MS_PER_DAY
        if self.window_hours is not None:
            return round(self.window_hours * MS_PER_HOUR)
        return None

    def to_dict(self) -> dict[str, Any]:
        """The definition as in the spec file (without the name)."""
        return {f: getattr(self, f) for f in _FIELDS if getattr(self, f) is not None}

    @classmethod
    def from_dict(cls, name: str, raw: Any) -> LabelSpec:
        """A label from its spec-file definition; unknown keys are an error naming them."""
        if not isinstance(raw, Mapping):
            raise FeatureSpecError(f"label {name!r}: expected a mapping such as "
                                   "{\"events\": \"clicks\", \"window_hours\": 1}, got "
                                   f"{raw!r}")
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise FeatureSpecError(f"label {name!r}: unknown field(s) {', '.join(unknown)}; "
                                   f"fields are {', '.join(_FIELDS)}")
        return cls(name=name, **raw)


def labels_from_dict(raw: Any) -> tuple[LabelSpec, ...]:
    """The ``labels`` mapping of a spec file, in file order."""
    if not isinstance(raw, Mapping) or not raw:
        raise FeatureSpecError("'labels' must be a non-empty mapping of label name -> definition, "
                               "e.g. {\"converted\": {\"events\": \"conversions\", "
                               "\"attribution_days\": 3}}")
    return tuple(LabelSpec.from_dict(name, definition) for name, definition in raw.items())


__all__ = ["LabelSpec", "MS_PER_DAY", "MS_PER_HOUR", "labels_from_dict"]

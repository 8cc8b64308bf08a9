"""Request and load metrics under TF Serving's names, rendered in Prometheus' text format.

``tensorflow_model_server`` exports its monitoring metrics on the REST port at
``prometheus_config.path`` (default ``/monitoring/prometheus/metrics``) when started with a
``--monitoring_config_file`` that enables Prometheus; it spells a metric ``/a/b/c`` as ``:a:b:c``.
This server keeps those names and labels where TF Serving has the metric:

* ``:tensorflow:serving:request_count{model_name, status}``: requests answered, by status code
  name (``OK``, ``UNAVAILABLE``, ...);
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``: a histogram of request
  latency in microseconds (``API`` is ``predict``, ``classify``, ...; ``entrypoint`` ``GRPC`` or
  ``REST``);
* ``:tensorflow:cc:saved_model:load_attempt_count{model_path, status}``: SavedModel loads.

and adds ``:cvr_tf:serving:shed_count{model_name, status}`` for requests refused before any work
(load shedding), which TF Serving only counts inside ``request_count``.
"""

from __future__ import annotations

import bisect
import collections
import threading

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
SHED_COUNT = ":cvr_tf:serving:shed_count"
# Microsecond bucket bounds: powers of 1.8 from 10 us, as TF Serving's request_latency histogram.
LATENCY_BUCKETS_US = tuple(10 * 1.8**index for index in range(33))
_HELP = {
    REQUEST_COUNT: "The total number of requests.",
    REQUEST_LATENCY: "Distribution of wall time (in microseconds) for serving requests.",
    LOAD_ATTEMPT_COUNT: "The number of times a SavedModel was attempted to load.",
    SHED_COUNT: "Requests refused before any work (queue full or deadline too short).",
}

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = labels + extra
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


class ServingMetrics:
    """Thread-safe counters and latency histograms of one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, collections.Counter[Labels]] = collections.defaultdict(
            collections.Counter
        )
        self._histograms: dict[Labels, list] = {}

    def increment(self, metric: str, **labels: str) -> None:
        """Adds one to the counter ``metric`` with ``labels``."""
        key = tuple(labels.items())
        with self._lock:
            self._counters[metric][key] += 1

    def count(self, metric: str, **labels: str) -> int:
        """The current value of a counter (0 when never incremented)."""
        with self._lock:
            return self._counters[metric][tuple(labels.items())]

    def record_request(
        self, model_name: str, api: str, entrypoint: str, status: str, latency_s: float
    ) -> None:
        """Counts one answered request and adds its latency to the histogram."""
        self.increment(REQUEST_COUNT, model_name=model_name, status=status)
        key = (("model_name", model_name), ("API", api), ("entrypoint", entrypoint))
        micros = latency_s * 1e6
        with self._lock:
            histogram = self._histograms.setdefault(key, [[0] * len(LATENCY_BUCKETS_US), 0, 0.0])
            buckets = histogram[0]
            index = bisect.bisect_left(LATENCY_BUCKETS_US, micros)
            if index < len(buckets):
                buckets[index] += 1
            histogram[1] += 1
            histogram[2] += micros

    def prometheus_text(self) -> str:
        """Every metric in Prometheus' text exposition format (version 0.0.4)."""
        lines = []
        with self._lock:
            for metric in sorted(self._counters):
                lines += [f"# HELP {metric} {_HELP[metric]}", f"# TYPE {metric} counter"]
                for labels, value in sorted(self._counters[metric].items()):
                    lines.append(f"{metric}{_label_text(labels)} {value}")
            if self._histograms:
                metric = REQUEST_LATENCY
                lines += [f"# HELP {metric} {_HELP[metric]}", f"# TYPE {metric} histogram"]
            for labels, (buckets, total, micros) in sorted(self._histograms.items()):
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS_US, buckets, strict=True):
                    cumulative += count
                    bucket = _label_text(labels, (("le", f"{bound:.6g}"),))
                    lines.append(f"{REQUEST_LATENCY}_bucket{bucket} {cumulative}")
                lines.append(
                    f"{REQUEST_LATENCY}_bucket{_label_text(labels, (('le', '+Inf'),))} {total}"
                )
                lines.append(f"{REQUEST_LATENCY}_sum{_label_text(labels)} {micros:.6g}")
                lines.append(f"{REQUEST_LATENCY}_count{_label_text(labels)} {total}")
        return "\n".join(lines) + "\n"

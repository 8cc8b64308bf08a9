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

and adds, under ``:cvr_tf:serving:``:

* ``shed_count{model_name, status}``: requests refused before any work (load shedding), which
  TF Serving only counts inside ``request_count``;
* ``signature_latency{model_name, version, signature}``: a histogram (microseconds) of each
  request's time on the version that answered it, from its input tensors to its response
  (admission waits excluded: ``request_latency`` has them);
* ``stage_latency{model_name, version, stage}``: for a decoupled export's ``serving_default``
  (``embed`` then ``dense``, :class:`~serving.server.servable.StagedRunner`), the time of each
  stage; the ``dense`` stage includes its wait in a batching queue (in-graph or the server's);
* ``batch_size{model_name, version, signature}``: the rows of every batch the server's batching
  (``--enable_batching``) ran, before padding; with a decoupled export that is the dense queue
  of the ``dense`` stage. In-graph batches are TensorFlow's (``BatchFunction``): TF Serving
  exports their sizes as ``:tensorflow:serving:batching:*``, which Python cannot read, so the
  local server reports the server-side queue's.
"""

from __future__ import annotations

import bisect
import collections
import threading

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
SHED_COUNT = ":cvr_tf:serving:shed_count"
SIGNATURE_LATENCY = ":cvr_tf:serving:signature_latency"
STAGE_LATENCY = ":cvr_tf:serving:stage_latency"
BATCH_SIZE = ":cvr_tf:serving:batch_size"
# Microsecond bucket bounds: powers of 1.8 from 10 us, as TF Serving's request_latency histogram.
LATENCY_BUCKETS_US = tuple(10 * 1.8**index for index in range(33))
BATCH_SIZE_BUCKETS = tuple(float(2**index) for index in range(17))  # 1 .. 65,536 rows
_HELP = {
    REQUEST_COUNT: "The total number of requests.",
    REQUEST_LATENCY: "Distribution of wall time (in microseconds) for serving requests.",
    LOAD_ATTEMPT_COUNT: "The number of times a SavedModel was attempted to load.",
    SHED_COUNT: "Requests refused before any work (queue full or deadline too short).",
    SIGNATURE_LATENCY: "Wall time (in microseconds) of requests on the version that served them.",
    STAGE_LATENCY: "Wall time (in microseconds) of the embed and dense stages of a request.",
    BATCH_SIZE: "Rows of the batches the server's batching queues ran (before padding).",
}
_BUCKETS = {REQUEST_LATENCY: LATENCY_BUCKETS_US, SIGNATURE_LATENCY: LATENCY_BUCKETS_US,
            STAGE_LATENCY: LATENCY_BUCKETS_US, BATCH_SIZE: BATCH_SIZE_BUCKETS}

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = labels + extra
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


class _Histogram:
    """Counts per bucket (not cumulative), the total count and the sum of one label set."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0


class ServingMetrics:
    """Thread-safe counters and histograms of one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, collections.Counter[Labels]] = collections.defaultdict(
            collections.Counter
        )
        self._histograms: dict[str, dict[Labels, _Histogram]] = collections.defaultdict(dict)

    def increment(self, metric: str, **labels: str) -> None:
        """Adds one to the counter ``metric`` with ``labels``."""
        key = tuple(labels.items())
        with self._lock:
            self._counters[metric][key] += 1

    def count(self, metric: str, **labels: str) -> int:
        """The current value of a counter (0 when never incremented)."""
        with self._lock:
            return self._counters[metric][tuple(labels.items())]

    def observe(self, metric: str, value: float, **labels: str) -> None:
        """Adds ``value`` to the histogram ``metric`` (one of :data:`_BUCKETS`) with ``labels``."""
        buckets = _BUCKETS[metric]
        with self._lock:
            histogram = self._histograms[metric].get(tuple(labels.items()))
            if histogram is None:
                histogram = self._histograms[metric][tuple(labels.items())] = _Histogram(buckets)
            index = bisect.bisect_left(buckets, value)
            if index < len(buckets):
                histogram.counts[index] += 1
            histogram.total += 1
            histogram.sum += value

    def histogram(self, metric: str, **labels: str) -> tuple[int, float]:
        """(count, sum) of a histogram ((0, 0.0) when never observed)."""
        with self._lock:
            histogram = self._histograms[metric].get(tuple(labels.items()))
            return (histogram.total, histogram.sum) if histogram else (0, 0.0)

    def record_request(
        self, model_name: str, api: str, entrypoint: str, status: str, latency_s: float
    ) -> None:
        """Counts one answered request and adds its latency to the histogram."""
        self.increment(REQUEST_COUNT, model_name=model_name, status=status)
        self.observe(REQUEST_LATENCY, latency_s * 1e6, model_name=model_name, API=api,
                     entrypoint=entrypoint)

    def prometheus_text(self) -> str:
        """Every metric in Prometheus' text exposition format (version 0.0.4)."""
        lines = []
        with self._lock:
            for metric in sorted(self._counters):
                lines += [f"# HELP {metric} {_HELP[metric]}", f"# TYPE {metric} counter"]
                for labels, value in sorted(self._counters[metric].items()):
                    lines.append(f"{metric}{_label_text(labels)} {value}")
            for metric in sorted(self._histograms):
                lines += [f"# HELP {metric} {_HELP[metric]}", f"# TYPE {metric} histogram"]
                for labels, histogram in sorted(self._histograms[metric].items()):
                    lines += _histogram_lines(metric, labels, histogram, _BUCKETS[metric])
        return "\n".join(lines) + "\n"


def _histogram_lines(metric: str, labels: Labels, histogram: _Histogram,
                     buckets: tuple[float, ...]) -> list[str]:
    lines, cumulative = [], 0
    for bound, count in zip(buckets, histogram.counts, strict=True):
        cumulative += count
        lines.append(f"{metric}_bucket{_label_text(labels, (('le', f'{bound:.6g}'),))} "
                     f"{cumulative}")
    lines.append(f"{metric}_bucket{_label_text(labels, (('le', '+Inf'),))} {histogram.total}")
    lines.append(f"{metric}_sum{_label_text(labels)} {histogram.sum:.6g}")
    lines.append(f"{metric}_count{_label_text(labels)} {histogram.total}")
    return lines

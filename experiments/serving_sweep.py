"""The load sweep of the serving benchmark and its summaries, for any way of measuring a point
(gRPC against the local server, or in-process calls of the SavedModel).

A *point* is a :class:`~serving.loadtest.LoadReport` as a dict, plus ``model``,
``send_window_s``, ``load_average_1m``, ``cpu_ms_per_request`` and ``sustained``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SUSTAINED_FRACTION = 0.95
STOP_P99_MS = 500.0
MIN_REQUESTS = 200

Point = dict[str, Any]
Measure = Callable[[str, float, float, int], Point]
_print = functools.partial(print, flush=True)


def sustained(point: Mapping[str, Any]) -> bool:
    """No failed request, and the answers kept pace with the sends: answers per second (first
    send to last answer) at least :data:`SUSTAINED_FRACTION` of requests sent per second of the
    send window. (The realized rate, not the nominal one: with Poisson arrivals a 5 s window at
    50 QPS sends 250 +- 16 requests.)"""
    sent_per_s = point["requests"] / point["send_window_s"]
    return not point["errors"] and point["requests_per_s"] >= SUSTAINED_FRACTION * sent_per_s


def sweep(measure: Measure, model_names: Sequence[str], qps_levels: Sequence[float],
          duration_s: float, timeout_s: float, log: Callable[[str], None] = _print,
          retries: int = 1) -> list[Point]:
    """Climbs the QPS ladder with every model until each stops keeping up.

    At each QPS every model still climbing runs once, in an order rotated per level so that
    background load on a shared machine spreads over the models. A point that does not keep up
    (unsustained, or a p99 over :data:`STOP_P99_MS`) is measured again, up to ``retries``
    times, after waiting ``timeout_s`` (every request's deadline) so that the overload's
    leftovers are gone: on a shared machine another job's burst can stall one point. The last
    attempt is the point (the earlier ones are kept in its ``retried``); if it still does not
    keep up, the model stops climbing.

    Args:
      measure: ``(model, qps, duration_s, seed) -> point``, one open-loop point.
      model_names: the models to climb with.
      qps_levels: offered loads, ascending.
      duration_s: seconds per point (longer at low QPS: at least :data:`MIN_REQUESTS`).
      timeout_s: the requests' deadline.
      log: where the per-point line goes.
      retries: attempts after a point that does not keep up.

    Returns:
        Every model's point at each QPS it ran, in the order measured.
    """
    climbing, points = list(model_names), []
    for level, qps in enumerate(qps_levels):
        if not climbing:
            break
        shift = level % len(climbing)
        for name in climbing[shift:] + climbing[:shift]:
            attempts: list[Point] = []
            while True:
                point = measure(name, qps, max(duration_s, MIN_REQUESTS / qps), level)
                point["sustained"] = sustained(point)
                latency = point["latency_ms"]
                log(f"{name:<12} {qps:>6g} QPS: {point['requests_per_s']:7.1f} req/s, p50 "
                    f"{latency['p50']:7.1f} ms, p99 {latency['p99']:7.1f} ms, errors "
                    f"{point['errors'] or 0}, CPU {point['cpu_ms_per_request']:.2f} ms/request, "
                    f"load {point['load_average_1m']}" + (" (retry)" if attempts else ""))
                keeps_up = point["sustained"] and latency["p99"] <= STOP_P99_MS
                if not keeps_up:
                    time.sleep(timeout_s)
                if keeps_up or len(attempts) == retries:
                    break
                attempts.append(point)
            if attempts:
                point["retried"] = [brief(attempt) for attempt in attempts]
            points.append(point)
            if not keeps_up:
                climbing.remove(name)
    return points


# ----------------------------------------------------------------------------------------------
# Summaries


def brief(point: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fields of a point that the summaries quote."""
    if point is None:
        return None
    return {"target_qps": point["target_qps"], "requests_per_s": round(point["requests_per_s"], 1),
            "p50_ms": round(point["latency_ms"]["p50"], 2),
            "p99_ms": round(point["latency_ms"]["p99"], 2), "sustained": point["sustained"]}


def best_point(points: Sequence[Mapping[str, Any]],
               p99_budget_ms: float = float("inf")) -> Point | None:
    """The sustained point of highest throughput whose p99 is within the budget, if any."""
    eligible = [point for point in points
                if point["sustained"] and point["latency_ms"]["p99"] <= p99_budget_ms]
    return dict(max(eligible, key=lambda point: point["requests_per_s"])) if eligible else None


def compare_at_equal_p99(batched: Sequence[Point], unbatched: Sequence[Point],
                         p99_budget_ms: float) -> list[dict[str, Any]]:
    """Max throughput of each model within a p99 budget: the unbatched model's p99 at its own
    best point, then the fixed ``p99_budget_ms``.

    Returns:
        One row per budget: each model's best point within it (``None`` if none qualifies), the
        throughput ratio batched / unbatched, and whether the batched model still kept up at
        the last QPS it ran (its maximum is then only a lower bound).
    """
    reference = best_point(unbatched)
    budgets = [("unbatched p99 at its best point", reference["latency_ms"]["p99"])
               ] if reference else []
    rows = []
    for label, budget in [*budgets, (f"fixed {p99_budget_ms:g} ms", p99_budget_ms)]:
        fast, slow = best_point(batched, budget), best_point(unbatched, budget)
        rows.append({
            "budget": label, "p99_budget_ms": round(budget, 2),
            "batched": brief(fast), "unbatched": brief(slow),
            "throughput_ratio": round(fast["requests_per_s"] / slow["requests_per_s"], 2)
            if fast and slow else None,
            "batched_capped_by_ladder": bool(batched) and bool(batched[-1]["sustained"]),
        })
    return rows


def p99_ratios(baseline: Sequence[Point], other: Sequence[Point]) -> list[dict[str, Any]]:
    """At each offered QPS both models ran: both points and ``p99(other) / p99(baseline)``."""
    others = {point["target_qps"]: point for point in other}
    rows = []
    for base in baseline:
        big = others.get(base["target_qps"])
        if big is None:
            continue
        rows.append({
            "qps": base["target_qps"], "baseline": brief(base), "other": brief(big),
            "p99_ratio": round(big["latency_ms"]["p99"] / base["latency_ms"]["p99"], 2)
            if base["latency_ms"]["p99"] else None,
            "both_sustained": bool(base["sustained"] and big["sustained"]),
        })
    return rows


def summarize(points: Sequence[Point], p99_budget_ms: float, batched: str, unbatched: str,
              whole: str, eight_x: str, eight_x_unbatched: str | None = None) -> dict[str, Any]:
    """Batched vs unbatched, decoupled vs whole, 8x vs 1x, and the ``p99_vs_qps`` series.

    Args:
      points: the sweep's points.
      p99_budget_ms: the fixed budget of :func:`compare_at_equal_p99`.
      batched, unbatched, whole, eight_x: the model names of the batched baseline (dcnv2,
        dense part batched), the unbatched baseline, the whole-model-batched baseline and the
        batched 8x model.
      eight_x_unbatched: the unbatched 8x model, if measured: then ``dhen_batched_vs_unbatched``
        compares it with ``eight_x`` as ``batched_vs_unbatched`` does for the baseline.
    """
    names = {batched, unbatched, whole, eight_x}
    series = {name: sorted((dict(point) for point in points if point["model"] == name),
                           key=lambda point: point["target_qps"])
              for name in names | {point["model"] for point in points}}

    def p99s(name: str) -> list[list[float]]:
        return [[point["target_qps"], round(point["latency_ms"]["p99"], 3)]
                for point in series[name]]

    return {
        "batched_vs_unbatched": compare_at_equal_p99(series[batched], series[unbatched],
                                                     p99_budget_ms),
        "decoupled_vs_whole": p99_ratios(series[batched], series[whole]),
        "dhen_vs_dcnv2": p99_ratios(series[batched], series[eight_x]),
        "p99_vs_qps": {"batched": p99s(batched), "unbatched": p99s(unbatched),
                       "dcnv2": p99s(batched), "dhen": p99s(eight_x),
                       **({"dhen_unbatched": p99s(eight_x_unbatched)}
                          if eight_x_unbatched in series else {})},
        "series": {name: p99s(name) for name in sorted(series)},
        **({"dhen_batched_vs_unbatched": compare_at_equal_p99(
            series[eight_x], series[eight_x_unbatched], p99_budget_ms)}
           if eight_x_unbatched in series else {}),
    }

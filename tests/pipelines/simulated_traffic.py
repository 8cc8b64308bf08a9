"""Four weeks of in-memory simulated traffic of a small world, shared by the simulator's tests."""

import dataclasses
import datetime
import functools

import numpy as np

from pipelines.simulator_day import MS_PER_DAY, simulate_day
from pipelines.simulator_world import SimulatorConfig, World, build_world

SMALL = SimulatorConfig(
    num_items=4000, num_queries=1500, num_users=8000, num_topics=20, num_terms=600, num_brands=100
)
TINY = dataclasses.replace(SMALL, num_items=600, num_queries=200, num_users=500, num_terms=200)
# Every headroom term off: the structure of the world before the headroom knobs.
NO_HEADROOM = dict(
    preference_strength=0.0,
    segment_device_category_strength=0.0,
    intent_tier_strength=0.0,
    long_tail_ratio=0.0,
)


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Per-impression arrays of several simulated days (events: per event)."""

    world: World
    clicked: np.ndarray
    converted: np.ndarray
    true_ctr: np.ndarray
    true_cvr_given_click: np.ndarray
    true_cvr: np.ndarray
    item: np.ndarray
    position: np.ndarray
    user: np.ndarray
    query: np.ndarray
    device: np.ndarray
    weekday: np.ndarray
    affinity: np.ndarray
    click_delay_ms: np.ndarray
    conversion_delay_ms: np.ndarray
    click_events: int
    conversion_events: int
    conversion_event_lags: np.ndarray


@functools.cache
def simulated_traffic(config: SimulatorConfig = SMALL, days: int = 28) -> Traffic:
    """``days`` days x 2,000 requests x 20 candidates from day ordinal 4 (a Monday)."""
    world = build_world(config)
    logs = [simulate_day(world, day, 2000, 20) for day in range(4, 4 + days)]

    def per_row(field):
        return np.concatenate([np.repeat(getattr(log, field), log.candidates) for log in logs])

    def funnel(field):
        return np.concatenate([getattr(log.funnel, field) for log in logs])

    def weekday(log):
        return (config.world_start + datetime.timedelta(log.day)).weekday()

    return Traffic(
        world=world,
        clicked=funnel("clicked"),
        converted=funnel("converted"),
        true_ctr=funnel("true_ctr"),
        true_cvr_given_click=funnel("true_cvr_given_click"),
        true_cvr=funnel("true_cvr"),
        item=np.concatenate([log.item for log in logs]),
        position=np.concatenate([log.position for log in logs]),
        user=per_row("request_user"),
        query=per_row("request_query"),
        device=per_row("request_device"),
        weekday=np.concatenate([np.full(len(log.item), weekday(log)) for log in logs]),
        affinity=np.concatenate([log.affinity for log in logs]),
        click_delay_ms=funnel("click_delay_ms"),
        conversion_delay_ms=funnel("conversion_delay_ms"),
        click_events=sum(len(log.funnel.click_row) for log in logs),
        conversion_events=sum(len(log.funnel.conversion_row) for log in logs),
        conversion_event_lags=np.concatenate(
            [
                log.funnel.conversion_ts // MS_PER_DAY - log.request_ts[0] // MS_PER_DAY
                for log in logs
            ]
        ),
    )


def rate(outcome: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``outcome`` over the rows of ``mask``."""
    return float(outcome[mask].mean())


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula, ties averaged (plain numpy reference code)."""
    order = np.argsort(scores, kind="stable")
    _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
    rank_sums = np.bincount(inverse, weights=np.arange(1, len(scores) + 1))
    ranks = np.empty(len(scores))
    ranks[order] = (rank_sums / counts)[inverse]
    positives = labels.astype(bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

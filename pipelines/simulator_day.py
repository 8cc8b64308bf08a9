"""One day of search traffic in the simulated world: requests, retrieval, ranking and conversions.

Day ordinal d (days since ``SimulatorConfig.world_start``) draws from its own generator, seeded by
(seed, d), and reads only the static world (:mod:`pipelines.simulator_world`): a day's log does not
depend on which other days are simulated.

Requests. ``requests`` requests, their time of day drawn from an hourly profile (quiet at night,
peaking in the evening, UTC) and uniform to the millisecond within the hour, numbered in time order.
The user is drawn by activity weight; the device is the user's primary device with probability 0.85,
else drawn by the global device shares; the query is drawn by its popularity on day d.

Retrieval and ranking. A request's K = ``candidates`` items are distinct listed items of the pool of
its query's primary topic (items whose primary or secondary topic it is), drawn without replacement
(Gumbel top-K) with probability proportional to popularity_i(d) * exp(4 a), where a = q . v is the
query-item affinity. A noisy production ranker orders them by 2 a + 0.5 quality_i + N(0, 0.5^2),
highest at position 1: position correlates with relevance but does not equal it.

Conversion. Under a position-based model an impression at position k eventually converts with
probability ``true_cvr = examine(k) * sigmoid(z)``, ``examine(k) = k^-0.6``, where

    z = base_logit + 4 (a - 0.75) + item quality + query bias + user propensity
        - beta[segment] * log(price / category base price)   beta = budget 1.2, mainstream 0.6,
                                                                    premium 0.1
        + T[segment, brand tier]                              T rows (value, standard, premium):
                                                                budget (0.4, 0, -0.6),
                                                                mainstream (0, 0.2, -0.2),
                                                                premium (-0.5, 0, 0.5)
        + 0.8 [brand is the user's favourite brand in the item's category]
        + device main effect (mobile -0.2, app 0.3, desktop 0)
        + 0.5 * device lean * category lean                  device lean mobile +1, app 0,
                                                              desktop -1; category lean centred
        + day of week (Monday..Sunday: -0.05, -0.1, -0.1, 0, 0.05, 0.3, 0.35).

The device x category term is a pure interaction: both leans are centred, so it is no sum of main
effects (mobile converts better on apparel and beauty, desktop on computers and electronics).

Delays and events. A conversion follows its impression after a delay drawn, with probability 0.75,
from LogNormal(median 45 minutes, sigma 1) and otherwise from an exponential with mean 2 days, all
truncated to [1 s, 14 days]: most land within hours, about 5 % after a 3-day attribution window, and
some on later days' partitions. Each event has quantity 1 + Poisson(0.3) and is logged twice with
probability ``duplicate_rate``, the copy 1-120 s after the original.
"""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np

from pipelines.simulator_world import CATEGORIES, DEVICE_SHARES, World, sample_weighted

MS_PER_DAY = 86_400_000
_EPOCH = datetime.date(1970, 1, 1)
_DAY_STREAM = 1
_HOUR_PROFILE = np.array([
    2.0, 1.4, 1.0, 0.8, 0.8, 1.0, 1.8, 3.0, 4.0, 4.6, 5.0, 5.4,
    6.0, 5.6, 5.2, 5.2, 5.6, 6.2, 7.0, 8.0, 8.6, 8.2, 6.4, 4.0,
])  # fmt: skip
_PRIMARY_DEVICE_STICKINESS = 0.85
_RETRIEVAL_AFFINITY = 4.0
_RANKER_AFFINITY, _RANKER_QUALITY, _RANKER_NOISE = 2.0, 0.5, 0.5
_EXAMINATION_DECAY = 0.6
_CONVERSION_AFFINITY, _AFFINITY_CENTRE = 4.0, 0.75
_PRICE_SENSITIVITY = np.array([1.2, 0.6, 0.1])
_SEGMENT_TIER_LOGIT = np.array([[0.4, 0.0, -0.6], [0.0, 0.2, -0.2], [-0.5, 0.0, 0.5]])
_FAVOURITE_BRAND_LOGIT = 0.8
_DEVICE_LOGIT = np.array([-0.2, 0.3, 0.0])
_DEVICE_LEAN = np.array([1.0, 0.0, -1.0])
_CATEGORY_LEAN = np.array([lean for _, _, lean in CATEGORIES])
_CATEGORY_LEAN -= _CATEGORY_LEAN.mean()
_DEVICE_CATEGORY_CROSS = 0.5
_DAY_OF_WEEK_LOGIT = np.array([-0.05, -0.1, -0.1, 0.0, 0.05, 0.3, 0.35])
_CATEGORY_BASE_PRICE = np.array([price for _, price, _ in CATEGORIES])
_FAST_DELAY_SHARE, _FAST_DELAY_MEDIAN_MS, _FAST_DELAY_SIGMA = 0.75, 45 * 60_000, 1.0
_SLOW_DELAY_MEAN_MS, _MAX_DELAY_MS, _MIN_DELAY_MS = 2 * MS_PER_DAY, 14 * MS_PER_DAY, 1_000
_EXTRA_QUANTITY_MEAN = 0.3
_DUPLICATE_OFFSET_MS = (1_000, 120_000)


@dataclasses.dataclass(frozen=True)
class DayLog:
    """The traffic of one day, as indices into the :class:`World`.

    Impression row ``r * K + k`` is the item shown at position ``k + 1`` of request ``r``.

    Attributes:
        day: Day ordinal since ``world_start``.
        request_ts: ``[R]`` int64 epoch milliseconds, ascending.
        request_user: ``[R]`` user index.
        request_query: ``[R]`` query index.
        request_device: ``[R]`` index into ``DEVICES``.
        item: ``[R * K]`` item index.
        true_cvr: ``[R * K]`` probability that the impression eventually converts.
        conversion_delay_ms: ``[R * K]`` delay of the first conversion event, -1 if none.
        event_row: ``[E]`` impression row of each conversion event (events in time order).
        event_ts: ``[E]`` int64 epoch milliseconds.
        event_quantity: ``[E]`` int64 >= 1.
    """

    day: int
    request_ts: np.ndarray
    request_user: np.ndarray
    request_query: np.ndarray
    request_device: np.ndarray
    item: np.ndarray
    true_cvr: np.ndarray
    conversion_delay_ms: np.ndarray
    event_row: np.ndarray
    event_ts: np.ndarray
    event_quantity: np.ndarray

    @property
    def candidates(self) -> int:
        """Items shown per request (K)."""
        return len(self.item) // len(self.request_ts)

    @property
    def position(self) -> np.ndarray:
        """``[R * K]`` int64 1-based position of each impression."""
        return np.tile(np.arange(1, self.candidates + 1, dtype=np.int64), len(self.request_ts))

    @property
    def converted(self) -> np.ndarray:
        """``[R * K]`` bool: the impression converts at some point."""
        return self.conversion_delay_ms >= 0


def day_start_ms(world: World, day: int) -> int:
    """Epoch milliseconds of 00:00 UTC on day ordinal ``day``."""
    return ((world.config.world_start - _EPOCH).days + day) * MS_PER_DAY


def _retrieve(
    world: World, rng: np.random.Generator, queries: np.ndarray, popularity: np.ndarray, k: int
) -> np.ndarray:
    """Returns ``[R, k]`` distinct items per request by Gumbel top-k over the query topic's pool."""
    log_popularity = np.log(popularity, out=np.full_like(popularity, -np.inf), where=popularity > 0)
    topic = world.query_topic[queries]
    order = np.argsort(topic, kind="stable")
    bounds = np.searchsorted(topic[order], np.arange(world.config.num_topics + 1))
    chosen = np.empty((len(queries), k), dtype=np.int64)
    for t in np.flatnonzero(np.diff(bounds)):
        requests = order[bounds[t] : bounds[t + 1]]
        pool = world.topic_pool(t)
        pool = pool[popularity[pool] > 0]  # at least k: evergreen items are always listed
        # numpy's own einsum loop, not BLAS: BLAS threads stall on a busy machine for products
        # this small, and its results may vary with the BLAS build.
        scores = np.einsum(
            "rd,pd->rp", world.query_vectors[queries[requests]], world.item_vectors[pool]
        )
        scores *= _RETRIEVAL_AFFINITY
        scores += log_popularity[pool]
        scores -= np.log(rng.standard_exponential(size=scores.shape))  # Gumbel noise
        chosen[requests] = pool[np.argpartition(scores, len(pool) - k, axis=1)[:, -k:]]
    return chosen


def _conversion_logit(
    world: World,
    day: int,
    users: np.ndarray,
    queries: np.ndarray,
    devices: np.ndarray,
    items: np.ndarray,
    affinity: np.ndarray,
) -> np.ndarray:
    """The logit z of the module docstring, per impression."""
    config = world.config
    category = world.item_category[items]
    segment = world.user_segment[users]
    brand = world.item_brand[items]
    weekday = (config.world_start + datetime.timedelta(days=day)).weekday()
    relative_price = np.log(world.item_price[items] / _CATEGORY_BASE_PRICE[category])
    return (
        config.base_logit
        + _CONVERSION_AFFINITY * (affinity - _AFFINITY_CENTRE)
        + world.item_quality[items]
        + world.query_bias[queries]
        + world.user_bias[users]
        - _PRICE_SENSITIVITY[segment] * relative_price
        + _SEGMENT_TIER_LOGIT[segment, world.brand_tier[brand]]
        + _FAVOURITE_BRAND_LOGIT * (world.user_favourite_brand[users, category] == brand)
        + _DEVICE_LOGIT[devices]
        + _DEVICE_CATEGORY_CROSS * _DEVICE_LEAN[devices] * _CATEGORY_LEAN[category]
        + _DAY_OF_WEEK_LOGIT[weekday]
    )


def _delays_ms(rng: np.random.Generator, n: int) -> np.ndarray:
    """Conversion delays: a log-normal fast mode and a truncated exponential tail."""
    fast = _FAST_DELAY_MEDIAN_MS * np.exp(_FAST_DELAY_SIGMA * rng.standard_normal(n))
    tail_mass = -np.expm1(-_MAX_DELAY_MS / _SLOW_DELAY_MEAN_MS)
    slow = -_SLOW_DELAY_MEAN_MS * np.log1p(-rng.random(n) * tail_mass)
    delay = np.where(rng.random(n) < _FAST_DELAY_SHARE, fast, slow)
    return np.clip(delay, _MIN_DELAY_MS, _MAX_DELAY_MS).astype(np.int64)


def check_candidates(world: World, candidates: int) -> None:
    """Raises ValueError unless every topic can always show ``candidates`` distinct items."""
    if candidates < 1:
        raise ValueError(f"candidates_per_request={candidates} must be >= 1.")
    if candidates > world.min_evergreen_pool:
        raise ValueError(
            f"candidates_per_request={candidates} exceeds the {world.min_evergreen_pool} evergreen "
            "items of the smallest topic pool, so some result pages could not be filled; raise "
            "SimulatorConfig.num_items or evergreen_item_fraction, or lower num_topics."
        )


def simulate_day(world: World, day: int, requests: int, candidates: int) -> DayLog:
    """Simulates day ordinal ``day`` (see the module docstring).

    Args:
        world: The world from :func:`pipelines.simulator_world.build_world`.
        day: Day ordinal since ``world.config.world_start``, in ``[0, world_days)``.
        requests: Search requests on that day.
        candidates: Items shown per request.

    Returns:
        The day's requests, impressions and conversion events.

    Raises:
        ValueError: If ``day`` is outside the world's range, or ``candidates`` is below 1 or above
            the evergreen items of a topic pool.
    """
    config = world.config
    check_candidates(world, candidates)
    if not 0 <= day < config.world_days:
        raise ValueError(
            f"day ordinal {day} is outside the world's range [0, world_days={config.world_days}) "
            f"from world_start={config.world_start}; change the dates or SimulatorConfig."
        )
    rng = np.random.default_rng([config.seed, _DAY_STREAM, day])
    hour = sample_weighted(rng, _HOUR_PROFILE, requests)
    time_of_day = hour * 3_600_000 + rng.integers(0, 3_600_000, size=requests)
    request_ts = day_start_ms(world, day) + np.sort(time_of_day)
    users = sample_weighted(rng, world.user_activity, requests)
    switch = rng.random(requests) >= _PRIMARY_DEVICE_STICKINESS
    other_device = rng.choice(len(DEVICE_SHARES), requests, p=DEVICE_SHARES)
    devices = np.where(switch, other_device, world.user_device[users])
    queries = sample_weighted(rng, world.query_lifecycle.popularity(day), requests)

    items = _retrieve(world, rng, queries, world.item_lifecycle.popularity(day), candidates)
    affinity = np.einsum("rd,rkd->rk", world.query_vectors[queries], world.item_vectors[items])
    ranker = _RANKER_AFFINITY * affinity + _RANKER_QUALITY * world.item_quality[items]
    ranker += _RANKER_NOISE * rng.standard_normal(ranker.shape)
    order = np.argsort(-ranker, axis=1, kind="stable")
    items = np.take_along_axis(items, order, axis=1).reshape(-1)
    affinity = np.take_along_axis(affinity, order, axis=1).reshape(-1)

    request_of_row = np.repeat(np.arange(requests), candidates)
    logit = _conversion_logit(
        world,
        day,
        users[request_of_row],
        queries[request_of_row],
        devices[request_of_row],
        items,
        affinity,
    )
    position = np.tile(np.arange(1, candidates + 1, dtype=np.float64), requests)
    examine = position**-_EXAMINATION_DECAY
    true_cvr = examine / (1.0 + np.exp(-logit))

    converted_rows = np.flatnonzero(rng.random(len(items)) < true_cvr)
    delays = _delays_ms(rng, len(converted_rows))
    conversion_delay_ms = np.full(len(items), -1, dtype=np.int64)
    conversion_delay_ms[converted_rows] = delays
    event_ts = request_ts[request_of_row[converted_rows]] + delays
    quantity = 1 + rng.poisson(_EXTRA_QUANTITY_MEAN, len(converted_rows))
    copies = np.flatnonzero(rng.random(len(converted_rows)) < config.duplicate_rate)
    copy_offset = rng.integers(*_DUPLICATE_OFFSET_MS, size=len(copies), endpoint=True)
    copy_ts = event_ts[copies] + copy_offset
    event_row = np.concatenate([converted_rows, converted_rows[copies]])
    event_ts = np.concatenate([event_ts, copy_ts])
    event_order = np.lexsort((event_row, event_ts))
    return DayLog(
        day=day,
        request_ts=request_ts,
        request_user=users,
        request_query=queries,
        request_device=devices,
        item=items,
        true_cvr=true_cvr,
        conversion_delay_ms=conversion_delay_ms,
        event_row=event_row[event_order],
        event_ts=event_ts[event_order],
        event_quantity=np.concatenate([quantity, quantity[copies]])[event_order].astype(np.int64),
    )

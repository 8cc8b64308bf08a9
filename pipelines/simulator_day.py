"""One day of search traffic in the simulated world: requests, retrieval, ranking and the funnel.

Day ordinal d (days since ``SimulatorConfig.world_start``) draws from its own generator, seeded by
(seed, d), and reads only the static world (:mod:`pipelines.simulator_world`): a day's log does not
depend on which other days are simulated.

Requests. ``requests`` requests, their time of day drawn from an hourly profile (quiet at night,
peaking in the evening, UTC) and uniform to the millisecond within the hour, numbered in time order.
The user is drawn by activity weight; the device is the user's primary device with probability 0.85,
else drawn by the global device shares; the query is drawn by its popularity on day d.

Retrieval and ranking. A request's K = ``candidates`` items are distinct listed items of the pool of
its query's primary topic (head items whose primary or secondary topic it is, long-tail items whose
primary topic it is), drawn without replacement (Gumbel top-K) with probability proportional to
popularity_i(d) * exp(4 a) (``World.item_popularity``), where a = q . v is the query-item
affinity. A noisy production ranker orders them by 2 a + 0.5 quality_i + N(0, 0.5^2), highest at
position 1: position correlates with relevance but does not equal it.

Clicks and conversions. Each impression's click, conversion, delays and logged events follow the
funnel of :mod:`pipelines.simulator_funnel`, drawn from the same day's generator.
"""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np

from pipelines.simulator_config import DEVICE_SHARES
from pipelines.simulator_funnel import MS_PER_DAY, Funnel, ImpressionRows, simulate_funnel
from pipelines.simulator_world import World, sample_weighted

_EPOCH = datetime.date(1970, 1, 1)
_DAY_STREAM = 1
_HOUR_PROFILE = np.array([
    2.0, 1.4, 1.0, 0.8, 0.8, 1.0, 1.8, 3.0, 4.0, 4.6, 5.0, 5.4,
    6.0, 5.6, 5.2, 5.2, 5.6, 6.2, 7.0, 8.0, 8.6, 8.2, 6.4, 4.0,
])  # fmt: skip
_PRIMARY_DEVICE_STICKINESS = 0.85
_RETRIEVAL_AFFINITY = 4.0
_RANKER_AFFINITY, _RANKER_QUALITY, _RANKER_NOISE = 2.0, 0.5, 0.5


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
        affinity: ``[R * K]`` query-item affinity a = q . v.
        funnel: ``[R * K]`` clicks and conversions, and the events they logged.
    """

    day: int
    request_ts: np.ndarray
    request_user: np.ndarray
    request_query: np.ndarray
    request_device: np.ndarray
    item: np.ndarray
    affinity: np.ndarray
    funnel: Funnel

    @property
    def candidates(self) -> int:
        """Items shown per request (K)."""
        return len(self.item) // len(self.request_ts)

    @property
    def position(self) -> np.ndarray:
        """``[R * K]`` int64 1-based position of each impression."""
        return np.tile(np.arange(1, self.candidates + 1, dtype=np.int64), len(self.request_ts))


def day_start_ms(world: World, day: int) -> int:
    """Epoch milliseconds of 00:00 UTC on day ordinal ``day``."""
    return ((world.config.world_start - _EPOCH).days + day) * MS_PER_DAY


def _retrieve(
    world: World, rng: np.random.Generator, queries: np.ndarray, popularity: np.ndarray, k: int
) -> np.ndarray:
    """Returns ``[R, k]`` distinct items per request by Gumbel top-k over the query topic's pool.

    Scores are float32, twice as fast as float64 here; an exponential draw of 0 (log: -inf)
    only makes its item a sure pick.
    """
    log_popularity = np.log(popularity, out=np.full_like(popularity, -np.inf), where=popularity > 0)
    log_popularity = log_popularity.astype(np.float32)
    query_vectors = (_RETRIEVAL_AFFINITY * world.query_vectors).astype(np.float32)
    item_vectors = world.item_vectors.astype(np.float32)
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
        scores = np.einsum("rd,pd->rp", query_vectors[queries[requests]], item_vectors[pool])
        scores += log_popularity[pool]
        noise = rng.standard_exponential(size=scores.shape, dtype=np.float32)
        with np.errstate(divide="ignore"):
            scores -= np.log(noise)  # Gumbel noise
        chosen[requests] = pool[np.argpartition(scores, len(pool) - k, axis=1)[:, -k:]]
    return chosen


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
        The day's requests, impressions, clicks and conversions.

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

    items = _retrieve(world, rng, queries, world.item_popularity(day), candidates)
    affinity = np.einsum("rd,rkd->rk", world.query_vectors[queries], world.item_vectors[items])
    ranker = _RANKER_AFFINITY * affinity + _RANKER_QUALITY * world.item_quality[items]
    ranker += _RANKER_NOISE * rng.standard_normal(ranker.shape)
    order = np.argsort(-ranker, axis=1, kind="stable")
    items = np.take_along_axis(items, order, axis=1).reshape(-1)
    affinity = np.take_along_axis(affinity, order, axis=1).reshape(-1)

    rows = ImpressionRows(
        ts=np.repeat(request_ts, candidates),
        user=np.repeat(users, candidates),
        query=np.repeat(queries, candidates),
        device=np.repeat(devices, candidates),
        item=items,
        affinity=affinity,
        position=np.tile(np.arange(1, candidates + 1, dtype=np.int64), requests),
    )
    return DayLog(
        day=day,
        request_ts=request_ts,
        request_user=users,
        request_query=queries,
        request_device=devices,
        item=items,
        affinity=affinity,
        funnel=simulate_funnel(world, rng, day, rows),
    )

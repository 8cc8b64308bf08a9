"""The funnel of the simulated world: impression -> click -> conversion, with delays and events.

Click (a position-based model). The impression of item i at position k of a request (query q,
device d) with query-item affinity a = q . v is clicked with probability

    true_ctr = examine(k) * sigmoid(z_click),   examine(k) = k^-0.6,
    z_click  = click_base_logit + 1.5 * [4 (a - 0.75) + item quality + query bias
                                         + click device effect (mobile +0.2, app 0, desktop -0.2)].

Conversion given click. A click (of user u, in segment s) converts with probability
``true_cvr_given_click = sigmoid(z_conv)``, where

    z_conv = base_logit + 1.5 * [user propensity
             - beta[s] * log(price / category base price)   beta = budget 1.2, mainstream 0.6,
                                                                   premium 0.1
             + T[s, brand tier]                              T rows (value, standard, premium):
                                                               budget (0.4, 0, -0.6),
                                                               mainstream (0, 0.2, -0.2),
                                                               premium (-0.5, 0, 0.5)
             + 0.8 [brand is the user's favourite brand in the item's category]
             + device effect (mobile -0.2, app 0.3, desktop 0)
             + 0.5 * device lean * category lean             device lean mobile +1, app 0,
                                                             desktop -1; category lean centred
             + day of week (Monday..Sunday: -0.05, -0.1, -0.1, 0, 0.05, 0.3, 0.35)]
             + H                                             the headroom terms of
                                                             :mod:`pipelines.simulator_headroom`.

The bracketed terms are those of the single-stage world before the funnel, where one sigmoid at a
conversion rate of a few percent turned logits into log-probabilities one for one. Split over two
stages whose sigmoids sit near 0.27 (before examination) and 0.25, the same logits move
probabilities less; the factor 1.5 keeps the AUC of this structure near what it was (0.82 on a
test day of the default world, before any headroom).

The device x category term is a pure interaction: both leans are centred (mobile converts better
on apparel and beauty, desktop on computers and electronics). The two logits read different
features: position (where all of the position bias lives), affinity (the query-item text match),
item quality and the query in the click; price, brand, user, category, weekday and the headroom
after it. Only the device enters both, with different effects (mobile clicks more, converts
less). The impression eventually converts with probability

    true_cvr = true_ctr * true_cvr_given_click,

the Bayes-optimal score of the eventual-conversion label.

Delays. A click follows its impression after a delay drawn, with probability 0.96, from
LogNormal(median 20 s, sigma 1) (95 % of those within 2 minutes) and otherwise from an
exponential with mean 1 hour (a user back from another tab), truncated to [1 s, 1 day]: about
0.04 / e = 1.5 % of clicks come more than an hour after their impression. A conversion follows
its click after a delay drawn, with probability 0.75, from LogNormal(median 45 minutes, sigma 1)
and otherwise from an exponential with mean 2 days, truncated to [1 s, 14 days]: its timestamp is
never before its click's, about 5 % of conversions come more than 3 days after their impression,
and some land on later days' partitions.

Events. Each click is one click event and each conversion one conversion event with quantity
1 + Poisson(0.3); an event is logged twice with probability ``duplicate_rate``, the copy 1-120 s
after the original (a click's copy may follow its conversion).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import NamedTuple

import numpy as np

from pipelines.simulator_config import CATEGORIES
from pipelines.simulator_headroom import headroom_logit
from pipelines.simulator_world import World

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR
_EXAMINATION_DECAY = 0.6
_STAGE_SCALE = 1.5
_CLICK_AFFINITY, _AFFINITY_CENTRE = 4.0, 0.75
_CLICK_DEVICE_LOGIT = np.array([0.2, 0.0, -0.2])
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
_EXTRA_QUANTITY_MEAN = 0.3
_DUPLICATE_OFFSET_MS = (1_000, 120_000)


class DelayMixture(NamedTuple):
    """Delays in ms: LogNormal(median, sigma) with probability ``fast_share``, else an
    exponential with mean ``slow_mean_ms``; truncated to [1 s, ``max_ms``]."""

    fast_share: float
    fast_median_ms: float
    fast_sigma: float
    slow_mean_ms: float
    max_ms: float

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` int64 delays (the exponential truncated by inverse-CDF, not by clipping)."""
        fast = self.fast_median_ms * np.exp(self.fast_sigma * rng.standard_normal(n))
        tail_mass = -np.expm1(-self.max_ms / self.slow_mean_ms)
        slow = -self.slow_mean_ms * np.log1p(-rng.random(n) * tail_mass)
        delay = np.where(rng.random(n) < self.fast_share, fast, slow)
        return np.clip(delay, 1_000, self.max_ms).astype(np.int64)


CLICK_DELAY = DelayMixture(0.96, 20_000, 1.0, MS_PER_HOUR, MS_PER_DAY)
CONVERSION_DELAY = DelayMixture(0.75, 45 * 60_000, 1.0, 2 * MS_PER_DAY, 14 * MS_PER_DAY)


@dataclasses.dataclass(frozen=True)
class ImpressionRows:
    """The impressions of a day, one entry per impression row (``[N]`` arrays).

    Attributes:
        ts: int64 epoch milliseconds of the impression (its request's).
        user: User index.
        query: Query index.
        device: Index into ``DEVICES``.
        item: Item index.
        affinity: Query-item affinity a = q . v.
        position: 1-based position shown.
    """

    ts: np.ndarray
    user: np.ndarray
    query: np.ndarray
    device: np.ndarray
    item: np.ndarray
    affinity: np.ndarray
    position: np.ndarray


@dataclasses.dataclass(frozen=True)
class Funnel:
    """What became of each impression of a day, and the events it logged.

    Attributes:
        true_ctr: ``[N]`` probability that the impression is clicked.
        true_cvr_given_click: ``[N]`` probability that a click of it converts.
        true_cvr: ``[N]`` ``true_ctr * true_cvr_given_click``: probability that it converts.
        click_delay_ms: ``[N]`` int64 delay from the impression to its click, -1 if none.
        conversion_delay_ms: ``[N]`` int64 delay from the impression (not the click) to its
            conversion, -1 if none.
        click_row: ``[C]`` impression row of each click event (events in time order).
        click_ts: ``[C]`` int64 epoch milliseconds.
        conversion_row: ``[E]`` impression row of each conversion event (in time order).
        conversion_ts: ``[E]`` int64 epoch milliseconds.
        conversion_quantity: ``[E]`` int64 >= 1.
    """

    true_ctr: np.ndarray
    true_cvr_given_click: np.ndarray
    true_cvr: np.ndarray
    click_delay_ms: np.ndarray
    conversion_delay_ms: np.ndarray
    click_row: np.ndarray
    click_ts: np.ndarray
    conversion_row: np.ndarray
    conversion_ts: np.ndarray
    conversion_quantity: np.ndarray

    @property
    def clicked(self) -> np.ndarray:
        """``[N]`` bool: the impression is clicked at some point."""
        return self.click_delay_ms >= 0

    @property
    def converted(self) -> np.ndarray:
        """``[N]`` bool: the impression converts at some point."""
        return self.conversion_delay_ms >= 0


def click_logit(
    world: World,
    queries: np.ndarray,
    devices: np.ndarray,
    items: np.ndarray,
    affinity: np.ndarray,
) -> np.ndarray:
    """z_click of the module docstring, per impression."""
    structure = (
        _CLICK_AFFINITY * (affinity - _AFFINITY_CENTRE)
        + world.item_quality[items]
        + world.query_bias[queries]
        + _CLICK_DEVICE_LOGIT[devices]
    )
    return world.config.click_base_logit + _STAGE_SCALE * structure


def conversion_logit(
    world: World,
    day: int,
    users: np.ndarray,
    queries: np.ndarray,
    devices: np.ndarray,
    items: np.ndarray,
) -> np.ndarray:
    """z_conv of the module docstring (headroom included), per impression."""
    config = world.config
    category = world.item_category[items]
    segment = world.user_segment[users]
    brand = world.item_brand[items]
    weekday = (config.world_start + datetime.timedelta(days=day)).weekday()
    relative_price = np.log(world.item_price[items] / _CATEGORY_BASE_PRICE[category])
    structure = (
        world.user_bias[users]
        - _PRICE_SENSITIVITY[segment] * relative_price
        + _SEGMENT_TIER_LOGIT[segment, world.brand_tier[brand]]
        + _FAVOURITE_BRAND_LOGIT * (world.user_favourite_brand[users, category] == brand)
        + _DEVICE_LOGIT[devices]
        + _DEVICE_CATEGORY_CROSS * _DEVICE_LEAN[devices] * _CATEGORY_LEAN[category]
        + _DAY_OF_WEEK_LOGIT[weekday]
    )
    headroom = headroom_logit(world, users, queries, devices, items)
    return config.base_logit + _STAGE_SCALE * structure + headroom


def _logged_twice(
    rng: np.random.Generator, rows: np.ndarray, ts: np.ndarray, duplicate_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events with their duplicates, in time order: (row, ts, index of the original event)."""
    copies = np.flatnonzero(rng.random(len(rows)) < duplicate_rate)
    offset = rng.integers(*_DUPLICATE_OFFSET_MS, size=len(copies), endpoint=True)
    original = np.concatenate([np.arange(len(rows)), copies])
    all_rows, all_ts = rows[original], np.concatenate([ts, ts[copies] + offset])
    order = np.lexsort((all_rows, all_ts))
    return all_rows[order], all_ts[order], original[order]


def simulate_funnel(
    world: World, rng: np.random.Generator, day: int, rows: ImpressionRows
) -> Funnel:
    """Draws the clicks and conversions of a day's impressions (see the module docstring).

    Args:
        world: The simulated world.
        rng: The day's generator.
        day: Day ordinal since ``world_start``.
        rows: The day's impressions.
    """
    examine = rows.position.astype(np.float64) ** -_EXAMINATION_DECAY
    logit = click_logit(world, rows.query, rows.device, rows.item, rows.affinity)
    true_ctr = examine / (1.0 + np.exp(-logit))
    logit = conversion_logit(world, day, rows.user, rows.query, rows.device, rows.item)
    true_cvr_given_click = 1.0 / (1.0 + np.exp(-logit))

    items = rows.item
    clicked = np.flatnonzero(rng.random(len(items)) < true_ctr)
    converts = rng.random(len(clicked)) < true_cvr_given_click[clicked]
    click_delay = CLICK_DELAY.draw(rng, len(clicked))
    converted = clicked[converts]
    conversion_delay = click_delay[converts] + CONVERSION_DELAY.draw(rng, len(converted))
    quantity = 1 + rng.poisson(_EXTRA_QUANTITY_MEAN, len(converted))

    duplicate_rate = world.config.duplicate_rate
    click_ts = rows.ts[clicked] + click_delay
    click_row, click_ts, _ = _logged_twice(rng, clicked, click_ts, duplicate_rate)
    conversion_ts = rows.ts[converted] + conversion_delay
    conversion_row, conversion_ts, original = _logged_twice(
        rng, converted, conversion_ts, duplicate_rate
    )
    click_delay_ms = np.full(len(items), -1, dtype=np.int64)
    click_delay_ms[clicked] = click_delay
    conversion_delay_ms = np.full(len(items), -1, dtype=np.int64)
    conversion_delay_ms[converted] = conversion_delay
    return Funnel(
        true_ctr=true_ctr,
        true_cvr_given_click=true_cvr_given_click,
        true_cvr=true_ctr * true_cvr_given_click,
        click_delay_ms=click_delay_ms,
        conversion_delay_ms=conversion_delay_ms,
        click_row=click_row,
        click_ts=click_ts,
        conversion_row=conversion_row,
        conversion_ts=conversion_ts,
        conversion_quantity=quantity[original].astype(np.int64),
    )

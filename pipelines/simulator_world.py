"""The static world of the search-log simulator: catalog, queries, users, text and lifecycles.

Everything here is drawn from ``SimulatorConfig.seed`` alone, never from the simulated dates, so
any day of traffic (:mod:`pipelines.simulator_day`) sees the same world however days are batched
into runs.

Topics and text. ``num_topics`` topic centres mu_c are random unit vectors in R^K (K =
``latent_dim``); topic c belongs to category ``c mod 20``. Each of ``num_terms`` synthetic words
(three consonant-vowel syllables, e.g. "kadomi") belongs to one topic and has a Zipf(1) weight by
its rank in the topic. A query or an item mixes a primary topic c1, with weight w ~ U(0.6, 0.95),
and another topic c2. Its latent vector is

    x = normalize(w * mu_c1 + (1 - w) * mu_c2 + 0.35 * eps / sqrt(K)),   eps ~ N(0, I_K),

and its text is distinct terms, each drawn from c1 with probability w (else from c2) by term weight
until it has its length (queries 1-4 terms, item titles 3-7; rarely fewer, when draws repeat). So
the query-item affinity a = q . v (in [-1, 1]) shows in the term space that queries and titles
share. A query with a latent intent (:mod:`pipelines.simulator_headroom`) starts with an intent
word, a word of no topic.

Catalog. ``num_brands`` two-syllable brand names spread evenly over the 20 categories, each with a
tier (value 35 %, standard 45 %, premium 20 %) and a Zipf(1) weight inside its category. An item's
category is its primary topic's; its brand is drawn by brand weight inside that category; its price
is category base price * tier multiplier (0.6, 1.0, 1.9) * LogNormal(0, 0.35), rounded to cents;
its quality, an offset of the click logit, is N(0, 0.5^2).

Long tail. On top of the ``num_items`` head items, round(``long_tail_ratio`` * ``num_items``)
long-tail items are drawn the same way, with three differences: none is evergreen, their base
popularity is flat (on each day the listed long tail shares ``long_tail_share`` of the day's item
popularity, in proportion to the members' lifecycle shapes), and each joins only its primary
topic's retrieval pool. Their ids mix with the head's (``i<index>``, indices shuffled). Each is
shown a few times a day at most, yet together they take a real share of the traffic, and their
own post-click effects (:mod:`pipelines.simulator_headroom`) pay only a model that holds them in
its vocabulary.

Users. A segment (budget 35 %, mainstream 45 %, premium 20 %), a primary device (mobile 50 %, app
30 %, desktop 20 %), a buying propensity N(0, 0.3^2) (an offset of the post-click logit) and, in
each category, a favourite brand drawn by brand weight.

Popularity and lifecycles. Queries, items and users have Zipf weights r^-s over a random rank order
r (exponents ``*_zipf_exponent``). A fraction of queries and of items is evergreen (constant
popularity); the others are born on a uniform day ordinal in [-365, world_days) and at age t >= 0
days have

    popularity = base * 4 * (1 - exp(-(t + 1) / rho)) * exp(-t / phi),

rising over rho ~ U(2, 10) days (queries U(3, 14)) and fading over phi ~ LogNormal(log median,
0.6^2) days with median ``*_fade_days``; zero before birth and after 4 fade times (delisted). The
listed catalog thus keeps a steady size over the world's range (about 24k of the default 50k items,
churning items drawing 25-40 % of the popularity) while its members change: a model trained on old
days sees stale items, and a longer window helps only to a point. Evergreen items are dealt evenly
over topics so that every topic can always fill a result page.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.simulator_config import (
    BRAND_TIER_PRICE_MULTIPLIER,
    BRAND_TIER_SHARES,
    BRAND_TIERS,
    CATEGORIES,
    DEVICE_SHARES,
    DEVICES,
    SEGMENT_SHARES,
    SEGMENTS,
    SYLLABLES,
    SimulatorConfig,
)
from pipelines.simulator_headroom import Headroom, build_headroom

_SYLLABLES = np.array(SYLLABLES)
_LATENT_NOISE = 0.35
_CHURN_BIRTH_LEAD_DAYS = 365
_CHURN_BOOST = 4.0
_DELISTED_AFTER_FADES = 4.0
_EXTRA_TEXT_DRAWS = 4
_QUERY_LENGTH_SHARES = (0.25, 0.40, 0.25, 0.10)
_WORLD_STREAM = 0


@dataclasses.dataclass(frozen=True)
class Lifecycle:
    """Popularity over time of a population (queries or items); see the module docstring."""

    base: np.ndarray
    evergreen: np.ndarray
    birth: np.ndarray
    rise: np.ndarray
    fade: np.ndarray

    def popularity(self, day: int) -> np.ndarray:
        """Returns the unnormalized popularity of every member on day ordinal ``day``."""
        shape = np.ones_like(self.base)
        churn = ~self.evergreen
        age = np.maximum(day - self.birth[churn], -1)
        fades = age / self.fade[churn]
        grown = -np.expm1(-(age + 1) / self.rise[churn])
        listed = (age >= 0) & (fades <= _DELISTED_AFTER_FADES)
        shape[churn] = np.where(listed, _CHURN_BOOST * grown * np.exp(-fades), 0.0)
        return self.base * shape


class SegmentedSampler:
    """Draws members of given segments (e.g. a brand of a category) proportionally to weights.

    Args:
        weights: Non-negative weight of each member, shape ``[n]``.
        segment: Segment id of each member in ``[0, num_segments)``, shape ``[n]``.
        num_segments: Number of segments; each must hold positive total weight.
        what: Name of the members and segments, for errors (e.g. ``"brands per category"``).
    """

    def __init__(self, weights: np.ndarray, segment: np.ndarray, num_segments: int, what: str):
        self._order = np.argsort(segment, kind="stable")
        self._cumulative = np.cumsum(weights[self._order])
        bounds = np.searchsorted(segment[self._order], np.arange(num_segments + 1))
        self._starts, self._ends = bounds[:-1], bounds[1:]
        totals = self._cumulative[np.maximum(self._ends - 1, 0)] - self._before(self._starts)
        empty = np.flatnonzero((self._ends <= self._starts) | (totals <= 0))
        if empty.size:
            raise ValueError(f"{what}: segment {empty[0]} has no member with positive weight.")

    def _before(self, starts: np.ndarray) -> np.ndarray:
        return np.where(starts > 0, self._cumulative[np.maximum(starts - 1, 0)], 0.0)

    def sample(self, rng: np.random.Generator, segments: np.ndarray) -> np.ndarray:
        """Returns one member index per entry of ``segments`` (inverse-CDF sampling)."""
        low = self._before(self._starts[segments])
        high = self._cumulative[self._ends[segments] - 1]
        target = low + rng.random(segments.shape) * (high - low)
        position = np.searchsorted(self._cumulative, target, side="right")
        return self._order[np.clip(position, self._starts[segments], self._ends[segments] - 1)]


def sample_weighted(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Returns ``size`` indices drawn with replacement proportionally to ``weights``."""
    cumulative = np.cumsum(weights)
    position = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return np.minimum(position, len(weights) - 1)


@dataclasses.dataclass(frozen=True)
class World:
    """The simulated world; arrays are indexed by query, item, user, topic, term or brand index.

    Build it with :func:`build_world`. ``*_strings`` fields are Arrow string arrays for the log
    columns; the rest are the latent ground truth that experiments may use to explain results.
    """

    config: SimulatorConfig
    topic_vectors: np.ndarray
    query_topic: np.ndarray
    query_vectors: np.ndarray
    query_bias: np.ndarray
    query_lifecycle: Lifecycle
    query_strings: pa.Array
    item_topics: np.ndarray
    item_vectors: np.ndarray
    item_category: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray
    item_quality: np.ndarray
    item_lifecycle: Lifecycle
    item_long_tail: np.ndarray
    item_id_strings: pa.Array
    item_title_strings: pa.Array
    topic_pool_items: np.ndarray
    topic_pool_offsets: np.ndarray
    min_evergreen_pool: int
    brand_tier: np.ndarray
    brand_strings: pa.Array
    user_segment: np.ndarray
    user_device: np.ndarray
    user_bias: np.ndarray
    user_activity: np.ndarray
    user_favourite_brand: np.ndarray
    user_id_strings: pa.Array
    headroom: Headroom

    def topic_pool(self, topic: int) -> np.ndarray:
        """The retrieval pool of ``topic``: head items whose primary or secondary topic it is,
        and long-tail items whose primary topic it is."""
        start, end = self.topic_pool_offsets[topic], self.topic_pool_offsets[topic + 1]
        return self.topic_pool_items[start:end]

    def item_popularity(self, day: int) -> np.ndarray:
        """Unnormalized popularity of every item on day ordinal ``day``.

        The long tail's members share ``long_tail_share`` of the day's total in proportion to
        their lifecycle shapes.
        """
        popularity = self.item_lifecycle.popularity(day)
        tail = popularity[self.item_long_tail]
        tail_total, head_total = tail.sum(), popularity.sum() - tail.sum()
        if tail_total > 0:
            share = self.config.long_tail_share
            popularity[self.item_long_tail] = tail * (share / (1 - share) * head_total / tail_total)
        return popularity


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    return (rng.permutation(n) + 1.0) ** -exponent


def _rank_in_segment(segment: np.ndarray) -> np.ndarray:
    """1-based rank of each member among the members of its segment, in index order."""
    order = np.argsort(segment, kind="stable")
    first = np.searchsorted(segment[order], segment[order])
    rank = np.empty(len(segment), dtype=np.float64)
    rank[order] = np.arange(len(segment)) - first + 1.0
    return rank


def _words(codes: np.ndarray, syllables: int) -> np.ndarray:
    """Spells each code as ``syllables`` consonant-vowel syllables (base-75 digits)."""
    words = np.full(codes.shape, "", dtype=_SYLLABLES.dtype)
    for place in reversed(range(syllables)):
        words = np.char.add(words, _SYLLABLES[codes // len(_SYLLABLES) ** place % len(_SYLLABLES)])
    return words


def _ids(prefix: str, n: int) -> pa.Array:
    """``prefix`` + zero-padded index, e.g. ``i00042``."""
    digits = np.char.zfill(np.arange(n).astype(str), len(str(n - 1)))
    return pa.array(np.char.add(prefix, digits))


def _topic_mixtures(
    rng: np.random.Generator, primary: np.ndarray, num_topics: int
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``[n, 2]`` (primary, other) topics and the primary weight ``w ~ U(0.6, 0.95)``."""
    secondary = (primary + 1 + rng.integers(num_topics - 1, size=primary.shape)) % num_topics
    return np.stack([primary, secondary], axis=1), rng.uniform(0.6, 0.95, size=primary.shape)


def _latent(
    rng: np.random.Generator, topics: np.ndarray, weight: np.ndarray, topic_vectors: np.ndarray
) -> np.ndarray:
    """Unit latent vectors: the weighted mix of two topic centres plus noise."""
    mixed = weight[:, None] * topic_vectors[topics[:, 0]]
    mixed += (1.0 - weight[:, None]) * topic_vectors[topics[:, 1]]
    dim = topic_vectors.shape[1]
    mixed += _LATENT_NOISE * rng.standard_normal(mixed.shape) / np.sqrt(dim)
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


def _texts(
    rng: np.random.Generator,
    topics: np.ndarray,
    weight: np.ndarray,
    lengths: np.ndarray,
    term_sampler: SegmentedSampler,
    vocabulary: pa.Array,
    first: np.ndarray | None = None,
) -> pa.Array:
    """Space-joined distinct terms, each from the primary topic with probability ``weight``.

    ``first`` (if given) is a vocabulary index per text to put before its terms, -1 for none.
    """
    slots = int(lengths.max()) + _EXTRA_TEXT_DRAWS
    from_primary = rng.random((len(lengths), slots)) < weight[:, None]
    slot_topic = np.where(from_primary, topics[:, :1], topics[:, 1:])
    chosen = term_sampler.sample(rng, slot_topic)
    keep = np.ones(chosen.shape, dtype=bool)
    kept = np.ones(len(lengths), dtype=np.int64)
    for slot in range(1, slots):
        repeated = (chosen[:, :slot] == chosen[:, slot : slot + 1]).any(axis=1)
        keep[:, slot] = (kept < lengths) & ~repeated
        kept += keep[:, slot]
    if first is not None:
        chosen = np.concatenate([first[:, None], chosen], axis=1)
        keep = np.concatenate([(first >= 0)[:, None], keep], axis=1)
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
    words = pa.ListArray.from_arrays(pa.array(offsets), vocabulary.take(chosen[keep]))
    return pc.binary_join(words, " ")


def _lifecycle(
    rng: np.random.Generator,
    evergreen: np.ndarray,
    exponent: float,
    fade_days: float,
    rise_days: tuple[float, float],
    world_days: int,
    flat: np.ndarray | None = None,
) -> Lifecycle:
    """Zipf base popularity over a random rank order (base 1 where ``flat``) and lifecycles."""
    n = len(evergreen)
    base = np.ones(n)
    zipf = np.ones(n, dtype=bool) if flat is None else ~flat
    base[zipf] = _zipf_weights(rng, int(zipf.sum()), exponent)
    return Lifecycle(
        base=base,
        evergreen=evergreen,
        birth=rng.integers(-_CHURN_BIRTH_LEAD_DAYS, world_days, size=n),
        rise=rng.uniform(*rise_days, size=n),
        fade=fade_days * np.exp(0.6 * rng.standard_normal(n)),
    )


def build_world(config: SimulatorConfig) -> World:
    """Draws the world of ``config`` from ``config.seed`` (see the module docstring)."""
    rng = np.random.default_rng([config.seed, _WORLD_STREAM])
    num_topics, num_categories = config.num_topics, len(CATEGORIES)
    topic_vectors = rng.standard_normal((num_topics, config.latent_dim))
    topic_vectors /= np.linalg.norm(topic_vectors, axis=1, keepdims=True)
    topic_category = np.arange(num_topics) % num_categories

    codes = rng.choice(len(_SYLLABLES) ** 3, size=config.num_terms, replace=False)
    term_topic = rng.permutation(np.arange(config.num_terms) % num_topics)
    term_sampler = SegmentedSampler(
        1.0 / _rank_in_segment(term_topic), term_topic, num_topics, "terms per topic"
    )

    brand_category = rng.permutation(np.arange(config.num_brands) % num_categories)
    brand_tier = rng.choice(len(BRAND_TIERS), size=config.num_brands, p=BRAND_TIER_SHARES)
    brand_names = _words(rng.choice(len(_SYLLABLES) ** 2, config.num_brands, replace=False), 2)
    brand_sampler = SegmentedSampler(
        _zipf_weights(rng, config.num_brands, 1.0),
        brand_category,
        num_categories,
        "brands per category",
    )

    query_primary = rng.integers(num_topics, size=config.num_queries)
    query_topics, query_weight = _topic_mixtures(rng, query_primary, num_topics)
    query_lengths = 1 + rng.choice(
        len(_QUERY_LENGTH_SHARES), config.num_queries, p=_QUERY_LENGTH_SHARES
    )
    query_lifecycle = _lifecycle(
        rng,
        evergreen=rng.random(config.num_queries) < config.evergreen_query_fraction,
        exponent=config.query_zipf_exponent,
        fade_days=config.query_fade_days,
        rise_days=(3.0, 14.0),
        world_days=config.world_days,
    )

    # Deal primary topics, evergreen status and the long tail round-robin, then shuffle, so that
    # every topic holds floor or ceil(evergreen items / num_topics) evergreen items, and as many
    # long-tail items; the long tail comes last in the deal, so it holds no evergreen item.
    num_items = config.num_items + config.long_tail_items
    order = rng.permutation(num_items)
    item_primary = np.empty(num_items, dtype=np.int64)
    item_primary[order] = np.arange(num_items) % num_topics
    item_evergreen = np.empty(num_items, dtype=bool)
    item_evergreen[order] = np.arange(num_items) < round(
        config.evergreen_item_fraction * config.num_items
    )
    item_long_tail = np.empty(num_items, dtype=bool)
    item_long_tail[order] = np.arange(num_items) >= config.num_items
    item_topics, item_weight = _topic_mixtures(rng, item_primary, num_topics)
    item_category = topic_category[item_primary]
    item_brand = brand_sampler.sample(rng, item_category)
    base_price = np.array([price for _, price, _ in CATEGORIES])[item_category]
    tier_multiplier = np.array(BRAND_TIER_PRICE_MULTIPLIER)[brand_tier[item_brand]]
    lognormal = np.exp(0.35 * rng.standard_normal(num_items))
    item_price = np.maximum(np.round(base_price * tier_multiplier * lognormal, 2), 0.5)
    item_quality = 0.5 * rng.standard_normal(num_items)
    item_lifecycle = _lifecycle(
        rng,
        evergreen=item_evergreen,
        exponent=config.item_zipf_exponent,
        fade_days=config.item_fade_days,
        rise_days=(2.0, 10.0),
        world_days=config.world_days,
        flat=item_long_tail,
    )
    # A head item joins the retrieval pools of its two topics, a long-tail item its primary's.
    pool_item = np.concatenate([np.arange(num_items), np.flatnonzero(~item_long_tail)])
    pool_topic = np.concatenate([item_topics[:, 0], item_topics[~item_long_tail, 1]])
    pool_order = np.argsort(pool_topic, kind="stable")
    query_vectors = _latent(rng, query_topics, query_weight, topic_vectors)
    query_bias = 0.3 * rng.standard_normal(config.num_queries)
    # A query with an intent starts with its intent word (vocabulary index num_terms + word).
    headroom = build_headroom(config, item_long_tail, codes)
    vocabulary = pa.array(_words(np.concatenate([codes, headroom.intent_word_codes]), 3))
    intent_word = np.where(
        headroom.query_intent_word >= 0, config.num_terms + headroom.query_intent_word, -1
    )
    query_strings = _texts(
        rng, query_topics, query_weight, query_lengths, term_sampler, vocabulary, intent_word
    )
    item_vectors = _latent(rng, item_topics, item_weight, topic_vectors)
    title_lengths = rng.integers(3, 8, size=num_items)
    item_title_strings = _texts(
        rng, item_topics, item_weight, title_lengths, term_sampler, vocabulary
    )

    user_segment = rng.choice(len(SEGMENTS), size=config.num_users, p=SEGMENT_SHARES)
    user_device = rng.choice(len(DEVICES), size=config.num_users, p=DEVICE_SHARES)
    user_bias = 0.3 * rng.standard_normal(config.num_users)
    user_activity = _zipf_weights(rng, config.num_users, config.user_zipf_exponent)
    favourite_categories = np.tile(np.arange(num_categories), config.num_users)
    user_favourite_brand = brand_sampler.sample(rng, favourite_categories)
    return World(
        config=config,
        topic_vectors=topic_vectors,
        query_topic=query_primary,
        query_vectors=query_vectors,
        query_bias=query_bias,
        query_lifecycle=query_lifecycle,
        query_strings=query_strings,
        item_topics=item_topics,
        item_vectors=item_vectors,
        item_category=item_category,
        item_brand=item_brand,
        item_price=item_price,
        item_quality=item_quality,
        item_lifecycle=item_lifecycle,
        item_id_strings=_ids("i", num_items),
        item_long_tail=item_long_tail,
        item_title_strings=item_title_strings,
        topic_pool_items=pool_item[pool_order],
        topic_pool_offsets=np.searchsorted(pool_topic[pool_order], np.arange(num_topics + 1)),
        min_evergreen_pool=int(
            np.bincount(item_topics[item_evergreen].reshape(-1), minlength=num_topics).min()
        ),
        brand_tier=brand_tier,
        brand_strings=pa.array(brand_names),
        user_segment=user_segment,
        user_device=user_device,
        user_bias=user_bias,
        user_activity=user_activity,
        user_favourite_brand=user_favourite_brand.reshape(config.num_users, num_categories),
        user_id_strings=_ids("u", config.num_users),
        headroom=headroom,
    )

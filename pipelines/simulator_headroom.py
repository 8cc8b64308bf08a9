"""Headroom: structure of the simulated world that only model capacity can learn.

Main effects and pairwise crosses, which a small DCNv2 already represents, make up the rest of the
conversion model (:mod:`pipelines.simulator_funnel`). This module adds to the post-click
conversion logit

    H = preference_strength * <p_u, w_i>                      personalized user x item preference
        + G[segment, device, category]                        a pure three-way cross
        + intent_tier_strength * iota_q * tau[brand tier]     query intent x brand tier
        + e_i                                                 long-tail item effects

(the strengths are :class:`~pipelines.simulator_config.SimulatorConfig` knobs; each term is
off at 0, which restores that part of the old world).

Preference. User and item vectors p_u, w_i in R^r (r = ``preference_rank``) have iid entries
N(0, r^-1/2), so <p_u, w_i> has mean 0 and variance r * r^-1/2 * r^-1/2 = 1: the term's standard
deviation is ``preference_strength`` at any rank. Nothing but the user and the item reveals it:
a model represents it only through user and item embeddings of width at least r, and with
enough hash buckets and vocabulary to tell users and items apart.

Three-way cross. G starts as iid N(0, 1) over 3 segments x 3 devices x 20 categories, is centred
along each axis in turn with weights w (segment shares, device shares, 1/20 per category),

    G <- G - sum_s w_s G[s, :, :],   then over devices,   then over categories,

and scaled to weighted standard deviation ``segment_device_category_strength``. Centring along
one axis keeps the zero means along the others (weighted means commute), so every weighted
one- and two-way marginal of G is zero: no sum of main effects and pairwise crosses holds any of
it.

Query intent. Each query has a latent intent, bargain (iota = -1, 20 %), none (0, 60 %) or
luxury (+1, 20 %); tau = -1, 0, +1 for value, standard and premium brands. A query with an intent
starts its text with one of 6 intent words of its own (Zipf(1) by rank), words that appear in no
title; no column names the intent, so only the query's terms reveal it, as only the brand (and
the price) reveal the tier. Symmetric shares make iota zero-mean: the term is a pure interaction.

Long tail. Each long-tail item (``SimulatorConfig.long_tail_ratio``; see
:mod:`pipelines.simulator_world`) has its own offset e_i ~ N(0, ``long_tail_effect``^2); head
items have none. Seen a few times each, the offsets pay only a model whose item vocabulary holds
these items and that trains on enough days to see them.

Each part is drawn from its own stream (seed, 2, part), apart from the rest of the world: a knob
of one part changes nothing else, and a strength of 0 leaves every other draw as it was.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from pipelines.simulator_config import (
    CATEGORIES,
    DEVICE_SHARES,
    INTENT_WORDS_PER_INTENT,
    QUERY_INTENT_SHARES,
    SEGMENT_SHARES,
    SYLLABLES,
    SimulatorConfig,
)

if TYPE_CHECKING:
    from pipelines.simulator_world import World

_HEADROOM_STREAM = 2
_PREFERENCE, _THREE_WAY, _INTENT, _LONG_TAIL = range(4)
_TIER_SIGN = np.array([-1.0, 0.0, 1.0])  # value, standard, premium


@dataclasses.dataclass(frozen=True)
class Headroom:
    """The latent headroom structure, indexed by user, item, query, segment, device, category.

    Attributes:
        user_preference: ``[num_users, r]`` p_u (unit-variance products, before the strength).
        item_preference: ``[items, r]`` w_i.
        segment_device_category: ``[3, 3, 20]`` G, strength included.
        query_intent: ``[num_queries]`` iota_q in {-1, 0, +1}.
        query_intent_word: ``[num_queries]`` index into ``intent_word_codes``, -1 without intent.
        intent_word_codes: ``[2 * INTENT_WORDS_PER_INTENT]`` codes of the intent words (bargain
            first), three syllables each; none is a code of the topic terms.
        item_effect: ``[items]`` e_i, strength included (0 for head items).
    """

    user_preference: np.ndarray
    item_preference: np.ndarray
    segment_device_category: np.ndarray
    query_intent: np.ndarray
    query_intent_word: np.ndarray
    intent_word_codes: np.ndarray
    item_effect: np.ndarray


def pure_three_way(raw: np.ndarray, weights: tuple[np.ndarray, ...], sd: float) -> np.ndarray:
    """The three-way component of ``raw``, scaled to weighted standard deviation ``sd``.

    Args:
        raw: ``[a, b, c]`` array.
        weights: Per-axis weights (each summing to 1) of the marginals that become zero.
        sd: Standard deviation of the result under the product of ``weights``.

    Returns:
        ``raw`` centred along each axis in turn; all zeros where ``raw`` has no three-way part
        (up to rounding: a remainder below 1e-9 of ``raw``'s own spread).
    """
    centred = raw
    for axis, weight in enumerate(weights):
        shape = [1, 1, 1]
        shape[axis] = len(weight)
        mean = (centred * weight.reshape(shape)).sum(axis=axis, keepdims=True)
        centred = centred - mean
    product = weights[0][:, None, None] * weights[1][None, :, None] * weights[2][None, None, :]
    norm = np.sqrt((product * centred**2).sum())
    if norm <= 1e-9 * np.sqrt((product * raw**2).sum()):
        return np.zeros_like(raw)
    return centred * (sd / norm)


def build_headroom(
    config: SimulatorConfig, long_tail: np.ndarray, term_codes: np.ndarray
) -> Headroom:
    """Draws the headroom of ``config`` (see the module docstring).

    Args:
        config: The world's knobs.
        long_tail: ``[items]`` bool, the long-tail items of the catalog.
        term_codes: Codes of the topic terms, which the intent words must not reuse.
    """

    def stream(part: int) -> np.random.Generator:
        return np.random.default_rng([config.seed, _HEADROOM_STREAM, part])

    rank = config.preference_rank
    rng = stream(_PREFERENCE)
    user_preference = rank**-0.25 * rng.standard_normal((config.num_users, rank))
    item_preference = rank**-0.25 * rng.standard_normal((len(long_tail), rank))

    weights = (
        np.array(SEGMENT_SHARES),
        np.array(DEVICE_SHARES),
        np.full(len(CATEGORIES), 1.0 / len(CATEGORIES)),
    )
    raw = stream(_THREE_WAY).standard_normal([len(w) for w in weights])
    segment_device_category = pure_three_way(raw, weights, config.segment_device_category_strength)

    rng = stream(_INTENT)
    intent = rng.choice(len(QUERY_INTENT_SHARES), config.num_queries, p=QUERY_INTENT_SHARES) - 1
    free = np.ones(len(SYLLABLES) ** 3, dtype=bool)
    free[term_codes] = False
    free_codes = np.flatnonzero(free)
    intent_word_codes = rng.choice(free_codes, 2 * INTENT_WORDS_PER_INTENT, replace=False)
    word_weights = 1.0 / np.arange(1, INTENT_WORDS_PER_INTENT + 1)
    word_weights /= word_weights.sum()
    word = rng.choice(INTENT_WORDS_PER_INTENT, config.num_queries, p=word_weights)
    query_intent_word = np.where(intent == 0, -1, word + INTENT_WORDS_PER_INTENT * (intent > 0))

    effect = stream(_LONG_TAIL).standard_normal(len(long_tail))
    return Headroom(
        user_preference=user_preference,
        item_preference=item_preference,
        segment_device_category=segment_device_category,
        query_intent=intent.astype(np.float64),
        query_intent_word=query_intent_word,
        intent_word_codes=intent_word_codes,
        item_effect=np.where(long_tail, config.long_tail_effect * effect, 0.0),
    )


def headroom_logit(
    world: World,
    users: np.ndarray,
    queries: np.ndarray,
    devices: np.ndarray,
    items: np.ndarray,
) -> np.ndarray:
    """H of the module docstring, per impression (arrays of user, query, device, item index)."""
    config, headroom = world.config, world.headroom
    segment = world.user_segment[users]
    category = world.item_category[items]
    logit = headroom.segment_device_category[segment, devices, category]
    logit += headroom.item_effect[items]
    if config.preference_strength:
        preference = np.einsum(
            "nr,nr->n", headroom.user_preference[users], headroom.item_preference[items]
        )
        logit += config.preference_strength * preference
    if config.intent_tier_strength:
        tier = _TIER_SIGN[world.brand_tier[world.item_brand[items]]]
        logit += config.intent_tier_strength * headroom.query_intent[queries] * tier
    return logit

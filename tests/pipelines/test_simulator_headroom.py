"""Tests of the simulator's headroom: structure that only model capacity can learn."""

import dataclasses

import numpy as np
import pytest

from pipelines.simulator_config import (
    CATEGORIES,
    DEVICE_SHARES,
    INTENT_WORDS_PER_INTENT,
    SEGMENT_SHARES,
    SimulatorConfig,
)
from pipelines.simulator_day import simulate_day
from pipelines.simulator_headroom import headroom_logit, pure_three_way
from pipelines.simulator_world import build_world
from tests.pipelines.simulated_traffic import NO_HEADROOM, SMALL, TINY, auc, rate, simulated_traffic

_WEIGHTS = (
    np.array(SEGMENT_SHARES),
    np.array(DEVICE_SHARES),
    np.full(len(CATEGORIES), 1 / len(CATEGORIES)),
)


@pytest.fixture(scope="module")
def traffic():
    return simulated_traffic(SMALL)


def _post_click_ratio(traffic, mask, against) -> float:
    """Conversion rate of clicks in ``mask`` over that of clicks in ``against``."""
    clicked, converted = traffic.clicked, traffic.converted
    return rate(converted, clicked & mask) / rate(converted, clicked & against)


def test_preference_term_has_the_configured_spread_and_drives_conversion(traffic):
    headroom = traffic.world.headroom
    assert headroom.user_preference.shape == (SMALL.num_users, SMALL.preference_rank)
    preference = np.einsum(
        "nr,nr->n", headroom.user_preference[traffic.user], headroom.item_preference[traffic.item]
    )
    assert 0.9 < preference.std() < 1.1  # unit variance: the term's sd is its strength
    assert abs(preference.mean()) < 0.05
    low, high = np.quantile(preference, [0.25, 0.75])
    assert _post_click_ratio(traffic, preference > high, preference <= low) > 2.0  # seed 0: 2.3


def test_pure_three_way_has_no_lower_order_marginals():
    raw = np.random.default_rng(0).standard_normal((3, 3, 20))
    tensor = pure_three_way(raw, _WEIGHTS, sd=0.5)
    for axis, weight in enumerate(_WEIGHTS):
        shape = [1, 1, 1]
        shape[axis] = len(weight)
        marginal = (tensor * weight.reshape(shape)).sum(axis=axis)
        np.testing.assert_allclose(marginal, 0.0, atol=1e-12)
    product = _WEIGHTS[0][:, None, None] * _WEIGHTS[1][None, :, None] * _WEIGHTS[2]
    assert np.sqrt((product * tensor**2).sum()) == pytest.approx(0.5)
    # A sum of main effects and pairwise crosses has no three-way part: it projects to zero.
    pairwise = raw[:, :, :1] + raw[:1, :, :] + raw[:, :1, :]
    np.testing.assert_allclose(pure_three_way(pairwise, _WEIGHTS, sd=0.5), 0.0, atol=1e-12)


def test_three_way_cross_shows_in_traffic(traffic):
    world = traffic.world
    segment = world.user_segment[traffic.user]
    category = world.item_category[traffic.item]
    # Per (segment, device), the 5 categories G favours most and the 5 it favours least; pooled
    # over the pairs, main effects and pairwise crosses cancel out of the comparison.
    rank = np.argsort(np.argsort(world.headroom.segment_device_category, axis=2), axis=2)
    rank = rank[segment, traffic.device, category]
    assert _post_click_ratio(traffic, rank >= 15, rank < 5) > 1.5  # seed 0: 1.8


def test_query_intent_shows_only_in_query_terms_and_crosses_brand_tier(traffic):
    world, headroom = traffic.world, traffic.world.headroom
    queries = np.asarray(world.query_strings.to_pylist())
    titles = " ".join(world.item_title_strings.to_pylist()).split()
    words = np.array([query.split()[0] for query in queries])
    intent = headroom.query_intent
    intent_words = [set(words[intent == sign]) for sign in (-1, 1)]
    assert all(len(these) == INTENT_WORDS_PER_INTENT for these in intent_words)
    assert not intent_words[0] & intent_words[1]
    every_intent_word = intent_words[0] | intent_words[1]
    assert not every_intent_word & set(titles)
    assert not every_intent_word & set(" ".join(queries[intent == 0]).split())

    tier = world.brand_tier[world.item_brand[traffic.item]]
    premium, value = tier == 2, tier == 0
    query_intent = intent[traffic.query]

    def premium_to_value(sign):
        return _post_click_ratio(
            traffic, (query_intent == sign) & premium, (query_intent == sign) & value
        )

    assert premium_to_value(1) / premium_to_value(-1) > 4  # seed 0: 1.45 / 0.15


def test_long_tail_items_are_sparse_a_real_share_and_have_own_effects(traffic):
    world = traffic.world
    tail = world.item_long_tail
    assert tail.sum() == round(SMALL.long_tail_ratio * SMALL.num_items)
    assert not (tail & world.item_lifecycle.evergreen).any()
    shown_tail = tail[traffic.item]
    assert 0.2 < shown_tail.mean() < 0.35  # long_tail_share 0.2 of popularity; seed 0: 26 %

    def busiest(items):  # impressions of the 99th percentile of the items shown
        counts = np.bincount(items)
        return np.quantile(counts[counts > 0], 0.99)

    # No hits in the tail; seed 0: 940 vs 3,515 impressions in four weeks.
    assert busiest(traffic.item[shown_tail]) < busiest(traffic.item[~shown_tail]) / 2
    effect = world.headroom.item_effect
    assert (effect[~tail] == 0).all() and 0.7 < effect[tail].std() < 0.9
    own = effect[traffic.item]
    assert (
        _post_click_ratio(traffic, shown_tail & (own > 0), shown_tail & (own < 0)) > 1.5
    )  # seed 0: 1.8


def _same(first, second) -> bool:
    """Equal worlds (or parts of worlds): dataclasses field by field, arrays element-wise."""
    if dataclasses.is_dataclass(first):
        fields = dataclasses.fields(first)
        return all(_same(getattr(first, f.name), getattr(second, f.name)) for f in fields)
    if hasattr(first, "equals"):
        return first.equals(second)
    return np.array_equal(first, second)


def _rows(log):
    """(user, query, device, item) per impression row of a day's log."""
    per_row = (
        np.repeat(values, log.candidates)
        for values in (log.request_user, log.request_query, log.request_device)
    )
    return (*per_row, log.item)


def test_a_zero_knob_turns_its_term_off_and_keeps_the_rest_of_the_world():
    full = build_world(TINY)
    rows = _rows(simulate_day(full, 10, 200, 5))
    with_all = headroom_logit(full, *rows)
    for knob in ("preference_strength", "segment_device_category_strength", "intent_tier_strength"):
        world = build_world(dataclasses.replace(TINY, **{knob: 0.0}))
        for field in dataclasses.fields(world):
            if field.name not in ("config", "headroom"):
                assert _same(getattr(world, field.name), getattr(full, field.name)), field.name
        assert not np.array_equal(headroom_logit(world, *rows), with_all), knob
    off = build_world(dataclasses.replace(TINY, **NO_HEADROOM))
    assert not off.item_long_tail.any() and len(off.item_long_tail) == TINY.num_items
    np.testing.assert_array_equal(headroom_logit(off, *_rows(simulate_day(off, 10, 200, 5))), 0.0)


def test_the_bayes_ceiling_is_clearly_above_the_world_without_headroom(traffic):
    headroom = headroom_logit(
        traffic.world, traffic.user, traffic.query, traffic.device, traffic.item
    )
    post_click = traffic.true_cvr_given_click
    without = traffic.true_ctr / (1 + np.exp(headroom - np.log(post_click / (1 - post_click))))
    ceiling, old_structure = (
        auc(traffic.true_cvr, traffic.converted),
        auc(without, traffic.converted),
    )
    assert ceiling > old_structure + 0.02  # seed 0: 0.849 vs 0.821


def test_headroom_knobs_are_validated():
    with pytest.raises(ValueError, match=r"long_tail_ratio=-1 \(flag --long_tail_ratio\) must be"):
        SimulatorConfig(long_tail_ratio=-1)
    with pytest.raises(ValueError, match=r"preference_rank=0 \(flag --preference_rank\) must be"):
        SimulatorConfig(preference_rank=0)

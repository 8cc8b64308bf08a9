"""Tests of the search-log simulator: its generative model, its Parquet output and its job."""

import dataclasses
import datetime
import hashlib
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from absl import flags

from pipelines import simulate
from pipelines.simulator_config import CATEGORIES, SEGMENTS
from pipelines.simulator_day import MS_PER_DAY, check_candidates, simulate_day
from pipelines.simulator_funnel import MS_PER_HOUR
from pipelines.simulator_world import SimulatorConfig, build_world
from tests.pipelines.simulated_traffic import SMALL, TINY, rate, simulated_traffic

START = datetime.date(2026, 1, 5)  # a Monday, day ordinal 4 of the default world
# Digest of the decoded files of `_run(tmp, TINY, days=2, requests=50, candidates=5)`. It changes
# whenever the generative model or the log format does: update it deliberately, with the reason.
# Last change: the click funnel (clicks/ partition) and the headroom terms (issues 12 and 13).
PINNED_DIGEST = "469e085699aa97ddc2269bc766b1f0847c5b7420a6e1f765a3634a8d18630d3f"


def _run(output, config=TINY, start=START, days=3, requests=300, candidates=10, **kwargs):
    return simulate.simulate_logs(output, start, days, requests, candidates, config, **kwargs)


def _file_hashes(root: pathlib.Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _content_digest(root: pathlib.Path) -> str:
    """Digest of the decoded tables, independent of the Parquet writer's version."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.parquet")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(repr(pq.read_table(path).to_pydict()).encode())
    return digest.hexdigest()


def _read(root: pathlib.Path, kind: str) -> pd.DataFrame:
    frames = [
        pq.read_table(path).to_pandas().assign(date=path.parent.name[len("date=") :])
        for path in sorted((root / kind).glob("date=*/part-*.parquet"))
    ]
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# The generative model, on four weeks of in-memory traffic of a small world
# (tests/pipelines/simulated_traffic.py; the headroom terms: test_simulator_headroom.py).


@pytest.fixture(scope="module")
def traffic():
    return simulated_traffic(SMALL)


def test_click_and_conversion_rates(traffic):
    click_rate, conversion_rate = traffic.clicked.mean(), traffic.converted.mean()
    assert 0.05 < click_rate < 0.15  # seed 0: 10.6 %
    assert 0.01 < conversion_rate < 0.05  # seed 0: 3.3 %
    assert 0.15 < rate(traffic.converted, traffic.clicked) < 0.4  # seed 0: 31.6 %
    # The truths are the probabilities of the drawn outcomes: means agree within 4 standard
    # errors, and the eventual conversion is the product of click and conversion given click.
    for truth, outcome in (
        (traffic.true_ctr, traffic.clicked),
        (traffic.true_cvr, traffic.converted),
    ):
        error = np.sqrt(outcome.mean() * (1 - outcome.mean()) / len(outcome))
        assert abs(truth.mean() - outcome.mean()) < 4 * error
    np.testing.assert_array_equal(traffic.true_cvr, traffic.true_ctr * traffic.true_cvr_given_click)


def test_conversions_follow_clicks(traffic):
    assert not (traffic.converted & ~traffic.clicked).any()
    both = traffic.converted
    assert (traffic.conversion_delay_ms[both] >= traffic.click_delay_ms[both] + 1000).all()


def test_queries_users_and_items_have_zipf_popularity(traffic):
    def log_log_slope(index, top=100):
        counts = np.sort(np.bincount(index))[::-1][:top]
        return np.polyfit(np.log(np.arange(1, top + 1)), np.log(counts), 1)[0]

    requests = slice(None, None, 20)  # one row per request
    assert -1.15 < log_log_slope(traffic.query[requests]) < -0.65  # query_zipf_exponent 0.9
    assert -1.05 < log_log_slope(traffic.user[requests]) < -0.55  # user_zipf_exponent 0.8
    counts = np.sort(np.bincount(traffic.item))[::-1]
    top_share = counts[: SMALL.num_items // 100].sum() / counts.sum()
    assert top_share > 0.10  # 1 % of the head catalog takes > 10 % of impressions (seed 0: 14 %)


def test_click_and_post_click_conversion_read_different_features(traffic):
    clicked, converted = traffic.clicked, traffic.converted

    def click_and_post_click_ratios(mask, against):
        return (
            rate(clicked, mask) / rate(clicked, against),
            rate(converted, clicked & mask) / rate(converted, clicked & against),
        )

    # Position (all of the position bias) and affinity move the click only ...
    first, tenth = traffic.position == 1, traffic.position == 10
    click, post_click = click_and_post_click_ratios(first, tenth)
    assert click > 3 and 0.85 < post_click < 1.15  # seed 0: 6.1, 0.99
    low, high = np.quantile(traffic.affinity, [0.25, 0.75])
    click, post_click = click_and_post_click_ratios(
        traffic.affinity > high, traffic.affinity <= low
    )
    assert click > 3 and 0.85 < post_click < 1.2  # seed 0: 5.5, 1.03
    # ... price (for budget users) and the favourite brand the conversion after it.
    world = traffic.world
    category = world.item_category[traffic.item]
    budget = world.user_segment[traffic.user] == SEGMENTS.index("budget")
    expensive = world.item_price[traffic.item] > np.array([p for _, p, _ in CATEGORIES])[category]
    click, post_click = click_and_post_click_ratios(budget & ~expensive, budget & expensive)
    assert 0.85 < click < 1.15 and post_click > 2  # seed 0: 0.95, 3.0
    favourite = world.user_favourite_brand[traffic.user, category] == world.item_brand[traffic.item]
    click, post_click = click_and_post_click_ratios(favourite, ~favourite)
    assert 0.9 < click < 1.1 and post_click > 1.5  # seed 0: 1.01, 1.8


def test_query_item_affinity_drives_conversion(traffic):
    low, high = np.quantile(traffic.affinity, [0.25, 0.75])
    high_rate = rate(traffic.converted, traffic.affinity > high)
    ratio = high_rate / rate(traffic.converted, traffic.affinity <= low)
    assert ratio > 3.0  # seed 0: 5.7


def test_budget_users_shun_expensive_items_premium_users_do_not(traffic):
    world = traffic.world
    category = world.item_category[traffic.item]
    base_price = np.array([price for _, price, _ in CATEGORIES])[category]
    expensive = world.item_price[traffic.item] > base_price
    segment = world.user_segment[traffic.user]

    def cheap_to_expensive(name):
        in_segment = segment == SEGMENTS.index(name)
        cheap_rate = rate(traffic.converted, in_segment & ~expensive)
        return cheap_rate / rate(traffic.converted, in_segment & expensive)

    assert cheap_to_expensive("budget") > 2.0  # seed 0: 2.9
    assert cheap_to_expensive("premium") < 1.0  # seed 0: 0.65 (premium users like premium brands)


def test_users_prefer_their_favourite_brand(traffic):
    world = traffic.world
    category = world.item_category[traffic.item]
    favourite = world.user_favourite_brand[traffic.user, category] == world.item_brand[traffic.item]
    ratio = rate(traffic.converted, favourite) / rate(traffic.converted, ~favourite)
    assert ratio > 1.5  # seed 0: 1.8


def test_position_bias(traffic):
    first, tenth = (rate(traffic.converted, traffic.position == k) for k in (1, 10))
    assert first > 3 * tenth  # seed 0: 6.1
    rates = [rate(traffic.converted, traffic.position == k) for k in range(1, 21)]
    assert np.all(np.diff(rates)[:5] < 0)


def test_device_category_cross_is_an_interaction(traffic):
    lean = np.array([lean for _, _, lean in CATEGORIES])[traffic.world.item_category[traffic.item]]
    mobile_categories, desktop_categories = lean > 0.3, lean < -0.3

    def mobile_to_desktop_categories(device):
        on_device = traffic.device == ("mobile", "app", "desktop").index(device)
        return rate(traffic.converted, on_device & mobile_categories) / rate(
            traffic.converted, on_device & desktop_categories
        )

    # Under main effects only, this ratio of ratios would be 1.
    assert mobile_to_desktop_categories("mobile") > 1.2  # seed 0: 2.2
    assert mobile_to_desktop_categories("desktop") < 0.8  # seed 0: 0.63
    assert mobile_to_desktop_categories("mobile") / mobile_to_desktop_categories("desktop") > 2.0


def test_weekend_uplift(traffic):
    weekend = traffic.weekday >= 5
    uplift = rate(traffic.converted, weekend) / rate(traffic.converted, ~weekend)
    assert uplift > 1.15  # seed 0: 1.28


def test_clicks_come_within_minutes_and_a_few_after_an_hour(traffic):
    delay = traffic.click_delay_ms[traffic.clicked]
    assert 5_000 < np.median(delay) < 60_000  # seed 0: 21 s
    assert 0.005 < np.mean(delay > MS_PER_HOUR) < 0.03  # seed 0: 1.4 %
    assert delay.min() >= 1000 and delay.max() <= MS_PER_DAY
    duplicate_share = traffic.click_events / traffic.clicked.sum() - 1
    assert 0.02 < duplicate_share < 0.04  # duplicate_rate 0.03


def test_delays_reach_later_partitions_and_past_the_attribution_window(traffic):
    delay = traffic.conversion_delay_ms[traffic.converted]
    assert 0.5 * MS_PER_DAY > np.median(delay) > 0.25 * MS_PER_HOUR  # most within hours
    assert 0.03 < np.mean(delay > 3 * MS_PER_DAY) < 0.09  # seed 0: 5.7 %
    assert delay.max() <= 15 * MS_PER_DAY  # a day for the click, 14 for the conversion
    assert np.mean(traffic.conversion_event_lags > 0) > 0.1
    duplicate_share = traffic.conversion_events / traffic.converted.sum() - 1
    assert 0.02 < duplicate_share < 0.04  # duplicate_rate 0.03


def test_items_age_out_over_months():
    world = build_world(SMALL)
    shown = {day: simulate_day(world, day, 2000, 20).item for day in (0, 1, 90)}

    def seen_on_day_zero(day):
        return np.isin(shown[day], shown[0]).mean()

    assert seen_on_day_zero(90) < seen_on_day_zero(1) - 0.15  # seed 0: 0.99 vs 0.64


def test_each_request_shows_distinct_items_ranked_by_a_noisy_ranker():
    world = build_world(SMALL)
    log = simulate_day(world, 10, 500, 20)
    items = log.item.reshape(500, 20)
    assert all(len(set(row)) == 20 for row in items)
    affinity = np.einsum(
        "rd,rkd->rk", world.query_vectors[log.request_query], world.item_vectors[items]
    )
    by_position = affinity.mean(axis=0)
    assert by_position[0] > by_position[-1]  # position correlates with relevance ...
    assert np.mean(np.diff(affinity, axis=1) > 0) > 0.2  # ... but does not equal it


def test_same_day_does_not_depend_on_other_days():
    world = build_world(TINY)
    alone = simulate_day(world, 7, 100, 5)
    simulate_day(world, 6, 100, 5)
    again = simulate_day(world, 7, 100, 5)
    for log in (alone, again):
        assert len(log.funnel.click_row) > 0
    for first, second in ((alone, again), (alone.funnel, again.funnel)):
        for field in dataclasses.fields(first):
            if field.name != "funnel":
                np.testing.assert_array_equal(
                    getattr(first, field.name), getattr(second, field.name)
                )


def test_candidates_beyond_the_evergreen_pool_are_refused():
    world = build_world(TINY)
    with pytest.raises(ValueError, match="candidates_per_request=1000 exceeds"):
        check_candidates(world, 1000)


def test_config_errors_name_the_field():
    with pytest.raises(
        ValueError, match=r"SimulatorConfig.duplicate_rate=1.5 \(flag --duplicate_rate\) must be in"
    ):
        SimulatorConfig(duplicate_rate=1.5)
    with pytest.raises(ValueError, match="SimulatorConfig.num_brands=5 .* must be >= 20"):
        SimulatorConfig(num_brands=5)
    with pytest.raises(ValueError, match=r"preference_strength=-1 .* must be >= 0 \(0 turns"):
        SimulatorConfig(preference_strength=-1)


# ---------------------------------------------------------------------------------------------
# The Parquet logs.


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Three days of TINY logs with labels and ground truth: (root, summary)."""
    root = tmp_path_factory.mktemp("logs")
    config = dataclasses.replace(TINY, with_label_column=True, with_ground_truth=True)
    return root, _run(root, config, days=3, requests=300, candidates=10)


def test_writes_the_log_layout_and_schema(written):
    root, summary = written
    impressions = _read(root, "impressions")
    table = pq.read_table(root / "impressions/date=2026-01-05/part-00000.parquet")
    expected = simulate.IMPRESSION_SCHEMA
    for name in ("converted", "clicked"):
        expected = expected.append(pa.field(name, pa.int64()))
    for name in ("true_cvr", "true_ctr", "true_cvr_given_click"):
        expected = expected.append(pa.field(name, pa.float64()))
    assert table.schema.equals(expected)
    for kind, schema in (
        ("clicks", simulate.CLICK_SCHEMA),
        ("conversions", simulate.CONVERSION_SCHEMA),
    ):
        assert pq.read_table(next((root / kind).rglob("*.parquet"))).schema.equals(schema)

    assert sorted(impressions.date.unique()) == ["2026-01-05", "2026-01-06", "2026-01-07"]
    assert len(impressions) == summary.impressions == 3 * 300 * 10
    assert impressions.request_id.nunique() == 900
    assert impressions.request_id.iloc[0] == "r20260105-000000"
    day_start = pd.to_datetime(impressions.date).to_numpy().astype("datetime64[ms]").astype("int64")
    assert ((impressions.ts >= day_start) & (impressions.ts < day_start + MS_PER_DAY)).all()
    per_request = impressions.groupby("request_id")
    assert (per_request.item_id.nunique() == 10).all()
    assert per_request.position.apply(lambda shown: sorted(shown) == list(range(1, 11))).all()
    assert set(impressions.device) <= {"mobile", "app", "desktop"}
    assert set(impressions.user_segment) <= set(SEGMENTS)
    assert (impressions.item_price > 0).all()
    assert impressions["query"].str.fullmatch(r"[a-z]+( [a-z]+)*").all()
    np.testing.assert_allclose(
        impressions.true_cvr, impressions.true_ctr * impressions.true_cvr_given_click
    )
    assert impressions.true_cvr.between(0, 1).all()
    assert summary.top_queries[0][1] == impressions.groupby("query").request_id.nunique().max()
    assert summary.days_written == 3


def _first_delays(events: pd.DataFrame, impressions: pd.DataFrame) -> pd.Series:
    """Per (request_id, item_id) with events: ms from the impression to its first event."""
    joined = events.merge(impressions, on=["request_id", "item_id"], suffixes=("", "_shown"))
    assert len(joined) == len(events)  # every event follows an impression
    assert (pd.to_datetime(joined.ts, unit="ms").dt.strftime("%Y-%m-%d") == joined.date).all()
    return (joined.ts - joined.ts_shown).groupby([joined.request_id, joined.item_id]).min()


def test_events_keep_the_funnel_contract(written):
    root, summary = written
    impressions = _read(root, "impressions")
    clicks, conversions = _read(root, "clicks"), _read(root, "conversions")
    key = ["request_id", "item_id"]
    assert len(clicks) == summary.clicks and len(conversions) == summary.conversions
    assert clicks.date.max() <= "2026-01-08" < conversions.date.max()  # events on their own day
    assert clicks.duplicated(key).any() and conversions.duplicated(key).any()
    assert (conversions.quantity >= 1).all()

    # A conversion only ever follows a click of the same impression.
    first_click = clicks.groupby(key).ts.min().rename("click_ts")
    converting = conversions.join(first_click, on=key)
    assert converting.click_ts.notna().all() and (converting.ts >= converting.click_ts).all()

    # Labels: an event within its window from the impression, duplicates counted once.
    labelled = impressions.set_index(key)
    for label, events, window_ms in (
        ("clicked", clicks, MS_PER_HOUR),
        ("converted", conversions, 3 * MS_PER_DAY),
    ):
        delays = _first_delays(events, impressions)
        assert (delays > 0).all()
        positives = labelled[label][labelled[label] == 1].index
        assert set(positives) == set(delays[delays <= window_ms].index)
        assert len(delays[delays > window_ms]) > 0  # the window loses a few
    assert summary.clicked_impressions == clicks[key].drop_duplicates().shape[0]
    assert summary.converted_impressions == conversions[key].drop_duplicates().shape[0]
    assert summary.click_rate == pytest.approx(summary.clicked_impressions / len(impressions))
    assert summary.conversion_rate == pytest.approx(
        summary.converted_impressions / len(impressions)
    )


def test_labels_and_ground_truth_are_off_by_default(tmp_path):
    _run(tmp_path, days=1)
    names = pq.read_schema(tmp_path / "impressions/date=2026-01-05/part-00000.parquet").names
    assert names == simulate.IMPRESSION_SCHEMA.names


def test_files_get_the_permissions_of_ordinary_new_files(tmp_path):
    _run(tmp_path / "logs", days=1)
    ordinary = tmp_path / "ordinary"
    ordinary.write_bytes(b"")
    written = tmp_path / "logs/impressions/date=2026-01-05/part-00000.parquet"
    assert written.stat().st_mode == ordinary.stat().st_mode


def test_same_seed_writes_the_same_bytes(tmp_path):
    _run(tmp_path / "a", days=2, requests=50, candidates=5)
    _run(tmp_path / "b", days=2, requests=50, candidates=5)
    assert _file_hashes(tmp_path / "a") == _file_hashes(tmp_path / "b")
    assert _content_digest(tmp_path / "a") == PINNED_DIGEST
    _run(tmp_path / "c", dataclasses.replace(TINY, seed=1), days=2, requests=50, candidates=5)
    assert _content_digest(tmp_path / "c") != PINNED_DIGEST


def test_split_runs_write_what_one_run_writes(tmp_path):
    _run(tmp_path / "whole", days=6)
    _run(tmp_path / "split", days=3)
    _run(tmp_path / "split", start=START + datetime.timedelta(days=3), days=3)
    assert _file_hashes(tmp_path / "whole") == _file_hashes(tmp_path / "split")


def test_existing_partitions_are_refused_unless_overwrite(tmp_path):
    _run(tmp_path / "out", days=3)
    before = _file_hashes(tmp_path / "out")
    with pytest.raises(FileExistsError, match=r"impressions/date=2026-01-06/part-00000.parquet"):
        _run(tmp_path / "out", start=START + datetime.timedelta(days=1), days=1)
    assert _file_hashes(tmp_path / "out") == before

    # Overwriting with another seed leaves exactly what a fresh run with that seed writes.
    reseeded = dataclasses.replace(TINY, seed=7)
    _run(tmp_path / "out", reseeded, days=3, overwrite=True)
    _run(tmp_path / "fresh", reseeded, days=3)
    assert _file_hashes(tmp_path / "out") == _file_hashes(tmp_path / "fresh")
    assert not list((tmp_path / "out").rglob(".*.tmp"))

    # A day's click events alone (from impressions shown that day) also hold its logs.
    shutil.rmtree(tmp_path / "out/impressions")
    shutil.rmtree(tmp_path / "out/conversions")
    with pytest.raises(FileExistsError, match=r"clicks/date=2026-01-05/part-00000.parquet"):
        _run(tmp_path / "out", days=1)


def test_argument_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"days=0 must be >= 1 \(flag --days\)"):
        _run(tmp_path, days=0)
    with pytest.raises(ValueError, match=r"candidates_per_request=0 must be >= 1"):
        _run(tmp_path, candidates=0)
    with pytest.raises(ValueError, match="outside the simulated world's range 2026-01-01"):
        _run(tmp_path, start=datetime.date(2025, 12, 31))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# The job.


@pytest.mark.parametrize(
    "argument, message",
    [
        ("--days=0", "flag --days=0"),
        ("--candidates_per_request=0", "flag --candidates_per_request=0"),
        ("--start_date=2026-13-01", "--start_date must be a date YYYY-MM-DD"),
        ("--world_start=January", "--world_start must be a date YYYY-MM-DD"),
    ],
)
def test_bad_flags_name_the_flag(argument, message):
    flag_values = flags.FlagValues()
    simulate.define_flags(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match=message):
        flag_values(["simulate", "--output=/tmp/unused", argument])


def test_every_flag_the_readme_shows_for_the_simulator_exists_and_every_knob_is_a_flag():
    readme = (pathlib.Path(__file__).parents[2] / "pipelines/README.md").read_text("utf-8")
    section = readme[readme.index("## Simulator") : readme.index("### Output")]
    help_flags = {"help", "helpfull", "helpshort", "helpxml"}
    shown = set(re.findall(r"`--([a-z0-9_]+)", section)) - help_flags
    flag_values = flags.FlagValues()
    simulate.define_flags(flag_values)
    assert shown == set(flag_values) - help_flags
    knobs = {field.name for field in dataclasses.fields(SimulatorConfig)}
    assert knobs <= set(flag_values)


def test_job_writes_logs_and_prints_the_summary(tmp_path):
    arguments = [
        f"--output={tmp_path}",
        "--start_date=2026-02-02",
        "--days=2",
        "--requests_per_day=100",
        "--candidates_per_request=5",
        "--num_items=600",
        "--num_queries=200",
        "--num_users=500",
        "--num_topics=20",
        "--preference_strength=0",
        "--with_label_column",
    ]
    result = _job(arguments)
    assert result.returncode == 0, result.stderr
    assert "impressions:           1000" in result.stdout
    assert "click events:" in result.stdout
    table = pq.read_table(tmp_path / "impressions/date=2026-02-03/part-00000.parquet")
    assert table.num_rows == 500
    assert {"converted", "clicked"} <= set(table.schema.names)
    assert list((tmp_path / "clicks").glob("date=2026-02-03/part-*.parquet"))


def _job(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.simulate", *arguments],
        capture_output=True,
        text=True,
        cwd=pathlib.Path(__file__).parents[2],
    )


def test_job_names_a_bad_knob_in_one_line(tmp_path):
    result = _job([f"--output={tmp_path}", "--long_tail_share=1.5"])
    assert result.returncode == 1
    message = "SimulatorConfig.long_tail_share=1.5 (flag --long_tail_share) must be in [0, 1)."
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())

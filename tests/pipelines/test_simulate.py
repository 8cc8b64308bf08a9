"""Tests of the search-log simulator: its generative model, its Parquet output and its job."""

import dataclasses
import datetime
import hashlib
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from absl import flags

from pipelines import simulate
from pipelines.simulator_day import MS_PER_DAY, check_candidates, simulate_day
from pipelines.simulator_world import CATEGORIES, SEGMENTS, SimulatorConfig, World, build_world

SMALL = SimulatorConfig(
    num_items=4000, num_queries=1500, num_users=8000, num_topics=20, num_terms=600, num_brands=100
)
TINY = dataclasses.replace(SMALL, num_items=600, num_queries=200, num_users=500, num_terms=200)
START = datetime.date(2026, 1, 5)  # a Monday, day ordinal 4 of the default world
# Digest of the decoded files of `_run(tmp, TINY, days=2, requests=50, candidates=5)`. It changes
# whenever the generative model or the log format does: update it deliberately, with the reason.
PINNED_DIGEST = "50714e927cf0a3fff2a35f4da238a5226c5e5551576fe4468f46b08dc0ddb88f"


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
# The generative model, on four weeks of in-memory traffic of a small world.


@dataclasses.dataclass
class Traffic:
    """Per-impression arrays of several simulated days."""

    world: World
    converted: np.ndarray
    true_cvr: np.ndarray
    item: np.ndarray
    position: np.ndarray
    user: np.ndarray
    query: np.ndarray
    device: np.ndarray
    weekday: np.ndarray
    affinity: np.ndarray
    delay_ms: np.ndarray
    events: int
    event_lags: np.ndarray


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    world = build_world(SMALL)
    logs = [simulate_day(world, day, 2000, 20) for day in range(4, 32)]

    def per_row(field):
        return np.concatenate([np.repeat(getattr(log, field), log.candidates) for log in logs])

    return Traffic(
        world=world,
        converted=np.concatenate([log.converted for log in logs]),
        true_cvr=np.concatenate([log.true_cvr for log in logs]),
        item=np.concatenate([log.item for log in logs]),
        position=np.concatenate([log.position for log in logs]),
        user=per_row("request_user"),
        query=per_row("request_query"),
        device=per_row("request_device"),
        weekday=np.concatenate(
            [
                np.full(len(log.item), (SMALL.world_start + datetime.timedelta(log.day)).weekday())
                for log in logs
            ]
        ),
        affinity=np.concatenate(
            [
                np.einsum(
                    "rd,rkd->rk",
                    world.query_vectors[log.request_query],
                    world.item_vectors[log.item.reshape(-1, log.candidates)],
                ).reshape(-1)
                for log in logs
            ]
        ),
        delay_ms=np.concatenate([log.conversion_delay_ms for log in logs]),
        events=sum(len(log.event_row) for log in logs),
        event_lags=np.concatenate(
            [log.event_ts // MS_PER_DAY - log.request_ts[0] // MS_PER_DAY for log in logs]
        ),
    )


def _rate(converted: np.ndarray, mask: np.ndarray) -> float:
    return converted[mask].mean()


def test_overall_conversion_rate_is_a_few_percent(traffic):
    rate = traffic.converted.mean()
    assert 0.01 < rate < 0.05
    # true_cvr is the probability of the drawn outcome: their means agree within 4 standard errors.
    error = np.sqrt(rate * (1 - rate) / len(traffic.converted))
    assert abs(traffic.true_cvr.mean() - rate) < 4 * error


def test_queries_users_and_items_have_zipf_popularity(traffic):
    def log_log_slope(index, top=100):
        counts = np.sort(np.bincount(index))[::-1][:top]
        return np.polyfit(np.log(np.arange(1, top + 1)), np.log(counts), 1)[0]

    requests = slice(None, None, 20)  # one row per request
    assert -1.15 < log_log_slope(traffic.query[requests]) < -0.65  # query_zipf_exponent 0.9
    assert -1.05 < log_log_slope(traffic.user[requests]) < -0.55  # user_zipf_exponent 0.8
    counts = np.sort(np.bincount(traffic.item, minlength=SMALL.num_items))[::-1]
    top_share = counts[: SMALL.num_items // 100].sum() / counts.sum()
    assert top_share > 0.10  # the top 1 % of the catalog takes > 10 % of impressions (seed 0: 21 %)


def test_query_item_affinity_drives_conversion(traffic):
    low, high = np.quantile(traffic.affinity, [0.25, 0.75])
    high_rate = _rate(traffic.converted, traffic.affinity > high)
    ratio = high_rate / _rate(traffic.converted, traffic.affinity <= low)
    assert ratio > 3.0  # seed 0: 6.1


def test_budget_users_shun_expensive_items_premium_users_do_not(traffic):
    world = traffic.world
    category = world.item_category[traffic.item]
    base_price = np.array([price for _, price, _ in CATEGORIES])[category]
    expensive = world.item_price[traffic.item] > base_price
    segment = world.user_segment[traffic.user]

    def cheap_to_expensive(name):
        in_segment = segment == SEGMENTS.index(name)
        cheap_rate = _rate(traffic.converted, in_segment & ~expensive)
        return cheap_rate / _rate(traffic.converted, in_segment & expensive)

    assert cheap_to_expensive("budget") > 2.0  # seed 0: 3.3
    assert cheap_to_expensive("premium") < 1.0  # seed 0: 0.75 (premium users like premium brands)


def test_users_prefer_their_favourite_brand(traffic):
    world = traffic.world
    category = world.item_category[traffic.item]
    favourite = world.user_favourite_brand[traffic.user, category] == world.item_brand[traffic.item]
    ratio = _rate(traffic.converted, favourite) / _rate(traffic.converted, ~favourite)
    assert ratio > 1.5  # seed 0: 1.8


def test_position_bias(traffic):
    first, tenth = (_rate(traffic.converted, traffic.position == k) for k in (1, 10))
    assert first > 3 * tenth  # seed 0: 6.4
    rates = [_rate(traffic.converted, traffic.position == k) for k in range(1, 21)]
    assert np.all(np.diff(rates)[:5] < 0)


def test_device_category_cross_is_an_interaction(traffic):
    lean = np.array([lean for _, _, lean in CATEGORIES])[traffic.world.item_category[traffic.item]]
    mobile_categories, desktop_categories = lean > 0.3, lean < -0.3

    def mobile_to_desktop_categories(device):
        on_device = traffic.device == ("mobile", "app", "desktop").index(device)
        return _rate(traffic.converted, on_device & mobile_categories) / _rate(
            traffic.converted, on_device & desktop_categories
        )

    # Under main effects only, this ratio of ratios would be 1.
    assert mobile_to_desktop_categories("mobile") > 1.2  # seed 0: 1.75
    assert mobile_to_desktop_categories("desktop") < 0.8  # seed 0: 0.48
    assert mobile_to_desktop_categories("mobile") / mobile_to_desktop_categories("desktop") > 2.0


def test_weekend_uplift(traffic):
    weekend = traffic.weekday >= 5
    uplift = _rate(traffic.converted, weekend) / _rate(traffic.converted, ~weekend)
    assert uplift > 1.15  # seed 0: 1.33


def test_delays_reach_later_partitions_and_past_the_attribution_window(traffic):
    delay = traffic.delay_ms[traffic.converted]
    assert 0.5 * MS_PER_DAY > np.median(delay) > 0.25 * 3_600_000  # most within hours
    assert 0.03 < np.mean(delay > 3 * MS_PER_DAY) < 0.09  # seed 0: 5.3 %
    assert delay.max() <= 14 * MS_PER_DAY
    assert np.mean(traffic.event_lags > 0) > 0.1
    duplicate_share = traffic.events / traffic.converted.sum() - 1
    assert 0.02 < duplicate_share < 0.04  # duplicate_rate 0.03


def test_items_age_out_over_months():
    world = build_world(SMALL)
    shown = {day: simulate_day(world, day, 2000, 20).item for day in (0, 1, 90)}

    def seen_on_day_zero(day):
        return np.isin(shown[day], shown[0]).mean()

    assert seen_on_day_zero(90) < seen_on_day_zero(1) - 0.15  # seeds 0-4: 1.00 vs 0.73-0.80


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
    for field in dataclasses.fields(alone):
        np.testing.assert_array_equal(getattr(alone, field.name), getattr(again, field.name))


def test_candidates_beyond_the_evergreen_pool_are_refused():
    world = build_world(TINY)
    with pytest.raises(ValueError, match="candidates_per_request=1000 exceeds"):
        check_candidates(world, 1000)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"SimulatorConfig.duplicate_rate=1.5 must be in \[0, 1\)"):
        SimulatorConfig(duplicate_rate=1.5)
    with pytest.raises(ValueError, match="SimulatorConfig.num_brands=5 must be >= 20"):
        SimulatorConfig(num_brands=5)


# ---------------------------------------------------------------------------------------------
# The Parquet logs.


def test_writes_the_log_layout_and_schema(tmp_path):
    config = dataclasses.replace(TINY, with_label_column=True, with_ground_truth=True)
    summary = _run(tmp_path, config, days=3, requests=300, candidates=10)
    impressions, conversions = _read(tmp_path, "impressions"), _read(tmp_path, "conversions")

    table = pq.read_table(tmp_path / "impressions/date=2026-01-05/part-00000.parquet")
    expected = simulate.IMPRESSION_SCHEMA.append(pa.field("converted", pa.int64()))
    assert table.schema.equals(expected.append(pa.field("true_cvr", pa.float64())))
    conversion_file = next((tmp_path / "conversions").rglob("*.parquet"))
    assert pq.read_table(conversion_file).schema.equals(simulate.CONVERSION_SCHEMA)

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

    assert len(conversions) == summary.conversions
    assert conversions.date.max() > "2026-01-07"  # late conversions land after the range
    assert (conversions.quantity >= 1).all()
    joined = conversions.merge(impressions, on=["request_id", "item_id"], suffixes=("", "_shown"))
    assert len(joined) == len(conversions)
    assert (joined.ts > joined.ts_shown).all()
    assert (pd.to_datetime(joined.ts, unit="ms").dt.strftime("%Y-%m-%d") == joined.date).all()
    assert conversions.duplicated(["request_id", "item_id"]).any()

    first = joined.groupby(["request_id", "item_id"]).apply(
        lambda events: (events.ts - events.ts_shown).min(), include_groups=False
    )
    within = first[first <= 3 * MS_PER_DAY].index
    labelled = impressions.set_index(["request_id", "item_id"]).converted
    assert set(labelled[labelled == 1].index) == set(within)
    assert summary.converted_impressions == len(first)
    assert summary.conversion_rate == pytest.approx(len(first) / len(impressions))
    assert impressions.true_cvr.between(0, 1).all()
    assert summary.top_queries[0][1] == impressions.groupby("query").request_id.nunique().max()
    assert summary.days_written == 3


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
        "--with_label_column",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.simulate", *arguments],
        capture_output=True,
        text=True,
        check=True,
        cwd=pathlib.Path(__file__).parents[2],
    )
    assert "impressions:           1000" in result.stdout
    table = pq.read_table(tmp_path / "impressions/date=2026-02-03/part-00000.parquet")
    assert table.num_rows == 500 and "converted" in table.schema.names

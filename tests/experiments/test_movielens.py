"""MovieLens as a search log: the conversion to the raw-log layout (no download in tests)."""

import datetime

import pandas as pd
import pyarrow.parquet as pq

from experiments import movielens

WEEK = 7 * 86_400


def _tables() -> dict[str, pd.DataFrame]:
    genres = {g: [0, 0] for g in movielens.GENRES}
    genres["Comedy"], genres["Drama"] = [1, 0], [1, 1]
    return {
        "data": pd.DataFrame({"user_id": [1, 1, 2, 1], "movie_id": [10, 11, 10, 11],
                              "rating": [5, 3, 4, 5],
                              "timestamp": [1000, 1000 + 3 * 86_400, 2000, 1000 + WEEK]}),
        "users": pd.DataFrame({"user_id": [1, 2], "age": [24, 53], "gender": ["M", "F"],
                               "occupation": ["writer", "other"], "zip_code": ["1", "2"]}),
        "items": pd.DataFrame({"movie_id": [10, 11], "movie_title": ["Heat (1995)", "Up (2009)"],
                               **genres}),
    }


def test_ratings_become_weekly_requests_with_five_stars_converted(tmp_path):
    frame = movielens.to_impressions(_tables())
    assert list(frame["request_id"]) == ["1-0", "1-0", "2-0", "1-1"]
    assert list(frame["converted"]) == [1, 0, 0, 1]
    assert list(frame["genres"]) == ["Comedy Drama", "Drama", "Comedy Drama", "Drama"]
    days = movielens.write_logs(frame, str(tmp_path))
    assert days == [movielens.FIRST_DAY, movielens.FIRST_DAY + datetime.timedelta(days=1)]
    for day in days:  # every ts falls inside its partition's day (the pipeline checks it)
        table = pq.read_table(tmp_path / "impressions" / f"date={day}" / "part-00000.parquet")
        start = datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp() * 1000
        assert all(start <= ts < start + 86_400_000 for ts in table.column("ts").to_pylist())
    movielens.spec_from_dict(movielens.SPEC)  # the spec is valid
